package io.flannelnp.ipam;

import static io.flannelnp.testing.Futures.await;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.ipam.IpamException.Reason;
import io.flannelnp.ipam.Owner.Kind;
import io.flannelnp.ipam.Owner.Space;
import io.flannelnp.testing.EtcdFixture;
import io.vertx.core.Future;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;

/** {@link Ipam}'s behaviour, one rule per test, against a real etcd process. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class IpamTest extends EtcdFixture {
  static final String FID = "net-a";
  static final long TTL = 120;


  /** Every store and Ipam a test opens, closed after it (Ipams first: their keep-alives stop). */
  final List<EtcdStore> stores = new ArrayList<>();
  final List<Ipam> ipams = new ArrayList<>();
  String prefix;
  EtcdSchema schema;
  EtcdStore store;

  @BeforeEach
  void open(TestInfo info) {
    prefix = "/fnp-test/IpamTest/" + info.getTestMethod().orElseThrow().getName();
    schema = new EtcdSchema(prefix);
    store = newStore();
  }

  @AfterEach
  void cleanup() throws Exception {
    ipams.forEach(Ipam::detach);
    await(store.deletePrefix(schema.root()));
    assertThat(await(store.list(schema.root())).kvs()).isEmpty();
    stores.forEach(EtcdStore::close);
  }

  // ---- helpers ----------------------------------------------------------------------------

  EtcdStore newStore() {
    EtcdStore s = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    stores.add(s);
    return s;
  }

  /** The defaults of these tests (10.60.0.0/16, /20 networks, /25 node blocks) plus overrides (k, v, ...). */
  Config config(String... overrides) {
    Map<String, String> env = new HashMap<>(Map.of(
        "ETCD_ENDPOINTS", etcd.endpoint(),
        "ETCD_PREFIX", prefix,
        "AVAILABLE_SUBNETS", "10.60.0.0/16",
        "NETWORK_SUBNET_SIZE", "20",
        "DEFAULT_HOST_SUBNET_SIZE", "25",
        "SUBNET_LEASE_TTL", String.valueOf(TTL),
        "NODE_NAME", "node-a"));
    for (int i = 0; i < overrides.length; i += 2) {
      env.put(overrides[i], overrides[i + 1]);
    }
    return Config.fromEnv(Map.copyOf(env));
  }

  /** An Ipam on its own etcd client, as a separate daemon would have. */
  Ipam daemon(Config config) {
    Ipam ipam = new Ipam(newStore(), schema, config);
    ipams.add(ipam);
    return ipam;
  }

  Ipam daemon() {
    return daemon(config());
  }


  static IpamException refusal(Future<?> f) {
    IpamException e = catchThrowableOfType(IpamException.class, () -> await(f));
    assertThat(e).as("the call must fail with an IpamException").isNotNull();
    return e;
  }

  static Cidr cidr(String s) {
    return Cidr.parse(s);
  }

  static long ip(String s) {
    return Ipv4.parse(s);
  }

  NetworkRecord create(Ipam ipam, String fid) throws Exception {
    return await(ipam.createNetwork(fid, Optional.empty(), Map.of()));
  }

  List<String> keys(String under) throws Exception {
    return await(store.list(under)).kvs().stream().map(KeyValue::key).toList();
  }

  static Owner container(String node, String mac) {
    return Owner.container(node, mac, "");
  }

  static Predicate<Owner> heldBy(String node) {
    return o -> o.space() == Space.LOCAL && o.node().equals(node);
  }

  // ---- networks ---------------------------------------------------------------------------

  @Test
  void createNetworkPicksTheFirstFreeBlockInAvailableSubnetsOrder() throws Exception {
    // AVAILABLE_SUBNETS order, not numeric order: 10.60.0.0/19 is carved before 10.20.0.0/19
    Ipam leader = daemon(config("AVAILABLE_SUBNETS", "10.60.0.0/19,10.20.0.0/19"));
    assertThat(create(leader, "a").subnet()).isEqualTo(cidr("10.60.0.0/20"));
    assertThat(create(leader, "b").subnet()).isEqualTo(cidr("10.60.16.0/20"));
    assertThat(create(leader, "c").subnet()).isEqualTo(cidr("10.20.0.0/20"));
    // a freed block is the first free one again
    await(leader.removeNetwork("a"));
    assertThat(create(leader, "d").subnet()).isEqualTo(cidr("10.60.0.0/20"));
    assertThat(await(store.get(schema.addressSpace(cidr("10.60.0.0/20")))).orElseThrow().value()).isEqualTo("d");
  }

  @Test
  void createNetworkHonoursSubnetWhenItIsAFreeCarvedBlock() throws Exception {
    Ipam leader = daemon();
    NetworkRecord b = await(leader.createNetwork("b", Optional.of(cidr("10.60.48.0/20")), Map.of("k", "v")));
    assertThat(b.subnet()).isEqualTo(cidr("10.60.48.0/20"));
    assertThat(b.options()).isEqualTo(Map.of("k", "v"));
    assertThat(await(leader.networkOfSubnet(cidr("10.60.48.0/20")))).contains("b");
    // the wish did not move the first free block
    assertThat(create(leader, "c").subnet()).isEqualTo(cidr("10.60.0.0/20"));
  }

  @Test
  void createNetworkRefusesASubnetThatIsNotACarvedBlockNamingTheAllowedBlocks() throws Exception {
    Ipam leader = daemon();
    create(leader, "a");
    for (String bad : List.of("10.61.0.0/20", "10.60.0.0/24", "10.60.0.0/19", "10.0.0.0/8")) {
      IpamException e = refusal(leader.createNetwork("b", Optional.of(cidr(bad)), Map.of()));
      assertThat(e.reason()).as(bad).isEqualTo(Reason.BAD_REQUEST);
      assertThat(e.getMessage()).as(bad).contains(bad, "/20 blocks of [10.60.0.0/16]", "NETWORK_SUBNET_SIZE=20",
          "the first free block is 10.60.16.0/20");
    }
    assertThat(await(store.get(schema.pool("b")))).isEmpty();
  }

  @Test
  void createNetworkRefusesATakenSubnetNamingItsNetworkAndTheFirstFreeBlock() throws Exception {
    Ipam leader = daemon();
    create(leader, "a");
    IpamException e = refusal(daemon().createNetwork("b", Optional.of(cidr("10.60.0.0/20")), Map.of()));
    assertThat(e.reason()).isEqualTo(Reason.IN_USE);
    assertThat(e.getMessage()).contains("10.60.0.0/20", "network a", "the first free block is 10.60.16.0/20");
    assertThat(await(store.get(schema.pool("b")))).isEmpty();
    assertThat(keys(schema.vnis())).containsExactly(schema.vni(6515));
  }

  @Test
  void createNetworkReplayedWithTheSameFlannelIdReturnsTheSameRecord() throws Exception {
    Ipam leader = daemon();
    NetworkRecord first = await(leader.createNetwork(FID, Optional.empty(), Map.of("x", "1")));
    assertThat(await(leader.createNetwork(FID, Optional.empty(), Map.of("x", "1")))).isEqualTo(first);
    // a new leader (another daemon, empty cache) replaying Docker's RequestPool
    Ipam newLeader = daemon();
    assertThat(await(newLeader.createNetwork(FID, Optional.empty(), Map.of("x", "1")))).isEqualTo(first);
    assertThat(await(newLeader.createNetwork(FID, Optional.of(first.subnet()), Map.of("x", "1")))).isEqualTo(first);
    // no second block and no second VNI were reserved
    assertThat(keys(schema.addressSpace())).containsExactly(schema.addressSpace(first.subnet()));
    assertThat(keys(schema.vnis())).containsExactly(schema.vni(first.vni()));
    // a replay naming another subnet is a different network: refused
    IpamException e = refusal(newLeader.createNetwork(FID, Optional.of(cidr("10.60.32.0/20")), Map.of()));
    assertThat(e.reason()).isEqualTo(Reason.CONFLICT);
    assertThat(e.getMessage()).contains(first.subnet().toString(), "10.60.32.0/20");
  }

  @Test
  void networkExhaustionNamesAvailableSubnets() throws Exception {
    Ipam leader = daemon(config("AVAILABLE_SUBNETS", "10.60.0.0/19"));
    create(leader, "a");
    create(leader, "b");
    IpamException e = refusal(leader.createNetwork("c", Optional.empty(), Map.of()));
    assertThat(e.reason()).isEqualTo(Reason.EXHAUSTED);
    assertThat(e.getMessage()).contains("AVAILABLE_SUBNETS", "10.60.0.0/19");
    assertThat(await(store.get(schema.pool("c")))).isEmpty();
    assertThat(keys(schema.vnis())).hasSize(2);
  }

  @Test
  void vnisStartAboveVniStartAndAreNeverSharedByTwoLiveNetworks() throws Exception {
    Ipam leader = daemon();
    NetworkRecord a = create(leader, "a");
    NetworkRecord b = create(leader, "b");
    assertThat(a.vni()).isEqualTo(6515);
    assertThat(b.vni()).isEqualTo(6516);
    await(leader.removeNetwork("a"));
    NetworkRecord c = create(daemon(), "c");
    assertThat(c.vni()).isNotEqualTo(b.vni()).isGreaterThan(6514);
    // every VNI key names exactly one live network, and every live network has its own
    Map<String, String> vnis = new HashMap<>();
    for (KeyValue kv : await(store.list(schema.vnis())).kvs()) {
      vnis.put(kv.key().substring(schema.vnis().length()), kv.value());
    }
    assertThat(vnis).containsOnly(Map.entry(String.valueOf(b.vni()), "b"), Map.entry(String.valueOf(c.vni()), "c"));
    assertThat(c.vni()).isEqualTo(6515); // the lowest free one: the removed network's

    // concurrent creations by three leaders (a leader change overlapping): distinct blocks and VNIs
    List<Ipam> leaders = List.of(daemon(), daemon(), daemon());
    List<Future<NetworkRecord>> racing = new ArrayList<>();
    for (int i = 0; i < 9; i++) {
      racing.add(leaders.get(i % 3).createNetwork("r" + i, Optional.empty(), Map.of()));
    }
    await(Future.all(racing));
    List<NetworkRecord> all = new ArrayList<>(List.of(b, c));
    racing.forEach(f -> all.add(f.result()));
    assertThat(all.stream().map(NetworkRecord::vni)).doesNotHaveDuplicates();
    assertThat(all.stream().map(NetworkRecord::subnet)).doesNotHaveDuplicates();
    assertThat(keys(schema.vnis())).hasSize(11);
    assertThat(keys(schema.addressSpace())).hasSize(11);

    // VNI_START moves the range
    Ipam other = daemon(config("VNI_START", "7000", "AVAILABLE_SUBNETS", "10.61.0.0/16"));
    assertThat(create(other, "d").vni()).isEqualTo(7001);
  }

  @Test
  void flannelConfigIsExactlyFlannelsJson() throws Exception {
    Ipam leader = daemon();
    NetworkRecord rec = create(leader, FID);
    assertThat(await(store.get(schema.networkConfig(FID))).orElseThrow().value()).isEqualTo(
        "{\"Network\":\"10.60.0.0/20\",\"SubnetLen\":25,\"SubnetMin\":\"10.60.0.128\",\"SubnetMax\":\"10.60.15.128\","
            + "\"Backend\":{\"Type\":\"vxlan\",\"VNI\":6515,\"Port\":8472}}");
    assertThat(NetworkRecord.fromJson(await(store.get(schema.pool(FID))).orElseThrow().value())).isEqualTo(rec);
  }

  // ---- node leases ------------------------------------------------------------------------

  @Test
  void nodeLeaseIsFlannelsValueOnAnEtcdLeaseOfSubnetLeaseTtl() throws Exception {
    create(daemon(), FID);
    Ipam node = daemon();
    Ipam.NodeLease lease = await(node.ensureNodeLease(FID, "node-a", "198.18.0.11"));
    assertThat(lease.block()).isEqualTo(cidr("10.60.0.128/25"));
    String key = prefix + "/networks/" + FID + "/subnets/10.60.0.128-25";
    KeyValue kv = await(store.get(key)).orElseThrow();
    String mac = FlannelJson.vtepMac("node-a", 6515);
    assertThat(mac).matches("0e(:[0-9a-f]{2}){5}");
    assertThat(kv.value()).isEqualTo("{\"PublicIP\":\"198.18.0.11\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\","
        + "\"BackendData\":{\"VNI\":6515,\"VtepMAC\":\"" + mac + "\"}}");
    assertThat(lease.value()).isEqualTo(kv.value());
    assertThat(kv.lease()).isEqualTo(lease.leaseId()).isNotZero();
    long ttl = await(store.leaseTtl(kv.lease()));
    assertThat(ttl).isBetween(TTL - 10, TTL);
    // asking again returns the held lease, without a second key
    assertThat(await(node.ensureNodeLease(FID, "node-a", "198.18.0.11"))).isEqualTo(lease);
    assertThat(keys(schema.subnets(FID))).containsExactly(key);
    // giving it up revokes the etcd lease, and the key goes with it
    await(node.releaseNodeLease(FID));
    assertThat(keys(schema.subnets(FID))).isEmpty();
    assertThat(await(store.leaseTtl(lease.leaseId()))).isEqualTo(-1L);
  }

  /**
   * -subnet-lease-renew-margin=1 with a 75 s lease: renewed at the latest 60 s before expiry (every
   * 15 s), sooner than the keep-alive stream's third of the TTL (25 s), so the lease never has
   * less than a minute left.
   */
  @Test
  @Timeout(value = 90, unit = TimeUnit.SECONDS)
  void subnetLeaseRenewMarginRenewsTheLeaseBeforeItsMarginIsReached() throws Exception {
    create(daemon(), FID);
    Config c = config("SUBNET_LEASE_TTL", "75", "DEFAULT_FLANNEL_OPTIONS", "-subnet-lease-renew-margin=1");
    assertThat(c.subnetLeaseRenewSeconds()).isEqualTo(15);
    Ipam.NodeLease lease = await(daemon(c).ensureNodeLease(FID, "node-a", "198.18.0.11"));
    long least = Long.MAX_VALUE;
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(34);
    while (System.nanoTime() < deadline) {
      least = Math.min(least, await(store.leaseTtl(lease.leaseId())));
      Thread.sleep(1000);
    }
    // without the margin the stream renews after ~26 s, when 49 s are left
    assertThat(least).isGreaterThanOrEqualTo(57);
  }

  @Test
  void aRestartedDaemonWithTheSamePublicIpTakesTheSameBlockBackAndAnotherIpGetsTheNext() throws Exception {
    create(daemon(), FID);
    Ipam first = daemon();
    Ipam.NodeLease before = await(first.ensureNodeLease(FID, "node-a", "198.18.0.11"));
    first.detach(); // the daemon stops without revoking, as a restart does

    Ipam restarted = daemon();
    Ipam.NodeLease after = await(restarted.ensureNodeLease(FID, "node-a", "198.18.0.11"));
    assertThat(after.block()).isEqualTo(before.block()).isEqualTo(cidr("10.60.0.128/25"));
    assertThat(after.value()).isEqualTo(before.value());
    KeyValue kv = await(store.get(schema.subnet(FID, after.block()))).orElseThrow();
    assertThat(kv.lease()).isEqualTo(after.leaseId());

    Ipam other = daemon(config("NODE_NAME", "node-b"));
    Ipam.NodeLease next = await(other.ensureNodeLease(FID, "node-b", "198.18.0.12"));
    assertThat(next.block()).isEqualTo(cidr("10.60.1.0/25"));
    assertThat(keys(schema.subnets(FID))).hasSize(2);
  }

  @Test
  void nodeBlockExhaustionNamesDefaultHostSubnetSize() throws Exception {
    Config small = config("DEFAULT_HOST_SUBNET_SIZE", "22");
    assertThat(small.nodesPerNetwork()).isEqualTo(3);
    create(daemon(small), FID);
    List<Cidr> blocks = new ArrayList<>();
    for (int i = 1; i <= 3; i++) {
      blocks.add(await(daemon(small).ensureNodeLease(FID, "node-" + i, "198.18.0.1" + i)).block());
    }
    assertThat(blocks).containsExactly(cidr("10.60.4.0/22"), cidr("10.60.8.0/22"), cidr("10.60.12.0/22"));
    IpamException e = refusal(daemon(small).ensureNodeLease(FID, "node-4", "198.18.0.14"));
    assertThat(e.reason()).isEqualTo(Reason.EXHAUSTED);
    assertThat(e.getMessage()).contains("DEFAULT_HOST_SUBNET_SIZE", "3 node blocks", "10.60.0.0/20");
  }

  /**
   * A node daemon caches the network and its lease. When the leader removes the network and the
   * same flannel-id is created again (e.g. {@code docker stack rm} + {@code docker stack deploy}
   * with a fixed flannel-id), the network may have another subnet and VNI, and the node's old lease
   * key is gone: the node must not go on serving the old record and the keyless lease.
   */
  @Test
  void aDaemonDoesNotServeANetworkOrLeaseThatAnotherDaemonRemovedAndRecreated() throws Exception {
    Ipam leader = daemon();
    NetworkRecord old = create(leader, FID);
    Ipam node = daemon();
    assertThat(await(node.network(FID))).isEqualTo(old);
    assertThat(await(node.ensureNodeLease(FID, "node-a", "198.18.0.11")).block()).isEqualTo(cidr("10.60.0.128/25"));

    await(leader.removeNetwork(FID));
    NetworkRecord other = create(leader, "other"); // takes the freed block and VNI
    assertThat(other.subnet()).isEqualTo(old.subnet());
    assertThat(other.vni()).isEqualTo(old.vni());
    NetworkRecord again = create(leader, FID);
    assertThat(again.subnet()).isEqualTo(cidr("10.60.16.0/20"));
    assertThat(again.vni()).isEqualTo(6516);

    // the node's view catches up (at once, or soon if the fix is a watch)
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
    NetworkRecord seen = await(node.network(FID));
    while (!seen.equals(again) && System.nanoTime() < deadline) {
      Thread.sleep(50);
      seen = await(node.network(FID));
    }
    assertThat(seen).as("the node's record of the re-created network (the stale one has the subnet and VNI of"
        + " network 'other')").isEqualTo(again);
    Ipam.NodeLease lease = await(node.ensureNodeLease(FID, "node-a", "198.18.0.11"));
    assertThat(again.subnet().contains(lease.block())).as("lease %s inside %s", lease.block(), again.subnet()).isTrue();
    assertThat(await(store.get(schema.subnet(FID, lease.block())))).as("the lease's key in etcd").isPresent();
  }

  /** A call on a closed client (a Docker call racing the daemon's stop) fails with the real cause. */
  @Test
  void ensureNodeLeaseOnAClosedClientFailsWithEtcdUnavailable() throws Exception {
    create(daemon(), FID);
    EtcdStore closing = newStore();
    Ipam node = new Ipam(closing, schema, config());
    await(node.network(FID)); // cached: the acquisition then fails without waiting for etcd
    closing.close();
    Future<Ipam.NodeLease> f;
    try {
      f = node.ensureNodeLease(FID, "node-a", "198.18.0.11");
    } catch (RuntimeException e) {
      throw new AssertionError("ensureNodeLease threw instead of failing its future", e);
    }
    Throwable cause = catchThrowableOfType(Exception.class, () -> await(f));
    assertThat(cause).isInstanceOf(io.flannelnp.etcd.EtcdUnavailableException.class)
        .hasMessageContaining(etcd.endpoint());
  }

  // ---- addresses --------------------------------------------------------------------------

  @Test
  void clusterRangeExhaustionNamesClusterSubnetSize() throws Exception {
    Ipam leader = daemon();
    NetworkRecord rec = create(leader, FID);
    AddressPlan plan = leader.plan();
    long first = plan.clusterFirst(rec.subnet());
    long last = plan.clusterLast(rec.subnet());
    assertThat(Ipv4.format(first)).isEqualTo("10.60.0.2");
    assertThat(Ipv4.format(last)).isEqualTo("10.60.0.126");
    // allocateNext over one range (IpamApi asks allocateCluster, which grows past it)
    String range = "the cluster range " + plan.clusterRange(rec.subnet()) + " of network " + FID;
    String hint = "it holds the Swarm VIPs and task addresses of the network; give it more room with a shorter"
        + " CLUSTER_SUBNET_SIZE (now /" + plan.clusterSize() + ")";
    List<Long> got = new ArrayList<>();
    for (long i = first; i <= last; i++) {
      got.add(await(leader.allocateNext(FID, first, last, Owner.leader(Kind.PLACEHOLDER, "m1"), range, hint)).address());
    }
    assertThat(got).doesNotHaveDuplicates().hasSize(125).allMatch(a -> a >= first && a <= last);
    IpamException e = refusal(leader.allocateNext(FID, first, last, Owner.leader(Kind.PLACEHOLDER, "m1"), range, hint));
    assertThat(e.reason()).isEqualTo(Reason.EXHAUSTED);
    assertThat(e.getMessage()).contains("CLUSTER_SUBNET_SIZE", "10.60.0.0/25", "125 addresses", "exhausted");
    // another leader (fresh cache) agrees
    IpamException e2 = refusal(daemon().allocateNext(FID, first, last, Owner.leader(Kind.VIP, "m2"), range, hint));
    assertThat(e2.reason()).isEqualTo(Reason.EXHAUSTED);
    // one freed address is found again, even by the leader whose cache saw the range full
    assertThat(await(leader.release(FID, ip("10.60.0.77"), o -> o.space() == Space.GLOBAL))).isTrue();
    assertThat(await(leader.allocateNext(FID, first, last, Owner.leader(Kind.PLACEHOLDER, "m1"), range, hint)).ip())
        .isEqualTo("10.60.0.77");
  }

  /**
   * A /24 network of /26 blocks: the cluster range (61 addresses) grows into the highest blocks no
   * node leases, a node never leases a block the range holds, exhaustion names the settings, and
   * a block whose last address is released goes back to the nodes.
   */
  @Test
  void theClusterRangeGrowsIntoFreeBlocksFromTheTopAndGivesThemBack() throws Exception {
    Config small = config("NETWORK_SUBNET_SIZE", "24", "DEFAULT_HOST_SUBNET_SIZE", "26");
    Ipam leader = daemon(small);
    NetworkRecord rec = create(leader, FID);
    assertThat(rec.subnet()).isEqualTo(cidr("10.60.0.0/24"));
    assertThat(await(daemon(small).ensureNodeLease(FID, "node-a", "198.18.0.11")).block()).isEqualTo(cidr("10.60.0.64/26"));
    List<String> got = new ArrayList<>();
    for (int i = 0; i < 61 + 61; i++) {
      got.add(await(leader.allocateCluster(rec, Owner.leader(Kind.PLACEHOLDER, "m1"))).ip());
    }
    assertThat(got).doesNotHaveDuplicates();
    assertThat(got.subList(0, 61)).allMatch(a -> cidr("10.60.0.0/26").contains(ip(a)));
    assertThat(got.subList(61, 122)).as("the highest free block first").allMatch(a -> cidr("10.60.0.192/26").contains(ip(a)))
        .doesNotContain("10.60.0.192", "10.60.0.193", "10.60.0.255");
    assertThat(keys(schema.clusterBlocks(FID))).containsExactly(prefix + "/networks/" + FID + "/cluster-blocks/10.60.0.192-26");
    // a node that comes now gets the block below, never one the range holds
    Ipam nodeB = daemon(small);
    assertThat(await(nodeB.ensureNodeLease(FID, "node-b", "198.18.0.12")).block()).isEqualTo(cidr("10.60.0.128/26"));
    IpamException full = refusal(leader.allocateCluster(rec, Owner.leader(Kind.VIP, "m1")));
    assertThat(full.reason()).isEqualTo(Reason.EXHAUSTED);
    assertThat(full.getMessage()).contains("Swarm VIPs and tasks", "NETWORK_SUBNET_SIZE (now /24)", "CLUSTER_SUBNET_SIZE",
        "10.60.0.0/26", "1 block(s)");
    IpamException noBlock = refusal(daemon(small).ensureNodeLease(FID, "node-c", "198.18.0.13"));
    assertThat(noBlock.getMessage()).contains("1 of them hold Swarm VIPs and tasks");
    // releasing every address of the grown block gives it back; the base range keeps its own
    for (String a : got.subList(61, 122)) {
      assertThat(await(leader.releaseCluster(rec, ip(a), o -> o.space() == Space.GLOBAL))).isTrue();
    }
    assertThat(keys(schema.clusterBlocks(FID))).isEmpty();
    assertThat(await(daemon(small).ensureNodeLease(FID, "node-c", "198.18.0.13")).block()).isEqualTo(cidr("10.60.0.192/26"));
    // a released address of the base range is reused; the range cannot grow while every block is leased
    assertThat(await(leader.releaseCluster(rec, ip(got.get(5)), o -> o.space() == Space.GLOBAL))).isTrue();
    assertThat(await(leader.allocateCluster(rec, Owner.leader(Kind.VIP, "m1"))).ip()).isEqualTo(got.get(5));
    assertThat(refusal(leader.allocateCluster(rec, Owner.leader(Kind.VIP, "m1"))).reason()).isEqualTo(Reason.EXHAUSTED);
  }

  /** A grown block whose addresses went behind the leader's back (the garbage collector) goes back when a node needs it. */
  @Test
  void aNodeFindingNoFreeBlockGetsAGrownBlockThatNoLongerHoldsAnAddress() throws Exception {
    Config small = config("NETWORK_SUBNET_SIZE", "24", "DEFAULT_HOST_SUBNET_SIZE", "26");
    Ipam leader = daemon(small);
    NetworkRecord rec = create(leader, FID);
    await(daemon(small).ensureNodeLease(FID, "node-a", "198.18.0.11"));
    await(daemon(small).ensureNodeLease(FID, "node-b", "198.18.0.12"));
    List<String> grown = new ArrayList<>();
    for (int i = 0; i < 61 + 3; i++) {
      String a = await(leader.allocateCluster(rec, Owner.leader(Kind.PLACEHOLDER, "m1"))).ip();
      if (cidr("10.60.0.192/26").contains(ip(a))) {
        grown.add(a);
      }
    }
    assertThat(grown).hasSize(3);
    for (String a : grown) {
      await(store.delete(schema.allocation(FID, a))); // what the garbage collector does
    }
    assertThat(await(daemon(small).ensureNodeLease(FID, "node-c", "198.18.0.13")).block()).isEqualTo(cidr("10.60.0.192/26"));
    assertThat(keys(schema.clusterBlocks(FID))).isEmpty();
    IpamException full = refusal(leader.allocateCluster(rec, Owner.leader(Kind.VIP, "m1")));
    assertThat(full.reason()).isEqualTo(Reason.EXHAUSTED);
  }

  /** A give-back cut off after marking the block draining is finished by the next search: nothing is stuck. */
  @Test
  void aClusterBlockLeftDrainingIsSettledByTheNextAllocation() throws Exception {
    Config small = config("NETWORK_SUBNET_SIZE", "24", "DEFAULT_HOST_SUBNET_SIZE", "26");
    Ipam leader = daemon(small);
    NetworkRecord rec = create(leader, FID);
    for (int i = 0; i < 62; i++) {
      await(leader.allocateCluster(rec, Owner.leader(Kind.PLACEHOLDER, "m1")));
    }
    String key = schema.clusterBlock(FID, cidr("10.60.0.192/26"));
    assertThat(await(store.get(key)).orElseThrow().value()).isEqualTo(Ipam.BLOCK_ACTIVE);
    await(store.put(key, Ipam.BLOCK_DRAINING)); // as if the daemon died between the two steps, with an address held
    Ipam other = daemon(small);
    for (int i = 0; i < 3; i++) {
      await(other.allocateCluster(rec, Owner.leader(Kind.PLACEHOLDER, "m2")));
    }
    assertThat(await(store.get(key)).orElseThrow().value()).as("held addresses: active again").isEqualTo(Ipam.BLOCK_ACTIVE);
    assertThat(keys(schema.clusterBlocks(FID))).hasSize(1);
  }

  @Test
  void allocateSpecificIsIdempotentForTheSameHolderAndRefusesAnotherNamingTheHolder() throws Exception {
    create(daemon(), FID);
    Ipam a = daemon();
    long addr = ip("10.60.0.140");
    Owner mine = container("node-a", "02:00:00:00:00:01");
    Ipam.Allocation first = await(a.allocateSpecific(FID, addr, mine));
    assertThat(first.existing()).isFalse();
    assertThat(first.owner()).isEqualTo(mine);
    // the same container asking again (a retried call, a restarted daemon)
    Owner again = container("node-a", "02:00:00:00:00:01");
    Ipam.Allocation second = await(daemon().allocateSpecific(FID, addr, again));
    assertThat(second.existing()).isTrue();
    assertThat(second.owner()).isEqualTo(mine);
    // another container of the same node, a container of another node, the leader: refused
    for (Owner other : List.of(container("node-a", "02:00:00:00:00:02"), container("node-b", "02:00:00:00:00:01"),
        Owner.leader(Kind.PLACEHOLDER, "m1"))) {
      IpamException e = refusal(daemon().allocateSpecific(FID, addr, other));
      assertThat(e.reason()).as(other.describe()).isEqualTo(Reason.IN_USE);
      assertThat(e.getMessage()).as(other.describe())
          .contains("10.60.0.140", "container on node node-a (MAC 02:00:00:00:00:01)");
    }
    assertThat(Owner.fromJson(await(store.get(schema.allocation(FID, "10.60.0.140"))).orElseThrow().value()))
        .isEqualTo(mine);
    // the leader's own replays are the same holder whichever leader asks
    long vip = ip("10.60.0.9");
    assertThat(await(a.allocateSpecific(FID, vip, Owner.leader(Kind.VIP, "m1"))).existing()).isFalse();
    assertThat(await(daemon().allocateSpecific(FID, vip, Owner.leader(Kind.VIP, "m2"))).existing()).isTrue();
  }

  @Test
  void releaseWithAForeignPredicateIsANoOp() throws Exception {
    create(daemon(), FID);
    Ipam a = daemon();
    Ipam b = daemon(config("NODE_NAME", "node-b"));
    long addr = ip("10.60.0.140");
    Owner mine = container("node-a", "02:00:00:00:00:01");
    await(a.allocateSpecific(FID, addr, mine));
    KeyValue before = await(store.get(schema.allocation(FID, "10.60.0.140"))).orElseThrow();
    assertThat(await(b.release(FID, addr, heldBy("node-b")))).isFalse();
    assertThat(await(b.release(FID, addr, o -> o.space() == Space.GLOBAL))).isFalse();
    assertThat(await(a.release(FID, addr, o -> o.node().equals("node-b")))).isFalse();
    KeyValue after = await(store.get(schema.allocation(FID, "10.60.0.140"))).orElseThrow();
    assertThat(after).isEqualTo(before); // same value, same revision: untouched
    // releasing what nobody holds is false too, and the holder's own release works once
    assertThat(await(b.release(FID, ip("10.60.0.141"), heldBy("node-b")))).isFalse();
    assertThat(await(a.release(FID, addr, heldBy("node-a")))).isTrue();
    assertThat(await(a.release(FID, addr, heldBy("node-a")))).isFalse();
    assertThat(await(store.get(schema.allocation(FID, "10.60.0.140")))).isEmpty();
  }

  @Test
  void serialAllocationDoesNotReuseAJustFreedAddressAtOnce() throws Exception {
    create(daemon(), FID);
    Ipam node = daemon();
    Cidr block = await(node.ensureNodeLease(FID, "node-a", "198.18.0.11")).block();
    long first = AddressPlan.nodeFirst(block);
    long last = AddressPlan.nodeLast(block);
    assertThat(Ipv4.format(first)).isEqualTo("10.60.0.130");
    assertThat(Ipv4.format(last)).isEqualTo("10.60.0.254");
    List<String> got = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      got.add(await(node.allocateNext(FID, first, last, container("node-a", "02:00:00:00:00:0" + i), "block", "hint")).ip());
    }
    assertThat(got).containsExactly("10.60.0.130", "10.60.0.131", "10.60.0.132");
    assertThat(await(node.release(FID, ip("10.60.0.131"), heldBy("node-a")))).isTrue();
    assertThat(await(node.release(FID, ip("10.60.0.130"), heldBy("node-a")))).isTrue();
    assertThat(await(node.allocateNext(FID, first, last, container("node-a", "02:00:00:00:00:10"), "block", "hint")).ip())
        .isEqualTo("10.60.0.133");
    assertThat(await(node.allocateNext(FID, first, last, container("node-a", "02:00:00:00:00:11"), "block", "hint")).ip())
        .isEqualTo("10.60.0.134");
  }

  @Test
  void removeNetworkLeavesNoKeyOfTheNetwork() throws Exception {
    Ipam leader = daemon();
    NetworkRecord keep = create(leader, "keep");
    NetworkRecord rec = create(leader, FID);
    Ipam node = daemon();
    Ipam.NodeLease lease = await(node.ensureNodeLease(FID, "node-a", "198.18.0.11"));
    await(node.addPoolRef(FID, "node-a"));
    await(node.allocateSpecific(FID, AddressPlan.nodeGateway(lease.block()), Owner.nodeGateway("node-a")));
    await(node.allocateNext(FID, AddressPlan.nodeFirst(lease.block()), AddressPlan.nodeLast(lease.block()),
        container("node-a", "02:00:00:00:00:01"), "block", "hint"));
    await(leader.allocateSpecific(FID, leader.plan().clusterGateway(rec.subnet()), Owner.leader(Kind.GATEWAY, "m1")));
    await(store.put(schema.dockerId(FID), "d0c4e7"));
    assertThat(keys(schema.network(FID))).hasSizeGreaterThanOrEqualTo(7);

    await(leader.removeNetwork(FID));
    assertThat(keys(schema.network(FID))).isEmpty();
    assertThat(await(store.get(schema.addressSpace(rec.subnet())))).isEmpty();
    assertThat(await(store.get(schema.vni(rec.vni())))).isEmpty();
    // the other network is untouched, and nothing else of the removed one is anywhere
    assertThat(keys(schema.root())).allMatch(k -> !k.contains(FID)).containsExactlyInAnyOrder(
        schema.addressSpace(keep.subnet()), schema.vni(keep.vni()), schema.pool("keep"), schema.networkConfig("keep"));
    // idempotent, and the network is gone for every daemon
    await(leader.removeNetwork(FID));
    IpamException e = refusal(daemon().network(FID));
    assertThat(e.reason()).isEqualTo(Reason.NOT_FOUND);
  }
}
