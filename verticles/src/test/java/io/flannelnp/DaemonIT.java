package io.flannelnp;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.DaemonProcess;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.PluginClient;
import io.flannelnp.testing.PluginClient.Response;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** The daemon as a process: settings, start-up deadline, etcd outages, orderly stop. */
class DaemonIT {
  @TempDir
  Path dir;

  static java.util.Set<String> cachesBefore;

  @org.junit.jupiter.api.BeforeAll
  static void snapshotTmp() throws Exception {
    cachesBefore = io.flannelnp.testing.Lab.tmpEntries("vertx-cache-");
  }

  /** Daemons killed hard (or by a test's timeout) cannot remove Vert.x's file cache: none may be in /tmp. */
  @org.junit.jupiter.api.AfterAll
  static void nothingLeftInTmp() throws Exception {
    java.util.Set<String> left = new java.util.HashSet<>(io.flannelnp.testing.Lab.tmpEntries("vertx-cache-"));
    left.removeAll(cachesBefore);
    assertThat(left).as("Vert.x file caches the daemons left in /tmp").isEmpty();
  }

  Map<String, String> env(String etcd) {
    Map<String, String> e = new HashMap<>();
    e.put("ETCD_ENDPOINTS", etcd);
    e.put("AVAILABLE_SUBNETS", "10.50.0.0/16");
    e.put("PLUGIN_SOCKET", dir.resolve("fnp.sock").toString());
    e.put("DOCKER_SOCKET", dir.resolve("no-docker.sock").toString());
    e.put("NODE_NAME", "it-node");
    return e;
  }

  static String deadEtcd() {
    return "http://127.0.0.1:" + EtcdServer.freePort();
  }

  static Stream<Arguments> badSettings() {
    return Stream.of(
        Arguments.of("AVAILABLE_SUBNETS", "10.50.0.0/33", "is not a valid IPv4 CIDR"),
        Arguments.of("AVAILABLE_SUBNETS", "10.50.0.1/16", "host bits"),
        Arguments.of("NETWORK_SUBNET_SIZE", "12", "must not be shorter than the prefix of every AVAILABLE_SUBNETS block"),
        Arguments.of("DEFAULT_HOST_SUBNET_SIZE", "20", "must be longer than NETWORK_SUBNET_SIZE"),
        Arguments.of("VNI_START", "many", "must be an integer"),
        Arguments.of("DEFAULT_FLANNEL_OPTIONS", "-iface=eth0,-kube-subnet-mgr", "not Kubernetes"),
        Arguments.of("ETCD_ENDPOINTS", "ftp://etcd:2379", "must start with http:// or https://"),
        Arguments.of("DNS_DOCKER_COMPATIBILITY_MODE", "yes", "must be true or false"));
  }

  @ParameterizedTest(name = "{0}={1}")
  @MethodSource("badSettings")
  void aBadSettingStopsTheDaemonWithExitCode2AndOneLineNamingVariableValueAndRule(String var, String value, String rule)
      throws Exception {
    Map<String, String> e = env(deadEtcd());
    e.put(var, value);
    try (DaemonProcess d = DaemonProcess.start(dir, e)) {
      assertThat(d.waitForExit(Duration.ofSeconds(20))).isEqualTo(2);
      List<String> lines = d.logLines();
      assertThat(lines).as("stderr").hasSize(1);
      assertThat(lines.get(0)).startsWith("flannel-np: invalid setting " + var + "=\"" + value + "\": ").contains(rule);
      assertThat(Files.exists(dir.resolve("fnp.sock"))).as("no socket for a daemon that did not start").isFalse();
    }
  }

  @Test
  void aMissingRequiredSettingIsNamed() throws Exception {
    Map<String, String> e = env(deadEtcd());
    e.remove("AVAILABLE_SUBNETS");
    try (DaemonProcess d = DaemonProcess.start(dir, e)) {
      assertThat(d.waitForExit(Duration.ofSeconds(20))).isEqualTo(2);
      assertThat(d.stderr().strip()).startsWith("flannel-np: invalid setting AVAILABLE_SUBNETS=\"\": is required");
    }
  }

