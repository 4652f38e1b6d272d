package io.flannelnp.security;

import static io.flannelnp.testing.PluginClient.j;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.Poll;
import io.vertx.core.json.JsonObject;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * An etcd endpoint given as https:// with no ETCD_CA_FILE (review M6): something answering
 * plaintext on it (an etcd serving both schemes, or whoever sits on the path) must not get the
 * daemon's traffic. The real daemon against a real plaintext etcd behind an https:// URL: it
 * never talks to it, and says etcd is unreachable.
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS)
class EtcdDowngradeTest {
  @Test
  void anHttpsEndpointIsNeverSpokenToInPlaintext() throws Exception {
    try (SecurityLab lab = new SecurityLab("fns-tls")) {
      lab.env.put("ETCD_ENDPOINTS", "https://127.0.0.1:" + lab.etcdServer.clientPort());
      lab.env.put("ADMIN_INSECURE_LOOPBACK", "true");
      lab.start();
      Poll.await("the daemon has tried etcd", Duration.ofSeconds(20),
          () -> health(lab).getJsonObject("etcd").getValue("reachable") != null);
      Thread.sleep(3000); // long enough for a plaintext client to have written its node record
      JsonObject etcd = health(lab).getJsonObject("etcd");
      assertThat(etcd.getBoolean("reachable")).as("etcd over https:// to a plaintext server: " + etcd).isFalse();
      assertThat(lab.etcdState()).as("what the daemon wrote to the plaintext server").isEmpty();
      JsonObject pool = new JsonObject(lab.plugin.post("/IpamDriver.RequestPool", j("AddressSpace", "FlannelGlobal",
          "Pool", "", "SubPool", "", "Options", j("flannel-id", "fns-tls"), "V6", false).encode()).body());
      assertThat(pool.getString("Error")).contains("etcd unreachable", "https://127.0.0.1:" + lab.etcdServer.clientPort());
    }
  }

  static JsonObject health(SecurityLab lab) {
    try {
      return lab.health(null);
    } catch (Exception e) {
      throw new IllegalStateException(e);
    }
  }
}
