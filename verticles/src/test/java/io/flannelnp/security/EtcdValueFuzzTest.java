package io.flannelnp.security;

import static io.flannelnp.testing.PluginClient.j;
import static org.assertj.core.api.Assertions.assertThat;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.FlannelJson;
import io.flannelnp.ipam.Ipv4;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.testing.DockerSandbox;
import io.flannelnp.testing.Poll;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.Timeout;

/**
 * Random bytes under every key family of etcd, one family at a time, against the real daemon with
 * a live network, a VIP service and a container it serves DNS in. Every node reads every key, and
 * every node can write any: a value that does not parse must cost only itself. After each family's
 * garbage, every plane still does its job for a change made after it (IPAM hands out addresses and
 * networks, the load balancer programs a new VIP, the container resolves a new service, the VXLAN
 * plane programs a new peer), and the bad record is named in the log.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class EtcdValueFuzzTest {
  static SecurityLab lab;
  static SecurityLab.Network net;
  static Client raw;
  static DockerSandbox sandbox;
  static String container;
  static final Random RND = new Random(7);
  static int round;

  @BeforeAll
  static void up() throws Exception {
    lab = new SecurityLab("fns-efz");
    lab.env.put("ADMIN_INSECURE_LOOPBACK", "true");
    lab.start();
    raw = Client.builder().endpoints(lab.etcdServer.endpoints().toArray(String[]::new)).build();
    net = lab.createNetwork("fnsef" + lab.run, "efznet");
    container = lab.ns.add("c");
    sandbox = DockerSandbox.of(container);
    String cid = ("c" + lab.run + "0".repeat(64)).substring(0, 64);
    lab.put(lab.schema.dockerContainer(lab.node, cid), new ContainerRecord(cid, "c", "c", lab.node, "", "", "", "",
        "running", sandbox.key, Map.of(net.netId(), new ContainerRecord.Attachment(lab.address(net), "ep", List.of(),
        ""))).toJson());
    Poll.await("the container's resolver", Duration.ofSeconds(30),
        () -> lab.ns.exec(container, "nft", "list", "table", "ip", "flannel-np-dns").exit() == 0);
  }

  @AfterAll
  static void down() throws Exception {
    try {
      if (raw != null) {
        raw.close();
      }
      if (lab != null && lab.daemon != null) {
        lab.daemon.stop(10, TimeUnit.SECONDS);
        lab.daemon = null;
      }
    } finally {
      if (sandbox != null) {
        sandbox.close();
      }
      if (lab != null) {
        lab.etcd.deletePrefix(lab.prefix + "/").await(5, TimeUnit.SECONDS);
        lab.close();
      }
    }
  }

  /**
   * A family: three keys under it (the last one malformed where the key itself is parsed), what
   * in the log shows the bad record was seen (null: nothing reads the family on its own), and
   * whether the daemon restarts after the bytes are written (a family read once, at start).
   */
  record Family(String name, List<String> keys, String reported, boolean restart) {
    Family(String name, List<String> keys, String reported) {
      this(name, keys, reported, false);
    }
  }

  static List<Family> families() {
    String p = lab.prefix;
    String fid = net.fid();
    long base = Cidr.parse(net.subnet()).base();
    String nets = p + "/networks/";
    String spaceBad = p + "/address-space/not-a-subnet";
    String vniBad = p + "/vnis/many";
    String leaseKey = nets + fid + "/subnets/" + Ipv4.format(base + 256L * 8) + "-25";
    String allocKey = nets + fid + "/allocations/" + Ipv4.format(base + 200);
    String ep = p + "/endpoints/" + lab.node + "/" + "b".repeat(64);
    return List.of(
        new Family("address-space", List.of(p + "/address-space/10.52.208.0-20", p + "/address-space/10.52.224.0-20",
            spaceBad), spaceBad),
        new Family("vnis", List.of(p + "/vnis/9000", p + "/vnis/9001", vniBad), vniBad),
        new Family("network config", List.of(nets + "fnsbad0/config", nets + "fnsbad1/config", nets + "fnsbad2/config"),
            "network fnsbad0: config rejected"),
        new Family("subnet leases", List.of(leaseKey, nets + fid + "/subnets/" + Ipv4.format(base + 256L * 9) + "-25",
            nets + fid + "/subnets/10.52.0.0-25&fc00::-64"), "lease " + leaseKey + " ignored"),
        new Family("pool", List.of(nets + "fnsbad0/pool", nets + "fnsbad1/pool", nets + fid + "x/pool"), null),
        new Family("pool-refs", List.of(nets + fid + "/pool-refs/fns-other0", nets + fid + "/pool-refs/fns-other1",
            nets + fid + "/pool-refs/x"), null),
        new Family("docker-id", List.of(nets + "fnsbad0/docker-id", nets + "fnsbad1/docker-id",
            nets + "fnsbad2/docker-id"), null),
        new Family("allocations", List.of(allocKey, nets + fid + "/allocations/" + Ipv4.format(base + 201),
            nets + fid + "/allocations/not-an-address"), allocKey, true),
        new Family("endpoints", List.of(ep, p + "/endpoints/" + lab.node + "/" + "c".repeat(64),
            p + "/endpoints/fns-other/x"), ep),
        new Family("nodes", List.of(p + "/nodes/fns-other0", p + "/nodes/fns-other1", p + "/nodes/x"), null),
        new Family("docker networks", List.of(p + "/docker-data/networks/fnsbad0", p + "/docker-data/networks/fnsbad1",
            p + "/docker-data/networks/fnsbad2"), p + "/docker-data/networks/fnsbad0"),
        new Family("docker services", List.of(p + "/docker-data/services/fnsbad0", p + "/docker-data/services/fnsbad1",
            p + "/docker-data/services/fnsbad2"), p + "/docker-data/services/fnsbad0"),
        new Family("docker containers", List.of(p + "/docker-data/containers/" + lab.node + "/fnsbad0",
            p + "/docker-data/containers/" + lab.node + "/fnsbad1", p + "/docker-data/containers/fnsbad2"),
            p + "/docker-data/containers/" + lab.node + "/fnsbad0"));
  }

  @TestFactory
  Stream<DynamicTest> randomBytesUnderEachFamilyCostOnlyThemselves() {
    return families().stream().map(f -> DynamicTest.dynamicTest(f.name(), () -> attack(f)));
  }

  void attack(Family f) throws Exception {
    long rev = 0;
    for (int i = 0; i < f.keys().size(); i++) {
      rev = raw.getKVClient().put(ByteSequence.from(f.keys().get(i), StandardCharsets.UTF_8),
          ByteSequence.from(garbage(i))).get(5, TimeUnit.SECONDS).getHeader().getRevision();
    }
    List<String> failed = new ArrayList<>();
    try {
      if (f.restart()) {
        lab.daemon.stop(10, TimeUnit.SECONDS);
        lab.daemon = io.flannelnp.testing.Lab.startDaemon(lab.env, lab.host);
        await(failed, "the restarted daemon serves the container", () -> lab.ns.exec(container, "nft", "list", "table",
            "ip", "flannel-np-dns").exit() == 0);
      }
      long at = rev;
      await(failed, "the daemon's watch delivered revision " + at, () -> watched(at));
      serving(failed);
      if (f.name().equals("pool")) {
        // nothing reads another network's pool until a call names that network: then it must say what is wrong
        String answer = lab.plugin.post("/IpamDriver.RequestAddress", j("PoolID", "FlannelGlobal/fnsbad0", "Address", "",
            "Options", j("flannel-id", "fnsbad0")).encode()).body();
        String error = new JsonObject(answer).getString("Error", "");
        System.out.println("RequestAddress on the network whose pool record is bytes: " + answer);
        if (error.isEmpty() || PluginApiFuzzTest.UNCLEAR.stream().anyMatch(error::contains)) {
          failed.add("RequestAddress on the network whose pool record is bytes: " + answer);
        }
      }
      if (f.reported() != null) {
        await(failed, "the log names the bad record (" + f.reported() + ")", () -> lab.log().contains(f.reported()));
      }
    } finally {
      for (String k : f.keys()) {
        raw.getKVClient().delete(ByteSequence.from(k, StandardCharsets.UTF_8)).get(5, TimeUnit.SECONDS);
      }
    }
    assertThat(failed).as("with random bytes under " + f.keys()).isEmpty();
  }

  /** Random bytes: binary, text that is almost JSON, JSON of the wrong shape. */
  static byte[] garbage(int kind) {
    byte[] b = new byte[1 + RND.nextInt(120)];
    RND.nextBytes(b);
    return switch (kind) {
      case 0 -> b;
      case 1 -> ("{\"Network\":\"" + new String(b, StandardCharsets.ISO_8859_1)).getBytes(StandardCharsets.UTF_8);
      default -> new JsonObject().put("Network", 7).put("PublicIP", List.of(1)).put("Kind", "bogus").put("VIPs", "x")
          .put("Networks", 3).put("SandboxKey", 5).put("DockerID", false).put("Backend", "vxlan").encode()
          .getBytes(StandardCharsets.UTF_8);
    };
  }

  static boolean watched(long revision) {
    try {
      return lab.health(null).getJsonObject("etcd").getLong("watchRevision", 0L) >= revision;
    } catch (Exception e) {
      return false;
    }
  }

  /** Each plane does its job for something new. */
  void serving(List<String> failed) throws Exception {
    round++;
    // IPAM: an address, a VIP, a whole new network
    String ip = tryCall(failed, "RequestAddress of a container", "/IpamDriver.RequestAddress",
        j("PoolID", "FlannelLocal/" + net.fid(), "Address", "", "Options", j()), "Address");
    String vip = tryCall(failed, "RequestAddress of a VIP", "/IpamDriver.RequestAddress",
        j("PoolID", "FlannelGlobal/" + net.fid(), "Address", "", "Options", j("flannel-id", net.fid())), "Address");
    String fid = "fnsnew" + round;
    String pool = tryCall(failed, "RequestPool of a new network", "/IpamDriver.RequestPool",
        j("AddressSpace", "FlannelGlobal", "Pool", "", "SubPool", "", "Options", j("flannel-id", fid), "V6", false),
        "Pool");
    if (pool != null) {
      lab.plugin.post("/IpamDriver.ReleasePool", j("PoolID", "FlannelGlobal/" + fid).encode());
    }
    // load balancer and DNS: a new VIP service
    String svc = "fnssvc" + round;
    if (vip != null) {
      String v = SecurityLab.bare(vip);
      lab.put(lab.schema.dockerService(svc), new ServiceRecord(svc, svc, ServiceRecord.EndpointMode.VIP,
          Map.of(net.netId(), v), Map.of()).toJson());
      await(failed, "the load balancer programs the new VIP " + v, () -> lab.ns.exec(lab.host, "nft", "list", "table",
          "ip", "flannel-np-lb").out().contains(v));
      await(failed, "the container resolves " + svc, () -> DataPlaneAttackTest.answers(container, svc));
      lab.delete(lab.schema.dockerService(svc));
      lab.plugin.post("/IpamDriver.ReleaseAddress", j("PoolID", "FlannelGlobal/" + net.fid(), "Address",
          SecurityLab.bare(vip)).encode());
    }
    if (ip != null) {
      lab.plugin.post("/IpamDriver.ReleaseAddress", j("PoolID", "FlannelLocal/" + net.fid(), "Address",
          SecurityLab.bare(ip)).encode());
    }
    // VXLAN: a new peer's lease
    Cidr block = new Cidr(Cidr.parse(net.subnet()).base() + 256L * 5, 25);
    String lease = lab.schema.subnet(net.fid(), block);
    lab.put(lease, FlannelJson.lease("198.19.8.2", vni(), "0e:00:00:00:00:02"));
    await(failed, "the VXLAN plane routes the new peer's block " + block, () -> lab.ns.ip(lab.host, "route", "show",
        block.toString()).out().contains("flannel."));
    lab.delete(lease);
    await(failed, "the VXLAN plane forgets the peer again", () -> !lab.ns.ip(lab.host, "route", "show",
        block.toString()).out().contains("flannel."));
    JsonObject health = lab.health(null);
    if (!health.getJsonObject("etcd").getBoolean("reachable")) {
      failed.add("/health: etcd not reachable");
    }
    for (String plane : List.of("flannel", "lb", "dns")) {
      String err = health.getJsonObject("planes").getJsonObject(plane).getString("lastError");
      if (err != null) {
        failed.add("the " + plane + " plane's last pass failed: " + err);
      }
    }
  }

  static int vni() throws Exception {
    return new JsonObject(lab.etcd.get(lab.schema.networkConfig(net.fid())).await(5, TimeUnit.SECONDS).orElseThrow()
        .value()).getJsonObject("Backend").getInteger("VNI");
  }

  String tryCall(List<String> failed, String what, String path, JsonObject body, String field) throws Exception {
    String answer = lab.plugin.post(path, body.encode()).body();
    JsonObject a;
    try {
      a = new JsonObject(answer);
    } catch (RuntimeException e) {
      failed.add(what + ": " + answer);
      return null;
    }
    if (a.getString(field) == null) {
      failed.add(what + ": " + answer);
      return null;
    }
    return a.getString(field);
  }

  static void await(List<String> failed, String what, java.util.function.BooleanSupplier ok) {
    try {
      Poll.await(what, Duration.ofSeconds(10), ok);
    } catch (AssertionError e) {
      failed.add(what);
    }
  }
}
