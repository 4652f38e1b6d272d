package io.flannelnp.lb;

import static io.flannelnp.testing.Poll.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.bus.Observed.ReconcileReport;
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
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
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
 * The LoadBalancerVerticle against real nftables, real etcd and real traffic. Two "nodes", each a
 * host network namespace with the network's bridge (named and addressed as the Flannel plane makes
 * it: {@link Names#bridge}, the node block's first address /25, {@code ip_forward=1}) and its own
 * daemon half: a Vert.x with an EtcdWatchVerticle and a LoadBalancerVerticle programming that
 * namespace. The nodes are joined by a routed veth (each routes the other's block through it),
 * standing in for the VXLAN link, so a task on the other node is reached through the host exactly
 * as through flannel.VNI. Containers are namespaces on the bridges (veth, the node block /25, a
 * route to the network /20 via the node gateway) running a small task that answers with its name
 * and the peer address it saw. Services and tasks are written to etcd as the Docker integration
 * writes them. n1 keeps the kernel's default {@code bridge-nf-call-iptables=1} (as on a Docker
 * host), n2 turns it off; ports have hairpin mode on (what a task needs to reach itself through
 * its VIP when br_netfilter is on). Every namespace, process, table and etcd key is gone at the
 * end (asserted).
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class LoadBalancerVerticleTest {
  static final String RUN = HexFormat.of().toHexDigits((int) (System.nanoTime() & 0xffffff)).substring(2);
  static final String PREFIX = "/fnp-lbt-" + RUN;
  static final EtcdSchema SCHEMA = new EtcdSchema(PREFIX);
  static final String FID = "lbnet-" + RUN;
  static final String NET = "lbdockernet" + RUN + "0000000000";
  static final String VIP = "10.50.0.4";
  static final String WEB = "websvc" + RUN;
  static final Duration CONVERGE = Duration.ofSeconds(10);

  static EtcdServer etcdServer;
  static Vertx testVertx;
  static EtcdStore etcd;
  static Netns ns;
  static Path dir;
  static LbPeers peers;
  static Node n1;
  static Node n2;
  static String rootTablesBefore;
  static final List<Ctr> tasks = new ArrayList<>();
  static Ctr c1;
  static Ctr c2;
  static Ctr b1;
  static Ctr b2;
  static Ctr b3;

  /** A KernelBatch and when the test saw it. */
  record Seen(long nanos, KernelBatch batch) {}

  /** One node: host namespace, bridge, and a Vert.x with the etcd watch and the load balancer. */
  static final class Node {
    final String name;
    final String host;
    final String gateway;
    final String block;
    final Duration fullResync;
    final Duration resync;
    final List<Seen> batches = new CopyOnWriteArrayList<>();
    final List<ReconcileReport> reports = new CopyOnWriteArrayList<>();
    Vertx vertx;
    EtcdStore store;
    String lb;

    Node(String name, String gateway, String block, Duration fullResync, Duration resync) {
      this.name = name;
      this.host = ns.add(name);
      this.gateway = gateway;
      this.block = block;
      this.fullResync = fullResync;
      this.resync = resync;
      String br = Names.bridge(FID);
      ns.ip(host, "link", "add", "name", br, "type", "bridge").ok();
      ns.ip(host, "addr", "add", gateway + "/25", "dev", br).ok();
      ns.ip(host, "link", "set", "dev", br, "up").ok();
      ns.exec(host, "sysctl", "-qw", "net.ipv4.ip_forward=1").ok();
      // hairpin traffic leaves by the interface it came in on: no ICMP redirects for it (they
      // would also eat the per-client ICMP budget the refusals of UDP to a VIP without task need)
      ns.exec(host, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0").ok();
      ns.exec(host, "sysctl", "-qw", "net.ipv4.conf." + br + ".send_redirects=0").ok();
    }

    void start() throws Exception {
      vertx = Vertx.vertx();
      Codecs.registerAll(vertx.eventBus());
      vertx.eventBus().<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> batches.add(new Seen(System.nanoTime(), m.body())));
      vertx.eventBus().<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, m -> reports.add(m.body()));
      store = new EtcdStore(vertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
      vertx.deployVerticle(new EtcdWatchVerticle(store, SCHEMA)).await(10, TimeUnit.SECONDS);
      startLb();
    }

    void startLb() throws Exception {
      int before = reports.size();
      lb = vertx.deployVerticle(new LoadBalancerVerticle(SCHEMA, Optional.of(Kernel.inNetns(host)),
          NftRunner.Mode.AUTO, fullResync, resync)).await(10, TimeUnit.SECONDS);
      assertThat(LoadBalancerVerticle.programs(host)).isTrue();
      await(name + " lb made its first pass", CONVERGE, () -> reports.stream().skip(before)
          .anyMatch(r -> r.plane().equals("lb") && r.ok() && !r.summary().startsWith("waiting")));
    }

    void stopLb() throws Exception {
      vertx.undeploy(lb).await(10, TimeUnit.SECONDS);
      lb = null;
    }

    void stop() throws Exception {
      if (vertx != null) {
        store.close();
        vertx.close().await(10, TimeUnit.SECONDS);
        vertx = null;
      }
    }

    LbTables.Snapshot table() {
      return LbTables.read(host);
    }

    /** The first successful batch seen after {@code since} (nanos) matching {@code p}. */
    Optional<Seen> batchAfter(long since, Predicate<KernelBatch> p) {
      return batches.stream().filter(s -> s.nanos() >= since && s.batch().ok() && p.test(s.batch())).findFirst();
    }
  }

  /** A container: its namespace on a node's bridge, its address, its etcd record. */
  record Ctr(String name, String ns, String ip, Node node, String id) {}

  @BeforeAll
  static void up() throws Exception {
    Logging.configure("warn");
    rootTablesBefore = Netns.run("nft", "list", "tables").ok().out();
    etcdServer = EtcdServer.start();
    testVertx = Vertx.vertx();
    etcd = new EtcdStore(testVertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    dir = Files.createTempDirectory("fnp-lbt");
    peers = new LbPeers(dir);
    ns = new Netns();
    n1 = new Node("n1", "10.50.0.129", "10.50.0.128/25", LoadBalancerVerticle.FULL_RESYNC, LoadBalancerVerticle.RESYNC);
    // n2 rebuilds often: the test of stale elements waits for it
    n2 = new Node("n2", "10.50.1.1", "10.50.1.0/25", Duration.ofSeconds(3), Duration.ofSeconds(2));
    ns.exec(n2.host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0").ok();
    // the "VXLAN" between the nodes: a routed veth
    ns.ip(n1.host, "link", "add", "name", "u0", "type", "veth", "peer", "name", "u0", "netns", n2.host).ok();
    ns.ip(n1.host, "addr", "add", "192.0.2.1/30", "dev", "u0").ok();
    ns.ip(n2.host, "addr", "add", "192.0.2.2/30", "dev", "u0").ok();
    ns.ip(n1.host, "link", "set", "dev", "u0", "up").ok();
    ns.ip(n2.host, "link", "set", "dev", "u0", "up").ok();
    ns.ip(n1.host, "route", "add", n2.block, "via", "192.0.2.2").ok();
    ns.ip(n2.host, "route", "add", n1.block, "via", "192.0.2.1").ok();

    c1 = container("c1", n1, "10.50.0.130");
    b1 = container("b1", n1, "10.50.0.131");
    b2 = container("b2", n1, "10.50.0.132");
    b3 = container("b3", n2, "10.50.1.2");
    c2 = container("c2", n2, "10.50.1.3");
    for (Ctr b : List.of(b1, b2, b3)) {
      peers.serve(b.ns(), b.name().toUpperCase(), "80,8080", 80);
      tasks.add(b);
    }
    n1.start();
    n2.start();
  }

  static Ctr container(String name, Node node, String ip) {
    String c = ns.add(name);
    String veth = "v" + name + RUN.substring(0, 4);
    ns.ip(c, "link", "add", "name", "eth0", "type", "veth", "peer", "name", veth, "netns", node.host).ok();
    ns.ip(node.host, "link", "set", "dev", veth, "master", Names.bridge(FID)).ok();
    ns.ip(node.host, "link", "set", "dev", veth, "type", "bridge_slave", "hairpin", "on").ok();
    ns.ip(node.host, "link", "set", "dev", veth, "up").ok();
    ns.ip(c, "addr", "add", ip + "/25", "dev", "eth0").ok();
    ns.ip(c, "link", "set", "dev", "eth0", "up").ok();
    ns.ip(c, "route", "add", "10.50.0.0/20", "via", node.gateway).ok();
    return new Ctr(name, c, ip, node, (name + RUN + "0".repeat(64)).substring(0, 64));
  }

  @AfterAll
  static void down() throws Exception {
    List<Process> servers = peers == null ? List.of() : peers.servers();
    List<KeyValue> left;
    try {
      if (n1 != null) {
        n1.stop();
      }
      if (n2 != null) {
        n2.stop();
      }
      if (peers != null) {
        peers.close();
      }
    } finally {
      if (ns != null) {
        ns.close();
      }
      left = Lab.closeEtcd(etcdServer, testVertx, etcd, PREFIX);
      Lab.deleteDir(dir);
    }
    assertThat(left).as("etcd keys left").isEmpty();
    assertThat(servers).as("task processes left").noneMatch(Process::isAlive);
    assertThat(Netns.list()).as("namespaces left").noneMatch(n -> n.startsWith(ns.stem()));
    assertThat(Netns.run("nft", "list", "tables").ok().out()).as("root namespace tables untouched")
        .isEqualTo(rootTablesBefore);
  }

  // ---- helpers ---------------------------------------------------------------------------------

  static void put(String key, String value) throws Exception {
    etcd.put(key, value).await(5, TimeUnit.SECONDS);
  }

  /** The network as IPAM and the Docker side write it: subnet reservation, Flannel config, Docker's record. */
  static void network() throws Exception {
    io.flannelnp.ipam.Cidr subnet = io.flannelnp.ipam.Cidr.parse("10.50.0.0/20");
    put(SCHEMA.addressSpace(subnet), FID);
    put(SCHEMA.networkConfig(FID), io.flannelnp.ipam.FlannelJson.networkConfig(subnet, 25,
        io.flannelnp.ipam.Cidr.parse("10.50.0.128/25"), io.flannelnp.ipam.Cidr.parse("10.50.15.128/25"), 6515));
    put(SCHEMA.dockerNetwork(NET), new DockerNetwork(NET, "lbnet", "flannel-np", FID, "10.50.0.0/20").toJson());
  }

  static void service(String id, ServiceRecord.EndpointMode mode, String vip) throws Exception {
    put(SCHEMA.dockerService(id), new ServiceRecord(id, id, mode, vip == null ? Map.of() : Map.of(NET, vip + "/20"),
        Map.of()).toJson());
  }

  static void task(Ctr c, String serviceId, String state) throws Exception {
    put(SCHEMA.dockerContainer(c.node().name, c.id()), record(c, serviceId, state).toJson());
  }

  static ContainerRecord record(Ctr c, String serviceId, String state) {
    return new ContainerRecord(c.id(), serviceId + ".1." + c.name(), c.name(), c.node().name, serviceId, serviceId,
        "task" + c.name(), serviceId + ".1." + c.name(), state, "/var/run/docker/netns/" + c.name(),
        Map.of(NET, new ContainerRecord.Attachment(c.ip(), "ep" + c.name(), List.of(), "")));
  }

  static void untask(Ctr c) throws Exception {
    etcd.delete(SCHEMA.dockerContainer(c.node().name, c.id())).await(5, TimeUnit.SECONDS);
  }

  /** Both nodes' tables map VIP to exactly these tasks (any slot order). */
  static void awaitBackends(String vip, List<Ctr> want) {
    for (Node n : List.of(n1, n2)) {
      await(n.name + ": " + vip + " → " + want.stream().map(Ctr::name).toList(), CONVERGE, () -> {
        LbTables.Snapshot s = n.table();
        String verdict = want.isEmpty() ? "goto no-endpoints" : "goto pick-" + want.size();
        List<String> ips = s.backends().entrySet().stream().filter(e -> e.getKey().startsWith(vip + " . "))
            .map(Map.Entry::getValue).sorted().toList();
        return verdict.equals(s.services().get(vip)) && ips.equals(want.stream().map(Ctr::ip).sorted().toList());
      });
    }
  }

  static void awaitNoVip(String vip) {
    for (Node n : List.of(n1, n2)) {
      await(n.name + ": no rule for " + vip, CONVERGE, () -> {
        LbTables.Snapshot s = n.table();
        return !s.services().containsKey(vip)
            && s.backends().keySet().stream().noneMatch(k -> k.startsWith(vip + " . "));
      });
    }
  }

  static void assertFair(LbPeers.Seen seen, int count, List<Ctr> backends) {
    assertThat(seen.err()).as("failed attempts").isEmpty();
    assertThat(seen.total()).isEqualTo(count);
    Map<String, Integer> by = seen.byTask();
    assertThat(by.keySet()).containsExactlyInAnyOrderElementsOf(backends.stream().map(b -> b.name().toUpperCase()).toList());
    for (Ctr b : backends) {
      assertThat(by.get(b.name().toUpperCase())).as(b.name() + "'s share of " + count + ": " + by)
          .isGreaterThanOrEqualTo(count / backends.size() * 6 / 10);
    }
  }

  // ---- the scenario ----------------------------------------------------------------------------

  @Test
  @Order(1)
  void everyTcpAndUdpPortOfTheVipSpreadsOverEveryTaskOnBothNodes() throws Exception {
    network();
    service(WEB, ServiceRecord.EndpointMode.VIP, VIP);
    for (Ctr b : List.of(b1, b2, b3)) {
      task(b, WEB, "running");
    }
    awaitBackends(VIP, List.of(b1, b2, b3));

    // from n1: b1, b2 on the client's own bridge (hairpin: masqueraded to n1's gateway), b3 on
    // the other node sees the client's own address
    LbPeers.Seen tcp = peers.connect(c1.ns(), "tcp", VIP, 80, 300);
    assertFair(tcp, 300, List.of(b1, b2, b3));
    assertThat(tcp.peersOf("B1")).containsExactly(n1.gateway);
    assertThat(tcp.peersOf("B2")).containsExactly(n1.gateway);
    assertThat(tcp.peersOf("B3")).as("a remote task sees the client's own address").containsExactly(c1.ip());

    LbPeers.Seen udp = peers.connect(c1.ns(), "udp", VIP, 80, 300);
    assertFair(udp, 300, List.of(b1, b2, b3));
    assertThat(udp.peersOf("B3")).containsExactly(c1.ip());

    // from n2 (br_netfilter off there): the roles swap
    LbPeers.Seen tcp2 = peers.connect(c2.ns(), "tcp", VIP, 80, 300);
    assertFair(tcp2, 300, List.of(b1, b2, b3));
    assertThat(tcp2.peersOf("B3")).containsExactly(n2.gateway);
    assertThat(tcp2.peersOf("B1")).containsExactly(c2.ip());
    LbPeers.Seen udp2 = peers.connect(c2.ns(), "udp", VIP, 80, 300);
    assertFair(udp2, 300, List.of(b1, b2, b3));

    // any port: the task's own port behind the VIP's
    LbPeers.Seen other = peers.connect(c1.ns(), "tcp", VIP, 8080, 30);
    assertThat(other.err()).isEmpty();
    assertThat(other.total()).isEqualTo(30);

    // what was published: one full sync at start, then partial syncs (element additions)
    assertThat(n1.batches).allMatch(s -> s.batch().plane().equals("lb") && s.batch().tool().equals("nft"));
    // no table while nothing was wanted; the first VIP made it with a full sync
    assertThat(n1.reports).anyMatch(r -> r.summary().startsWith("in sync: no VIP, no table"));
    assertThat(n1.batches.get(0).batch().text()).startsWith("add table ip flannel-np-lb\ndelete table ip flannel-np-lb\n");
    assertThat(n1.batches).anyMatch(s -> s.batch().text().contains("add element ip " + LbRules.TABLE + " backends")
        && s.batch().text().contains(VIP + " . 2 : "));
    assertThat(n1.reports).anyMatch(r -> r.plane().equals("lb") && r.ok() && r.summary().contains("libnftables"));
  }

  @Test
  @Order(2)
  void aTaskReachesItsOwnServiceThroughTheVipAndSometimesItself() throws Exception {
    for (Ctr self : List.of(b1, b3)) {
      LbPeers.Seen seen = peers.connect(self.ns(), "tcp", VIP, 80, 90);
      assertThat(seen.err()).as(self.name() + " → its own VIP").isEmpty();
      assertThat(seen.byTask()).as(self.name() + " landed on itself too").containsKey(self.name().toUpperCase());
      assertThat(seen.peersOf(self.name().toUpperCase())).as("hairpin to itself is masqueraded")
          .containsExactly(self.node().gateway);
      LbPeers.Seen udp = peers.connect(self.ns(), "udp", VIP, 80, 60);
      assertThat(udp.err()).isEmpty();
    }
  }

  @Test
  @Order(3)
  void aStoppingOrRemovedTaskLeavesTheMapsWithin100msAndGetsNoNewConnection() throws Exception {
    // stopping: the record stays, its state changes
    long t0 = System.nanoTime();
    task(b2, WEB, "stopping");
    long[] took = new long[2];
    int i = 0;
    // the first batch after the write that speaks of the VIP and no longer of b2 (a partial
    // sync, or a periodic full sync that happened to come first)
    Predicate<KernelBatch> withoutB2 = b -> b.text().contains(VIP + " ") && !b.text().contains(b2.ip());
    for (Node n : List.of(n1, n2)) {
      Seen s = awaitBatch(n, t0, withoutB2);
      took[i++] = (s.nanos() - t0) / 1_000_000;
    }
    assertThat(java.util.Arrays.stream(took).boxed().toList()).as("ms from the etcd write to the applied map update on n1, n2").allMatch(ms -> ms <= 100);
    awaitBackends(VIP, List.of(b1, b3));
    LbPeers.Seen after = peers.connect(c1.ns(), "tcp", VIP, 80, 120);
    assertThat(after.err()).isEmpty();
    assertThat(after.byTask()).doesNotContainKey("B2").containsKeys("B1", "B3");

    // removed: the record goes
    task(b2, WEB, "running");
    awaitBackends(VIP, List.of(b1, b2, b3));
    t0 = System.nanoTime();
    untask(b2);
    i = 0;
    for (Node n : List.of(n1, n2)) {
      Seen s = awaitBatch(n, t0, withoutB2);
      took[i++] = (s.nanos() - t0) / 1_000_000;
    }
    assertThat(java.util.Arrays.stream(took).boxed().toList()).as("ms from the etcd delete to the applied map update on n1, n2").allMatch(ms -> ms <= 100);
    LbPeers.Seen after2 = peers.connect(c2.ns(), "tcp", VIP, 80, 120);
    assertThat(after2.err()).isEmpty();
    assertThat(after2.byTask()).doesNotContainKey("B2");
  }

  static Seen awaitBatch(Node n, long since, Predicate<KernelBatch> p) {
    await(n.name + " applied a matching batch", CONVERGE, () -> n.batchAfter(since, p).isPresent());
    return n.batchAfter(since, p).orElseThrow();
  }

  @Test
  @Order(4)
  void scaledToZeroTheVipRefusesAtOnceAndScaledUpItServesAgain() throws Exception {
    task(b1, WEB, "stopping");
    untask(b3);
    awaitBackends(VIP, List.of());
    for (Ctr c : List.of(c1, c2)) {
      LbPeers.Seen tcp = peers.connect(c.ns(), "tcp", VIP, 80, 5);
      assertThat(tcp.ok()).isEmpty();
      assertThat(tcp.err()).as("TCP to a VIP without task").isEqualTo(Map.of("ConnectionRefusedError", 5));
      assertThat(tcp.worstMs()).as("refused at once, not timed out").isLessThan(500);
      // ICMP errors to one client are rate limited by the kernel (net.ipv4.icmp_ratelimit: a burst
      // of 6, then 1/s), so only a few UDP probes
      LbPeers.Seen udp = peers.connect(c.ns(), "udp", VIP, 80, 3);
      assertThat(udp.err()).as("UDP to a VIP without task").isEqualTo(Map.of("ConnectionRefusedError", 3));
      assertThat(udp.worstMs()).isLessThan(500);
    }
    task(b1, WEB, "running");
    task(b3, WEB, "running");
    awaitBackends(VIP, List.of(b1, b3));
    assertThat(peers.connect(c1.ns(), "tcp", VIP, 80, 40).err()).isEmpty();
  }

  @Test
  @Order(5)
  void aRestartKeepsConnectionsWorkingAndRebuildsAnEqualTable() throws Exception {
    LbTables.Snapshot before = n1.table();
    assertThat(before.services()).containsKey(VIP);
    CompletableFuture<LbPeers.Seen> during = peers.loop(c1.ns(), VIP, 80, 2.5, 10);
    Thread.sleep(300);
    n1.stopLb();
    assertThat(n1.table()).as("stopping the plane leaves the kernel alone").isEqualTo(before);
    Thread.sleep(400);
    n1.startLb();
    LbPeers.Seen seen = during.get(30, TimeUnit.SECONDS);
    assertThat(seen.err()).as("connections during the restart").isEmpty();
    assertThat(seen.total()).isGreaterThan(50);
    assertThat(seen.byTask().keySet()).containsExactlyInAnyOrder("B1", "B3");
    assertThat(n1.table()).as("the rules after the restart equal the rules before").isEqualTo(before);
  }

  @Test
  @Order(6)
  void dnsrrServicesGetNoRulesAndAModeChangeTakesTheVipAway() throws Exception {
    String rr = "rrsvc" + RUN;
    Ctr d1 = new Ctr("d1", "none", "10.50.0.150", n1, ("d1" + RUN + "0".repeat(64)).substring(0, 64));
    put(SCHEMA.dockerContainer("n1", d1.id()), record(d1, rr, "running").toJson());
    // a DNSRR record that still carries an address must not get a rule either
    service(rr, ServiceRecord.EndpointMode.DNSRR, "10.50.0.5");
    service(WEB, ServiceRecord.EndpointMode.DNSRR, VIP);
    awaitNoVip(VIP);
    for (Node n : List.of(n1, n2)) {
      assertThat(n.table().services()).doesNotContainKey("10.50.0.5");
    }
    service(WEB, ServiceRecord.EndpointMode.VIP, VIP);
    awaitBackends(VIP, List.of(b1, b3));
    etcd.delete(SCHEMA.dockerService(rr)).await(5, TimeUnit.SECONDS);
    etcd.delete(SCHEMA.dockerContainer("n1", d1.id())).await(5, TimeUnit.SECONDS);
  }

  @Test
  @Order(7)
  void serviceRemovalAndNetworkRemovalTakeTheirRulesAway() throws Exception {
    String api = "apisvc" + RUN;
    service(api, ServiceRecord.EndpointMode.VIP, "10.50.0.6");
    Ctr a1 = new Ctr("a1", "none", "10.50.1.40", n2, ("a1" + RUN + "0".repeat(64)).substring(0, 64));
    put(SCHEMA.dockerContainer("n2", a1.id()), record(a1, api, "running").toJson());
    awaitBackends("10.50.0.6", List.of(a1));
    etcd.delete(SCHEMA.dockerService(api)).await(5, TimeUnit.SECONDS);
    awaitNoVip("10.50.0.6");
    etcd.delete(SCHEMA.dockerContainer("n2", a1.id())).await(5, TimeUnit.SECONDS);

    etcd.delete(SCHEMA.dockerNetwork(NET)).await(5, TimeUnit.SECONDS);
    awaitNoVip(VIP);
    for (Node n : List.of(n1, n2)) {
      await(n.name + ": no VIP left, no table", CONVERGE, () -> n.table().absent());
    }
    network();
    awaitBackends(VIP, List.of(b1, b3));
  }

  @Test
  @Order(8)
  void aTableChangedBehindItsBackIsRepairedAndStaleElementsGo() throws Exception {
    // n1: the table is deleted by someone; the next change fails, and the full sync after it
    // brings everything back
    ns.exec(n1.host, "nft", "delete", "table", "ip", LbRules.TABLE).ok();
    task(b2, WEB, "running");
    awaitBackends(VIP, List.of(b1, b2, b3));
    assertThat(n1.batches).anyMatch(s -> !s.batch().ok());
    assertThat(peers.connect(c1.ns(), "tcp", VIP, 80, 60).err()).isEmpty();

    // n2: an element nobody wants is gone at the next periodic full sync (3 s there)
    ns.exec(n2.host, "nft", "add", "element", "ip", LbRules.TABLE, LbRules.SERVICES, "{ 10.50.0.99 }")
        .ok();
    assertThat(n2.table().services()).containsKey("10.50.0.99");
    await("n2 removed the stale element", Duration.ofSeconds(15), () -> !n2.table().services().containsKey("10.50.0.99"));
    assertThat(n2.table().services()).containsKey(VIP);
  }

  @Test
  @Order(9)
  void aUdpFlowToATaskThatLeftIsEndedSoItsNextDatagramPicksAnotherTask() throws Exception {
    awaitBackends(VIP, List.of(b1, b2, b3));
    int port = 33000;
    LbPeers.Seen first = peers.udpFrom(c1.ns(), VIP, 80, 1, port);
    assertThat(first.err()).isEmpty();
    String name = first.byTask().keySet().iterator().next();
    Ctr chosen = List.of(b1, b2, b3).stream().filter(b -> b.name().toUpperCase().equals(name)).findFirst().orElseThrow();
    // the same flow again: conntrack keeps it on the same task
    assertThat(peers.udpFrom(c1.ns(), VIP, 80, 3, port).byTask()).containsOnlyKeys(name);
    long t0 = System.nanoTime();
    task(chosen, WEB, "stopping");
    awaitBatch(n1, t0, b -> b.text().contains(VIP + " ") && !b.text().contains(chosen.ip()));
    // the flush runs right after the map update, on the same thread: wait for the next pass slot
    await("the stale flow is gone", CONVERGE, () -> {
      LbPeers.Seen again = peers.udpFrom(c1.ns(), VIP, 80, 1, port);
      return again.err().isEmpty() && !again.byTask().containsKey(name);
    });
    task(chosen, WEB, "running");
    awaitBackends(VIP, List.of(b1, b2, b3));
  }
}
