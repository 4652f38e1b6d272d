package io.flannelnp.flannel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.bus.Failure;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.flannel.FlannelMessage.AttachEndpoint;
import io.flannelnp.flannel.FlannelMessage.DetachEndpoint;
import io.flannelnp.flannel.FlannelMessage.EndpointAttached;
import io.flannelnp.flannel.FlannelMessage.EnsureNetwork;
import io.flannelnp.flannel.FlannelMessage.NetworkReady;
import io.flannelnp.flannel.FlannelMessage.RemoveNetwork;
import io.flannelnp.flannel.Kernel.KernelException;
import io.flannelnp.testing.Netns;
import io.vertx.core.Vertx;
import io.vertx.core.eventbus.DeliveryOptions;
import io.vertx.core.eventbus.ReplyException;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The FlannelVerticle's bridge and veth requests against real kernel state. Each test gets its own
 * network namespaces (the "host" the verticle works in, and "containers" the way Docker makes
 * them), drives the verticle over the event bus and reads the result back with {@code ip -json}.
 * Traffic only ever flows between these namespaces. Needs root, iproute2 and the veth and bridge
 * drivers; reachability uses {@code ping} when it is installed, else a TCP probe (a connection
 * refused by the peer proves the round trip just as well).
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class FlannelEndpointTest {
  static final String NET = "net-endpoint-test";
  static final String GW = "10.50.0.129/25";
  static final String MAC1 = "02:42:0a:32:00:82";
  static final String MAC2 = "02:42:0a:32:00:83";
  static final SecureRandom RANDOM = new SecureRandom();

  @TempDir
  Path dir;
  Netns ns;
  String host;
  Vertx vertx;
  String deployment;
  final List<KernelBatch> batches = new CopyOnWriteArrayList<>();
  Set<String> rootFnpBefore;
  final String ep1 = endpointId();
  final String ep2 = endpointId();
  final String ep3 = endpointId();
  final String bridge = Names.bridge(NET);

  @BeforeEach
  void setUp() {
    rootFnpBefore = rootFnpLinks();
    ns = new Netns();
    host = ns.add("h");
    vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    vertx.eventBus().consumer(Addresses.STATE_SNAPSHOT, m -> m.reply(ClusterState.EMPTY));
    // sysctl batches (forwarding on, redirects off at bridge creation) are not what these tests pin down
    vertx.eventBus().<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> {
      if (!"sysctl".equals(m.body().tool())) {
        batches.add(m.body());
      }
    });
  }

  @AfterEach
  void tearDown() throws Exception {
    try {
      vertx.close().toCompletionStage().toCompletableFuture().get(20, TimeUnit.SECONDS);
    } finally {
      ns.close();
    }
    assertThat(Netns.list()).as("network namespaces left by this test").noneMatch(n -> n.startsWith(ns.stem()));
    Set<String> leaked = rootFnpLinks();
    leaked.removeAll(rootFnpBefore);
    assertThat(leaked).as("fnp* links this test left in the root namespace").isEmpty();
    assertThat(rootFnpLinks()).doesNotContain(bridge, Names.hostVeth(ep1), Names.containerVeth(ep1),
        Names.hostVeth(ep2), Names.containerVeth(ep2), Names.hostVeth(ep3), Names.containerVeth(ep3));
  }

  // ---- EnsureNetwork -----------------------------------------------------------------------------

  @Test
  void ensureNetworkCreatesTheBridgeAndASecondCallChangesNothing() throws Exception {
    deploy(Map.of());
    NetworkReady r = ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    assertThat(r).isEqualTo(new NetworkReady(NET, bridge, 1450)); // no default route here: 1500 − 50
    assertThat(bridge).hasSize(15).startsWith("fnp");

    JsonObject br = link(host, bridge);
    assertThat(br.getJsonObject("linkinfo").getString("info_kind")).isEqualTo("bridge");
    assertThat(br.getJsonObject("linkinfo").getJsonObject("info_data").getInteger("stp_state")).isZero();
    assertThat(br.getInteger("mtu")).isEqualTo(1450);
    assertThat(br.getJsonArray("flags").getList()).contains("UP");
    assertThat(br.getString("ifalias")).isEqualTo("fnp-net:" + NET);
    assertThat(ipv4Addresses(host, bridge)).containsExactly(GW);
    // the host routes between bridge, flannel.VNI and VIP backends, without ICMP redirects
    assertThat(sysctl(host, "net.ipv4.ip_forward")).isEqualTo("1");
    assertThat(sysctl(host, "net.ipv4.conf." + bridge + ".send_redirects")).isEqualTo("0");

    awaitBatches(1);
    KernelBatch b = batches.get(0);
    assertThat(b.plane()).isEqualTo("flannel");
    assertThat(b.tool()).isEqualTo("ip");
    assertThat(b.ok()).isTrue();
    assertThat(b.text()).startsWith("link add name " + bridge + " ").contains("addr replace " + GW + " dev " + bridge);

    NetworkReady again = ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    assertThat(again).isEqualTo(r);
    quiet();
    assertThat(batches).as("a second EnsureNetwork applies nothing").hasSize(1);
    assertThat(link(host, bridge).getInteger("ifindex")).isEqualTo(br.getInteger("ifindex"));
    assertThat(link(host, bridge).getString("address")).isEqualTo(br.getString("address"));
  }

  @Test
  void ensureNetworkConvergesABridgeThatDriftedAndOnlyChangesWhatDiffers() throws Exception {
    deploy(Map.of());
    ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    ns.ip(host, "addr", "add", "10.9.9.9/24", "dev", bridge).ok();
    ns.ip(host, "addr", "add", "10.50.0.140/25", "dev", bridge).ok(); // a secondary in the gateway's block
    ns.ip(host, "link", "set", "dev", bridge, "mtu", "1400").ok();
    ns.ip(host, "link", "set", "dev", bridge, "down").ok();
    ns.ip(host, "link", "set", "dev", bridge, "type", "bridge", "stp_state", "1").ok();
    awaitBatches(1);

    NetworkReady r = ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    assertThat(r.mtu()).isEqualTo(1450);
    JsonObject br = link(host, bridge);
    assertThat(br.getInteger("mtu")).isEqualTo(1450);
    assertThat(br.getJsonArray("flags").getList()).contains("UP");
    assertThat(br.getJsonObject("linkinfo").getJsonObject("info_data").getInteger("stp_state")).isZero();
    assertThat(ipv4Addresses(host, bridge)).containsExactly(GW);
    awaitBatches(2);
    assertThat(batches.get(1).text()).doesNotContain("link add").contains("addr del 10.9.9.9/24");

    // a new gateway replaces the old one
    ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, "10.50.1.1/24"));
    assertThat(ipv4Addresses(host, bridge)).containsExactly("10.50.1.1/24");
  }

  @Test
  void theMtuIsTheUplinksMinus50AndTheUplinkIsIfaceElseTheDefaultRoutesDevice() throws Exception {
    ns.ip(host, "link", "add", "upl0", "mtu", "9000", "type", "veth", "peer", "name", "upl1", "mtu", "4000").ok();
    ns.ip(host, "link", "set", "dev", "upl0", "up").ok();
    ns.ip(host, "link", "set", "dev", "upl1", "up").ok();
    ns.ip(host, "addr", "add", "192.0.2.1/24", "dev", "upl0").ok();
    ns.ip(host, "addr", "add", "198.51.100.1/24", "dev", "upl1").ok();
    ns.ip(host, "route", "add", "default", "via", "192.0.2.254", "dev", "upl0").ok();

    deploy(Map.of());
    NetworkReady viaRoute = ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    assertThat(viaRoute.mtu()).isEqualTo(8950);
    assertThat(link(host, bridge).getInteger("mtu")).isEqualTo(8950);

    redeploy(Map.of("DEFAULT_FLANNEL_OPTIONS", "-iface=upl1"));
    assertThat(this.<NetworkReady>ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW)).mtu())
        .isEqualTo(3950);
    assertThat(link(host, bridge).getInteger("mtu")).isEqualTo(3950);

    redeploy(Map.of("DEFAULT_FLANNEL_OPTIONS", "-iface=192.0.2.1")); // Flannel's -iface also takes an address
    assertThat(this.<NetworkReady>ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW)).mtu())
        .isEqualTo(8950);

    redeploy(Map.of("DEFAULT_FLANNEL_OPTIONS", "-iface=nosuch0"));
    ReplyException e = refused(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    assertThat(e.failureCode()).isEqualTo(Failure.UNAVAILABLE);
    assertThat(e.getMessage()).contains("-iface nosuch0").contains("no such interface");
  }

  // ---- AttachEndpoint ----------------------------------------------------------------------------

  @Test
  void attachCreatesBothEndsInOneBatchAndARetryAnswersTheSame() throws Exception {
    deploy(Map.of());
    ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    awaitBatches(1);
    String bridgeMac = link(host, bridge).getString("address");

    EndpointAttached a = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1.toUpperCase()));
    String h = "fnph" + ep1.substring(0, 11);
    String c = "fnpc" + ep1.substring(0, 11);
    assertThat(a).isEqualTo(new EndpointAttached(ep1, h, c, 1450));

    JsonObject hj = link(host, h);
    assertThat(hj.getJsonObject("linkinfo").getString("info_kind")).isEqualTo("veth");
    assertThat(hj.getString("master")).isEqualTo(bridge);
    assertThat(hj.getJsonArray("flags").getList()).contains("UP");
    assertThat(hj.getInteger("mtu")).isEqualTo(1450);
    assertThat(hj.getString("ifalias")).isEqualTo("fnp-ep:" + ep1);
    JsonObject cj = link(host, c);
    assertThat(cj.getString("address")).isEqualTo(MAC1);
    assertThat(cj.getInteger("mtu")).isEqualTo(1450);
    assertThat(cj.getString("link")).isEqualTo(h);
    assertThat(cj.containsKey("master")).isFalse();
    assertThat(link(host, bridge).getString("address")).as("the bridge keeps its own MAC when a port joins")
        .isEqualTo(bridgeMac);

    awaitBatches(2);
    KernelBatch b = batches.get(1);
    assertThat(b.ok()).isTrue();
    assertThat(b.text().lines().toList()).containsExactly(
        "link add name " + h + " mtu 1450 type veth peer name " + c + " mtu 1450 address " + MAC1,
        "link set dev " + h + " alias fnp-ep:" + ep1,
        "link set dev " + h + " master " + bridge,
        "link set dev " + h + " type bridge_slave hairpin on",
        "link set dev " + h + " up");
    // hairpin: a task reaches itself through its service's VIP
    assertThat(link(host, h).getJsonObject("linkinfo").getJsonObject("info_slave_data").getBoolean("hairpin")).isTrue();

    // Docker retried the Join: same answer, nothing applied
    EndpointAttached retry = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1));
    assertThat(retry).isEqualTo(a);
    quiet();
    assertThat(batches).hasSize(2);

    // without a MAC the kernel picks one
    EndpointAttached b2 = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep2, ""));
    assertThat(link(host, b2.containerVeth()).getString("address")).matches("[0-9a-f]{2}(:[0-9a-f]{2}){5}");
    assertThat(link(host, b2.hostVeth()).getString("master")).isEqualTo(bridge);
  }

  @Test
  void containersPluggedInTheWayDockerDoesReachTheGatewayAndEachOtherAndDetachRemovesThePairs() throws Exception {
    deploy(Map.of());
    ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    EndpointAttached a1 = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1));
    EndpointAttached a2 = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep2, MAC2));
    String c1 = ns.add("c1");
    String c2 = ns.add("c2");
    join(a1.containerVeth(), c1, "10.50.0.130/25");
    join(a2.containerVeth(), c2, "10.50.0.131/25");

    JsonObject eth0 = link(c1, "eth0");
    assertThat(eth0.getString("address")).isEqualTo(MAC1);
    assertThat(eth0.getInteger("mtu")).isEqualTo(1450);

    assertThat(reach(c1, "10.50.0.129")).as("container 1 → gateway").isTrue();
    assertThat(reach(c2, "10.50.0.129")).as("container 2 → gateway").isTrue();
    assertThat(reach(c1, "10.50.0.131")).as("container 1 → container 2").isTrue();
    assertThat(reach(c2, "10.50.0.130")).as("container 2 → container 1").isTrue();
    assertThat(reach(c1, "10.50.0.200")).as("control: an address nobody holds").isFalse();

    // a Join for an endpoint whose container side a container holds is refused, not re-plumbed
    ReplyException inUse = refused(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1));
    assertThat(inUse.failureCode()).isEqualTo(Failure.CONFLICT);
    assertThat(inUse.getMessage()).contains("in use");

    // Leave as Docker does it: down, original name, back to the host namespace; then DeleteEndpoint
    ns.ip(c1, "link", "set", "dev", "eth0", "down").ok();
    ns.ip(c1, "link", "set", "dev", "eth0", "name", a1.containerVeth()).ok();
    ns.ip(c1, "link", "set", "dev", a1.containerVeth(), "netns", host).ok();
    assertThat(linkNames(host)).contains(a1.hostVeth(), a1.containerVeth());
    Ack d1 = ask(Addresses.FLANNEL_ENDPOINT_DETACH, new DetachEndpoint(NET, ep1));
    assertThat(d1.detail()).contains("deleted");
    assertThat(linkNames(host)).doesNotContain(a1.hostVeth(), a1.containerVeth());

    // DeleteEndpoint while the container side is still in the container: the pair goes as a whole
    // (and the network may be unknown by then: the names come from the endpoint ID alone)
    // The answer comes once the pair is down, off the bridge and renamed; the kernel's slow delete
    // follows in the background, within a second
    Ack d2 = ask(Addresses.FLANNEL_ENDPOINT_DETACH, new DetachEndpoint("", ep2));
    assertThat(d2.detail()).contains("deleted in the background");
    assertThat(linkNames(host)).doesNotContain(a2.hostVeth(), a2.containerVeth());
    assertThat(ports(host, bridge)).as("the endpoint left the bridge before the answer").isEmpty();
    long gone = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
    while ((linkNames(c2).contains("eth0") || linkNames(host).stream().anyMatch(Names::isDetached))
        && System.nanoTime() < gone) {
      Thread.sleep(20);
    }
    assertThat(linkNames(c2)).doesNotContain("eth0");
    assertThat(linkNames(host)).as("detached veths deleted within 1 s").noneMatch(Names::isDetached);

    // the container's namespace goes away first: the pair goes with it and a later detach is a no-op
    EndpointAttached a3 = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep3, ""));
    String c3 = ns.add("c3");
    join(a3.containerVeth(), c3, "10.50.0.132/25");
    assertThat(reach(c3, "10.50.0.129")).isTrue();
    ns.delete(c3);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    while (linkNames(host).contains(a3.hostVeth()) && System.nanoTime() < deadline) {
      Thread.sleep(50);
    }
    assertThat(linkNames(host)).doesNotContain(a3.hostVeth());
    Ack d3 = ask(Addresses.FLANNEL_ENDPOINT_DETACH, new DetachEndpoint(NET, ep3));
    assertThat(d3.detail()).contains("no veth pair");
    Ack again = ask(Addresses.FLANNEL_ENDPOINT_DETACH, new DetachEndpoint(NET, ep1));
    assertThat(again.detail()).contains("no veth pair");

    // the bridge is left with no fnph* port
    assertThat(ports(host, bridge)).isEmpty();
  }

  // ---- RemoveNetwork -----------------------------------------------------------------------------

  @Test
  void removeNetworkDeletesTheBridgeAndItsVethsAndIsIdempotent() throws Exception {
    deploy(Map.of());
    ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    EndpointAttached a1 = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1));
    EndpointAttached a2 = ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep2, MAC2));
    // a port that is not ours: released, not deleted
    ns.ip(host, "link", "add", "other0", "type", "veth", "peer", "name", "other1").ok();
    ns.ip(host, "link", "set", "dev", "other0", "master", bridge).ok();
    assertThat(ports(host, bridge)).containsExactlyInAnyOrder(a1.hostVeth(), a2.hostVeth(), "other0");

    Ack r = ask(Addresses.FLANNEL_NETWORK_REMOVE, new RemoveNetwork(NET));
    assertThat(r.detail()).contains(bridge).contains("2 veths");
    assertThat(linkNames(host)).doesNotContain(bridge, a1.hostVeth(), a1.containerVeth(), a2.hostVeth(),
        a2.containerVeth()).contains("other0", "other1");
    assertThat(link(host, "other0").containsKey("master")).isFalse();

    Ack again = ask(Addresses.FLANNEL_NETWORK_REMOVE, new RemoveNetwork(NET));
    assertThat(again.detail()).contains("no bridge");
    Ack detach = ask(Addresses.FLANNEL_ENDPOINT_DETACH, new DetachEndpoint(NET, ep1));
    assertThat(detach.detail()).contains("no veth pair");

    ReplyException e = refused(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1));
    assertThat(e.failureCode()).isEqualTo(Failure.NOT_FOUND);
    assertThat(e.getMessage()).isEqualTo("network " + NET + " is not set up on this node (EnsureNetwork first)");
  }

  // ---- refusals ----------------------------------------------------------------------------------

  @Test
  void badIdsMacsAndAddressesAreRefusedClearlyAndChangeNothing() throws Exception {
    deploy(Map.of());
    ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    ask(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1));
    awaitBatches(2);
    Set<String> before = linkNames(host);
    List<String> addrsBefore = ipv4Addresses(host, bridge);

    Map<Object, String> cases = new HashMap<>();
    cases.put(new AttachEndpoint(NET, "abc", ""), "invalid endpoint ID 'abc'");
    cases.put(new AttachEndpoint(NET, "0123456789ab;reboot", ""), "invalid endpoint ID");
    cases.put(new AttachEndpoint(NET, "../../etc/passwd", ""), "invalid endpoint ID");
    cases.put(new AttachEndpoint(NET, ep1 + " master lo", ""), "invalid endpoint ID");
    cases.put(new AttachEndpoint(NET, ep2, "zz:42:0a:32:00:82"), "invalid MAC address 'zz:42:0a:32:00:82'");
    cases.put(new AttachEndpoint(NET, ep2, MAC2 + " up"), "invalid MAC address");
    cases.put(new AttachEndpoint(NET, ep2, "01:00:5e:00:00:01"), "multicast");
    cases.put(new AttachEndpoint(NET, ep2, "00:00:00:00:00:00"), "all zeros");
    cases.put(new AttachEndpoint("bad id", ep2, ""), "invalid flannel network ID 'bad id'");
    cases.put(new EnsureNetwork(NET, 6515, "10.50.0.129/33"), "invalid IPv4 interface address");
    cases.put(new EnsureNetwork(NET, 6515, "10.50.0.129"), "expected address/prefix");
    cases.put(new EnsureNetwork(NET, 6515, "10.50.0.128/25"), "network address");
    cases.put(new EnsureNetwork(NET, 6515, "10.50.0.255/25"), "broadcast address");
    cases.put(new EnsureNetwork(NET, 6515, "10.50.0.129/25 dev lo"), "invalid IPv4 interface address");
    cases.put(new EnsureNetwork(NET, 6515, "010.50.0.129/25"), "invalid IPv4 interface address");
    cases.put(new EnsureNetwork(NET, -1, GW), "invalid VNI -1");
    cases.put(new EnsureNetwork("", 6515, GW), "invalid flannel network ID");
    cases.put(new DetachEndpoint(NET, "short"), "invalid endpoint ID 'short'");
    cases.put(new DetachEndpoint("x y", ep1), "invalid flannel network ID 'x y'");
    cases.put(new RemoveNetwork("a/b"), "invalid flannel network ID 'a/b'");
    for (Map.Entry<Object, String> c : cases.entrySet()) {
      Object req = c.getKey();
      String address = req instanceof AttachEndpoint ? Addresses.FLANNEL_ENDPOINT_ATTACH
          : req instanceof EnsureNetwork ? Addresses.FLANNEL_NETWORK_ENSURE
          : req instanceof DetachEndpoint ? Addresses.FLANNEL_ENDPOINT_DETACH
          : Addresses.FLANNEL_NETWORK_REMOVE;
      ReplyException e = refused(address, c.getKey());
      assertThat(e.failureCode()).as(c.getKey().toString()).isEqualTo(Failure.BAD_REQUEST);
      assertThat(e.getMessage()).as(c.getKey().toString()).contains(c.getValue());
    }
    ReplyException wrongBody = refused(Addresses.FLANNEL_NETWORK_ENSURE, "not a request");
    assertThat(wrongBody.failureCode()).isEqualTo(Failure.BAD_REQUEST);
    assertThat(wrongBody.getMessage()).contains("expected a EnsureNetwork body");

    ReplyException missing = refused(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint("other-net", ep2, MAC2));
    assertThat(missing.failureCode()).isEqualTo(Failure.NOT_FOUND);
    assertThat(missing.getMessage()).isEqualTo("network other-net is not set up on this node (EnsureNetwork first)");

    quiet();
    assertThat(batches).as("no refused request reached the kernel").hasSize(2);
    assertThat(linkNames(host)).isEqualTo(before);
    assertThat(ipv4Addresses(host, bridge)).isEqualTo(addrsBefore);
  }

  @Test
  void aBatchThatFailsHalfWayIsUndoneSoNothingIsLeftBehind() throws Exception {
    // an `ip` that applies a batch up to its "master" line for real, then fails as ip does
    String realIp = Netns.run("sh", "-c", "command -v ip").ok().out().strip();
    Path fake = dir.resolve("ip");
    Files.writeString(fake, """
        #!/bin/bash
        batch=0
        for a in "$@"; do [ "$a" = "-batch" ] && batch=1; done
        if [ $batch = 1 ]; then
          input=$(cat)
          n=$(printf '%%s\\n' "$input" | grep -n ' master ' | head -n1 | cut -d: -f1)
          if [ -n "$n" ]; then
            printf '%%s\\n' "$input" | head -n $((n - 1)) | %1$s "$@" || exit 1
            echo "RTNETLINK answers: Operation not permitted (injected by the test)" >&2
            echo "Command failed -:$n" >&2
            exit 1
          fi
          printf '%%s\\n' "$input" | exec %1$s "$@"
        fi
        exec %1$s "$@"
        """.formatted(realIp));
    Files.setPosixFilePermissions(fake, PosixFilePermissions.fromString("rwxr-xr-x"));
    deploy(Map.of(), Kernel.inNetns(host, Map.of("ip", fake.toString())));

    ask(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(NET, 6515, GW));
    awaitBatches(1);
    ReplyException e = refused(Addresses.FLANNEL_ENDPOINT_ATTACH, new AttachEndpoint(NET, ep1, MAC1));
    String h = Names.hostVeth(ep1);
    String c = Names.containerVeth(ep1);
    assertThat(e.failureCode()).isEqualTo(Failure.INTERNAL);
    assertThat(e.getMessage()).contains("endpoint " + ep1).contains("nothing was left behind")
        .contains("ip in network namespace " + host)
        .contains("line 3 \"link set dev " + h + " master " + bridge + "\" failed")
        .contains("Operation not permitted (injected by the test)");
    assertThat(linkNames(host)).doesNotContain(h, c).contains(bridge);

    awaitBatches(3);
    KernelBatch failed = batches.get(1);
    assertThat(failed.ok()).isFalse();
    assertThat(failed.text()).startsWith("link add name " + h);
    assertThat(failed.error()).contains("line 3");
    KernelBatch undo = batches.get(2);
    assertThat(undo.ok()).isTrue();
    assertThat(undo.text()).contains("link del dev " + h);
  }

  // ---- Kernel and Names --------------------------------------------------------------------------

  @Test
  void kernelFailuresNameTheToolTheFailingLineAndStderr() throws Exception {
    Kernel k = Kernel.inNetns(host);
    assertThatThrownBy(() -> k.ipBatch(List.of("link set dev lo up", "link set dev nonexist0 up"), false))
        .isInstanceOfSatisfying(KernelException.class, e -> {
          assertThat(e.tool()).isEqualTo("ip");
          assertThat(e.lineNumber()).isEqualTo(2);
          assertThat(e.line()).isEqualTo("link set dev nonexist0 up");
          assertThat(e.stderr()).contains("nonexist0");
          assertThat(e.getMessage()).contains("ip in network namespace " + host)
              .contains("line 2 \"link set dev nonexist0 up\"").contains("Cannot find device");
        });
    assertThatThrownBy(() -> k.bridgeBatch(List.of("fdb add 02:00:00:00:00:01 dev nonexist0"), false))
        .isInstanceOfSatisfying(KernelException.class, e -> {
          assertThat(e.tool()).isEqualTo("bridge");
          assertThat(e.lineNumber()).isEqualTo(1);
        });
    // nft scripts are transactions: a bad third line leaves not even the table of the first
    assertThatThrownBy(() -> k.nftBatch("add table inet fnpt\nadd chain inet fnpt c\nadd rule inet fnpt c frob\n"))
        .isInstanceOfSatisfying(KernelException.class, e -> {
          assertThat(e.tool()).isEqualTo("nft");
          assertThat(e.lineNumber()).isEqualTo(3);
          assertThat(e.line()).isEqualTo("add rule inet fnpt c frob");
          assertThat(e.getMessage()).contains("syntax error");
        });
    assertThat(k.nftJson("list", "tables")).doesNotContain("fnpt");
    k.nftBatch("add table inet fnpt\nadd chain inet fnpt c\n");
    assertThat(k.nftJson("list", "tables")).contains("\"fnpt\"");
    assertThat(Netns.run("nft", "list", "tables").ok().out()).as("root namespace untouched").doesNotContain("fnpt");
    assertThat(new JsonArray(k.bridgeJson("link", "show"))).isEmpty();

    // what never reaches a tool
    assertThatThrownBy(() -> k.ipBatch(List.of("link set dev lo up; reboot"), false))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> k.ipBatch(List.of("link set dev lo up\nlink del dev lo"), false))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> k.ipBatch(List.of("link set dev lo alias \"x\""), false))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> k.ipJson("link", "show", "-netns", "x")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Kernel.inNetns("../x")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Kernel.ifname("eth0 up")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Kernel.ifname("sixteen-chars-xx")).isInstanceOf(IllegalArgumentException.class);
    assertThat(Kernel.mac("02:42:AC:11:00:02")).isEqualTo("02:42:ac:11:00:02");
    assertThat(Kernel.ipv4Cidr("10.50.0.129/25")).isEqualTo("10.50.0.129/25");
  }

  @Test
  void namesFollowTheSchemeAndRejectEverythingElse() {
    String id = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
    assertThat(Names.hostVeth(id)).isEqualTo("fnph0b1c2d3e4f5");
    assertThat(Names.containerVeth(id)).isEqualTo("fnpc0b1c2d3e4f5");
    assertThat(Names.bridge("n-4f2a")).matches("fnp[0-9a-f]{12}").isEqualTo(Names.bridge("n-4f2a"))
        .isNotEqualTo(Names.bridge("n-4f2b"));
    // SHA-1("n-4f2a") starts with these 12 hex digits
    assertThat(Names.bridge("n-4f2a")).isEqualTo("fnp" + sha1("n-4f2a").substring(0, 12));
    assertThat(Names.vxlan(6515)).isEqualTo("flannel.6515");
    assertThat(Names.vxlan(9_999_999)).hasSize(15);
    assertThatThrownBy(() -> Names.vxlan(10_000_000)).hasMessageContaining("15 characters");
    assertThatThrownBy(() -> Names.hostVeth("0b1c2d3e4f5")).hasMessageContaining("invalid endpoint ID");
    assertThatThrownBy(() -> Names.hostVeth("0b1c2d3e4f5a-")).hasMessageContaining("invalid endpoint ID");
    assertThatThrownBy(() -> Names.bridge("-x")).hasMessageContaining("invalid flannel network ID");
    assertThatThrownBy(() -> Names.bridge("a\nb")).hasMessageContaining("'a\\x0ab'");
    assertThat(Names.isHostVeth("fnph0b1c2d3e4f5")).isTrue();
    assertThat(Names.isHostVeth("fnph0b1c2d3e4f")).isFalse();
  }

  // ---- helpers -----------------------------------------------------------------------------------

  private void deploy(Map<String, String> env) {
    deploy(env, Kernel.inNetns(host));
  }

  private void deploy(Map<String, String> env, Kernel kernel) {
    Map<String, String> all = new HashMap<>(Map.of("ETCD_ENDPOINTS", "http://127.0.0.1:2379",
        "AVAILABLE_SUBNETS", "10.50.0.0/16", "NODE_NAME", "node-test"));
    all.putAll(env);
    Config config = Config.fromEnv(all, () -> "node-test");
    try {
      deployment = vertx.deployVerticle(new FlannelVerticle(config, new EtcdSchema(config.etcdPrefix()), kernel))
          .toCompletionStage().toCompletableFuture().get(20, TimeUnit.SECONDS);
    } catch (Exception e) {
      throw new AssertionError("deploying the FlannelVerticle failed", e);
    }
  }

  private void redeploy(Map<String, String> env) throws Exception {
    vertx.undeploy(deployment).toCompletionStage().toCompletableFuture().get(20, TimeUnit.SECONDS);
    deploy(env);
  }

  @SuppressWarnings("unchecked")
  private <T> T ask(String address, Object body) throws Exception {
    return (T) vertx.eventBus().request(address, body, new DeliveryOptions().setSendTimeout(60_000))
        .toCompletionStage().toCompletableFuture().get(70, TimeUnit.SECONDS).body();
  }

  private ReplyException refused(String address, Object body) throws Exception {
    try {
      Object r = ask(address, body);
      throw new AssertionError("expected " + body + " to be refused, got " + r);
    } catch (ExecutionException e) {
      assertThat(e.getCause()).isInstanceOf(ReplyException.class);
      return (ReplyException) e.getCause();
    }
  }

  private void awaitBatches(int n) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    while (batches.size() < n && System.nanoTime() < deadline) {
      Thread.sleep(10);
    }
    assertThat(batches).as("published kernel batches").hasSizeGreaterThanOrEqualTo(n);
  }

  /** Gives late KernelBatch publications time to arrive before asserting there were none. */
  private static void quiet() throws InterruptedException {
    Thread.sleep(300);
  }

  /** Moves a container end into a container namespace and configures it as libnetwork does. */
  private void join(String containerVeth, String container, String cidr) {
    ns.ip(host, "link", "set", "dev", containerVeth, "netns", container).ok();
    ns.ip(container, "link", "set", "dev", containerVeth, "name", "eth0").ok();
    ns.ip(container, "addr", "add", cidr, "dev", "eth0").ok();
    ns.ip(container, "link", "set", "dev", "eth0", "up").ok();
    ns.ip(container, "route", "add", "10.50.0.0/20", "via", "10.50.0.129").ok();
  }

  /**
   * Whether {@code target} answers from inside {@code from}: ping when installed (three tries of
   * {@code ping -c1 -W1}); else a TCP connection to port 7, where "Connection refused" means the
   * peer's kernel answered with a reset, a full round trip.
   */
  private boolean reach(String from, String target) {
    if (hasPing()) {
      for (int i = 0; i < 3; i++) {
        if (ns.exec(from, "ping", "-c1", "-W1", target).exit() == 0) {
          return true;
        }
      }
      return false;
    }
    for (int i = 0; i < 3; i++) {
      Netns.Result r = ns.exec(from, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/$0/7", target);
      if (r.err().contains("Connection refused")) {
        return true;
      }
    }
    return false;
  }

  private static boolean hasPing() {
    return Netns.run("sh", "-c", "command -v ping").exit() == 0;
  }

  private JsonObject link(String netns, String name) {
    JsonArray a = new JsonArray(ns.ip(netns, "-j", "-d", "link", "show", "dev", name).ok().out());
    assertThat(a).hasSize(1);
    return a.getJsonObject(0);
  }

  private Set<String> linkNames(String netns) {
    Set<String> out = new TreeSet<>();
    for (Object o : new JsonArray(ns.ip(netns, "-j", "link", "show").ok().out())) {
      out.add(((JsonObject) o).getString("ifname"));
    }
    return out;
  }

  private List<String> ports(String netns, String master) {
    List<String> out = new ArrayList<>();
    for (Object o : new JsonArray(ns.ip(netns, "-j", "link", "show", "master", master).ok().out())) {
      out.add(((JsonObject) o).getString("ifname"));
    }
    return out;
  }

  private List<String> ipv4Addresses(String netns, String dev) {
    List<String> out = new ArrayList<>();
    for (Object o : new JsonArray(ns.ip(netns, "-j", "addr", "show", "dev", dev).ok().out())) {
      for (Object i : ((JsonObject) o).getJsonArray("addr_info")) {
        JsonObject a = (JsonObject) i;
        if ("inet".equals(a.getString("family"))) {
          out.add(a.getString("local") + "/" + a.getInteger("prefixlen"));
        }
      }
    }
    return out;
  }

  private static Set<String> rootFnpLinks() {
    Set<String> out = new TreeSet<>();
    for (Object o : new JsonArray(Netns.run("ip", "-j", "link", "show").ok().out())) {
      String n = ((JsonObject) o).getString("ifname");
      if (n != null && n.startsWith("fnp")) {
        out.add(n);
      }
    }
    return out;
  }

  private static String endpointId() {
    byte[] b = new byte[32];
    RANDOM.nextBytes(b);
    return HexFormat.of().formatHex(b);
  }

  private static String sha1(String s) {
    try {
      return HexFormat.of().formatHex(java.security.MessageDigest.getInstance("SHA-1")
          .digest(s.getBytes(java.nio.charset.StandardCharsets.UTF_8)));
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }

  static String sysctl(String ns, String name) throws Exception {
    Process p = new ProcessBuilder("ip", "netns", "exec", ns, "sysctl", "-n", name).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes()).trim();
    p.waitFor();
    return out;
  }
}
