package io.flannelnp.api;

import static io.flannelnp.testing.PluginClient.j;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Codecs;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.Ipam;
import io.flannelnp.ipam.Ipv4;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Lab;
import io.flannelnp.testing.PluginClient;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * One network of the default size (a /20 of /25 node blocks) holds 1,000 Swarm task placeholders
 * and 200 VIPs, asked for through the plugin protocol as a Swarm leader asks (real etcd, one
 * plugin socket per node), while three nodes hold blocks of it and start tasks on the leader's
 * placeholders; everything released, the blocks the cluster range took go back, and the same
 * numbers fit again. Then the network is filled until the refusal names the settings.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class ClusterCapacityTest {
  static final String PREFIX = "/fnp-capacity";
  final String fid = UUID.randomUUID().toString();
  Path dir;
  Vertx vertx;
  EtcdServer etcdServer;
  EtcdStore etcd;
  final EtcdSchema schema = new EtcdSchema(PREFIX);
  final Map<String, PluginClient> clients = new LinkedHashMap<>();

  @BeforeEach
  void up() throws Exception {
    dir = Files.createTempDirectory("fnp-capacity");
    etcdServer = EtcdServer.start();
    vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    etcd = new EtcdStore(vertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    int i = 0;
    for (String node : List.of("m1", "n1", "n2", "n3", "n4")) {
      String ip = "198.18.0." + (10 + i++);
      Config c = Config.fromEnv(Map.of("ETCD_ENDPOINTS", etcdServer.endpoint(), "ETCD_PREFIX", PREFIX,
          "AVAILABLE_SUBNETS", "10.70.0.0/16", "NODE_NAME", node));
      IpamApi api = new IpamApi(new Ipam(etcd, schema, c), c, () -> Future.succeededFuture(ip));
      PluginRoutes routes = new PluginRoutes(etcd);
      api.register(routes);
      Path sock = Lab.pluginSocket(dir, node);
      vertx.deployVerticle(new ApiVerticle(sock.toString(), routes)).await(10, TimeUnit.SECONDS);
      clients.put(node, new PluginClient(sock));
    }
  }

  @AfterEach
  void down() throws Exception {
    List<KeyValue> left = Lab.closeEtcd(etcdServer, vertx, etcd, PREFIX);
    Lab.deleteDir(dir);
    assertThat(left).as("etcd keys left").isEmpty();
  }

  JsonObject ok(String node, String path, JsonObject body) throws Exception {
    return clients.get(node).ok(path, body);
  }

  String leaderAddress() throws Exception {
    JsonObject r = clients.get("m1").ok("/IpamDriver.RequestAddress", j("PoolID", "FlannelGlobal/" + fid, "Address", "",
        "Options", j("flannel-id", fid, "com.docker.network.ipam.serial", "true")));
    return r.getString("Address");
  }

  void releaseGlobal(String address) throws Exception {
    ok("m1", "/IpamDriver.ReleaseAddress", j("PoolID", "FlannelGlobal/" + fid, "Address", address));
  }

  List<String> keys(String prefix) throws Exception {
    return etcd.list(prefix).await(5, TimeUnit.SECONDS).kvs().stream().map(KeyValue::key).toList();
  }

  static long ip(String withPrefix) {
    return Ipv4.parse(withPrefix.substring(0, withPrefix.indexOf('/')));
  }

  @Test
  void aDefaultNetworkHoldsAThousandTasksAndTwoHundredVipsAndGivesTheBlocksBack() throws Exception {
    JsonObject pool = ok("m1", "/IpamDriver.RequestPool", j("AddressSpace", "FlannelGlobal", "Pool", "", "SubPool", "",
        "Options", j("flannel-id", fid), "V6", false));
    Cidr net = Cidr.parse(pool.getString("Pool"));
    assertThat(net.prefix()).isEqualTo(20);
    Map<String, Cidr> blocks = new LinkedHashMap<>();
    for (String n : List.of("n1", "n2", "n3")) {
      ok(n, "/IpamDriver.RequestPool", j("AddressSpace", "FlannelLocal", "Pool", "", "SubPool", "",
          "Options", j("flannel-id", fid), "V6", false));
      String gw = ok(n, "/IpamDriver.RequestAddress", j("PoolID", "FlannelLocal/" + fid, "Address", "",
          "Options", j("RequestAddressType", "com.docker.network.gateway"))).getString("Address");
      blocks.put(n, Cidr.containing(ip(gw), 25));
    }

    for (int round = 0; round < 2; round++) {
      List<String> vips = new ArrayList<>();
      List<String> tasks = new ArrayList<>();
      for (int i = 0; i < 200; i++) {
        vips.add(leaderAddress());
      }
      for (int i = 0; i < 1000; i++) {
        tasks.add(leaderAddress());
      }
      Set<String> all = new HashSet<>(vips);
      all.addAll(tasks);
      assertThat(all).as("round " + round + ": 1,200 distinct addresses").hasSize(1200);
      for (String a : all) {
        assertThat(a).endsWith("/25");
        assertThat(net.contains(ip(a))).isTrue();
        assertThat(blocks.values()).noneMatch(b -> b.contains(ip(a)));
      }
      // 125 in the cluster range, the rest in 9 blocks the range took from the top of the network
      List<String> grown = keys(schema.clusterBlocks(fid));
      assertThat(grown).hasSize(9).contains(schema.clusterBlock(fid, Cidr.parse("10.70.15.128/25")));

      // each node starts tasks on placeholders from grown blocks: the container gets an address of its own block
      for (int i = 0; i < 30; i++) {
        String n = List.of("n1", "n2", "n3").get(i % 3);
        String placeholder = tasks.get(999 - i);
        String got = ok(n, "/IpamDriver.RequestAddress", j("PoolID", "FlannelLocal/" + fid,
            "Address", placeholder.substring(0, placeholder.indexOf('/')),
            "Options", j("com.docker.network.endpoint.macaddress", String.format("02:42:0a:46:%02x:%02x", round, i))))
            .getString("Address");
        assertThat(blocks.get(n).contains(ip(got))).as(n + " gives its own address for " + placeholder).isTrue();
        ok(n, "/IpamDriver.ReleaseAddress", j("PoolID", "FlannelLocal/" + fid, "Address", got));
      }
      // a node that joins now leases a free block, not one the cluster range holds
      if (round == 0) {
        ok("n4", "/IpamDriver.RequestPool", j("AddressSpace", "FlannelLocal", "Pool", "", "SubPool", "",
            "Options", j("flannel-id", fid), "V6", false));
        String gw = ok("n4", "/IpamDriver.RequestAddress", j("PoolID", "FlannelLocal/" + fid, "Address", "",
            "Options", j("RequestAddressType", "com.docker.network.gateway"))).getString("Address");
        Cidr b4 = Cidr.containing(ip(gw), 25);
        assertThat(grown).doesNotContain(schema.clusterBlock(fid, b4));
        assertThat(all).noneMatch(a -> b4.contains(ip(a)));
        blocks.put("n4", b4);
      }
      for (String a : all) {
        releaseGlobal(a);
      }
      assertThat(keys(schema.clusterBlocks(fid))).as("round " + round + ": every grown block given back").isEmpty();
    }

    // filled to the last block: 125 + 27 free blocks × 125 with four nodes; the refusal names the settings
    int n = 0;
    String refusal = null;
    while (refusal == null) {
      PluginClient.Response r = clients.get("m1").post("/IpamDriver.RequestAddress", j("PoolID", "FlannelGlobal/" + fid,
          "Address", "", "Options", j("flannel-id", fid)).encode());
      String err = new JsonObject(r.body()).getString("Error");
      if (err != null) {
        refusal = err;
      } else {
        n++;
      }
    }
    assertThat(n).isEqualTo(125 + (31 - 4) * 125);
    assertThat(refusal).contains("NETWORK_SUBNET_SIZE", "CLUSTER_SUBNET_SIZE", "Swarm VIPs and tasks");
    etcd.deletePrefix(schema.root()).await(10, TimeUnit.SECONDS);
  }
}
