package io.flannelnp.api;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.Daemon;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.log.Logging;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Lab;
import io.flannelnp.testing.PluginClient;
import io.flannelnp.testing.PluginClient.Response;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Bad input over the real socket against a daemon with a live network: each request gets a clear
 * error naming what is wrong, and etcd is exactly as before.
 */
class PluginBadInputTest {
  static final String PREFIX = "/fnp-badinput";
  static final String FID = "bad-input-net";
  static EtcdServer etcdServer;
  static Vertx vertx;
  static EtcdStore etcd;
  static Daemon daemon;
  static PluginClient client;
  static Path dir;
  static String ns = "fnpb-" + Long.toHexString(System.nanoTime() & 0xffffff);

  @BeforeAll
  static void up() throws Exception {
    Logging.configure("warn");
    etcdServer = EtcdServer.start();
    vertx = Vertx.vertx();
    etcd = new EtcdStore(vertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    dir = Files.createTempDirectory("fnp-bad");
    new ProcessBuilder("ip", "netns", "add", ns).start().waitFor();
    daemon = Lab.startDaemon(Lab.daemonEnv(etcdServer, PREFIX, "10.70.0.0/16", dir, "bad1", "-public-ip=198.18.0.21"), ns);
    client = new PluginClient(Lab.pluginSocket(dir, "bad1"));
    ok("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Options\":{\"flannel-id\":\"" + FID + "\"}}");
    ok("/IpamDriver.RequestAddress", "{\"PoolID\":\"FlannelGlobal/" + FID + "\",\"Address\":\"\",\"Options\":{}}");
    ok("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelLocal\",\"Pool\":\"10.70.0.0/20\",\"Options\":{\"flannel-id\":\"" + FID + "\"}}");
  }

  @AfterAll
  static void down() throws Exception {
    daemon.stop(8, TimeUnit.SECONDS);
    new ProcessBuilder("ip", "netns", "del", ns).start().waitFor();
    Lab.closeEtcd(etcdServer, vertx, etcd, PREFIX);
    Lab.deleteDir(dir);
  }

  static JsonObject ok(String path, String body) throws Exception {
    Response r = client.post(path, body);
    assertThat(r.status()).as(path + " " + r.body()).isEqualTo(200);
    assertThat(r.body()).doesNotContain("\"Err").as(path);
    return new JsonObject(r.body());
  }

  static List<String> state() throws Exception {
    return etcd.list(PREFIX + "/").await(5, TimeUnit.SECONDS).kvs().stream()
        .map(kv -> kv.key() + "=" + kv.value() + "@" + kv.modRevision()).toList();
  }

  static Stream<Arguments> badRequests() {
    String gp = "FlannelGlobal/" + FID;
    String lp = "FlannelLocal/" + FID;
    return Stream.of(
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Options\":{}}", "flannel-id", "--ipam-opt flannel-id=$(uuidgen)"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"V6\":true,\"Options\":{\"flannel-id\":\"v6\"}}", "IPv4 only", "--ipv6"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"Elsewhere\",\"Options\":{\"flannel-id\":\"x\"}}", "unknown address space", "FlannelGlobal"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Options\":{\"flannel-id\":\"a b\"}}", "flannel-id 'a b'", "uuidgen"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Pool\":\"10.70.0.0/33\",\"Options\":{\"flannel-id\":\"y\"}}", "not an IPv4 subnet", "33"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Pool\":\"10.99.0.0/20\",\"Options\":{\"flannel-id\":\"z\"}}", "not one of the blocks", "10.70.0.0/16"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Pool\":\"10.70.0.0/20\",\"Options\":{\"flannel-id\":\"w\"}}", "already used by network " + FID, "first free block is 10.70.16.0/20"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"SubPool\":\"10.70.1.0/24\",\"Options\":{\"flannel-id\":\"" + FID + "\"}}", "--ip-range", "own block"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":7}", "AddressSpace must be a string", "a number"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Options\":{\"flannel-id\":5}}", "Options.flannel-id must be a string", "number"),
        Arguments.of("/IpamDriver.RequestPool", "{}", "missing field AddressSpace", "RequestPool"),
        Arguments.of("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"V6\":\"yes\",\"Options\":{\"flannel-id\":\"q\"}}", "V6 must be true or false", "RequestPool"),
        Arguments.of("/IpamDriver.ReleasePool", "{\"PoolID\":\"nonsense\"}", "unknown pool ID 'nonsense'", "FlannelGlobal/<flannel-id>"),
        Arguments.of("/IpamDriver.ReleasePool", "{}", "missing field PoolID", "ReleasePool"),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":\"FlannelGlobal/nope\",\"Address\":\"\"}", "no network with flannel-id nope", "docker network create"),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":\"" + gp + "\",\"Address\":\"10.70.0.300\"}", "Address '10.70.0.300' is not an IPv4 address", "RequestAddress"),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":\"" + gp + "\",\"Address\":\"10.71.0.5\"}", "outside the subnet 10.70.0.0/20", FID),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":\"" + gp + "\",\"Address\":\"10.70.0.0\"}", "reserved", "10.70.0.0/20"),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":\"" + gp + "\",\"Address\":\"10.70.0.9\",\"Options\":{\"RequestAddressType\":\"com.docker.network.gateway\"}}", "sets the network's gateway itself", "--gateway"),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":\"" + lp + "\",\"Address\":\"\",\"Options\":{\"com.docker.network.endpoint.macaddress\":\"zz:zz\"}}", "is not a MAC address", "zz:zz"),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":\"" + lp + "\",\"Address\":\"10.70.0.128\"}", "reserved", "VTEP"),
        Arguments.of("/IpamDriver.RequestAddress", "{\"PoolID\":[1]}", "PoolID must be a string", "an array"),
        Arguments.of("/IpamDriver.ReleaseAddress", "{\"PoolID\":\"" + lp + "\",\"Address\":\"banana\"}", "'banana' is not an IPv4 address", "ReleaseAddress"),
        Arguments.of("/NetworkDriver.CreateNetwork", "{\"NetworkID\":\"../../etc\"}", "not a Docker ID", "NetworkID"),
        Arguments.of("/NetworkDriver.CreateNetwork", "{\"NetworkID\":\"aaaaaaaaaaaaaaaaaaaaaaaaa\",\"IPv4Data\":[{\"Pool\":\"10.99.0.0/20\"}]}", "no flannel-np network holds 10.99.0.0/20", "--ipam-opt flannel-id"),
        Arguments.of("/NetworkDriver.CreateNetwork", "{\"NetworkID\":\"aaaaaaaaaaaaaaaaaaaaaaaaa\",\"IPv4Data\":\"x\"}", "IPv4Data must be an array", "CreateNetwork"),
        Arguments.of("/NetworkDriver.AllocateNetwork", "{\"NetworkID\":\"aaaaaaaaaaaaaaaaaaaaaaaaa\",\"Options\":{\"k\":{}}}", "Options.k must be a string", "an object"),
        Arguments.of("/NetworkDriver.CreateEndpoint", "{\"NetworkID\":\"aaaaaaaaaaaaaaaaaaaaaaaaa\",\"EndpointID\":\"" + "e".repeat(64) + "\",\"Interface\":{}}", "Interface.Address is required", "IPAM driver"),
        Arguments.of("/NetworkDriver.CreateEndpoint", "{\"NetworkID\":\"aaaaaaaaaaaaaaaaaaaaaaaaa\",\"EndpointID\":\"" + "e".repeat(64) + "\",\"Interface\":{\"Address\":\"10.70.0.140/25\"}}", "not a flannel-np network on this node", "CreateNetwork"),
        Arguments.of("/NetworkDriver.Join", "{\"NetworkID\":\"aaaaaaaaaaaaaaaaaaaaaaaaa\",\"EndpointID\":\"" + "f".repeat(64) + "\"}", "unknown endpoint", "CreateEndpoint"),
        Arguments.of("/NetworkDriver.Join", "{\"NetworkID\":\"aaaaaaaaaaaaaaaaaaaaaaaaa\"}", "missing field EndpointID", "Join"));
  }

  @ParameterizedTest(name = "{0} {1}")
  @MethodSource("badRequests")
  void aBadRequestGetsAClearErrorAndChangesNothing(String path, String body, String says, String alsoSays) throws Exception {
    List<String> before = state();
    Response r = client.post(path, body);
    JsonObject j = new JsonObject(r.body());
    String err = j.getString(path.startsWith("/Ipam") ? "Error" : "Err");
    assertThat(err).as(r.body()).isNotBlank().contains(says).contains(alsoSays);
    assertThat(state()).as("etcd unchanged").isEqualTo(before);
  }

  @Test
  void malformedAndOversizeBodiesChangeNothing() throws Exception {
    List<String> before = state();
    for (String body : List.of("{", "{\"PoolID\":", "null", "[]", "\"str\"", "{\"a\":1}}", "\u0000\u0001")) {
      Response r = client.post("/IpamDriver.RequestAddress", body);
      assertThat(r.status()).as(body).isIn(200, 400);
      assertThat(new JsonObject(r.body()).getString("Error")).as(body).isNotBlank();
    }
    byte[] big = ("{\"PoolID\":\"FlannelLocal/" + FID + "\",\"Address\":\"\",\"Options\":{\"pad\":\""
        + "x".repeat(ApiVerticle.MAX_BODY) + "\"}}").getBytes(StandardCharsets.UTF_8);
    Response r = client.raw("POST", "/IpamDriver.RequestAddress", big);
    assertThat(r.status()).isEqualTo(413);
    assertThat(state()).isEqualTo(before);
  }

  @Test
  void withEtcdGoneACallAnswersWithinTheDeadlineNamingEtcd() throws Exception {
    etcdServer.kill();
    try {
      long t0 = System.nanoTime();
      Response r = client.post("/IpamDriver.RequestAddress", "{\"PoolID\":\"FlannelLocal/" + FID + "\",\"Address\":\"\"}");
      long ms = (System.nanoTime() - t0) / 1_000_000;
      assertThat(new JsonObject(r.body()).getString("Error")).contains("etcd unreachable (tried " + etcdServer.endpoint());
      assertThat(ms).isLessThan(7000);
    } finally {
      etcdServer.launch();
    }
    // and it recovers: the next call works again
    long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
    while (true) {
      Response r = client.post("/IpamDriver.RequestAddress", "{\"PoolID\":\"FlannelLocal/" + FID + "\",\"Address\":\"\"}");
      if (!r.body().contains("etcd unreachable")) {
        assertThat(new JsonObject(r.body()).getString("Address")).startsWith("10.70.0.");
        break;
      }
      assertThat(System.nanoTime()).as("recovers within 20 s").isLessThan(deadline);
      Thread.sleep(300);
    }
  }
}
