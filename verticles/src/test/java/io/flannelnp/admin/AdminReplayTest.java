package io.flannelnp.admin;

import static io.flannelnp.testing.PluginClient.j;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.Daemon;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.log.Logging;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.replay.ReplayCommand;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Lab;
import io.flannelnp.testing.Netns;
import io.flannelnp.testing.PluginClient;
import io.flannelnp.testing.Poll;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.WebSocket;
import java.util.concurrent.CompletionStage;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * The admin server and replay against a live daemon: a real etcd, the daemon in-process with its
 * data plane in a network namespace of its own ({@code fno-…}), the plugin socket called as dockerd
 * calls it, services and tasks written as the Docker integration writes them. The daemon's kernel
 * batches are read the way an operator's console reads them: over the SockJS bridge's websocket.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class AdminReplayTest {
  static final String RUN = HexFormat.of().formatHex(java.nio.ByteBuffer.allocate(4)
      .putInt((int) System.nanoTime()).array()).substring(2);
  static final String PREFIX = "/fno-admin-" + RUN;
  static final EtcdSchema SCHEMA = new EtcdSchema(PREFIX);
  static final String NS = "fno-" + RUN;
  /** A container's namespace (its sandbox), for the DNS queries the metrics test makes. */
  static final String CTR_NS = NS + "-c";
  static final String FID = "fno" + RUN;
  static final String TOKEN = "fno-token-" + RUN + "-0123456789";
  static final String GLOBAL = "FlannelGlobal";
  static final String LOCAL = "FlannelLocal";
  static final String GW_OPT = "com.docker.network.gateway";

  static EtcdServer etcdServer;
  static Vertx vertx;
  static EtcdStore etcd;
  static Path dir;
  static Daemon daemon;
  static PluginClient plugin;
  static int adminPort;
  static String lastSubnet;
  static WebSocket ws;
  static io.flannelnp.testing.DockerSandbox sandbox;
  static String rootTablesBefore;
  static final List<JsonObject> batches = new CopyOnWriteArrayList<>();
  static final List<JsonObject> reports = new CopyOnWriteArrayList<>();
  static final HttpClient http = HttpClient.newHttpClient();

  @BeforeAll
  static void up() throws Exception {
    Logging.configure("warn");
    rootTablesBefore = Netns.run("nft", "list", "tables").ok().out();
    etcdServer = EtcdServer.start();
    vertx = Vertx.vertx();
    etcd = new EtcdStore(vertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    dir = Files.createTempDirectory("fno-admin");
    Netns.run("ip", "netns", "add", NS).ok();
    Netns.run("ip", "-n", NS, "link", "set", "dev", "lo", "up").ok();
    Netns.run("ip", "-n", NS, "link", "add", "eth0", "type", "veth", "peer", "name", "fno-peer").ok();
    Netns.run("ip", "-n", NS, "link", "set", "dev", "fno-peer", "up").ok();
    Netns.run("ip", "-n", NS, "addr", "add", "198.19.7.1/24", "dev", "eth0").ok();
    Netns.run("ip", "-n", NS, "link", "set", "dev", "eth0", "up").ok();
    try (ServerSocket s = new ServerSocket(0)) {
      adminPort = s.getLocalPort();
    }
    Map<String, String> env = Lab.daemonEnv(etcdServer, PREFIX, "10.51.0.0/16", dir, "fno1",
        "-public-ip=198.19.7.1,-iface=eth0");
    env.put("ADMIN_LISTEN", "127.0.0.1:" + adminPort);
    env.put("ADMIN_TOKEN", TOKEN);
    daemon = Lab.startDaemon(env, NS);
    plugin = new PluginClient(Lab.pluginSocket(dir, "fno1"));
    // the JDK's websocket client, as a browser would: the bridge's raw websocket endpoint
    ws = http.newWebSocketBuilder().buildAsync(
        URI.create("ws://127.0.0.1:" + adminPort + "/console/eventbus/websocket?token=" + TOKEN),
        new WebSocket.Listener() {
          final StringBuilder part = new StringBuilder();

          final java.io.ByteArrayOutputStream bin = new java.io.ByteArrayOutputStream();

          /** The bridge writes its frames as binary websocket messages (UTF-8 JSON). */
          @Override
          public CompletionStage<?> onBinary(WebSocket w, java.nio.ByteBuffer data, boolean last) {
            byte[] b = new byte[data.remaining()];
            data.get(b);
            bin.writeBytes(b);
            if (last) {
              String text = bin.toString(StandardCharsets.UTF_8);
              bin.reset();
              return onText(w, text, true);
            }
            w.request(1);
            return null;
          }

          @Override
          public CompletionStage<?> onText(WebSocket w, CharSequence data, boolean last) {
            part.append(data);
            if (last) {
              JsonObject f = new JsonObject(part.toString());
              part.setLength(0);
              if ("rec".equals(f.getString("type"))) {
                (f.getString("address").equals("console.kernel.batch") ? batches : reports)
                    .add(f.getJsonObject("body"));
              }
            }
            w.request(1);
            return null;
          }
        }).get(10, TimeUnit.SECONDS);
    for (String a : List.of("console.kernel.batch", "console.reconcile.report")) {
      ws.sendText(new JsonObject().put("type", "register").put("address", a).encode(), true).get(5, TimeUnit.SECONDS);
    }
    // the bridge closes a socket that has not pinged for 10 s
    vertx.setPeriodic(4000, t -> ws.sendText("{\"type\":\"ping\"}", true));
    await("the lb plane's first pass", Duration.ofSeconds(20), () -> {
      try {
        return new JsonObject(get("/health", TOKEN).body()).getJsonObject("planes").getJsonObject("lb")
            .containsKey("lastSuccessRevision");
      } catch (Exception e) {
        return false;
      }
    });
  }

  @AfterAll
  static void down() throws Exception {
    try {
      if (ws != null) {
        ws.abort();
      }
      if (daemon != null) {
        daemon.stop(10, TimeUnit.SECONDS);
      }
    } finally {
      if (sandbox != null) {
        sandbox.close();
      }
      Netns.run("ip", "netns", "del", NS);
      Netns.run("ip", "netns", "del", CTR_NS);
      Lab.closeEtcd(etcdServer, vertx, etcd, PREFIX);
      Lab.deleteDir(dir);
    }
    assertThat(Netns.list()).as("namespaces left").doesNotContain(NS, CTR_NS);
    assertThat(Netns.run("nft", "list", "tables").ok().out()).as("root namespace tables untouched")
        .isEqualTo(rootTablesBefore);
  }

  @Test
  @Order(1)
  void everyAdminPathRefusesWithoutTheTokenAndAnswersWithIt() throws Exception {
    for (String path : List.of("/health", "/health/ready", "/metrics", "/console/", "/console/eventbus/info")) {
      HttpResponse<String> r = get(path, null);
      assertThat(r.statusCode()).as(path + " without token").isEqualTo(401);
      assertThat(r.body()).contains("ADMIN_TOKEN required");
      assertThat(get(path, "wrong-" + TOKEN).statusCode()).as(path + " with a wrong token").isEqualTo(401);
    }
    HttpResponse<String> health = get("/health", TOKEN);
    assertThat(health.statusCode()).isEqualTo(200);
    JsonObject h = new JsonObject(health.body());
    assertThat(h.getJsonObject("etcd").getBoolean("reachable")).isTrue();
    assertThat(h.getJsonObject("etcd").getLong("revision")).isPositive();
    assertThat(h.getJsonObject("planes").getJsonObject("lb").getLong("lastSuccessAgeSeconds")).isLessThan(60);
    assertThat(h.getJsonObject("docker").getValue("reachable")).as("no Docker here").isNotEqualTo(true);
    assertThat(get("/console/", TOKEN).body()).contains("flannel-np console");
    assertThat(get("/console/console.js?token=" + TOKEN, null).statusCode()).isEqualTo(200);
  }

  @Test
  @Order(1)
  void theBridgeRefusesInboundMessagesAndAddressesOffItsList() throws Exception {
    List<String> frames = new CopyOnWriteArrayList<>();
    WebSocket w = http.newWebSocketBuilder().buildAsync(
        URI.create("ws://127.0.0.1:" + adminPort + "/console/eventbus/websocket?token=" + TOKEN),
        new WebSocket.Listener() {
          @Override
          public CompletionStage<?> onBinary(WebSocket ws, java.nio.ByteBuffer data, boolean last) {
            frames.add(StandardCharsets.UTF_8.decode(data).toString());
            ws.request(1);
            return null;
          }
        }).get(10, TimeUnit.SECONDS);
    try {
      w.sendText("{\"type\":\"send\",\"address\":\"fnp.flannel.network.remove\",\"body\":{}}", true).get();
      w.sendText("{\"type\":\"register\",\"address\":\"fnp.state.snapshot\"}", true).get();
      await("two refusals", Duration.ofSeconds(5), () -> frames.size() >= 2);
      assertThat(frames).allSatisfy(f -> assertThat(new JsonObject(f).getString("type")).isEqualTo("err"))
          .allSatisfy(f -> assertThat(f).contains("access_denied"));
    } finally {
      w.abort();
    }
  }

  @Test
  @Order(2)
  void replayPrintsTheBatchesTheLiveDaemonApplied() throws Exception {
    long from = etcd.list(PREFIX + "/").await(5, TimeUnit.SECONDS).revision() + 1;
    batches.clear();

    String netId = createNetwork(FID, "fnonet");

    // another node leases a block of the network (as its flanneld or flannel-np writes it), then leaves
    String[] o = lastSubnet.substring(0, lastSubnet.indexOf('/')).split("\\.");
    String peerBlock = o[0] + "." + o[1] + "." + (Integer.parseInt(o[2]) + 1) + ".0-25";
    String lease = SCHEMA.subnets(FID) + peerBlock;
    long leaseRev = etcd.put(lease, "{\"PublicIP\":\"198.19.7.2\",\"BackendType\":\"vxlan\","
        + "\"BackendData\":{\"VNI\":6515,\"VtepMAC\":\"02:42:c6:13:07:02\"}}").await(5, TimeUnit.SECONDS);
    await("the flannel pass at revision " + leaseRev, Duration.ofSeconds(15), () -> reportAt("flannel", leaseRev));
    etcd.delete(lease).await(5, TimeUnit.SECONDS);
    long leaseGone = etcd.list(PREFIX + "/").await(5, TimeUnit.SECONDS).revision();
    await("the flannel pass at revision " + leaseGone, Duration.ofSeconds(15), () -> reportAt("flannel", leaseGone));

    // a service with a VIP and one task, scaled to three, down to two, then removed
    String vip = ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL + "/" + FID, "Address", "",
        "Options", j("flannel-id", FID, "com.docker.network.ipam.serial", "true"))).getString("Address");
    String svc = "svc" + RUN;
    step(SCHEMA.dockerService(svc), new ServiceRecord(svc, "web", ServiceRecord.EndpointMode.VIP, Map.of(netId, vip),
        Map.of()).toJson());
    List<String> tasks = new ArrayList<>();
    List<String> taskIps = new ArrayList<>();
    for (int i = 1; i <= 3; i++) {
      String ip = ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL + "/" + FID, "Address", "", "Options", j()))
          .getString("Address");
      String id = ("t" + i + RUN + "0".repeat(64)).substring(0, 64);
      tasks.add(id);
      taskIps.add(ip.substring(0, ip.indexOf('/')));
      step(SCHEMA.dockerContainer("fno1", id), new ContainerRecord(id, svc + "." + i, "t" + i, "fno1", svc, "web",
          "task" + i, "web." + i, "running", "/var/run/docker/netns/t" + i,
          Map.of(netId, new ContainerRecord.Attachment(ip.substring(0, ip.indexOf('/')), "e" + i, List.of(), "")))
          .toJson());
    }
    delete(SCHEMA.dockerContainer("fno1", tasks.get(1)));
    delete(SCHEMA.dockerService(svc));
    delete(SCHEMA.dockerContainer("fno1", tasks.get(0)));
    long to = delete(SCHEMA.dockerContainer("fno1", tasks.get(2)));
    await("the lb pass at revision " + to, Duration.ofSeconds(15), () -> lbReportAt(to));

    List<String> live = new ArrayList<>();
    for (JsonObject b : batches) {
      if (b.getString("plane").equals("lb") && b.getBoolean("ok") && b.getLong("revision") >= from) {
        live.add("revision=" + b.getLong("revision") + "\n" + b.getString("text"));
      }
    }
    assertThat(live).as("the live daemon programmed the VIP: full sync, scale up, down, table removed")
        .hasSizeGreaterThanOrEqualTo(4);
    assertThat(live.get(0)).contains("table ip flannel-np-lb");
    assertThat(live.get(live.size() - 1)).contains("delete table ip flannel-np-lb");

    Run replay = cli("replay", "--from-revision", "" + from, "--to-revision", "" + to, "--plane", "lb");
    assertThat(replay.exit).as(replay.err).isZero();
    assertThat(batches(replay.out, "lb")).as(replay.out + replay.err).isEqualTo(live);

    // the VXLAN peer's neighbour, FDB entry and route, and their removal, as the live plane applied them
    List<String> liveFlannel = new ArrayList<>();
    for (JsonObject b : batches) {
      long r = b.getLong("revision");
      if (b.getString("plane").equals("flannel") && b.getBoolean("ok") && (r == leaseRev || r == leaseGone)) {
        liveFlannel.add("revision=" + r + "\n" + b.getString("text"));
      }
    }
    assertThat(String.join("", liveFlannel)).contains("198.19.7.2").contains("fdb del");
    Run vx = cli("replay", "--from-revision", "" + leaseRev, "--to-revision", "" + leaseGone, "--plane", "flannel",
        "--node", "198.19.7.1");
    assertThat(vx.exit).as(vx.err).isZero();
    assertThat(batches(vx.out, "flannel")).as(vx.out).isEqualTo(liveFlannel);

    Path file = dir.resolve("history.jsonl");
    Run record = cli("record", "--from-revision", "" + from, "--out", file.toString());
    assertThat(record.exit).as(record.err).isZero();
    Run fromFile = cli("replay", "--from-revision", "" + from, "--to-revision", "" + to, "--plane", "lb", "--plane",
        "dns", "--plane", "ipam", "--file", file.toString());
    assertThat(fromFile.exit).as(fromFile.err).isZero();
    assertThat(batches(fromFile.out, "lb")).isEqualTo(live);
    assertThat(fromFile.out).as("DNS record changes: the task's name comes and goes")
        .contains("dns + fnonet tasks.web A " + taskIps.get(0))
        .contains("dns - fnonet tasks.web A " + taskIps.get(0))
        .contains("ipam + " + FID + " " + vip.substring(0, vip.indexOf('/')) + " ");

    // metrics derived from what the planes published
    String metrics = get("/metrics", TOKEN).body();
    assertThat(metrics).containsPattern("fnp_reconcile_seconds_count\\{plane=\"lb\"} [1-9]")
        .containsPattern("fnp_nft_transaction_seconds_count\\{plane=\"lb\"} [1-9]")
        .containsPattern("fnp_nft_transaction_lines_count\\{plane=\"lb\"} [1-9]")
        .containsPattern("fnp_ipam_allocations_total\\{kind=\"address\"} [1-9]")
        .containsPattern("fnp_ipam_allocations_total\\{kind=\"pool\"} [1-9]")
        .containsPattern("fnp_etcd_watch_lag_revisions [0-9]");
  }

  @Test
  @Order(3)
  void badArgumentsAndACompactedRevisionGiveAClearError() throws Exception {
    Run bad = cli("replay", "--from-revision", "zero");
    assertThat(bad.exit).isEqualTo(2);
    assertThat(bad.err).contains("--from-revision must be a revision number of 1 or more, got 'zero'");
    assertThat(cli("replay", "--from-revision", "3", "--plane", "ipvs").err)
        .contains("--plane 'ipvs' is not one of flannel, lb, dns, ipam");
    assertThat(cli("replay", "--from-revision", "3", "--file", dir.resolve("none").toString()).err)
        .contains("no such file");

    long head = etcd.put(PREFIX + "/fno-compact", "x").await(5, TimeUnit.SECONDS);
    etcd.compact(head).await(5, TimeUnit.SECONDS);
    Run old = cli("replay", "--from-revision", "2", "--plane", "lb");
    assertThat(old.exit).as(old.err).isEqualTo(1);
    assertThat(old.err).contains("revision 1 is compacted: the oldest revision etcd still has is " + head,
        "use --from-revision " + (head + 1));
  }

  @Test
  @Order(4)
  void theConsoleInChromiumShowsANewNetworkFiltersItAndStaysResponsiveAt1000MessagesPerSecond() throws Exception {
    Path console = Path.of("src/test/console").toAbsolutePath();
    assertThat(console.resolve("node_modules/playwright-core")).as("run `npm ci` in " + console + " (.ci/run does)")
        .isDirectory();
    assertThat(Path.of("/usr/bin/chromium")).as("apt-get install chromium (.ci/run does)").isExecutable();
    Path profile = Files.createDirectory(dir.resolve("chromium-profile"));
    java.util.Set<String> tmpBefore = Lab.tmpEntries("org.chromium.");
    ProcessBuilder pb = new ProcessBuilder("node", console.resolve("console-test.mjs").toString(),
        "http://127.0.0.1:" + adminPort + "/console/?token=" + TOKEN, profile.toString())
        .redirectError(ProcessBuilder.Redirect.INHERIT);
    // Chromium leaves an org.chromium.Chromium.* directory in TMPDIR: in ours, which down() removes
    pb.environment().put("TMPDIR", Files.createDirectory(dir.resolve("chromium-tmp")).toString());
    Process node = pb.start();
    try (var from = new java.io.BufferedReader(new java.io.InputStreamReader(node.getInputStream(), StandardCharsets.UTF_8));
         var to = new PrintStream(node.getOutputStream(), true, StandardCharsets.UTF_8)) {
      expect(from, "READY");
      String fid = FID + "b";
      createNetwork(fid, "fnonet2");
      to.println("CREATED " + fid);
      expect(from, "FILTER_OK");
      expect(from, "PAUSED");
      // 4,000 etcd writes at 1,000/s: each arrives on the console as an etcd change
      List<io.vertx.core.Future<Long>> puts = new ArrayList<>();
      long t0 = System.nanoTime();
      for (int i = 0; i < 4000; i++) {
        if (i % 100 == 0) { // at most ~200 writes in flight: wait for the window before the last 100
          io.vertx.core.Future.all(puts.subList(Math.max(0, i - 200), Math.max(0, i - 100)))
              .await(20, TimeUnit.SECONDS);
        }
        puts.add(etcd.put(PREFIX + "/fno-burst/" + i, "x"));
        long due = t0 + i * 1_000_000L;
        long wait = due - System.nanoTime();
        if (wait > 0) {
          TimeUnit.NANOSECONDS.sleep(wait);
        }
      }
      io.vertx.core.Future.all(puts).await(20, TimeUnit.SECONDS);
      to.println("BURST_DONE");
      String done = expect(from, "DONE");
      System.out.println("console burst: " + done);
    } finally {
      node.destroy();
      if (!node.waitFor(10, TimeUnit.SECONDS)) {
        node.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
      }
      etcd.deletePrefix(PREFIX + "/fno-burst/").await(10, TimeUnit.SECONDS);
    }
    assertThat(Lab.tmpEntries("org.chromium.")).as("the browser left nothing in /tmp").isEqualTo(tmpBefore);
  }

  @Test
  @Order(5)
  void theDnsAndIpamMetricsCountTheQueriesAndTheRequestsAUserMakes() throws Exception {
    String fid = FID + "m";
    String netId = createNetwork(fid, "fnomnet");
    String localPool = LOCAL + "/" + fid;
    // task mweb.1 on this node, in a container namespace of its own: the DNS plane injects its
    // resolver there (127.0.0.11) from the container record's SandboxKey
    Netns.run("ip", "netns", "add", CTR_NS).ok();
    Netns.run("ip", "-n", CTR_NS, "link", "set", "dev", "lo", "up").ok();
    sandbox = io.flannelnp.testing.DockerSandbox.of(CTR_NS); // where Docker keeps a container's namespace
    double allocatedBefore = metric("fnp_ipam_allocations_total{kind=\"address\"}");
    String cidr = ok("/IpamDriver.RequestAddress", j("PoolID", localPool, "Address", "", "Options", j()))
        .getString("Address");
    String ip = cidr.substring(0, cidr.indexOf('/'));
    String id = ("m1" + RUN + "0".repeat(64)).substring(0, 64);
    step(SCHEMA.dockerContainer("fno1", id), new ContainerRecord(id, "svcm" + RUN + ".1", "m1", "fno1", "svcm" + RUN,
        "mweb", "taskm1", "mweb.1", "running", sandbox.key,
        Map.of(netId, new ContainerRecord.Attachment(ip, "em1", List.of(), ""))).toJson());
    Poll.await("the resolver in " + CTR_NS + " answers mweb.1", Duration.ofSeconds(30),
        () -> dig("mweb.1").contains(ip), () -> " (dig: " + dig("mweb.1") + ")");

    // DNS: every query the container makes is counted once, by its answer's rcode
    double answeredBefore = metric("fnp_dns_queries_total{rcode=\"NOERROR\"}");
    for (int i = 0; i < 5; i++) {
      assertThat(dig("mweb.1")).as("query " + i).containsExactly(ip);
    }
    assertThat(metric("fnp_dns_queries_total{rcode=\"NOERROR\"}") - answeredBefore)
        .as("fnp_dns_queries_total{rcode=NOERROR} after 5 answered queries").isEqualTo(5.0);

    // IPAM: fill the node block; the one RequestAddress after is refused as exhausted, and counted so
    double exhaustedBefore = metric("fnp_ipam_exhausted_total{kind=\"address\"}");
    int allocated = 1;
    String refusal = null;
    while (refusal == null && allocated < 256) {
      JsonObject r = new JsonObject(plugin.post("/IpamDriver.RequestAddress",
          j("PoolID", localPool, "Address", "", "Options", j()).encode()).body());
      if (r.containsKey("Error")) {
        refusal = r.getString("Error");
      } else {
        allocated++;
      }
    }
    assertThat(refusal).as("RequestAddress on a full node block").isNotNull().contains("exhausted");
    assertThat(metric("fnp_ipam_allocations_total{kind=\"address\"}") - allocatedBefore)
        .as("fnp_ipam_allocations_total{kind=address}: one per address handed out").isEqualTo((double) allocated);
    assertThat(metric("fnp_ipam_exhausted_total{kind=\"address\"}") - exhaustedBefore)
        .as("fnp_ipam_exhausted_total{kind=address} after the one refused RequestAddress").isEqualTo(1.0);
  }

  // ---- helpers -------------------------------------------------------------------------

  /** The A records {@code name} resolves to inside the container namespace (dig @127.0.0.11, one try). */
  static List<String> dig(String name) {
    Netns.Result r = Netns.run("ip", "netns", "exec", CTR_NS, "dig", "@127.0.0.11", "+tries=1", "+time=2", "+short",
        "A", name);
    return r.exit() != 0 ? List.of("dig failed: " + r.out() + r.err())
        : r.out().lines().map(String::strip).filter(l -> !l.isEmpty()).toList();
  }

  /** A sample's value on /metrics, by its name and labels as Prometheus prints them; 0 if absent. */
  static double metric(String sample) throws Exception {
    return get("/metrics", TOKEN).body().lines().filter(l -> l.startsWith(sample + " ")).findFirst()
        .map(l -> Double.parseDouble(l.substring(sample.length() + 1).strip())).orElse(0.0);
  }

  static String expect(java.io.BufferedReader from, String what) throws Exception {
    String line = from.readLine();
    assertThat(line).as("console-test.mjs").isNotNull().doesNotStartWith("FAIL").startsWith(what);
    return line;
  }

  /** docker network create, as dockerd calls the plugin, and the network record the Docker side writes. */
  static String createNetwork(String fid, String name) throws Exception {
    JsonObject pool = ok("/IpamDriver.RequestPool", j("AddressSpace", GLOBAL, "Pool", "", "SubPool", "",
        "Options", j("flannel-id", fid), "V6", false));
    String subnet = pool.getString("Pool");
    lastSubnet = subnet;
    String gw = ok("/IpamDriver.RequestAddress", j("PoolID", pool.getString("PoolID"), "Address", "",
        "Options", j("flannel-id", fid, "RequestAddressType", GW_OPT))).getString("Address");
    String netId = ("n" + fid + "0".repeat(64)).substring(0, 25);
    JsonObject generic = ok("/NetworkDriver.AllocateNetwork", j("NetworkID", netId, "Options", j(),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "", "Pool", subnet, "Gateway", gw)), "IPv6Data", null))
        .getJsonObject("Options");
    ok("/IpamDriver.RequestPool", j("AddressSpace", LOCAL, "Pool", subnet, "SubPool", "",
        "Options", j("flannel-id", fid), "V6", false));
    ok("/NetworkDriver.CreateNetwork", j("NetworkID", netId,
        "Options", j("com.docker.network.generic", generic, "com.docker.network.enable_ipv6", false),
        "IPv4Data", new JsonArray().add(j("AddressSpace", LOCAL, "Pool", subnet, "Gateway", gw)),
        "IPv6Data", new JsonArray()));
    step(SCHEMA.dockerNetwork(netId), new DockerNetwork(netId, name, "flannel-np", fid, subnet).toJson());
    return netId;
  }

  record Run(int exit, String out, String err) {}

  static Run cli(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int exit = ReplayCommand.run(args, Map.of("ETCD_ENDPOINTS", etcdServer.endpoint(), "ETCD_PREFIX", PREFIX),
        new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
    Logging.configure("warn");
    return new Run(exit, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  /** The batches of {@code plane} in replay's output, as "revision=R\n" + the exact text. */
  static List<String> batches(String out, String plane) {
    List<String> r = new ArrayList<>();
    StringBuilder cur = null;
    for (String line : out.split("\n", -1)) {
      if (line.startsWith("batch plane=" + plane + " ")) {
        cur = new StringBuilder("revision=" + line.substring(line.indexOf("revision=") + 9) + "\n");
      } else if (cur != null && line.equals("end batch")) {
        r.add(cur.toString());
        cur = null;
      } else if (cur != null) {
        cur.append(line.substring(2)).append('\n');
      }
    }
    return r;
  }

  static boolean lbReportAt(long rev) {
    return reportAt("lb", rev);
  }

  static boolean reportAt(String plane, long rev) {
    return reports.stream().anyMatch(r -> r.getString("plane").equals(plane) && r.getLong("revision") >= rev);
  }

  /** One etcd write, then wait until the lb plane has passed it (so no two writes coalesce). */
  static long step(String key, String value) throws Exception {
    long rev = etcd.put(key, value).await(5, TimeUnit.SECONDS);
    await("the lb pass at revision " + rev, Duration.ofSeconds(15), () -> lbReportAt(rev));
    return rev;
  }

  static long delete(String key) throws Exception {
    etcd.delete(key).await(5, TimeUnit.SECONDS);
    long rev = etcd.list(PREFIX + "/").await(5, TimeUnit.SECONDS).revision();
    await("the lb pass at revision " + rev, Duration.ofSeconds(15), () -> lbReportAt(rev));
    return rev;
  }

  static JsonObject ok(String path, JsonObject body) throws Exception {
    PluginClient.Response r = plugin.post(path, body.encode());
    JsonObject o = new JsonObject(r.body());
    assertThat(o.getString("Err", "")).as(path).isEmpty();
    return o;
  }

  static HttpResponse<String> get(String path, String token) throws Exception {
    HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + adminPort + path))
        .timeout(Duration.ofSeconds(10));
    if (token != null) {
      b.header("Authorization", "Bearer " + token);
    }
    return http.send(b.build(), HttpResponse.BodyHandlers.ofString());
  }

  /** Failing, says what the console has received: a plane that is slow or one that never reported. */
  static void await(String what, Duration max, BooleanSupplier ok) {
    Poll.await(what, max, ok, () -> " (console: " + batches.size() + " batches, reports " + reports + ")");
  }
}
