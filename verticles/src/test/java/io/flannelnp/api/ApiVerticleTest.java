package io.flannelnp.api;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Codecs;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.PluginClient;
import io.flannelnp.testing.PluginClient.Response;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The plugin HTTP server over a real unix socket, with etcd down (the gate) where it matters. */
class ApiVerticleTest {
  @TempDir
  Path dir;
  Vertx vertx;
  EtcdStore etcd;
  PluginRoutes routes;
  PluginClient client;
  String deploymentId;
  String deadEtcd;

  @BeforeEach
  void deploy() throws Exception {
    vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    deadEtcd = "http://127.0.0.1:" + EtcdServer.freePort();
    etcd = new EtcdStore(vertx, List.of(deadEtcd), Optional.empty(), Duration.ofSeconds(2));
    routes = new PluginRoutes(etcd);
    Path sock = dir.resolve("api.sock");
    deploymentId = vertx.deployVerticle(new ApiVerticle(sock.toString(), routes)).await(10, TimeUnit.SECONDS);
    client = new PluginClient(sock);
  }

  @AfterEach
  void close() throws Exception {
    etcd.close();
    vertx.close().await(10, TimeUnit.SECONDS);
  }

  @Test
  void capabilityCallsWithAnEmptyBodyAndNoContentTypeAnswerJson() throws Exception {
    Response r = client.post("/NetworkDriver.GetCapabilities", "");
    assertThat(r.status()).isEqualTo(200);
    assertThat(new JsonObject(r.body())).isEqualTo(PluginRoutes.NETWORK_CAPABILITIES);
    Response spaces = client.post("/IpamDriver.GetDefaultAddressSpaces", "");
    assertThat(new JsonObject(spaces.body()).getString("GlobalDefaultAddressSpace")).isEqualTo("FlannelGlobal");
    // calls that keep no state answer {} — never an empty body, which Docker reads as EOF
    Response disc = client.post("/NetworkDriver.DiscoverNew", "{\"DiscoveryType\":1,\"DiscoveryData\":{}}");
    assertThat(disc.status()).isEqualTo(200);
    assertThat(disc.body()).isEqualTo("{}");
  }

  @Test
  void unknownPathsAre404WithAJsonError() throws Exception {
    Response r = client.post("/VolumeDriver.Create", "{}");
    assertThat(r.status()).isEqualTo(404);
    assertThat(new JsonObject(r.body()).getString("Err")).contains("/VolumeDriver.Create");
  }

  @Test
  void onlyPostIsAnswered() throws Exception {
    Response r = client.raw("GET", "/NetworkDriver.GetCapabilities", new byte[0]);
    assertThat(r.status()).isEqualTo(405);
    assertThat(new JsonObject(r.body()).getString("Err")).contains("POST");
  }

  @Test
  void malformedJsonIsRefusedWithTheSubsystemsErrorFieldAndWhereItBroke() throws Exception {
    Response ipam = client.post("/IpamDriver.RequestAddress", "{\"PoolID\": ");
    assertThat(ipam.status()).isEqualTo(400);
    JsonObject j = new JsonObject(ipam.body());
    assertThat(j.getString("Error")).startsWith("IpamDriver.RequestAddress: malformed JSON").contains("line 1");
    assertThat(j.getString("Err")).isEqualTo(j.getString("Error"));

    Response net = client.post("/NetworkDriver.CreateEndpoint", "[1,2]");
    assertThat(net.status()).isEqualTo(400);
    JsonObject n = new JsonObject(net.body());
    assertThat(n.getString("Err")).contains("not a JSON object");
    assertThat(n.containsKey("Error")).isFalse();
  }

  @Test
  void oversizeBodiesAreRefusedWithoutReachingAHandler() throws Exception {
    boolean[] called = {false};
    routes.handle("/IpamDriver.RequestPool", false, body -> {
      called[0] = true;
      return Future.succeededFuture(new JsonObject());
    });
    byte[] big = ("{\"Pool\":\"" + "x".repeat(ApiVerticle.MAX_BODY) + "\"}").getBytes(StandardCharsets.UTF_8);
    Response r = client.raw("POST", "/IpamDriver.RequestPool", big);
    assertThat(r.status()).isEqualTo(413);
    assertThat(new JsonObject(r.body()).getString("Error")).contains("exceeds " + ApiVerticle.MAX_BODY + " bytes");
    assertThat(called[0]).isFalse();
  }

  @Test
  void stateChangingCallsWithEtcdDownAnswerAnErrorNamingTheEndpointsInBoundedTime() throws Exception {
    long t0 = System.nanoTime();
    Response r = client.post("/IpamDriver.ReleaseAddress", "{\"PoolID\":\"p\",\"Address\":\"10.0.0.1\"}");
    long ms = (System.nanoTime() - t0) / 1_000_000;
    assertThat(r.status()).isEqualTo(200); // an application error: Docker reads the field
    assertThat(new JsonObject(r.body()).getString("Error")).startsWith("etcd unreachable (tried " + deadEtcd + ")");
    assertThat(ms).isLessThan(5000);
    // capability calls never wait for etcd
    t0 = System.nanoTime();
    assertThat(client.post("/IpamDriver.GetCapabilities", "").status()).isEqualTo(200);
    assertThat((System.nanoTime() - t0) / 1_000_000).isLessThan(500);
  }

  @Test
  void stopLetsACallInFlightFinishAndRemovesTheSocket() throws Exception {
    Promise<Void> entered = Promise.promise();
    routes.handle("/NetworkDriver.DeleteNetwork", false, body -> {
      entered.tryComplete();
      return Future.<Void>future(p -> vertx.setTimer(700, t -> p.complete()))
          .map(v -> new JsonObject());
    });
    CompletableFuture<Response> inFlight = CompletableFuture.supplyAsync(() -> {
      try {
        return client.post("/NetworkDriver.DeleteNetwork", "{\"NetworkID\":\"n\"}");
      } catch (Exception e) {
        throw new RuntimeException(e);
      }
    });
    entered.future().await(5, TimeUnit.SECONDS);
    vertx.undeploy(deploymentId).await(10, TimeUnit.SECONDS);
    Response r = inFlight.get(5, TimeUnit.SECONDS);
    assertThat(r.status()).isEqualTo(200);
    assertThat(r.body()).isEqualTo("{}");
    assertThat(Files.exists(dir.resolve("api.sock"))).isFalse();
  }

  @Test
  void jsonProblemsAreShortAndSayWhere() {
    String m = ApiVerticle.jsonProblem("Failed to decode:Unexpected end-of-input: expected close marker for Object\n"
        + " at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: 3, column: 7]");
    assertThat(m).isEqualTo("Unexpected end-of-input: expected close marker for Object at line 3, column 7");
  }
}
