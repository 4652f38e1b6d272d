package io.flannelnp.api;

import static io.flannelnp.testing.PluginClient.j;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.Daemon;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.log.Logging;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Lab;
import io.flannelnp.testing.PluginClient;
import io.flannelnp.testing.PluginClient.Response;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * Replays, step by step, the calls a Docker 20.10 Swarm leader and its nodes make
 * (plugin-call-transcript.md): three simulated nodes, each a real daemon (all verticles) whose
 * data plane works in a network namespace of its own, one real etcd. Every response body and the
 * etcd state after each step are asserted; at the end nothing of the network is left in etcd.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class SwarmProtocolReplayTest {
  static final String PREFIX = "/fnp-replay";
  static final String NET_ID = "aymbibsvs3bn0i3q5sc8gl5n9"; // a 25-char swarm network ID
  static final String FID = UUID.randomUUID().toString();
  static final String GLOBAL_POOL = "FlannelGlobal/" + FID;
  static final String LOCAL_POOL = "FlannelLocal/" + FID;
  static final String GW_OPT = "com.docker.network.gateway";

  static EtcdServer etcdServer;
  static Vertx testVertx;
  static EtcdStore etcd;
  static EtcdSchema schema = new EtcdSchema(PREFIX);
  static Path dir;
  static final Map<String, Node> nodes = new HashMap<>();
  static final List<String> namespaces = new ArrayList<>();
  static final String RUN = Long.toHexString(System.nanoTime() & 0xffffff);

  /** One simulated Docker host: its own daemon, plugin socket and netns. */
  static final class Node {
    final String name;
    final String ns;
    final String publicIp;
    final PluginClient client;
    Daemon daemon;

    Node(String name, int i) throws IOException {
      this.name = name;
      this.ns = "fnpr-" + RUN + "-" + i;
      this.publicIp = "198.18.0." + (10 + i);
      this.client = new PluginClient(Lab.pluginSocket(dir, name));
      run("ip", "netns", "add", ns);
      namespaces.add(ns);
      run("ip", "-n", ns, "link", "set", "lo", "up");
    }

    void start() throws Exception {
      // no -iface: the namespace has no uplink, the VXLAN device is bound to none
      daemon = Lab.startDaemon(Lab.daemonEnv(etcdServer, PREFIX, "10.50.0.0/16", dir, name, "-public-ip=" + publicIp), ns);
    }

    void stop() {
      if (daemon != null) {
        daemon.stop(8, TimeUnit.SECONDS);
        daemon = null;
      }
    }

    JsonObject ok(String path, JsonObject body) throws IOException {
      return client.ok(path, body);
    }

    String error(String path, JsonObject body) throws IOException {
      Response r = client.post(path, body.encode());
      JsonObject j = new JsonObject(r.body());
      String e = j.getString(path.startsWith("/Ipam") ? "Error" : "Err");
      assertThat(e).as(name + " " + path + " must fail; got " + r.body()).isNotBlank();
      return e;
    }

    boolean hasLink(String link) {
      return exec("ip", "-n", ns, "link", "show", "dev", link) == 0;
    }
  }

  @BeforeAll
  static void up() throws Exception {
    Logging.configure("warn");
    etcdServer = EtcdServer.start();
    testVertx = Vertx.vertx();
    etcd = new EtcdStore(testVertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    dir = Files.createTempDirectory("fnp-replay");
    for (int i = 1; i <= 3; i++) {
      Node n = new Node("n" + i, i);
      nodes.put(n.name, n);
      n.start();
    }
  }

  @AfterAll
  static void down() throws Exception {
    for (Node n : nodes.values()) {
      n.stop();
    }
    for (String ns : namespaces) {
      exec("ip", "netns", "del", ns);
    }
    List<KeyValue> left = Lab.closeEtcd(etcdServer, testVertx, etcd, PREFIX);
    Lab.deleteDir(dir);
    assertThat(left).as("etcd keys left").isEmpty();
    assertThat(new String(new ProcessBuilder("ip", "netns", "list").start().getInputStream().readAllBytes()))
        .doesNotContain("fnpr-" + RUN);
  }

  // ---- helpers -----------------------------------------------------------------------------

  static void run(String... cmd) {
    assertThat(exec(cmd)).as(String.join(" ", cmd)).isZero();
  }

  static int exec(String... cmd) {
    try {
      Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
      return p.waitFor(20, TimeUnit.SECONDS) ? p.exitValue() : -1;
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }

  static Node node(String n) {
    return nodes.get(n);
  }

  static String value(String key) throws Exception {
    return etcd.get(key).await(5, TimeUnit.SECONDS).map(KeyValue::value).orElse(null);
  }

  static JsonObject owner(String ip) throws Exception {
    String v = value(schema.allocation(FID, ip));
    return v == null ? null : new JsonObject(v);
  }

  static List<String> allocated() throws Exception {
    return etcd.list(schema.allocations(FID)).await(5, TimeUnit.SECONDS).kvs().stream()
        .map(kv -> kv.key().substring(schema.allocations(FID).length())).sorted().toList();
  }

  static String mac(int i) {
    return String.format("02:42:0a:32:00:%02x", i);
  }

  static String endpointId(int i) {
    return String.format("%02x%062x", i, 0xe0000L + i); // distinct in the first characters, as Docker's random IDs are
  }

  /** Leader: RequestAddress with the allocator's options, as for a VIP or a task. */
  static String leaderAddress(Node leader, String address) throws Exception {
    return leader.ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL_POOL, "Address", address,
        "Options", j("flannel-id", FID, "com.docker.network.ipam.serial", "true"))).getString("Address");
  }

  /** A node starting a task: local RequestAddress, CreateEndpoint, Join. Returns the address. */
  static String startTask(Node n, String placeholder, int i) throws Exception {
    String addr = n.ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL_POOL, "Address", placeholder,
        "Options", j("com.docker.network.endpoint.macaddress", mac(i)))).getString("Address");
    JsonObject ce = n.ok("/NetworkDriver.CreateEndpoint", j("NetworkID", NET_ID, "EndpointID", endpointId(i),
        "Interface", j("Address", addr, "AddressIPv6", "", "MacAddress", ""),
        "Options", j("com.docker.network.endpoint.exposedports", new JsonArray(), "com.docker.network.portmap", new JsonArray())));
    assertThat(ce).isEqualTo(j("Interface", j("MacAddress", mac(i))));
    JsonObject join = n.ok("/NetworkDriver.Join", j("NetworkID", NET_ID, "EndpointID", endpointId(i),
        "SandboxKey", "/var/run/docker/netns/" + endpointId(i).substring(0, 12), "Options", j()));
    String src = join.getJsonObject("InterfaceName").getString("SrcName");
    assertThat(join.getJsonObject("InterfaceName").getString("DstPrefix")).isEqualTo("eth");
    assertThat(join.containsKey("Gateway")).as("no default gateway: Docker adds docker_gwbridge").isFalse();
    assertThat(join.getBoolean("DisableGatewayService")).isFalse();
    JsonObject route = join.getJsonArray("StaticRoutes").getJsonObject(0);
    assertThat(route.getString("Destination")).isEqualTo("10.50.0.0/20");
    assertThat(route.getInteger("RouteType")).isZero();
    Cidr block = Cidr.containing(io.flannelnp.ipam.Ipv4.parse(addr.substring(0, addr.indexOf('/'))), 25);
    assertThat(route.getString("NextHop")).isEqualTo(io.flannelnp.ipam.Ipv4.format(block.base() + 1));
    assertThat(n.hasLink(src)).as("the veth Docker moves exists in " + n.name).isTrue();
    return addr;
  }

  static void stopTask(Node n, String addr, int i) throws Exception {
    n.ok("/NetworkDriver.Leave", j("NetworkID", NET_ID, "EndpointID", endpointId(i)));
    n.ok("/NetworkDriver.DeleteEndpoint", j("NetworkID", NET_ID, "EndpointID", endpointId(i)));
    n.ok("/IpamDriver.ReleaseAddress", j("PoolID", LOCAL_POOL, "Address", addr.substring(0, addr.indexOf('/'))));
    assertThat(value(schema.endpoint(n.name, endpointId(i)))).isNull();
  }

  static void nodeCreatesNetwork(Node n) throws Exception {
    JsonObject pool = n.ok("/IpamDriver.RequestPool", j("AddressSpace", "FlannelLocal", "Pool", "10.50.0.0/20",
        "SubPool", "", "Options", j("flannel-id", FID, "com.docker.network.ipam.serial", "true"), "V6", false));
    assertThat(pool).isEqualTo(j("PoolID", LOCAL_POOL, "Pool", "10.50.0.0/20", "Data", j()));
    n.ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.0.1", "Options", j("RequestAddressType", GW_OPT)));
    JsonObject generic = j("flannel-id", FID, NetworkApi.OPT_FLANNEL_ID, FID, NetworkApi.OPT_VNI, "6515");
    assertThat(n.ok("/NetworkDriver.CreateNetwork", j("NetworkID", NET_ID,
        "Options", j("com.docker.network.generic", generic, "com.docker.network.enable_ipv6", false),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "FlannelLocal", "Pool", "10.50.0.0/20", "Gateway", "10.50.0.1/20")),
        "IPv6Data", new JsonArray()))).isEqualTo(j());
  }

  static void nodeDeletesNetwork(Node n, String gateway) throws Exception {
    n.ok("/IpamDriver.ReleaseAddress", j("PoolID", LOCAL_POOL, "Address", gateway));
    n.ok("/IpamDriver.ReleasePool", j("PoolID", LOCAL_POOL));
    n.ok("/NetworkDriver.DeleteNetwork", j("NetworkID", NET_ID));
  }

  // ---- the scenario ------------------------------------------------------------------------

  static final Map<String, String> placeholders = new HashMap<>();
  static final Map<Integer, String> taskAddr = new HashMap<>();

  @Test
  @Order(1)
  void networkCreateOnTheLeaderReservesSubnetVniConfigAndGateway() throws Exception {
    Node leader = node("n1");
    JsonObject pool = leader.ok("/IpamDriver.RequestPool", j("AddressSpace", "FlannelGlobal", "Pool", "", "SubPool", "",
        "Options", j("flannel-id", FID), "V6", false));
    assertThat(pool).isEqualTo(j("PoolID", GLOBAL_POOL, "Pool", "10.50.0.0/20", "Data", j()));
    JsonObject gw = leader.ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL_POOL, "Address", "",
        "Options", j("flannel-id", FID, "RequestAddressType", GW_OPT, "com.docker.network.ipam.serial", "true")));
    assertThat(gw).isEqualTo(j("Address", "10.50.0.1/25", "Data", j()));
    JsonObject alloc = leader.ok("/NetworkDriver.AllocateNetwork", j("NetworkID", NET_ID, "Options", j("user.opt", "x"),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "", "Pool", "10.50.0.0/20", "Gateway", "10.50.0.1/25")),
        "IPv6Data", null));
    assertThat(alloc).isEqualTo(j("Options", j("user.opt", "x", NetworkApi.OPT_FLANNEL_ID, FID, NetworkApi.OPT_VNI, "6515")));

    assertThat(value(schema.addressSpace(Cidr.parse("10.50.0.0/20")))).isEqualTo(FID);
    assertThat(value(schema.vni(6515))).isEqualTo(FID);
    assertThat(value(schema.networkConfig(FID))).isEqualTo("{\"Network\":\"10.50.0.0/20\",\"SubnetLen\":25,"
        + "\"SubnetMin\":\"10.50.0.128\",\"SubnetMax\":\"10.50.15.128\",\"Backend\":{\"Type\":\"vxlan\",\"VNI\":6515,\"Port\":8472}}");
    assertThat(new JsonObject(value(schema.pool(FID))).getJsonObject("Options")).isEqualTo(j("flannel-id", FID));
    assertThat(owner("10.50.0.1").getString("Kind")).isEqualTo("gateway");
    assertThat(owner("10.50.0.1").getString("Space")).isEqualTo("global");
    assertThat(allocated()).containsExactly("10.50.0.1");
  }

  @Test
  @Order(2)
  void attachableDockerRunOnTheManagerGetsAnAddressOfItsOwnBlockForTheLeadersPlaceholder() throws Exception {
    Node n1 = node("n1");
    String ph = leaderAddress(n1, "");
    assertThat(ph).isEqualTo("10.50.0.2/25");
    nodeCreatesNetwork(n1);
    // the node's Flannel lease, byte for byte
    String lease = value(schema.subnet(FID, Cidr.parse("10.50.0.128/25")));
    assertThat(lease).isEqualTo("{\"PublicIP\":\"198.18.0.11\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\","
        + "\"BackendData\":{\"VNI\":6515,\"VtepMAC\":\"" + io.flannelnp.ipam.FlannelJson.vtepMac("n1", 6515) + "\"}}");
    assertThat(owner("10.50.0.129").getString("Node")).isEqualTo("n1");
    String addr = startTask(n1, "10.50.0.2", 1);
    assertThat(addr).isEqualTo("10.50.0.130/25");
    JsonObject o = owner("10.50.0.130");
    assertThat(o.getString("Kind")).isEqualTo("container");
    assertThat(o.getString("Placeholder")).isEqualTo("10.50.0.2");
    assertThat(o.getString("Mac")).isEqualTo(mac(1));
    assertThat(o.getString("Endpoint")).isEqualTo(endpointId(1));
    assertThat(owner("10.50.0.2").getString("Kind")).as("the placeholder stays accounted").isEqualTo("placeholder");
    JsonObject ep = new JsonObject(value(schema.endpoint("n1", endpointId(1))));
    assertThat(ep.getString("Address")).isEqualTo("10.50.0.130");
    assertThat(ep.getString("SandboxKey")).startsWith("/var/run/docker/netns/");
    taskAddr.put(1, addr);
    placeholders.put("att1", "10.50.0.2");
    // a retried RequestAddress for the same container gets the same address back
    assertThat(n1.ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.0.2",
        "Options", j("com.docker.network.endpoint.macaddress", mac(1)))).getString("Address")).isEqualTo(addr);
  }

  @Test
  @Order(3)
  void attachableDockerRunOnAWorkerLeasesTheNextBlock() throws Exception {
    Node n2 = node("n2");
    String ph = leaderAddress(node("n1"), "");
    assertThat(ph).isEqualTo("10.50.0.3/25");
    nodeCreatesNetwork(n2);
    String addr = startTask(n2, "10.50.0.3", 2);
    assertThat(addr).isEqualTo("10.50.1.2/25");
    assertThat(new JsonObject(value(schema.subnet(FID, Cidr.parse("10.50.1.0/25")))).getString("PublicIP"))
        .isEqualTo("198.18.0.12");
    taskAddr.put(2, addr);
    placeholders.put("att2", "10.50.0.3");
  }

  @Test
  @Order(4)
  void aVipServiceWithThreeReplicasSpreadOverTheNodes() throws Exception {
    Node leader = node("n1");
    String vip = leaderAddress(leader, "");
    assertThat(vip).isEqualTo("10.50.0.4/25");
    placeholders.put("vip", "10.50.0.4");
    List<String> phs = new ArrayList<>();
    for (int t = 0; t < 3; t++) {
      phs.add(leaderAddress(leader, "").replace("/25", ""));
    }
    assertThat(phs).containsExactly("10.50.0.5", "10.50.0.6", "10.50.0.7");
    nodeCreatesNetwork(node("n3"));
    taskAddr.put(3, startTask(node("n1"), phs.get(0), 3));
    taskAddr.put(4, startTask(node("n2"), phs.get(1), 4));
    taskAddr.put(5, startTask(node("n3"), phs.get(2), 5));
    assertThat(taskAddr.get(3)).isEqualTo("10.50.0.131/25");
    assertThat(taskAddr.get(4)).isEqualTo("10.50.1.3/25");
    assertThat(taskAddr.get(5)).isEqualTo("10.50.1.130/25");
    for (int t = 0; t < 3; t++) {
      placeholders.put("svc." + (t + 3), phs.get(t));
    }
  }

  @Test
  @Order(5)
  void scaleUpAndDownReleasesExactlyWhatWasTaken() throws Exception {
    Node leader = node("n1");
    String ph6 = leaderAddress(leader, "").replace("/25", "");
    String ph7 = leaderAddress(leader, "").replace("/25", "");
    taskAddr.put(6, startTask(node("n2"), ph6, 6));
    taskAddr.put(7, startTask(node("n3"), ph7, 7));
    List<String> before = allocated();
    // scale 5 → 3: tasks 6 and 7 stop on their nodes, then the leader releases their placeholders
    stopTask(node("n2"), taskAddr.remove(6), 6);
    stopTask(node("n3"), taskAddr.remove(7), 7);
    leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", ph6));
    leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", ph7));
    List<String> after = allocated();
    assertThat(before.size() - after.size()).isEqualTo(4);
    assertThat(after).doesNotContain(ph6, ph7, "10.50.1.4", "10.50.1.131");
    assertThat(node("n2").hasLink("fnph" + endpointId(6).substring(0, 11))).isFalse();
    // serial: the leader does not hand the just-freed placeholder out again at once
    String next = leaderAddress(leader, "").replace("/25", "");
    assertThat(next).isNotIn(ph6, ph7);
    leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", next));
  }

  @Test
  @Order(6)
  void releasesFromTheWrongPoolOrNodeFreeNothing() throws Exception {
    // a node releasing the leader's placeholder through its local pool, another node releasing
    // n1's container: both are no-ops
    node("n2").ok("/IpamDriver.ReleaseAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.0.5"));
    node("n2").ok("/IpamDriver.ReleaseAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.0.131"));
    node("n1").ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", "10.50.0.131"));
    assertThat(owner("10.50.0.5")).isNotNull();
    assertThat(owner("10.50.0.131").getString("Node")).isEqualTo("n1");
    // docker run --ip with an address another container holds: refused, naming the holder
    String err = node("n1").error("/IpamDriver.RequestAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.0.131",
        "Options", j("com.docker.network.endpoint.macaddress", mac(99))));
    assertThat(err).contains("10.50.0.131").contains("in use by container on node n1");
    // an address of another node's block on this node: refused with the block to use
    err = node("n1").error("/IpamDriver.RequestAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.1.50", "Options", j()));
    assertThat(err).contains("10.50.1.0/25").contains("10.50.0.128/25");
    // docker run --ip with a free address of its own block: honoured
    String ip = node("n1").ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.0.200",
        "Options", j("com.docker.network.endpoint.macaddress", mac(98)))).getString("Address");
    assertThat(ip).isEqualTo("10.50.0.200/25");
    node("n1").ok("/IpamDriver.ReleaseAddress", j("PoolID", LOCAL_POOL, "Address", "10.50.0.200"));
  }

  @Test
  @Order(7)
  void aLeaderChangeReplaysPoolsGatewaysVipsAndTasksIdempotently() throws Exception {
    Node newLeader = node("n2");
    List<String> before = allocated();
    JsonObject pool = newLeader.ok("/IpamDriver.RequestPool", j("AddressSpace", "FlannelGlobal", "Pool", "10.50.0.0/20",
        "SubPool", "", "Options", j("flannel-id", FID), "V6", false));
    assertThat(pool.getString("PoolID")).isEqualTo(GLOBAL_POOL);
    assertThat(newLeader.ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL_POOL, "Address", "10.50.0.1",
        "Options", j("flannel-id", FID, "RequestAddressType", GW_OPT))).getString("Address")).isEqualTo("10.50.0.1/25");
    for (String ph : placeholders.values()) {
      assertThat(leaderAddress(newLeader, ph)).isEqualTo(ph + "/25");
    }
    JsonObject alloc = newLeader.ok("/NetworkDriver.AllocateNetwork", j("NetworkID", NET_ID,
        "Options", j("user.opt", "x", NetworkApi.OPT_FLANNEL_ID, FID, NetworkApi.OPT_VNI, "6515"),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "", "Pool", "10.50.0.0/20", "Gateway", "10.50.0.1/25"))));
    assertThat(alloc.getJsonObject("Options").getString(NetworkApi.OPT_VNI)).isEqualTo("6515");
    assertThat(allocated()).as("a replay allocates nothing new").isEqualTo(before);
  }

  /** Everything under the prefix but the node records (their leases change with every restart). */
  static List<String> everything() throws Exception {
    return etcd.list(PREFIX + "/").await(5, TimeUnit.SECONDS).kvs().stream()
        .filter(kv -> !kv.key().startsWith(PREFIX + "/nodes/")).map(kv -> kv.key() + "=" + kv.value()).sorted().toList();
  }

  /** The bridge and the host veths of every running task, node by node. */
  static Map<String, List<String>> links() {
    Map<String, List<String>> out = new java.util.TreeMap<>();
    for (Node n : nodes.values()) {
      List<String> l = new ArrayList<>();
      l.add(n.hasLink(io.flannelnp.flannel.Names.bridge(FID)) ? "bridge" : "no bridge");
      for (int i : taskAddr.keySet()) {
        if (n.hasLink(io.flannelnp.flannel.Names.hostVeth(endpointId(i)))) {
          l.add("veth " + i);
        }
      }
      out.put(n.name, l);
    }
    return out;
  }

  /**
   * Swarm rolls back a failed allocation (AllocateNetwork failing on a new leader, e.g. etcd slow
   * during the election) with ReleaseAddress(gateway) + ReleasePool and no FreeNetwork: the live
   * network must stay exactly as it is, in etcd and in every node's kernel.
   */
  @Test
  @Order(10)
  void swarmsRollbackOfAnAllocationLeavesTheLiveNetworkAsItWas() throws Exception {
    Node newLeader = node("n2");
    List<String> before = everything();
    Map<String, List<String>> kernel = links();
    assertThat(kernel.values()).allSatisfy(l -> assertThat(l).contains("bridge"));
    newLeader.ok("/IpamDriver.RequestPool", j("AddressSpace", "FlannelGlobal", "Pool", "10.50.0.0/20", "SubPool", "",
        "Options", j("flannel-id", FID), "V6", false));
    newLeader.ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL_POOL, "Address", "10.50.0.1",
        "Options", j("flannel-id", FID, "RequestAddressType", GW_OPT)));
    // allocateDriverState failed: freePools
    newLeader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", "10.50.0.1"));
    newLeader.ok("/IpamDriver.ReleasePool", j("PoolID", GLOBAL_POOL));
    Thread.sleep(2000); // every plane has had its chance to react to a change (there must be none)
    assertThat(everything()).as("etcd after the rollback").isEqualTo(before);
    assertThat(links()).as("bridges and veths after the rollback").isEqualTo(kernel);
  }

  /**
   * A second Docker network with a flannel-id another network holds is refused at AllocateNetwork,
   * naming the other network; Swarm's rollback of that refusal changes nothing either.
   */
  @Test
  @Order(11)
  void aSecondNetworkWithTheSameFlannelIdIsRefusedAndItsRollbackChangesNothing() throws Exception {
    Node leader = node("n1");
    List<String> before = everything();
    etcd.put(schema.dockerNetwork(NET_ID), new io.flannelnp.model.DockerNetwork(NET_ID, "shared", "flannel-np:test",
        FID, "10.50.0.0/20").toJson()).await(5, TimeUnit.SECONDS); // the managers' mirror names it
    leader.ok("/IpamDriver.RequestPool", j("AddressSpace", "FlannelGlobal", "Pool", "", "SubPool", "",
        "Options", j("flannel-id", FID), "V6", false));
    leader.ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL_POOL, "Address", "",
        "Options", j("flannel-id", FID, "RequestAddressType", GW_OPT, "com.docker.network.ipam.serial", "true")));
    String err = leader.error("/NetworkDriver.AllocateNetwork", j("NetworkID", "secondnetwork0000000000000",
        "Options", j("flannel-id", FID),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "", "Pool", "10.50.0.0/20", "Gateway", "10.50.0.1/25"))));
    assertThat(err).contains("flannel-id " + FID + " already belongs to network 'shared' (" + NET_ID + ")")
        .contains("own flannel-id");
    leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", "10.50.0.1"));
    leader.ok("/IpamDriver.ReleasePool", j("PoolID", GLOBAL_POOL));
    etcd.delete(schema.dockerNetwork(NET_ID)).await(5, TimeUnit.SECONDS);
    assertThat(everything()).isEqualTo(before);
  }

  /** Docker 20.10 sends no MAC: a retried RequestAddress is known by its placeholder alone. */
  @Test
  @Order(12)
  void aRetriedRequestAddressForThePlaceholderGetsTheSameAddress() throws Exception {
    String ph = leaderAddress(node("n1"), "").replace("/25", "");
    JsonObject req = j("PoolID", LOCAL_POOL, "Address", ph, "Options", null);
    String first = node("n3").ok("/IpamDriver.RequestAddress", req).getString("Address");
    String again = node("n3").ok("/IpamDriver.RequestAddress", req).getString("Address");
    assertThat(again).isEqualTo(first);
    node("n3").ok("/IpamDriver.ReleaseAddress", j("PoolID", LOCAL_POOL, "Address", first.replace("/25", "")));
    node("n1").ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", ph));
    assertThat(owner(first.replace("/25", ""))).isNull();
  }

  @Test
  @Order(20)
  void aDaemonRestartedInTheMiddleAnswersForEndpointsCreatedBeforeIt() throws Exception {
    Node n3 = node("n3");
    n3.stop();
    n3.start();
    // the restarted daemon still has its block and tears down an endpoint it did not create
    stopTask(n3, taskAddr.remove(5), 5);
    assertThat(n3.hasLink("fnpc" + endpointId(5).substring(0, 11))).isFalse();
    String addr = startTask(n3, "10.50.0.6", 8);
    assertThat(addr).startsWith("10.50.1.1").as("same block after the restart").endsWith("/25");
    taskAddr.put(8, addr);
  }

  @Test
  @Order(30)
  void serviceRemovalThenNetworkRemovalLeaveNothingInEtcd() throws Exception {
    Node leader = node("n1");
    // service rm: the leader frees the VIP first, then tasks stop and their placeholders go
    leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", placeholders.remove("vip")));
    Map<Integer, String> onNode = Map.of(1, "n1", 2, "n2", 3, "n1", 4, "n2", 8, "n3");
    for (Map.Entry<Integer, String> t : new HashMap<>(taskAddr).entrySet()) {
      stopTask(node(onNode.get(t.getKey())), t.getValue(), t.getKey());
    }
    for (String ph : placeholders.values()) {
      leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", ph));
    }
    // a placeholder that is still released twice is harmless
    leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", "10.50.0.5"));
    nodeDeletesNetwork(node("n1"), "10.50.0.129");
    nodeDeletesNetwork(node("n2"), "10.50.1.1");
    nodeDeletesNetwork(node("n3"), "10.50.1.129");
    assertThat(allocated()).containsExactly("10.50.0.1");
    // docker network rm on the manager
    leader.ok("/NetworkDriver.FreeNetwork", j("NetworkID", NET_ID));
    leader.ok("/IpamDriver.ReleaseAddress", j("PoolID", GLOBAL_POOL, "Address", "10.50.0.1"));
    leader.ok("/IpamDriver.ReleasePool", j("PoolID", GLOBAL_POOL));
    List<String> left = etcd.list(PREFIX + "/").await(5, TimeUnit.SECONDS).kvs().stream().map(KeyValue::key)
        .filter(k -> !k.startsWith(PREFIX + "/nodes/") && !k.equals(schema.settings())).toList();
    assertThat(left).as("nothing of the network is left in etcd").isEmpty();
    for (Node n : nodes.values()) {
      assertThat(n.hasLink(io.flannelnp.flannel.Names.bridge(FID))).as("bridge gone on " + n.name).isFalse();
    }
  }
}
