package io.flannelnp.flannel;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.bus.Observed.ReconcileReport;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdMessage.StateChanged;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.flannel.FlannelMessage.EnsureNetwork;
import io.flannelnp.testing.Netns;
import io.vertx.core.Vertx;
import io.vertx.core.eventbus.DeliveryOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The FlannelVerticle's reconcile pass against a real kernel (one host namespace), fed cluster
 * states directly (no etcd): the order and content of the batches it applies, that a pass applies
 * only the difference, and what goes when a lease, this node's lease or a network goes.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FlannelVxlanTest {
  static final String P = "/fnp-vx";
  static final EtcdSchema S = new EtcdSchema(P);
  static final String ME = "198.18.0.11";
  static final String MAC = "0e:00:00:00:00:01";
  static final String DEV = "flannel.6515";
  static final String CONFIG = "{\"Network\":\"10.50.0.0/20\",\"SubnetLen\":25,\"Backend\":{\"Type\":\"vxlan\","
      + "\"VNI\":6515,\"Port\":8472}}";

  Netns ns;
  String host;
  Vertx vertx;
  final AtomicReference<ClusterState> state = new AtomicReference<>(ClusterState.EMPTY);
  final List<KernelBatch> batches = new CopyOnWriteArrayList<>();
  final List<ReconcileReport> reports = new CopyOnWriteArrayList<>();
  final Map<String, String> kvs = new HashMap<>();
  long revision;

  @BeforeEach
  void setUp() throws Exception {
    ns = new Netns();
    host = ns.add("h");
    ns.ipBatch(host, List.of("link add name eth0 type veth peer name eth0p", "addr add " + ME + "/24 dev eth0",
        "link set dev eth0 up", "link set dev eth0p up")).ok();
    vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    vertx.eventBus().consumer(Addresses.STATE_SNAPSHOT, m -> m.reply(state.get()));
    // sysctl batches (forwarding on, redirects off at bridge creation) are not what these tests pin down
    vertx.eventBus().<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> {
      if (!"sysctl".equals(m.body().tool())) {
        batches.add(m.body());
      }
    });
    vertx.eventBus().<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, m -> reports.add(m.body()));
    Config config = Config.fromEnv(Map.of("ETCD_ENDPOINTS", "http://127.0.0.1:2379", "ETCD_PREFIX", P,
        "AVAILABLE_SUBNETS", "10.50.0.0/16", "NODE_NAME", "vx1", "DEFAULT_FLANNEL_OPTIONS", "-public-ip=" + ME), () -> "vx1");
    vertx.deployVerticle(new FlannelVerticle(config, S, Kernel.inNetns(host))).await(20, TimeUnit.SECONDS);
  }

  @AfterEach
  void tearDown() throws Exception {
    try {
      vertx.close().await(20, TimeUnit.SECONDS);
    } finally {
      ns.close();
    }
    assertThat(Netns.list()).noneMatch(n -> n.startsWith(ns.stem()));
  }

  /** Network a as flannel-np's IPAM writes it: its config and the reservations that name it. */
  void putNetwork() {
    kvs.put(S.networkConfig("a"), CONFIG);
    kvs.put(S.addressSpace(io.flannelnp.ipam.Cidr.parse("10.50.0.0/20")), "a");
    kvs.put(P + "/vnis/6515", "a");
  }

  static String lease(String ip, String mac) {
    return "{\"PublicIP\":\"" + ip + "\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":6515,"
        + "\"VtepMAC\":\"" + mac + "\"}}";
  }

  /** Publishes the current kvs as a new revision, wakes the plane, waits for its report. */
  ReconcileReport pass() throws Exception {
    revision++;
    Map<String, KeyValue> m = new HashMap<>();
    kvs.forEach((k, v) -> m.put(k, new KeyValue(k, v, 1, revision, 1, 0)));
    state.set(new ClusterState(revision, true, Map.copyOf(m)));
    long rev = revision;
    vertx.eventBus().publish(Addresses.STATE_CHANGED, new StateChanged(rev, Set.of(Family.SUBNET_LEASES), false));
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    while (System.nanoTime() < deadline) {
      for (ReconcileReport r : reports) {
        if (r.revision() == rev) {
          Thread.sleep(50); // the batches are published before the report; let them arrive
          return r;
        }
      }
      Thread.sleep(10);
    }
    throw new AssertionError("no report for revision " + rev + "; reports " + reports);
  }

  List<KernelBatch> batchesOf(long rev) {
    return batches.stream().filter(b -> b.revision() == rev).toList();
  }

  @Test
  void aPassAppliesNeighboursThenFdbThenRoutesInThreeBatchesAndAnotherPassNothing() throws Exception {
    putNetwork();
    kvs.put(S.subnet("a", io.flannelnp.ipam.Cidr.parse("10.50.0.128/25")), lease(ME, MAC));
    kvs.put(P + "/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"));
    kvs.put(P + "/networks/a/subnets/10.50.1.128-25", lease("198.18.0.13", "0e:00:00:00:00:03"));
    ReconcileReport r = pass();
    assertThat(r.ok()).as(r.summary()).isTrue();
    assertThat(r.summary()).contains("node vx1 " + ME).contains(DEV + " (2 peers)").contains("nft table written");
    List<KernelBatch> b = batchesOf(revision);
    assertThat(b).extracting(KernelBatch::tool).containsExactly("ip", "bridge", "ip", "nft");
    assertThat(b).allMatch(KernelBatch::ok).allMatch(x -> x.plane().equals("flannel"));
    assertThat(lines(b.get(0))).containsExactly(
        "link add name " + DEV + " address " + MAC + " mtu 1450 type vxlan id 6515 local " + ME
            + " dev eth0 dstport 8472 nolearning",
        "link set dev " + DEV + " alias fnp-vxlan:a",
        "addr replace 10.50.0.128/32 dev " + DEV,
        "link set dev " + DEV + " up",
        "neigh replace 10.50.1.0 lladdr 0e:00:00:00:00:02 dev " + DEV + " nud permanent",
        "neigh replace 10.50.1.128 lladdr 0e:00:00:00:00:03 dev " + DEV + " nud permanent");
    assertThat(lines(b.get(1))).containsExactly(
        "fdb replace 0e:00:00:00:00:02 dev " + DEV + " dst 198.18.0.12 self permanent",
        "fdb replace 0e:00:00:00:00:03 dev " + DEV + " dst 198.18.0.13 self permanent");
    assertThat(lines(b.get(2))).containsExactly(
        "route replace 10.50.1.0/25 via 10.50.1.0 dev " + DEV + " onlink",
        "route replace 10.50.1.128/25 via 10.50.1.128 dev " + DEV + " onlink");
    assertThat(routes()).containsExactly("10.50.1.0/25 via 10.50.1.0 onlink", "10.50.1.128/25 via 10.50.1.128 onlink");
    assertThat(neighs()).containsExactly("10.50.1.0 0e:00:00:00:00:02", "10.50.1.128 0e:00:00:00:00:03");
    assertThat(fdb()).containsExactly("0e:00:00:00:00:02 198.18.0.12", "0e:00:00:00:00:03 198.18.0.13");

    ReconcileReport again = pass();
    assertThat(again.summary()).contains("no kernel changes").contains("nft unchanged");
    assertThat(batchesOf(revision)).as("a pass over an unchanged state applies nothing").isEmpty();
  }

  @Test
  void aPartialPassThatFailsIsFollowedByAFullOneThatRepairs() throws Exception {
    putNetwork();
    kvs.put(P + "/networks/a/subnets/10.50.0.128-25", lease(ME, MAC));
    kvs.put(P + "/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"));
    assertThat(pass().ok()).isTrue();
    // only a peer changes: the pass trusts what the last one left and reads nothing back...
    kvs.put(P + "/networks/a/subnets/10.50.1.128-25", lease("198.18.0.13", "0e:00:00:00:00:03"));
    ReconcileReport partial = pass();
    assertThat(partial.ok()).isTrue();
    assertThat(partial.summary()).contains("3 kernel changes (partial)");
    // ...so a device deleted behind its back makes the next partial pass fail, and the retry that
    // follows (a full pass) re-creates the device with every entry
    ns.ip(host, "link", "del", "dev", DEV).ok();
    kvs.put(P + "/networks/a/subnets/10.50.2.0-25", lease("198.18.0.14", "0e:00:00:00:00:04"));
    ReconcileReport failed = pass();
    assertThat(failed.ok()).isFalse();
    assertThat(failed.summary()).contains("(partial)").contains("FAILED").contains(DEV);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    while ((!linkNames().contains(DEV) || routes().size() < 3) && System.nanoTime() < deadline) {
      Thread.sleep(50);
    }
    assertThat(routes()).containsExactly("10.50.1.0/25 via 10.50.1.0 onlink", "10.50.1.128/25 via 10.50.1.128 onlink",
        "10.50.2.0/25 via 10.50.2.0 onlink");
    assertThat(neighs()).hasSize(3);
    assertThat(fdb()).hasSize(3);
    assertThat(reports.get(reports.size() - 1).ok()).isTrue();
  }

  @Test
  void changedAndRemovedLeasesApplyOnlyTheDifference() throws Exception {
    putNetwork();
    kvs.put(P + "/networks/a/subnets/10.50.0.128-25", lease(ME, MAC));
    kvs.put(P + "/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"));
    kvs.put(P + "/networks/a/subnets/10.50.1.128-25", lease("198.18.0.13", "0e:00:00:00:00:03"));
    assertThat(pass().ok()).isTrue();
    int ifindex = ifindex();

    // a peer restarted with a new VTEP MAC (a stock flanneld picks a random one)
    kvs.put(P + "/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:22"));
    assertThat(pass().ok()).isTrue();
    List<KernelBatch> b = batchesOf(revision);
    assertThat(b).extracting(KernelBatch::tool).containsExactly("ip", "bridge");
    assertThat(lines(b.get(0))).containsExactly("neigh replace 10.50.1.0 lladdr 0e:00:00:00:00:22 dev " + DEV
        + " nud permanent");
    assertThat(lines(b.get(1))).containsExactly("fdb del 0e:00:00:00:00:02 dev " + DEV + " dst 198.18.0.12 self",
        "fdb replace 0e:00:00:00:00:22 dev " + DEV + " dst 198.18.0.12 self permanent");

    // a lease deleted (or expired): route, neighbour, FDB entry, in that order
    kvs.remove(P + "/networks/a/subnets/10.50.1.128-25");
    assertThat(pass().ok()).isTrue();
    b = batchesOf(revision);
    assertThat(b).extracting(KernelBatch::tool).containsExactly("ip", "bridge");
    assertThat(lines(b.get(0))).containsExactly("route del 10.50.1.128/25 dev " + DEV, "neigh del 10.50.1.128 dev " + DEV);
    assertThat(lines(b.get(1))).containsExactly("fdb del 0e:00:00:00:00:03 dev " + DEV + " dst 198.18.0.13 self");
    assertThat(routes()).containsExactly("10.50.1.0/25 via 10.50.1.0 onlink");
    assertThat(neighs()).containsExactly("10.50.1.0 0e:00:00:00:00:22");
    assertThat(fdb()).containsExactly("0e:00:00:00:00:22 198.18.0.12");
    assertThat(ifindex()).as("the device itself was never touched").isEqualTo(ifindex);
  }

  @Test
  void detachedVethsACrashLeftAreDeletedByAFullPassAndOthersStay() throws Exception {
    // DeleteEndpoint renamed these pairs and the daemon died before its reaper deleted them
    String z1 = Names.detached();
    String z2 = Names.detached();
    String z3 = Names.detached();
    ns.ipBatch(host, List.of("link add name " + z1 + " type veth peer name " + z2,
        "link add name " + z3 + " type bridge", "link add name fnqkeep type veth peer name fnqkeepp")).ok();
    putNetwork();
    kvs.put(S.subnet("a", io.flannelnp.ipam.Cidr.parse("10.50.0.128/25")), lease(ME, MAC));
    ReconcileReport r = pass();
    assertThat(r.ok()).as(r.summary()).isTrue();
    List<String> names = ns.ip(host, "-o", "link", "show").ok().out().lines()
        .map(l -> l.split(":")[1].strip().split("@")[0]).toList();
    assertThat(names).as("detached veths gone, a pair with both sides detached in one go")
        .doesNotContain(z1, z2, z3).contains("fnqkeep", "fnqkeepp");
  }

  @Test
  void aDeviceThatCannotBeFixedInPlaceIsRecreatedAndForeignDevicesStay() throws Exception {
    // someone made flannel.6515 with another VNI and local address; and a stock flanneld's flannel.1
    ns.ipBatch(host, List.of("link add name " + DEV + " type vxlan id 42 local 198.18.0.99 dstport 4789",
        "link add name flannel.1 type vxlan id 1 local " + ME + " dstport 8472 nolearning")).ok();
    putNetwork();
    kvs.put(P + "/networks/a/subnets/10.50.0.128-25", lease(ME, MAC));
    kvs.put(P + "/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"));
    assertThat(pass().ok()).isTrue();
    assertThat(lines(batchesOf(revision).get(0))).startsWith("link del dev " + DEV, "link add name " + DEV + " address "
        + MAC + " mtu 1450 type vxlan id 6515 local " + ME + " dev eth0 dstport 8472 nolearning");
    JsonObject d = link(DEV).getJsonObject("linkinfo").getJsonObject("info_data");
    assertThat(d.getLong("id")).isEqualTo(6515);
    assertThat(d.getInteger("port")).isEqualTo(8472);
    assertThat(routes()).containsExactly("10.50.1.0/25 via 10.50.1.0 onlink");
    assertThat(linkNames()).contains("flannel.1");
  }

  @Test
  void withoutItsOwnLeaseTheDeviceGoesAndWithoutTheNetworkTheBridgeAndTableToo() throws Exception {
    putNetwork();
    kvs.put(P + "/networks/a/subnets/10.50.0.128-25", lease(ME, MAC));
    kvs.put(P + "/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"));
    assertThat(pass().ok()).isTrue();
    vertx.eventBus().request(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork("a", 6515, "10.50.0.129/25"),
        new DeliveryOptions().setSendTimeout(20_000)).await(20, TimeUnit.SECONDS);
    assertThat(linkNames()).contains(DEV, Names.bridge("a"));
    assertThat(nft()).contains("10.50.0.0/20");

    kvs.remove(P + "/networks/a/subnets/10.50.0.128-25");
    assertThat(pass().ok()).isTrue();
    assertThat(lines(batchesOf(revision).get(0))).containsExactly("link del dev " + DEV);
    assertThat(linkNames()).doesNotContain(DEV).contains(Names.bridge("a"));

    kvs.clear();
    ReconcileReport r = pass();
    assertThat(r.ok()).isTrue();
    assertThat(r.summary()).contains("nft table removed");
    assertThat(linkNames()).doesNotContain(DEV, Names.bridge("a"));
    assertThat(nft()).isEmpty();
  }

  @Test
  void withoutAPublicIpThePassFailsClearlyAndTearsNothingDown() throws Exception {
    // a second verticle for this host that cannot know its public IP (no -public-ip, no default route)
    Vertx v2 = Vertx.vertx();
    try {
      Codecs.registerAll(v2.eventBus());
      List<ReconcileReport> r2 = new CopyOnWriteArrayList<>();
      putNetwork();
      kvs.put(P + "/networks/a/subnets/10.50.0.128-25", lease(ME, MAC));
      assertThat(pass().ok()).isTrue();
      Map<String, KeyValue> m = new HashMap<>();
      kvs.forEach((k, v) -> m.put(k, new KeyValue(k, v, 1, 1, 1, 0)));
      v2.eventBus().consumer(Addresses.STATE_SNAPSHOT, msg -> msg.reply(new ClusterState(1, true, Map.copyOf(m))));
      v2.eventBus().<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, msg -> r2.add(msg.body()));
      Config config = Config.fromEnv(Map.of("ETCD_ENDPOINTS", "http://127.0.0.1:2379", "ETCD_PREFIX", P,
          "AVAILABLE_SUBNETS", "10.50.0.0/16", "NODE_NAME", "vx1"), () -> "vx1");
      v2.deployVerticle(new FlannelVerticle(config, S, Kernel.inNetns(host))).await(20, TimeUnit.SECONDS);
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
      while (r2.isEmpty() && System.nanoTime() < deadline) {
        Thread.sleep(20);
      }
      assertThat(r2).isNotEmpty();
      assertThat(r2.get(0).ok()).isFalse();
      assertThat(r2.get(0).summary()).contains("public IP unknown")
          .contains("no default route").contains("set -iface or -public-ip in DEFAULT_FLANNEL_OPTIONS");
      assertThat(linkNames()).as("nothing torn down").contains(DEV);
    } finally {
      v2.close().await(20, TimeUnit.SECONDS);
    }
  }

  // ---- kernel reads ------------------------------------------------------------------------

  static List<String> lines(KernelBatch b) {
    return List.of(b.text().strip().split("\n"));
  }

  int ifindex() {
    return link(DEV).getInteger("ifindex");
  }

  JsonObject link(String dev) {
    return new JsonArray(ns.ip(host, "-j", "-d", "link", "show", "dev", dev).ok().out()).getJsonObject(0);
  }

  Set<String> linkNames() {
    Set<String> out = new TreeSet<>();
    for (Object o : new JsonArray(ns.ip(host, "-j", "link", "show").ok().out())) {
      out.add(((JsonObject) o).getString("ifname"));
    }
    return out;
  }

  List<String> routes() {
    List<String> out = new ArrayList<>();
    for (Object o : new JsonArray(ns.ip(host, "-j", "route", "show", "dev", DEV).ok().out())) {
      JsonObject r = (JsonObject) o;
      out.add(r.getString("dst") + " via " + r.getString("gateway")
          + (r.getJsonArray("flags", new JsonArray()).contains("onlink") ? " onlink" : ""));
    }
    return out.stream().sorted().toList();
  }

  List<String> neighs() {
    List<String> out = new ArrayList<>();
    for (Object o : new JsonArray(ns.ip(host, "-j", "-4", "neigh", "show", "dev", DEV, "nud", "permanent").ok().out())) {
      JsonObject n = (JsonObject) o;
      out.add(n.getString("dst") + " " + n.getString("lladdr"));
    }
    return out.stream().sorted().toList();
  }

  List<String> fdb() {
    List<String> out = new ArrayList<>();
    for (Object o : new JsonArray(Netns.run("bridge", "-netns", host, "-j", "fdb", "show", "dev", DEV).ok().out())) {
      JsonObject f = (JsonObject) o;
      if (f.getString("dst") != null) {
        out.add(f.getString("mac") + " " + f.getString("dst"));
      }
    }
    return out.stream().sorted().toList();
  }

  String nft() {
    Netns.Result r = Netns.run("ip", "netns", "exec", host, "nft", "list", "table", "inet", "flannel-np");
    return r.exit() == 0 ? r.out() : "";
  }
}
