package io.flannelnp.security;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.security.LocalAttackIT.Run;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Netns;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code record} and {@code replay} speak TLS exactly as the daemon does (review M6, L10): against
 * an etcd that serves https only and requires client certificates, with ETCD_CA_FILE, and with
 * only the client certificate (the server then verified against the JVM's default trust store,
 * i.e. the system's). The dump is written 0600 whatever the umask.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class EtcdTlsIT {
  @TempDir
  static Path pki;
  static EtcdServer etcd;

  static void openssl(String... args) throws Exception {
    List<String> cmd = new ArrayList<>(List.of("openssl"));
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).directory(pki.toFile()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes());
    assertThat(p.waitFor()).as(String.join(" ", cmd) + "\n" + out).isZero();
  }

  @BeforeAll
  static void up() throws Exception {
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=fns-test-ca");
    for (String who : new String[] {"server", "client"}) {
      openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", who + "-key.pem");
      openssl("req", "-new", "-key", who + "-key.pem", "-out", who + ".csr", "-subj", "/CN=fns-" + who);
      Files.writeString(pki.resolve(who + ".ext"), who.equals("server")
          ? "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" : "extendedKeyUsage=clientAuth\n");
      openssl("x509", "-req", "-in", who + ".csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
          "-out", who + ".pem", "-days", "1", "-extfile", who + ".ext");
    }
    // the CA as a JVM trust store: what the system's trust store is to a deployed plugin
    Netns.run("keytool", "-importcert", "-noprompt", "-alias", "fns-ca", "-file", pki.resolve("ca.pem").toString(),
        "-keystore", pki.resolve("trust.p12").toString(), "-storetype", "PKCS12", "-storepass", "changeit").ok();
    etcd = EtcdServer.startTls(pki);
    Netns.run(List.of("etcdctl", "--endpoints", etcd.endpoint(), "--cacert", pki.resolve("ca.pem").toString(),
        "--cert", pki.resolve("client.pem").toString(), "--key", pki.resolve("client-key.pem").toString(),
        "put", "/fns-tls/docker-data/services/s1", "{\"ServiceID\":\"s1\",\"Name\":\"web\"}")).ok();
  }

  @AfterAll
  static void down() {
    if (etcd != null) {
      etcd.close();
    }
  }

  Map<String, String> env(boolean ca) {
    Map<String, String> e = new java.util.HashMap<>(Map.of("ETCD_ENDPOINTS", etcd.endpoint(), "ETCD_PREFIX", "/fns-tls",
        "ETCD_CERT_FILE", pki.resolve("client.pem").toString(), "ETCD_KEY_FILE", pki.resolve("client-key.pem").toString()));
    if (ca) {
      e.put("ETCD_CA_FILE", pki.resolve("ca.pem").toString());
    }
    return e;
  }

  @Test
  void recordAndReplayUseTheDaemonsTlsSettingsAndTheDumpIsOwnerOnly() throws Exception {
    Path out = pki.resolve("dump.jsonl");
    // umask 000 would make any file it creates readable by every local user
    Run rec = LocalAttackIT.jar(pki, env(true), List.of(), "000", "record", "--from-revision", "1", "--out",
        out.toString());
    assertThat(rec.exit()).as(rec.err()).isZero();
    assertThat(Files.readString(out)).contains("/fns-tls/docker-data/services/s1");
    assertThat(Netns.run("stat", "-c", "%a", out.toString()).ok().out().strip()).as("mode of the dump").isEqualTo("600");
    Run replay = LocalAttackIT.jar(pki, env(true), List.of(), null, "replay", "--from-revision", "1", "--plane", "dns");
    assertThat(replay.exit()).as(replay.err()).isZero();
    assertThat(replay.out()).contains("/fns-tls/docker-data/services/s1");
  }

  @Test
  void httpsWithoutACaFileVerifiesTheServerAgainstTheSystemTrustStoreNeverPlaintext() throws Exception {
    Path out = pki.resolve("dump2.jsonl");
    Run trusted = LocalAttackIT.jar(pki, env(false), List.of("-Djavax.net.ssl.trustStore=" + pki.resolve("trust.p12"),
        "-Djavax.net.ssl.trustStorePassword=changeit"), null, "record", "--from-revision", "1", "--out", out.toString());
    assertThat(trusted.exit()).as(trusted.err()).isZero();
    assertThat(Files.readString(out)).contains("/fns-tls/docker-data/services/s1");
    // the system's store does not know the test CA: the daemon's client refuses the server, nothing falls back
    Map<String, String> daemonEnv = new java.util.HashMap<>(env(false));
    daemonEnv.put("AVAILABLE_SUBNETS", "10.0.0.0/8");
    io.flannelnp.config.Config c = io.flannelnp.config.Config.fromEnv(daemonEnv, () -> "fns-tls");
    assertThat(c.etcdTls()).as("client certificate, no CA file").isPresent();
    io.vertx.core.Vertx vertx = io.vertx.core.Vertx.vertx();
    try (io.flannelnp.etcd.EtcdStore store = new io.flannelnp.etcd.EtcdStore(vertx, c.etcdEndpoints(), c.etcdTls(),
        java.time.Duration.ofSeconds(3))) {
      Throwable t = org.assertj.core.api.Assertions.catchThrowable(
          () -> store.get("/fns-tls/docker-data/services/s1").await(10, TimeUnit.SECONDS));
      assertThat(t).as("a server the trust store does not know").isNotNull();
      assertThat(t.getMessage()).as("the failure names the etcd endpoint").contains(etcd.endpoint());
    } finally {
      vertx.close().await(5, TimeUnit.SECONDS);
    }
  }

  /**
   * An etcd that requires client certificates and user authentication: record and replay get in
   * with the daemon's ETCD_USERNAME and ETCD_PASSWORD_FILE; without credentials they fail (exit 1,
   * one line, no stack trace) and write nothing.
   */
  @Test
  void recordAndReplayUseTheDaemonsEtcdUserAndPassword() throws Exception {
    try (EtcdServer authEtcd = EtcdServer.startTls(pki)) {
      List<String> ctl = List.of("etcdctl", "--endpoints", authEtcd.endpoint(), "--cacert", pki.resolve("ca.pem").toString(),
          "--cert", pki.resolve("client.pem").toString(), "--key", pki.resolve("client-key.pem").toString());
      for (String[] a : new String[][] {{"put", "/fns-auth/docker-data/services/s2", "{\"ServiceID\":\"s2\",\"Name\":\"db\"}"},
          {"user", "add", "root", "--new-user-password=rootpw", "--interactive=false"}, {"user", "grant-role", "root", "root"},
          {"user", "add", "fns", "--new-user-password=fns-pw", "--interactive=false"}, {"role", "add", "fns-r"},
          {"role", "grant-permission", "fns-r", "read", "/fns-auth/", "--prefix=true"}, {"user", "grant-role", "fns", "fns-r"},
          {"auth", "enable"}}) {
        List<String> cmd = new java.util.ArrayList<>(ctl);
        cmd.addAll(List.of(a));
        Netns.run(cmd).ok();
      }
      Files.writeString(pki.resolve("fns-password"), "fns-pw\n");
      Map<String, String> e = new java.util.HashMap<>(env(true));
      e.put("ETCD_ENDPOINTS", authEtcd.endpoint());
      e.put("ETCD_PREFIX", "/fns-auth");
      Path out = pki.resolve("auth-dump.jsonl");
      Run denied = LocalAttackIT.jar(pki, e, List.of(), null, "record", "--from-revision", "1", "--out", out.toString());
      assertThat(denied.exit()).as("no credentials: " + denied.err()).isEqualTo(1);
      assertThat(denied.err()).doesNotContain("\tat ");
      assertThat(out).doesNotExist();
      e.put("ETCD_USERNAME", "fns");
      e.put("ETCD_PASSWORD_FILE", pki.resolve("fns-password").toString());
      Run rec = LocalAttackIT.jar(pki, e, List.of(), null, "record", "--from-revision", "1", "--out", out.toString());
      assertThat(rec.exit()).as(rec.err()).isZero();
      assertThat(Files.readString(out)).contains("/fns-auth/docker-data/services/s2");
      Run replay = LocalAttackIT.jar(pki, e, List.of(), null, "replay", "--from-revision", "1", "--plane", "dns");
      assertThat(replay.exit()).as(replay.err()).isZero();
      assertThat(replay.out()).contains("/fns-auth/docker-data/services/s2");
    }
  }

  /** A client key the daemon cannot use: exit 2 and one line naming ETCD_KEY_FILE, before anything starts. */
  @Test
  void anUnusableKeyStopsTheDaemonWithExitCode2AndOneLine() throws Exception {
    Files.writeString(pki.resolve("broken-key.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    Map<String, String> e = new java.util.HashMap<>(env(true));
    e.put("ETCD_KEY_FILE", pki.resolve("broken-key.pem").toString());
    e.put("AVAILABLE_SUBNETS", "10.0.0.0/8");
    e.put("PLUGIN_SOCKET", pki.resolve("never.sock").toString());
    Run d = LocalAttackIT.jar(pki, e, List.of(), null);
    assertThat(d.exit()).as(d.err()).isEqualTo(2);
    assertThat(d.err().strip().lines().toList()).hasSize(1).first().asString()
        .startsWith("flannel-np: invalid setting ETCD_KEY_FILE=\"" + pki.resolve("broken-key.pem") + "\": ")
        .contains("not a valid RSA, EC or EdDSA private key");
  }
}
