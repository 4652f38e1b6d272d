package io.flannelnp.lb;

import static io.flannelnp.testing.PluginClient.j;
import static io.flannelnp.testing.Poll.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.Daemon;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.EtcdWatchVerticle;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.flannel.Names;
import io.flannelnp.log.Logging;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Lab;
import io.flannelnp.testing.Netns;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * Swarm VIPs on the multi-host namespace lab ({@link Lab}): three hosts, each with its own
 * in-process daemon ({@code new Daemon(config, Kernel.inNetns(host))}: plugin socket, IPAM, the
 * Flannel plane with real VXLAN between the hosts), one real etcd. The network and the containers
 * are made with the plugin calls Docker makes and plumbed as libnetwork does; services and tasks
 * are written to etcd as the Docker integration writes them. A client and a task on every host.
 *
 * <p>Until the daemon hands its LoadBalancerVerticle the kernel, each host also runs one next to
 * it (a Vert.x with the etcd watch and the plane, programming the host namespace); if the daemon
 * already programs the VIP table, that is used instead. Ports get hairpin mode and bridges no ICMP
 * redirects here, as the Flannel plane should set them (see the load balancer's report).
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class LoadBalancerLabTest {
  static final String RUN = Long.toHexString(System.nanoTime() & 0xffffff);
  static final String PREFIX = "/fnp-lblab-" + RUN;
  static final EtcdSchema SCHEMA = new EtcdSchema(PREFIX);
  static final String FID = "lblab-" + RUN;
  static final String GLOBAL = "FlannelGlobal";
  static final String LOCAL = "FlannelLocal";
  static final String GW_OPT = "com.docker.network.gateway";
  static final String MAC_OPT = "com.docker.network.endpoint.macaddress";
  static final Duration CONVERGE = Duration.ofSeconds(15);
  static final String SVC = "websvc" + RUN;

  static EtcdServer etcdServer;
  static Vertx testVertx;
  static EtcdStore etcd;
  static Lab lab;
  static Path dir;
  static LbPeers peers;
  static String rootTablesBefore;
  static final Map<String, Host> hosts = new LinkedHashMap<>();
  static String netId;
  static JsonObject generic;
  static String vip;
  static int seq;
  static final List<Ctr> clients = new ArrayList<>();
  static final List<Ctr> tasks = new ArrayList<>();

  /** A KernelBatch and when the test saw it. */
  record Seen(long nanos, KernelBatch batch) {}

  /** A container on a host: namespace, address, endpoint, etcd record ID. */
  record Ctr(String name, String ns, Host host, String ip, String endpointId, String id) {}

  /** A lab host with its in-process daemon ({@link Lab.DaemonHost}) and, if needed, a load balancer beside it. */
  static final class Host extends Lab.DaemonHost {
    final List<Seen> batches = new CopyOnWriteArrayList<>();
    Vertx vertx;
    EtcdStore store;
    String gateway;

    Host(int i) {
      super(lab, i, etcdServer, PREFIX, dir);
    }

    /** The load balancer beside the daemon, unless the daemon already programs it. */
    void startLb() throws Exception {
      if (LoadBalancerVerticle.programs(ns)) {
        return; // the daemon's own plane has the kernel
      }
      vertx = Vertx.vertx();
      Codecs.registerAll(vertx.eventBus());
      vertx.eventBus().<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> batches.add(new Seen(System.nanoTime(), m.body())));
      store = new EtcdStore(vertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
      vertx.deployVerticle(new EtcdWatchVerticle(store, SCHEMA)).await(10, TimeUnit.SECONDS);
      vertx.deployVerticle(new LoadBalancerVerticle(SCHEMA, Kernel.inNetns(ns))).await(10, TimeUnit.SECONDS);
    }

    @Override
    public void stop() throws Exception {
      if (vertx != null) {
        store.close();
        vertx.close().await(10, TimeUnit.SECONDS);
        vertx = null;
      }
      super.stop();
    }
  }

  @BeforeAll
  static void up() throws Exception {
    Logging.configure("warn");
    rootTablesBefore = Netns.run("nft", "list", "tables").ok().out();
    etcdServer = EtcdServer.start();
    testVertx = Vertx.vertx();
    etcd = new EtcdStore(testVertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    dir = Files.createTempDirectory("fnp-lblab");
    peers = new LbPeers(dir);
    lab = new Lab();
    for (int i = 1; i <= 3; i++) {
      hosts.put("h" + i, new Host(i));
    }
    for (Host h : hosts.values()) {
      h.start();
    }
    for (Host h : hosts.values()) {
      h.startLb();
    }

    // docker network create (leader h1) and every node's first use of it
    Host leader = hosts.get("h1");
    JsonObject pool = leader.ok("/IpamDriver.RequestPool", j("AddressSpace", GLOBAL, "Pool", "", "SubPool", "",
        "Options", j("flannel-id", FID), "V6", false));
    String subnet = pool.getString("Pool");
    String gw = leader.ok("/IpamDriver.RequestAddress", j("PoolID", pool.getString("PoolID"), "Address", "",
        "Options", j("flannel-id", FID, "RequestAddressType", GW_OPT))).getString("Address");
    netId = ("n" + FID.replaceAll("[^a-z0-9]", "") + "000000000000000000000000").substring(0, 25);
    generic = leader.ok("/NetworkDriver.AllocateNetwork", j("NetworkID", netId, "Options", j(),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "", "Pool", subnet, "Gateway", gw)), "IPv6Data", null))
        .getJsonObject("Options");
    vip = leader.ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL + "/" + FID, "Address", "",
        "Options", j("flannel-id", FID, "com.docker.network.ipam.serial", "true"))).getString("Address");
    for (Host h : hosts.values()) {
      h.ok("/IpamDriver.RequestPool", j("AddressSpace", LOCAL, "Pool", subnet, "SubPool", "",
          "Options", j("flannel-id", FID), "V6", false));
      String g = h.ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL + "/" + FID, "Address", "10.50.0.1",
          "Options", j("RequestAddressType", GW_OPT))).getString("Address");
      h.gateway = g.substring(0, g.indexOf('/'));
      h.ok("/NetworkDriver.CreateNetwork", j("NetworkID", netId,
          "Options", j("com.docker.network.generic", generic, "com.docker.network.enable_ipv6", false),
          "IPv4Data", new JsonArray().add(j("AddressSpace", LOCAL, "Pool", subnet, "Gateway", "10.50.0.1/20")),
          "IPv6Data", new JsonArray()));
      String br = Names.bridge(FID);
      lab.ns.exec(h.ns, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0").ok();
      lab.ns.exec(h.ns, "sysctl", "-qw", "net.ipv4.conf." + br + ".send_redirects=0").ok();
    }
    put(SCHEMA.dockerNetwork(netId), new DockerNetwork(netId, "lbnet", "flannel-np", FID, subnet).toJson());

    for (Host h : hosts.values()) {
      Ctr t = attach(h, "b" + h.i);
      peers.serve(t.ns(), t.name().toUpperCase(), "80", 80);
      tasks.add(t);
      clients.add(attach(h, "c" + h.i));
    }
    // the VXLAN plane is up when every client reaches every task directly
    for (Ctr c : clients) {
      for (Ctr t : tasks) {
        await(c.name() + " reaches " + t.name() + " directly", CONVERGE,
            () -> peers.connect(c.ns(), "tcp", t.ip(), 80, 1).err().isEmpty());
      }
    }
  }

  static Ctr attach(Host h, String name) throws Exception {
    int s = ++seq;
    String mac = String.format("02:42:0a:%02x:%02x:%02x", (s >> 16) & 0xff, (s >> 8) & 0xff, s & 0xff);
    String ep = String.format("%08x", s) + "d".repeat(56);
    String cidr = h.ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL + "/" + FID, "Address", "",
        "Options", j(MAC_OPT, mac))).getString("Address");
    h.ok("/NetworkDriver.CreateEndpoint", j("NetworkID", netId, "EndpointID", ep,
        "Interface", j("Address", cidr, "AddressIPv6", "", "MacAddress", mac), "Options", j()));
    JsonObject join = h.ok("/NetworkDriver.Join", j("NetworkID", netId, "EndpointID", ep,
        "SandboxKey", "/var/run/docker/netns/" + ep.substring(0, 12), "Options", j()));
    JsonObject route = join.getJsonArray("StaticRoutes").getJsonObject(0);
    String c = lab.ns.add(name);
    lab.plug(List.of(new Lab.Plug(c, h.ns, join.getJsonObject("InterfaceName").getString("SrcName"), cidr,
        route.getString("Destination"), route.getString("NextHop"), "172.18.0." + (10 + s), "gwv" + s)));
    // what a task needs to reach itself through its VIP on a br_netfilter host
    lab.ns.ip(h.ns, "link", "set", "dev", Names.hostVeth(ep), "type", "bridge_slave", "hairpin", "on").ok();
    String ip = cidr.substring(0, cidr.indexOf('/'));
    return new Ctr(name, c, h, ip, ep, (name + RUN + "0".repeat(64)).substring(0, 64));
  }

  @AfterAll
  static void down() throws Exception {
    List<Process> servers = peers == null ? List.of() : peers.servers();
    List<KeyValue> left;
    String stem = lab == null ? null : lab.ns.stem();
    try {
      for (Host h : hosts.values()) {
        h.stop();
      }
      if (peers != null) {
        peers.close();
      }
    } finally {
      if (lab != null) {
        lab.close();
      }
      left = Lab.closeEtcd(etcdServer, testVertx, etcd, PREFIX);
      Lab.deleteDir(dir);
    }
    assertThat(left).as("etcd keys left").isEmpty();
    assertThat(servers).as("task processes left").noneMatch(Process::isAlive);
    if (stem != null) {
      assertThat(Netns.list()).as("namespaces left").noneMatch(n -> n.startsWith(stem));
    }
    assertThat(Netns.run("nft", "list", "tables").ok().out()).as("root namespace tables untouched")
        .isEqualTo(rootTablesBefore);
  }

  // ---- helpers ---------------------------------------------------------------------------------

  static void put(String key, String value) throws Exception {
    etcd.put(key, value).await(5, TimeUnit.SECONDS);
  }

  static void task(Ctr c, String state) throws Exception {
    put(SCHEMA.dockerContainer(c.host().name, c.id()), new ContainerRecord(c.id(), SVC + ".1." + c.name(), c.name(),
        c.host().name, SVC, SVC, "task" + c.name(), SVC + ".1." + c.name(), state, "/var/run/docker/netns/" + c.name(),
        Map.of(netId, new ContainerRecord.Attachment(c.ip(), c.endpointId(), List.of(), ""))).toJson());
  }

  static String vipIp() {
    return vip.substring(0, vip.indexOf('/'));
  }

  static void awaitBackends(List<Ctr> want) {
    for (Host h : hosts.values()) {
      await(h.name + ": " + vipIp() + " → " + want.stream().map(Ctr::name).toList(), CONVERGE, () -> {
        LbTables.Snapshot s = LbTables.read(h.ns);
        String verdict = want.isEmpty() ? "goto no-endpoints" : "goto pick-" + want.size();
        List<String> ips = s.backends().entrySet().stream().filter(e -> e.getKey().startsWith(vipIp() + " . "))
            .map(Map.Entry::getValue).sorted().toList();
        return verdict.equals(s.services().get(vipIp())) && ips.equals(want.stream().map(Ctr::ip).sorted().toList());
      });
    }
  }

  // ---- the scenario ----------------------------------------------------------------------------

  @Test
  @Order(1)
  void aClientOnEveryHostSpreadsTcpAndUdpOverTasksOnAllThreeHosts() throws Exception {
    put(SCHEMA.dockerService(SVC), new ServiceRecord(SVC, "web", ServiceRecord.EndpointMode.VIP, Map.of(netId, vip),
        Map.of()).toJson());
    for (Ctr t : tasks) {
      task(t, "running");
    }
    awaitBackends(tasks);
    for (Ctr c : clients) {
      for (String proto : List.of("tcp", "udp")) {
        LbPeers.Seen seen = peers.connect(c.ns(), proto, vipIp(), 80, 300);
        assertThat(seen.err()).as(c.name() + " " + proto + " failures").isEmpty();
        assertThat(seen.total()).isEqualTo(300);
        Map<String, Integer> by = seen.byTask();
        for (Ctr t : tasks) {
          assertThat(by.getOrDefault(t.name().toUpperCase(), 0)).as(c.name() + " " + proto + " → " + t.name() + ": " + by)
              .isGreaterThanOrEqualTo(60);
          String expectPeer = t.host() == c.host() ? c.host().gateway : c.ip();
          assertThat(seen.peersOf(t.name().toUpperCase())).as(c.name() + " " + proto + ": what " + t.name() + " saw")
              .containsExactly(expectPeer);
        }
      }
    }
  }

  @Test
  @Order(2)
  void hairpinATaskReachesItsOwnServiceIncludingItself() {
    for (Ctr t : tasks) {
      LbPeers.Seen seen = peers.connect(t.ns(), "tcp", vipIp(), 80, 90);
      assertThat(seen.err()).as(t.name() + " → its own VIP").isEmpty();
      assertThat(seen.peersOf(t.name().toUpperCase())).as(t.name() + " reached itself, masqueraded")
          .containsExactly(t.host().gateway);
      for (Ctr other : tasks) {
        if (other.host() != t.host()) {
          assertThat(seen.peersOf(other.name().toUpperCase())).containsExactly(t.ip());
        }
      }
    }
  }

  @Test
  @Order(3)
  void scaleDownTakesATaskOutWithin100msOnEveryHostAndScaleToZeroRefuses() throws Exception {
    Ctr b2 = tasks.get(1);
    long t0 = System.nanoTime();
    task(b2, "stopping");
    Predicate<KernelBatch> without = b -> b.ok() && b.text().contains(vipIp() + " ") && !b.text().contains(b2.ip() + " ")
        && !b.text().contains(b2.ip() + "\n") && !b.text().endsWith(b2.ip());
    for (Host h : hosts.values()) {
      if (h.vertx == null) {
        continue; // the daemon's plane: measured through the table below
      }
      await(h.name + " applied the scale-down", CONVERGE,
          () -> h.batches.stream().anyMatch(s -> s.nanos() >= t0 && without.test(s.batch())));
      long ms = (h.batches.stream().filter(s -> s.nanos() >= t0 && without.test(s.batch())).findFirst().orElseThrow()
          .nanos() - t0) / 1_000_000;
      assertThat(ms).as(h.name + ": ms from the etcd write to the applied map update").isLessThanOrEqualTo(100);
    }
    awaitBackends(List.of(tasks.get(0), tasks.get(2)));
    for (Ctr c : clients) {
      LbPeers.Seen seen = peers.connect(c.ns(), "tcp", vipIp(), 80, 100);
      assertThat(seen.err()).isEmpty();
      assertThat(seen.byTask()).as(c.name()).doesNotContainKey("B2");
    }

    task(tasks.get(0), "stopping");
    etcd.delete(SCHEMA.dockerContainer(tasks.get(2).host().name, tasks.get(2).id())).await(5, TimeUnit.SECONDS);
    awaitBackends(List.of());
    for (Ctr c : clients) {
      LbPeers.Seen tcp = peers.connect(c.ns(), "tcp", vipIp(), 80, 3);
      assertThat(tcp.err()).as(c.name() + " TCP, no task").isEqualTo(Map.of("ConnectionRefusedError", 3));
      assertThat(tcp.worstMs()).isLessThan(500);
      LbPeers.Seen udp = peers.connect(c.ns(), "udp", vipIp(), 80, 2);
      assertThat(udp.err()).as(c.name() + " UDP, no task").isEqualTo(Map.of("ConnectionRefusedError", 2));
    }
    for (Ctr t : tasks) {
      task(t, "running");
    }
    awaitBackends(tasks);
    assertThat(peers.connect(clients.get(2).ns(), "tcp", vipIp(), 80, 60).err()).isEmpty();
  }

  /**
   * Issue 5: the WHOLE daemon of one host (plugin API, IPAM, etcd watch, Flannel, load balancer,
   * DNS) stops and a new one starts on the same host namespace while clients keep connecting to
   * the VIP, from that host and from another: every connection succeeds (the kernel state stays
   * while no daemon runs), the new daemon's full sync replaces the table (new handle), and the
   * rules after it equal the rules before on every host.
   */
  @Test
  @Order(4)
  void aWholeDaemonRestartKeepsVipConnectionsWorkingAndLeavesEqualRules() throws Exception {
    awaitBackends(tasks);
    Host h = hosts.get("h2");
    assertThat(LoadBalancerVerticle.programs(h.ns)).as("h2's own daemon programs its VIPs").isTrue();
    Map<String, LbTables.Snapshot> before = new LinkedHashMap<>();
    for (Host x : hosts.values()) {
      before.put(x.name, LbTables.read(x.ns));
    }
    long handleBefore = tableHandle(h.ns);
    double seconds = 20;
    long loopEnd = System.nanoTime() + (long) (seconds * 1e9);
    var local = peers.loop(clients.get(1).ns(), vipIp(), 80, seconds, 40);
    var remote = peers.loop(clients.get(0).ns(), vipIp(), 80, seconds, 40);
    Thread.sleep(1000);

    h.stop(); // the in-process daemon as a whole; its Vert.x is closed
    assertThat(LoadBalancerVerticle.programs(h.ns)).as("no plane programs h2 while it is down").isFalse();
    assertThat(Files.exists(dir.resolve("h2.sock"))).as("the plugin socket went with the daemon").isFalse();
    Thread.sleep(1500); // connections run on kernel state alone meanwhile
    h.start();
    await("h2's new daemon replaced the table with its full sync", CONVERGE, () -> tableHandle(h.ns) != handleBefore);
    assertThat(System.nanoTime()).as("the restart finished while the clients were still looping").isLessThan(loopEnd);

    LbPeers.Seen l = local.get(60, TimeUnit.SECONDS);
    LbPeers.Seen r = remote.get(60, TimeUnit.SECONDS);
    assertThat(l.err()).as("c2 (on the restarted host) → VIP during the restart").isEmpty();
    assertThat(r.err()).as("c1 → VIP (tasks on h2 included) during the restart").isEmpty();
    assertThat(l.total()).as("connections c2 made").isGreaterThan(100);
    assertThat(r.total()).as("connections c1 made").isGreaterThan(100);
    assertThat(l.byTask()).as("c2 reached every task").containsKeys("B1", "B2", "B3");
    assertThat(r.byTask()).as("c1 reached every task").containsKeys("B1", "B2", "B3");
    for (Host x : hosts.values()) {
      assertThat(LbTables.read(x.ns)).as(x.name + ": rules after the restart equal those before")
          .isEqualTo(before.get(x.name));
    }
    // the restarted daemon serves the plugin protocol again
    h.ok("/NetworkDriver.GetCapabilities", j());
  }

  /**
   * The node itself (a process in the host namespace, not in a container) connects to the VIP:
   * the output chain sends it to the tasks on every host, TCP and UDP, every connection answered.
   */
  @Test
  @Order(5)
  void theNodeItselfReachesTheVipOnEveryHost() {
    awaitBackends(tasks);
    for (Host h : hosts.values()) {
      // A real node has a default route, so connect() finds a route and the output hook DNATs
      // before anything leaves; the lab hosts have none (nothing may go outside), so this host
      // route for the VIP stands in for it. No packet takes it: every one is DNATed to a task.
      lab.ns.ip(h.ns, "route", "replace", vipIp() + "/32", "dev", "eth0").ok();
      LbPeers.Seen tcp = peers.connect(h.ns, "tcp", vipIp(), 80, 90);
      assertThat(tcp.err()).as(h.name + " (host namespace) → VIP, TCP").isEmpty();
      assertThat(tcp.byTask()).as(h.name + " reached the tasks on every host").containsOnlyKeys("B1", "B2", "B3");
      LbPeers.Seen udp = peers.connect(h.ns, "udp", vipIp(), 80, 45);
      assertThat(udp.err()).as(h.name + " (host namespace) → VIP, UDP").isEmpty();
      assertThat(udp.byTask()).as(h.name + " reached the tasks on every host, UDP").containsOnlyKeys("B1", "B2", "B3");
    }
  }

  /** The handle of our table in {@code ns}: a full sync (delete + add table) changes it. */
  static long tableHandle(String ns) {
    String out = Netns.run("ip", "netns", "exec", ns, "nft", "-j", "list", "tables").ok().out();
    for (Object o : new JsonObject(out).getJsonArray("nftables")) {
      JsonObject t = ((JsonObject) o).getJsonObject("table");
      if (t != null && LbRules.TABLE.equals(t.getString("name")) && LbRules.FAMILY.equals(t.getString("family"))) {
        return t.getLong("handle");
      }
    }
    return -1;
  }
}