  @Test
  void withEtcdDownTheSocketAnswersCapabilitiesWithinTwoSecondsAndStateChangingCallsNameTheEndpoints()
      throws Exception {
    String etcd = deadEtcd();
    Path sock = dir.resolve("fnp.sock");
    try (DaemonProcess d = DaemonProcess.start(dir, env(etcd))) {
      PluginClient c = new PluginClient(sock);
      Response caps = null;
      while (System.nanoTime() - d.startedNanos < Duration.ofSeconds(10).toNanos()) {
        if (Files.exists(sock)) {
          try {
            caps = c.post("/NetworkDriver.GetCapabilities", "");
            break;
          } catch (IOException notYet) {
            // socket file exists a moment before it accepts
          }
        }
        Thread.sleep(10);
      }
      long ms = (System.nanoTime() - d.startedNanos) / 1_000_000;
      assertThat(caps).as("answer at all; log:\n" + d.stderr()).isNotNull();
      assertThat(ms).as("ms from process start to first answer").isLessThan(2000);
      assertThat(caps.status()).isEqualTo(200);
      assertThat(new JsonObject(caps.body())).isEqualTo(new JsonObject().put("Scope", "global").put("ConnectivityScope", "global"));

      assertThat(new JsonObject(c.post("/IpamDriver.GetCapabilities", "").body()).getBoolean("RequiresMACAddress")).isTrue();
      assertThat(new JsonObject(c.post("/Plugin.Activate", "").body()).getJsonArray("Implements"))
          .containsExactlyInAnyOrder("IpamDriver", "NetworkDriver");

      long t0 = System.nanoTime();
      Response pool = c.post("/IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Options\":{\"flannel-id\":\"x\"}}\n");
      long callMs = (System.nanoTime() - t0) / 1_000_000;
      assertThat(new JsonObject(pool.body()).getString("Error")).startsWith("etcd unreachable (tried " + etcd + ")");
      assertThat(callMs).as("a call with etcd down answers in bounded time").isLessThan(7000);
      Response join = c.post("/NetworkDriver.Join", "{}");
      assertThat(new JsonObject(join.body()).getString("Err")).contains("etcd unreachable (tried " + etcd + ")");
      assertThat(d.isAlive()).isTrue();
    }
  }

  /**
   * The address settings must be the same on every node (else nodes carve overlapping networks and
   * blocks): the first node writes them to etcd, a node with others stops with exit 2 and a line
   * naming the setting, its value and the cluster's.
   */
  @Test
  void aNodeWhoseAddressSettingsDisagreeWithTheClustersStopsWithExitCode2NamingTheSetting() throws Exception {
    try (EtcdServer etcd = EtcdServer.start()) {
      try (DaemonProcess first = DaemonProcess.start(dir, env(etcd.endpoint()))) {
        assertThat(first.waitForLog("cluster settings written", Duration.ofSeconds(20))).as(first.stderr()).isTrue();
        first.sigterm();
        assertThat(first.waitForExit(Duration.ofSeconds(10))).isZero();
      }
      Map<String, String> e = env(etcd.endpoint());
      e.put("NETWORK_SUBNET_SIZE", "21");
      e.put("NODE_NAME", "other-node");
      try (DaemonProcess d = DaemonProcess.start(dir, e)) {
        assertThat(d.waitForExit(Duration.ofSeconds(30))).as(d.stderr()).isEqualTo(2);
        List<String> lines = d.stderr().strip().lines().toList();
        assertThat(lines.get(lines.size() - 1)).isEqualTo("flannel-np: invalid setting NETWORK_SUBNET_SIZE=\"21\": the"
            + " cluster uses \"20\" (/flannel/settings, written by node it-node); every node must use the same value"
            + " (to change it for the whole cluster, edit that record while every node is stopped)");
        assertThat(Files.exists(dir.resolve("fnp.sock"))).as("the refused daemon's socket is gone").isFalse();
      }
    }
  }

  @Test
  void theCapacityIsLoggedAfterAGoodStart() throws Exception {
    Map<String, String> e = env(deadEtcd());
    e.put("AVAILABLE_SUBNETS", "10.0.0.0/16,10.1.0.0/16");
    try (DaemonProcess d = DaemonProcess.start(dir, e)) {
      assertThat(d.waitForLog("capacity:", Duration.ofSeconds(10))).isTrue();
      assertThat(d.stderr()).contains("32 networks of /20").contains("31 nodes per network").contains("125 container addresses per node");
    }
  }

  @Test
  void theDaemonReconnectsWhenEtcdComesBackAndSigtermStopsItInOrder() throws Exception {
    try (EtcdServer etcd = EtcdServer.start()) {
      etcd.kill(); // start with etcd down, bring it up later
      Path sock = dir.resolve("fnp.sock");
      try (DaemonProcess d = DaemonProcess.start(dir, env(etcd.endpoint()))) {
        assertThat(d.waitForLog("etcd unreachable", Duration.ofSeconds(10))).as(d.stderr()).isTrue();
        etcd.launch();
        assertThat(d.waitForLog("etcd state loaded", Duration.ofSeconds(20))).as(d.stderr()).isTrue();
        assertThat(d.waitForLog("etcd reachable again", Duration.ofSeconds(10))).as(d.stderr()).isTrue();
        // state-changing calls now get past the etcd gate
        Response pool = new PluginClient(sock).post("/IpamDriver.RequestPool", "{}");
        assertThat(new JsonObject(pool.body()).getString("Error")).doesNotContain("etcd unreachable");

        d.sigterm();
        assertThat(d.waitForExit(Duration.ofSeconds(10))).isZero();
        String log = d.stderr();
        assertThat(Files.exists(sock)).as("socket removed").isFalse();
        List<String> order = List.of("stopped ApiVerticle", "stopped DockerVerticle", "stopped DnsVerticle",
            "stopped LoadBalancerVerticle", "stopped FlannelVerticle", "stopped EtcdWatchVerticle", "flannel-np stopped");
        int last = -1;
        for (String step : order) {
          int at = log.indexOf(step);
          assertThat(at).as(step + " in\n" + log).isGreaterThan(last);
          last = at;
        }
        assertThat(log).doesNotContain("ERROR").doesNotContain("Exception");
      }
    }
  }

