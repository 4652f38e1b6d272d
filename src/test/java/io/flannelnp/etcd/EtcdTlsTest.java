package io.flannelnp.etcd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.config.Config;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Vertx;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** ETCD_CA_FILE / ETCD_CERT_FILE / ETCD_KEY_FILE against an etcd that requires client certificates. */
class EtcdTlsTest {
  @TempDir
  static Path pki;
  static EtcdServer etcd;
  static Vertx vertx;

  static void openssl(String... args) throws Exception {
    java.util.List<String> cmd = new java.util.ArrayList<>(List.of("openssl"));
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).directory(pki.toFile()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes());
    assertThat(p.waitFor()).as(String.join(" ", cmd) + "\n" + out).isZero();
  }

  @BeforeAll
  static void up() throws Exception {
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=fnp-test-ca");
    for (String who : new String[] {"server", "client"}) {
      openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", who + "-key.pem");
      openssl("req", "-new", "-key", who + "-key.pem", "-out", who + ".csr", "-subj", "/CN=fnp-" + who);
      Files.writeString(pki.resolve(who + ".ext"), who.equals("server")
          ? "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" : "extendedKeyUsage=clientAuth\n");
      openssl("x509", "-req", "-in", who + ".csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
          "-out", who + ".pem", "-days", "1", "-extfile", who + ".ext");
    }
    etcd = EtcdServer.startTls(pki);
    vertx = Vertx.vertx();
  }

  @AfterAll
  static void down() throws Exception {
    vertx.close().await(5, TimeUnit.SECONDS);
    etcd.close();
  }

  @Test
  void withTheThreeFilesSetTheStoreTalksTlsWithAClientCertificate() throws Exception {
    Config c = Config.fromEnv(Map.of("ETCD_ENDPOINTS", etcd.endpoint(), "AVAILABLE_SUBNETS", "10.0.0.0/16",
        "ETCD_CA_FILE", pki.resolve("ca.pem").toString(), "ETCD_CERT_FILE", pki.resolve("client.pem").toString(),
        "ETCD_KEY_FILE", pki.resolve("client-key.pem").toString()), () -> "n");
    assertThat(c.etcdTls()).isPresent();
    try (EtcdStore store = new EtcdStore(vertx, c.etcdEndpoints(), c.etcdTls(), Duration.ofSeconds(5))) {
      assertThat(store.putIfAbsent("/tls-test/k", "v", 0).await(10, TimeUnit.SECONDS)).isTrue();
      assertThat(store.get("/tls-test/k").await(5, TimeUnit.SECONDS).orElseThrow().value()).isEqualTo("v");
      store.deletePrefix("/tls-test/").await(5, TimeUnit.SECONDS);
    }
  }

  @Test
  void withoutAClientCertificateTheCallFailsNamingTheEndpoint() {
    Config.EtcdTls caOnly = new Config.EtcdTls(Optional.of(pki.resolve("ca.pem")), Optional.empty(), Optional.empty());
    try (EtcdStore store = new EtcdStore(vertx, List.of(etcd.endpoint()), Optional.of(caOnly), Duration.ofSeconds(3))) {
      assertThatThrownBy(() -> store.putIfAbsent("/tls-test/x", "v", 0).await(10, TimeUnit.SECONDS))
          .hasMessageContaining(etcd.endpoint());
    }
  }
}
