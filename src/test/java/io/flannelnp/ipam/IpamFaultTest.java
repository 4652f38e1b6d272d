package io.flannelnp.ipam;

import static io.flannelnp.testing.Futures.await;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.EtcdUnavailableException;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.ipam.Ipam.PoolRelease;
import io.flannelnp.ipam.Owner.Kind;
import io.flannelnp.ipam.Owner.Space;
import io.flannelnp.testing.EtcdCluster;
import io.flannelnp.testing.LossyProxy;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;

/**
 * What IPAM keeps when things go wrong, against a real 3-member etcd cluster: a restarted or
 * frozen cluster, a lost lease, an answer lost after the write committed, a rolled-back network
 * allocation, a flannel-id claimed twice, malformed records, a block left by a dead node, and
 * nodes whose settings disagree.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class IpamFaultTest {
  static EtcdCluster cluster;
  static Vertx vertx;

  final List<EtcdStore> stores = new ArrayList<>();
  final List<Ipam> ipams = new ArrayList<>();
  String prefix;
  EtcdSchema schema;
  EtcdStore store;

  @BeforeAll
  static void up() {
    cluster = EtcdCluster.start(3);
    vertx = Vertx.vertx();
  }

  @AfterAll
  static void down() {
    vertx.close().toCompletionStage().toCompletableFuture().join();
    cluster.close();
  }

  @BeforeEach
  void open(TestInfo info) {
    prefix = "/fnp-test/IpamFaultTest/" + info.getTestMethod().orElseThrow().getName();
    schema = new EtcdSchema(prefix);
    store = newStore(cluster.endpoints());
  }

  @AfterEach
  void cleanup() throws Exception {
    cluster.thawAll();
    ipams.forEach(Ipam::detach);
    eventually(Duration.ofSeconds(30), () -> {
      try {
        await(store.deletePrefix(schema.root()));
        return await(store.list(schema.root())).kvs().isEmpty();
      } catch (Exception e) {
        return false;
      }
    }, "the test's keys removed");
    stores.forEach(EtcdStore::close);
  }

  EtcdStore newStore(List<String> endpoints) {
    EtcdStore s = new EtcdStore(vertx, endpoints, Optional.empty(), Duration.ofSeconds(5));
    stores.add(s);
    return s;
  }

  Config config(String node, String... overrides) {
    Map<String, String> env = new HashMap<>(Map.of(
        "ETCD_ENDPOINTS", String.join(",", cluster.endpoints()),
        "ETCD_PREFIX", prefix,
        "AVAILABLE_SUBNETS", "10.60.0.0/16",
        "NETWORK_SUBNET_SIZE", "20",
        "DEFAULT_HOST_SUBNET_SIZE", "25",
        "SUBNET_LEASE_TTL", "6",
        "NODE_NAME", node));
    for (int i = 0; i < overrides.length; i += 2) {
      env.put(overrides[i], overrides[i + 1]);
    }
    return Config.fromEnv(Map.copyOf(env));
  }

  Ipam daemon(String node, EtcdStore s, String... overrides) {
    Ipam ipam = new Ipam(s, schema, config(node, overrides));
    ipams.add(ipam);
    return ipam;
  }

  Ipam daemon(String node) {
    return daemon(node, newStore(cluster.endpoints()));
  }

  static void eventually(Duration max, BooleanSupplier cond, String what) throws InterruptedException {
    long deadline = System.nanoTime() + max.toNanos();
    while (!cond.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("not within " + max + ": " + what);
      }
      Thread.sleep(100);
    }
  }

  Optional<KeyValue> get(String key) {
    try {
      return await(store.get(key));
    } catch (Exception e) {
      return Optional.empty();
    }
  }

  // ---- leases ----------------------------------------------------------------------------

  @Test
  void aKeptAliveLeaseSurvivesARestartOfTheWholeClusterAndNobodyIsToldItWasLost() throws Exception {
    AtomicInteger lost = new AtomicInteger();
    long lease = await(store.grantLease(6));
    await(store.put(prefix + "/leased", "v", lease));
    EtcdStore.KeepAlive ka = store.keepAlive(lease, lost::incrementAndGet);
    try {
      cluster.killAll(); // every stream breaks: jetcd tells every keep-alive observer, then reconnects
      Thread.sleep(2000);
      cluster.restartAll();
      Thread.sleep(3 * 6000);
      assertThat(get(prefix + "/leased")).as("the key on the lease, 3 TTLs after the restart").isPresent();
      assertThat(lost.get()).as("loss callbacks").isZero();
    } finally {
      ka.close();
    }
  }

  @Test
  void aLostLeaseIsTakenBackWithTheSameBlockOnceEtcdAnswersAgain() throws Exception {
    Ipam leader = daemon("leader");
    await(leader.createNetwork("n", Optional.empty(), Map.of()));
    Ipam node = daemon("node-a");
    Ipam.NodeLease first = await(node.ensureNodeLease("n", "node-a", "198.18.0.11"));
    String key = schema.subnet("n", first.block());
    // the lease expires behind the node's back, and etcd then stops answering for a while
    await(store.revokeLease(first.leaseId()));
    cluster.freezeAll();
    Thread.sleep(8000);
    assertThat(node.heldLease("n")).as("while etcd is away the node keeps answering with its block").get()
        .extracting(Ipam.NodeLease::block).isEqualTo(first.block());
    cluster.thawAll();
    eventually(Duration.ofSeconds(30), () -> get(key).filter(kv -> kv.value().contains("198.18.0.11")).isPresent(),
        "the same block leased again by the node");
    assertThat(get(key).orElseThrow().lease()).isNotEqualTo(first.leaseId());
    assertThat(node.heldLease("n")).get().extracting(Ipam.NodeLease::block).isEqualTo(first.block());
    // and it is kept alive from then on
    Thread.sleep(3 * 6000);
    assertThat(get(key)).as("renewed after the re-acquisition").isPresent();
  }

  // ---- writes whose answer was lost ------------------------------------------------------

  @Test
  void anAddressWhoseWriteTimedOutButCommittedIsFreedAgainUnlessTheSameRequesterCameBackForIt() throws Exception {
    Ipam leader = daemon("leader");
    NetworkRecord rec = await(leader.createNetwork("n", Optional.empty(), Map.of()));
    try (LossyProxy proxy = new LossyProxy(port(cluster.member(0).endpoint()))) {
      Ipam node = daemon("node-a", newStore(List.of(proxy.endpoint())));
      Ipam.NodeLease lease = await(node.ensureNodeLease("n", "node-a", "198.18.0.11"));
      long first = AddressPlan.nodeFirst(lease.block());
      long last = AddressPlan.nodeLast(lease.block());
      await(node.find("n", o -> false, true)); // what the node knows of its block, read before the fault

      proxy.loseReplies();
      EtcdUnavailableException timeout = catchThrowableOfType(EtcdUnavailableException.class, () -> await(
          node.allocateNext("n", first, last, Owner.container("node-a", "", "10.60.0.5"), "block", "hint")));
      assertThat(timeout).as("the caller is told the write failed").isNotNull();
      proxy.heal();
      retried(() -> node.find("n", o -> false, true)); // the client is connected again
      assertThat(get(schema.allocation("n", Ipv4.format(first)))).as("but etcd committed it").isPresent();
      assertThat(node.uncertainCount()).isEqualTo(1);

      // a second lost answer, whose requester asks again (Docker's retry) and gets it
      proxy.loseReplies();
      catchThrowableOfType(EtcdUnavailableException.class, () -> await(
          node.allocateNext("n", first, last, Owner.container("node-a", "", "10.60.0.6"), "block", "hint")));
      proxy.heal();
      Optional<Ipam.Allocation> again = retried(() -> node.find("n", o -> o.placeholder().equals("10.60.0.6")));
      assertThat(again).as("the retry finds its address").isPresent();

      eventually(Duration.ofSeconds(20), () -> {
        try {
          return await(node.settleUncertain()) >= 0 && node.uncertainCount() == 0;
        } catch (Exception e) {
          return false;
        }
      }, "uncertain writes settled");
      assertThat(get(schema.allocation("n", Ipv4.format(first)))).as("the orphan is freed").isEmpty();
      assertThat(get(schema.allocation("n", Ipv4.format(again.get().address())))).as("the retried one stays")
          .isPresent();
    }
  }

  /** A call on a client whose connection was just cut: its first attempts may fail. */
  static <T> T retried(java.util.function.Supplier<io.vertx.core.Future<T>> call) throws Exception {
    long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
    while (true) {
      try {
        return await(call.get());
      } catch (Exception e) {
        if (System.nanoTime() > deadline) {
          throw e;
        }
        Thread.sleep(200);
      }
    }
  }

  static int port(String endpoint) {
    return Integer.parseInt(endpoint.substring(endpoint.lastIndexOf(':') + 1));
  }

  // ---- network removal and flannel-ids ---------------------------------------------------

  @Test
  void aReleasePoolWithoutFreeNetworkIsARollbackThatChangesNothing() throws Exception {
    Ipam leader = daemon("leader");
    NetworkRecord rec = await(leader.createNetwork("n", Optional.empty(), Map.of()));
    await(leader.allocateSpecific("n", rec.subnet().base() + 1, Owner.leader(Kind.GATEWAY, "leader")));
    await(leader.claimDockerId("n", "dockernet1"));
    Ipam node = daemon("node-a");
    Ipam.NodeLease lease = await(node.ensureNodeLease("n", "node-a", "198.18.0.11"));
    await(node.allocateSpecific("n", AddressPlan.nodeGateway(lease.block()), Owner.nodeGateway("node-a")));
    await(node.allocateNext("n", AddressPlan.nodeFirst(lease.block()), AddressPlan.nodeLast(lease.block()),
        Owner.container("node-a", "", ""), "block", "hint"));
    List<KeyValue> before = await(store.list(schema.root())).kvs();

    // Swarm's rollback (a failed AllocateNetwork, a new leader allocating again): no FreeNetwork first
    assertThat(await(leader.releaseGlobalPool("n"))).isEqualTo(PoolRelease.ROLLBACK);
    assertThat(keys(await(store.list(schema.root())).kvs())).isEqualTo(keys(before));

    // Docker removes it while a node still has an endpoint: deferred; the last one gone: removed
    assertThat(await(leader.markFreed("n", "another-network"))).as("FreeNetwork of another network").isEmpty();
    assertThat(await(leader.markFreed("n", "dockernet1"))).contains("n");
    await(store.put(schema.endpoint("node-a", "ep1"), "{\"FlannelID\":\"n\"}"));
    assertThat(await(leader.releaseGlobalPool("n"))).isEqualTo(PoolRelease.DEFERRED);
    assertThat(get(schema.pool("n"))).isPresent();
    await(store.delete(schema.endpoint("node-a", "ep1")));
    assertThat(await(leader.releaseGlobalPool("n"))).isEqualTo(PoolRelease.REMOVED);
    assertThat(await(store.list(schema.root())).kvs()).isEmpty();
  }

  static List<String> keys(List<KeyValue> kvs) {
    return kvs.stream().map(kv -> kv.key() + "=" + kv.value()).sorted().toList();
  }

  @Test
  void aFlannelIdBelongsToOneDockerNetworkThoughANewLeaderMayClaimItAgain() throws Exception {
    Ipam leader = daemon("leader");
    await(leader.createNetwork("n", Optional.empty(), Map.of()));
    await(leader.claimDockerId("n", "dockernet1"));
    await(daemon("leader-2").claimDockerId("n", "dockernet1")); // a new leader allocating it again
    Ipam.FlannelIdTaken taken = catchThrowableOfType(Ipam.FlannelIdTaken.class,
        () -> await(leader.claimDockerId("n", "dockernet2")));
    assertThat(taken).isNotNull();
    assertThat(taken.holder()).isEqualTo("dockernet1");
    assertThat(taken.getMessage()).contains("flannel-id n already belongs to Docker network dockernet1")
        .contains("own flannel-id");
    assertThat(get(schema.dockerId("n")).orElseThrow().value()).isEqualTo("dockernet1");
  }

  // ---- malformed records -----------------------------------------------------------------

  @Test
  void malformedReservationsLeasesAndAllocationsAreSkippedAndNeverHandedOut() throws Exception {
    await(store.put(schema.vnis() + "abc", "x"));
    await(store.put(schema.addressSpace() + "not-a-cidr", "x"));
    Ipam leader = daemon("leader");
    NetworkRecord rec = await(leader.createNetwork("n", Optional.empty(), Map.of()));
    assertThat(rec.subnet()).isEqualTo(Cidr.parse("10.60.0.0/20"));

    // a stock flanneld's dual-stack lease and a lease that is not JSON take their blocks, nothing more
    await(store.put(schema.subnets("n") + "10.60.0.128-25&fc00::-64", "{\"PublicIP\":\"198.18.0.50\"}"));
    await(store.put(schema.subnets("n") + "10.60.1.0-25", "not json"));
    await(store.put(schema.subnets("n") + "garbage", "{}"));
    Ipam node = daemon("node-a");
    Ipam.NodeLease lease = await(node.ensureNodeLease("n", "node-a", "198.18.0.11"));
    assertThat(lease.block()).isEqualTo(Cidr.parse("10.60.1.128/25"));

    // an allocation whose value is not an owner keeps its address; nobody frees it by mistake
    long bad = AddressPlan.nodeFirst(lease.block());
    await(store.put(schema.allocation("n", Ipv4.format(bad)), "{\"Kind\":\"bogus\"}"));
    Ipam fresh = daemon("node-a");
    Ipam.Allocation a = await(fresh.allocateNext("n", bad, AddressPlan.nodeLast(lease.block()),
        Owner.container("node-a", "", ""), "block", "hint"));
    assertThat(a.address()).isEqualTo(bad + 1);
    assertThat(await(fresh.release("n", bad, o -> true))).isFalse();
    assertThat(get(schema.allocation("n", Ipv4.format(bad))).orElseThrow().value()).isEqualTo("{\"Kind\":\"bogus\"}");
    assertThat(await(fresh.holder("n", bad)).orElseThrow().describe()).startsWith("an unreadable record");
  }

  @Test
  void aPoolRecordThatDoesNotParseIsRefusedNamingItsKey() throws Exception {
    await(store.put(schema.pool("n"), "{\"VNI\":\"x\"}"));
    IpamException e = catchThrowableOfType(IpamException.class, () -> await(daemon("leader").network("n")));
    assertThat(e.reason()).isEqualTo(IpamException.Reason.MALFORMED);
    assertThat(e.getMessage()).contains(schema.pool("n")).contains("fix or delete");
  }

  // ---- a node that is gone ---------------------------------------------------------------

  @Test
  void aBlockLeftByAGoneNodeIsFreedOfItsAddressesWhenAnotherNodeLeasesIt() throws Exception {
    Ipam leader = daemon("leader");
    await(leader.createNetwork("n", Optional.empty(), Map.of()));
    Ipam a = daemon("node-a");
    Ipam.NodeLease la = await(a.ensureNodeLease("n", "node-a", "198.18.0.11"));
    long gw = AddressPlan.nodeGateway(la.block());
    await(a.allocateSpecific("n", gw, Owner.nodeGateway("node-a")));
    Ipam.Allocation c = await(a.allocateNext("n", AddressPlan.nodeFirst(la.block()), AddressPlan.nodeLast(la.block()),
        Owner.container("node-a", "", ""), "block", "hint"));
    a.detach(); // node-a dies: nothing renews its lease
    await(store.revokeLease(la.leaseId())); // its lease expires

    Ipam b = daemon("node-b");
    Ipam.NodeLease lb = await(b.ensureNodeLease("n", "node-b", "198.18.0.12"));
    assertThat(lb.block()).as("the first free block is the gone node's").isEqualTo(la.block());
    Ipam.Allocation bgw = await(b.allocateSpecific("n", gw, Owner.nodeGateway("node-b")));
    assertThat(bgw.owner().node()).isEqualTo("node-b");
    assertThat(get(schema.allocation("n", Ipv4.format(c.address())))).as("the gone node's container address").isEmpty();
  }

  // ---- settings that must agree ----------------------------------------------------------

  @Test
  void theFirstNodeWritesTheClusterSettingsAndANodeWithOthersIsRefusedNamingTheSetting() throws Exception {
    assertThat(catchThrowableOfType(Throwable.class,
        () -> await(new ClusterSettings(store, schema, config("a")).verify()))).isNull();
    assertThat(get(schema.settings()).orElseThrow().value()).contains("\"NETWORK_SUBNET_SIZE\":\"20\"")
        .contains("\"WrittenBy\":\"a\"");
    assertThat(catchThrowableOfType(Throwable.class,
        () -> await(new ClusterSettings(store, schema, config("b")).verify()))).as("same settings").isNull();
    ClusterSettings.Disagreement d = catchThrowableOfType(ClusterSettings.Disagreement.class,
        () -> await(new ClusterSettings(store, schema, config("c", "NETWORK_SUBNET_SIZE", "21")).verify()));
    assertThat(d.getMessage()).isEqualTo("invalid setting NETWORK_SUBNET_SIZE=\"21\": the cluster uses \"20\" ("
        + schema.settings() + ", written by node a); every node must use the same value (to change it for the"
        + " whole cluster, edit that record while every node is stopped)");
    ClusterSettings.Disagreement subnets = catchThrowableOfType(ClusterSettings.Disagreement.class,
        () -> await(new ClusterSettings(store, schema, config("c", "AVAILABLE_SUBNETS", "10.60.0.0/17")).verify()));
    assertThat(subnets.getMessage()).startsWith("invalid setting AVAILABLE_SUBNETS=\"10.60.0.0/17\"");
  }
}