  @Test
  void aStaleSocketFileFromAKilledDaemonDoesNotBlockTheNextStart() throws Exception {
    Path sock = dir.resolve("fnp.sock");
    Map<String, String> e = env(deadEtcd());
    try (DaemonProcess d = DaemonProcess.start(dir, e)) {
      assertThat(d.waitForLog("plugin API listening", Duration.ofSeconds(10))).isTrue();
      new ProcessBuilder("kill", "-KILL", Long.toString(d.pid())).start().waitFor();
      d.waitForExit(Duration.ofSeconds(10));
    }
    assertThat(Files.exists(sock)).as("SIGKILL leaves the socket file").isTrue();
    try (DaemonProcess d = DaemonProcess.start(dir, e)) {
      assertThat(d.waitForLog("plugin API listening", Duration.ofSeconds(10))).as(d.stderr()).isTrue();
      assertThat(new PluginClient(sock).post("/NetworkDriver.GetCapabilities", "").status()).isEqualTo(200);
    }
  }

  /** {@code java -jar flannel-np.jar ARGS}: exit code, stdout, stderr. */
  record Cli(int exit, String out, String err) {}

  static Cli cli(String... args) throws Exception {
    List<String> cmd = new java.util.ArrayList<>(List.of("java", "-jar", DaemonProcess.jar().toAbsolutePath().toString()));
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).start();
    java.util.concurrent.CompletableFuture<String> err =
        java.util.concurrent.CompletableFuture.supplyAsync(() -> read(p.getErrorStream()));
    String out = read(p.getInputStream());
    assertThat(p.waitFor(30, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
    return new Cli(p.exitValue(), out, err.join());
  }

  static String read(java.io.InputStream in) {
    try {
      return new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
  }

  /**
   * One version string everywhere an operator looks: the Maven project version and the commit
   * (-dirty with uncommitted changes), valid as a Docker tag.
   */
  @Test
  void oneVersionStringInVersionTheStartUpLineHealthAndBuildInfoMetric() throws Exception {
    Cli v = cli("--version");
    assertThat(v.exit()).as(v.err()).isZero();
    String projectVersion = System.getProperty("flannelnp.projectVersion");
    assertThat(projectVersion).as("failsafe passes the pom's version").isNotBlank();
    assertThat(v.out().strip()).matches("flannel-np " + java.util.regex.Pattern.quote(projectVersion)
        + "-(g[0-9a-f]{12}(-dirty)?|nogit)");
    String version = v.out().strip().substring("flannel-np ".length());
    assertThat(version).as("a Docker tag").matches("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");

    int port = EtcdServer.freePort();
    Map<String, String> e = env(deadEtcd());
    e.put("ADMIN_LISTEN", "127.0.0.1:" + port);
    e.put("ADMIN_INSECURE_LOOPBACK", "true");
    try (DaemonProcess d = DaemonProcess.start(dir, e)) {
      assertThat(d.waitForLog("flannel-np started", Duration.ofSeconds(30))).as(d.stderr()).isTrue();
      assertThat(d.stderr()).contains("flannel-np " + version + " starting on node it-node");
      java.net.http.HttpClient http = java.net.http.HttpClient.newHttpClient();
      String health = http.send(java.net.http.HttpRequest.newBuilder(java.net.URI.create("http://127.0.0.1:" + port + "/health")).build(),
          java.net.http.HttpResponse.BodyHandlers.ofString()).body();
      assertThat(new JsonObject(health).getString("version")).isEqualTo(version);
      String metrics = http.send(java.net.http.HttpRequest.newBuilder(java.net.URI.create("http://127.0.0.1:" + port + "/metrics")).build(),
          java.net.http.HttpResponse.BodyHandlers.ofString()).body();
      assertThat(metrics).containsPattern("\\nfnp_build_info\\{version=\"" + java.util.regex.Pattern.quote(version) + "\"} 1(\\.0)?\\n");
    }
  }

  @Test
  void helpExitsZeroForTheDaemonAndEachSubcommandAndUsageErrorsExitTwo() throws Exception {
    for (String[] args : List.of(new String[] {"--help"}, new String[] {"-h"}, new String[] {"daemon", "--help"},
        new String[] {"replay", "--help"}, new String[] {"record", "--help"})) {
      Cli c = cli(args);
      assertThat(c.exit()).as(String.join(" ", args) + ": " + c.err()).isZero();
      assertThat(c.out()).as(String.join(" ", args)).startsWith("usage: java -jar flannel-np.jar");
    }
    for (String[] args : List.of(new String[] {"deamon"}, new String[] {"daemon", "--etcd"}, new String[] {"--version", "x"},
        new String[] {"replay", "--from"}, new String[] {"record", "--from-revision", "1"})) {
      Cli c = cli(args);
      assertThat(c.exit()).as(String.join(" ", args) + ": " + c.out() + c.err()).isEqualTo(2);
      assertThat(c.err()).as(String.join(" ", args)).startsWith("flannel-np").contains("usage:").doesNotContain("Exception");
    }
  }
}
