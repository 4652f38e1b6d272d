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
    // the client key in the other forms openssl writes: PKCS#1 RSA, SEC1 EC (after its EC
    // PARAMETERS block), EC as PKCS#8; each with its own certificate
    openssl("genrsa", "-traditional", "-out", "rsa1-key.pem", "2048");
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-out", "ec-key.pem");
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "ec-key.pem", "-out", "ec8-key.pem");
    for (String who : new String[] {"rsa1", "ec"}) {
      openssl("req", "-new", "-key", who + "-key.pem", "-out", who + ".csr", "-subj", "/CN=fnp-" + who);
      openssl("x509", "-req", "-in", who + ".csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
          "-out", who + ".pem", "-days", "1", "-extfile", "client.ext");
    }
    etcd = EtcdServer.startTls(pki);
    vertx = Vertx.vertx();
  }

  static Map<String, String> env(String endpoint, String cert, String key) {
    Map<String, String> e = new java.util.HashMap<>(Map.of("ETCD_ENDPOINTS", endpoint, "AVAILABLE_SUBNETS", "10.0.0.0/16",
        "ETCD_CA_FILE", pki.resolve("ca.pem").toString()));
    if (cert != null) {
      e.put("ETCD_CERT_FILE", pki.resolve(cert).toString());
      e.put("ETCD_KEY_FILE", pki.resolve(key).toString());
    }
    return e;
  }

  static void roundTrip(Config c, String key) throws Exception {
    try (EtcdStore store = new EtcdStore(vertx, c.etcdEndpoints(), c.etcdTls(), c.etcdAuth(), Duration.ofSeconds(5))) {
      assertThat(store.putIfAbsent(key, "v", 0).await(10, TimeUnit.SECONDS)).isTrue();
      assertThat(store.get(key).await(5, TimeUnit.SECONDS).orElseThrow().value()).isEqualTo("v");
      store.delete(key).await(5, TimeUnit.SECONDS);
    }
  }

  /** etcd requires a client certificate: each key form openssl writes is accepted and used. */
  @org.junit.jupiter.params.ParameterizedTest(name = "{0}")
  @org.junit.jupiter.params.provider.CsvSource({"PKCS#8 RSA, client.pem, client-key.pem", "PKCS#1 RSA, rsa1.pem, rsa1-key.pem",
      "SEC1 EC with EC PARAMETERS, ec.pem, ec-key.pem", "PKCS#8 EC, ec.pem, ec8-key.pem"})
  void everyKeyFormAuthenticatesTheClient(String form, String cert, String key) throws Exception {
    assertThat(Files.readString(pki.resolve(key))).as(form).contains(switch (form) {
      case "PKCS#1 RSA" -> "BEGIN RSA PRIVATE KEY";
      case "SEC1 EC with EC PARAMETERS" -> "BEGIN EC PRIVATE KEY";
      default -> "BEGIN PRIVATE KEY";
    });
    roundTrip(Config.fromEnv(env(etcd.endpoint(), cert, key), () -> "n"), "/tls-test/" + key);
  }

  /** A key the daemon cannot use stops it at start with one line naming the setting and the file. */
  @Test
  void aKeyThatCannotBeUsedIsOneConfigErrorNamingTheFile() throws Exception {
    Files.writeString(pki.resolve("garbage-key.pem"), "not a key\n");
    openssl("pkcs8", "-topk8", "-in", "ec-key.pem", "-out", "enc-key.pem", "-passout", "pass:secret");
    Map<String, String> cases = Map.of(
        "garbage-key.pem", "holds no PEM private key",
        "enc-key.pem", "holds an encrypted key",
        "ec-key.pem", "is not the private key of the certificate"); // EC key for the RSA client.pem
    cases.forEach((key, why) -> assertThatThrownBy(() -> Config.fromEnv(env(etcd.endpoint(), "client.pem", key), () -> "n"))
        .isInstanceOf(io.flannelnp.config.ConfigException.class)
        .hasMessageStartingWith("invalid setting ETCD_KEY_FILE=\"" + pki.resolve(key) + "\": ")
        .hasMessageContaining(why)
        .satisfies(e -> assertThat(e.getMessage()).doesNotContain("\n")));
    Path unreadable = pki.resolve("client-key.pem");
    assertThatThrownBy(() -> Config.fromEnv(env(etcd.endpoint(), "client.pem", "missing-key.pem"), () -> "n"))
        .hasMessageStartingWith("invalid setting ETCD_KEY_FILE=").hasMessageContaining("must name a readable file");
    assertThat(unreadable).exists();
  }

  /**
   * etcd with client certificates and user authentication both required: ETCD_USERNAME with
   * ETCD_PASSWORD_FILE (or ETCD_PASSWORD) gets in and is held to its role's key range; without
   * credentials or with a wrong password nothing is read or written.
   */
  @Test
  void etcdUserAuthenticationOnTopOfClientCertificates() throws Exception {
    try (EtcdServer authEtcd = EtcdServer.startTls(pki)) {
      String ep = authEtcd.endpoint();
      java.util.function.Consumer<String[]> ctl = args -> {
        java.util.List<String> cmd = new java.util.ArrayList<>(List.of("etcdctl", "--endpoints", ep,
            "--cacert", pki.resolve("ca.pem").toString(), "--cert", pki.resolve("client.pem").toString(),
            "--key", pki.resolve("client-key.pem").toString()));
        cmd.addAll(List.of(args));
        try {
          Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
          String out = new String(p.getInputStream().readAllBytes());
          assertThat(p.waitFor()).as(String.join(" ", cmd) + "\n" + out).isZero();
        } catch (Exception e) {
          throw new IllegalStateException(e);
        }
      };
      ctl.accept(new String[] {"user", "add", "root", "--new-user-password=rootpw", "--interactive=false"});
      ctl.accept(new String[] {"user", "grant-role", "root", "root"});
      ctl.accept(new String[] {"user", "add", "fnp", "--new-user-password=fnp pass:1", "--interactive=false"});
      ctl.accept(new String[] {"role", "add", "fnp-rw"});
      ctl.accept(new String[] {"role", "grant-permission", "fnp-rw", "readwrite", "/auth-test/", "--prefix=true"});
      ctl.accept(new String[] {"user", "grant-role", "fnp", "fnp-rw"});
      ctl.accept(new String[] {"auth", "enable"});

      Path pw = pki.resolve("etcd-password");
      Files.writeString(pw, "fnp pass:1\n");
      Map<String, String> withFile = env(ep, "client.pem", "client-key.pem");
      withFile.put("ETCD_USERNAME", "fnp");
      withFile.put("ETCD_PASSWORD_FILE", pw.toString());
      Config c = Config.fromEnv(withFile, () -> "n");
      assertThat(c.etcdAuth().orElseThrow().toString()).doesNotContain("fnp pass:1");
      roundTrip(c, "/auth-test/file");
      Map<String, String> withValue = env(ep, "client.pem", "client-key.pem");
      withValue.put("ETCD_USERNAME", "fnp");
      withValue.put("ETCD_PASSWORD", "fnp pass:1");
      roundTrip(Config.fromEnv(withValue, () -> "n"), "/auth-test/value");

      Config outside = Config.fromEnv(withValue, () -> "n");
      try (EtcdStore store = new EtcdStore(vertx, outside.etcdEndpoints(), outside.etcdTls(), outside.etcdAuth(), Duration.ofSeconds(3))) {
        assertThatThrownBy(() -> store.putIfAbsent("/elsewhere/k", "v", 0).await(10, TimeUnit.SECONDS))
            .as("outside the role's range").hasMessageContaining("permission denied");
      }
      Map<String, String> wrong = env(ep, "client.pem", "client-key.pem");
      wrong.put("ETCD_USERNAME", "fnp");
      wrong.put("ETCD_PASSWORD", "nope");
      Map<String, String> none = env(ep, "client.pem", "client-key.pem");
      for (Map<String, String> e : List.of(wrong, none)) {
        Config bad = Config.fromEnv(e, () -> "n");
        try (EtcdStore store = new EtcdStore(vertx, bad.etcdEndpoints(), bad.etcdTls(), bad.etcdAuth(), Duration.ofSeconds(3))) {
          assertThatThrownBy(() -> store.putIfAbsent("/auth-test/bad", "v", 0).await(10, TimeUnit.SECONDS))
              .as(e.containsKey("ETCD_PASSWORD") ? "wrong password" : "no credentials").isNotNull();
        }
      }
    }
  }

  @Test
  void credentialSettingsAreCheckedTogether() throws Exception {
    Path pw = pki.resolve("pw-empty");
    Files.writeString(pw, "\n");
    Object[][] cases = {
        {Map.of("ETCD_PASSWORD", "x"), "invalid setting ETCD_PASSWORD=\"(hidden)\": needs ETCD_USERNAME"},
        {Map.of("ETCD_USERNAME", "u"), "invalid setting ETCD_USERNAME=\"u\": needs ETCD_PASSWORD or ETCD_PASSWORD_FILE"},
        {Map.of("ETCD_USERNAME", "u", "ETCD_PASSWORD", "x", "ETCD_PASSWORD_FILE", pw.toString()), "must not be set together with ETCD_PASSWORD"},
        {Map.of("ETCD_USERNAME", "u", "ETCD_PASSWORD_FILE", pw.toString()), "has an empty first line"},
    };
    for (Object[] c : cases) {
      Map<String, String> e = new java.util.HashMap<>(Map.of("ETCD_ENDPOINTS", "http://127.0.0.1:2379", "AVAILABLE_SUBNETS", "10.0.0.0/16"));
      @SuppressWarnings("unchecked") Map<String, String> extra = (Map<String, String>) c[0];
      e.putAll(extra);
      assertThatThrownBy(() -> Config.fromEnv(e, () -> "n")).as(extra.toString()).hasMessageContaining((String) c[1])
          .satisfies(x -> assertThat(x.getMessage()).doesNotContain("\"x\""));
    }
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
