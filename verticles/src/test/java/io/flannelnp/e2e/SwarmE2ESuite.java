package io.flannelnp.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.e2e.SwarmLab.Result;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Supplier;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * flannel-np end to end on a real three-node Swarm (scripts/swarm-lab.sh: one dockerd per network
 * namespace, each node on the engine its subclass names (the mixed Swarm: node 1 Docker 28,
 * Debian sid's docker.io; node 2 this machine's, Debian 12's 20.10; node 3 Docker 26, Debian
 * trixie's); one etcd; dnsmasq on the lab bridge as the daemons' upstream), installed as an
 * operator does: scripts/build-plugin.sh's directory pushed once to the lab's registry under the
 * build's version, then `docker plugin install --alias flannel-np:latest --grant-all-permissions
 * REGISTRY/flannel-np:VERSION KEY=VALUE…` on every node, and on every engine of 27 or older the OCI hook (hook/) as default runtime with
 * IS_HOOK_AVAILABLE=true. Everything is driven through the docker CLI of each node and checked
 * from client containers on every node.
 *
 * <p>Node 1 (the newest engine) is the Swarm's leader until {@link #theLeadershipMovesToTheOldestEngine}
 * hands the leadership to the oldest engine's node (the second manager since the two-manager
 * test); from then on that node is the manager the tests use ({@link #mgr}).
 * {@link SwarmE2EIT} runs it on the mixed Swarm, {@link SwarmE2E28IT} on Docker 28 only.
 *
 * <p>Shared fixture (built once, the tests read it): network n1 (ours, attachable), overlay ov1
 * (Docker's), VIP service web and DNSRR service rr with one busybox httpd per node (serving its
 * hostname, i.e. its container's short ID), a client container cI on n1 on every node I, and a
 * second network of ours, n2, with one httpd container x2 on node 2. Tests run in order; the last
 * removes everything and checks nothing is left; {@link #down()} always tears the lab down and
 * asserts the host is as before.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
abstract class SwarmE2ESuite {
  static final int N = 3;
  /** The driver name: the alias every node installs the registry's build under (README "Install"). */
  static final String PLUGIN = "flannel-np:latest";
  static final String IMAGE = "fnp/busybox:latest";
  static final String SUBNETS = "10.200.0.0/16";
  static final String EXT_NAME = "ext.fne.test";
  static final String HTTPD = "hostname > /www/index.html && exec httpd -f -p 80 -h /www";
  static final Duration CONVERGE = Duration.ofSeconds(2);
  /** flannel-np's DNS_TTL in the lab: Docker's resolver answers with 600, so a 599 is ours. */
  static final int TTL = 599;

  final Path root = root();
  /** The engine of each node in turn: 28, 26 or host (this machine's docker.io); the first leads. */
  final String docker;
  final String prefix;
  final String net;
  final String extIp;
  final SwarmLab lab;
  final Path pluginDir;
  final Path logs = Path.of(System.getProperty("flannelnp.e2e.logs", "target/e2e-logs"));
  String fid;
  /** The build's version (the tag pushed to the lab's registry). */
  String version;
  boolean up;
  Map<Integer, SwarmLab.Engine> engines;
  /** The node the tests send Swarm commands to: the leader (node 1 until the leadership moves). */
  int mgr = 1;
  /** Per node: Docker's iptables rules (ours left out) once the fixture stood. */
  final Map<Integer, List<String>> dockerRules = new HashMap<>();

  /** The suite on the engines DOCKER, in a lab named PREFIX on the /24 NET. */
  SwarmE2ESuite(String docker, String prefix, String net) {
    this.docker = docker;
    this.prefix = prefix;
    this.net = net;
    this.extIp = net + ".200"; // only ever a DNS answer: nothing is sent to it
    this.lab = new SwarmLab(root, prefix, net, EXT_NAME + "=" + extIp);
    // one plugin build for every lab of the run
    this.pluginDir = Path.of(System.getProperty("flannelnp.e2e.pluginDir", "/tmp/fne-plugin"));
  }

  /** A task container: node, short container ID (its hostname, what httpd serves), name, IP on n1. */
  record Task(int node, String cid, String name, String ip) {}

  static Path root() {
    String p = System.getProperty("flannelnp.root");
    Path r = p != null ? Path.of(p) : Path.of("").toAbsolutePath();
    if (!Files.exists(r.resolve("scripts/swarm-lab.sh")) && r.getParent() != null) {
      r = r.getParent();
    }
    return r.toAbsolutePath();
  }

  // ---- lab lifecycle ---------------------------------------------------------------------------

  @BeforeAll
  void up() throws IOException {
    assertThat(new com.sun.security.auth.module.UnixSystem().getUid()).as("the e2e suite needs root (netns, dockerd)").isZero();
    buildPluginIfStale();
    up = true; // from here on, @AfterAll tears down whatever exists
    long t0 = System.nanoTime();
    lab.up(N, docker, 1, true).out();
    System.out.printf("lab up (%s) in %d s%n", docker, (System.nanoTime() - t0) / 1_000_000_000);
    engines = lab.versions();
    engines.values().forEach(e -> System.out.println("node " + e.node() + ": Docker " + e.version() + " (API " + e.api()
        + ", min " + e.minApi() + "), containerd " + e.containerd() + ", runc " + e.runc() + (e.hook() ? ", OCI hook" : "")));
    int newest = engines.values().stream().mapToInt(SwarmLab.Engine::major).max().orElseThrow();
    assertThat(engines.get(1).major()).as("node 1, the leader, runs the newest engine of " + docker).isEqualTo(newest);
    for (SwarmLab.Engine e : engines.values()) {
      assertThat(e.hook()).as("node " + e.node() + " (Docker " + e.version() + ") has the OCI hook exactly when its engine is 27 or older")
          .isEqualTo(e.major() <= 27);
    }
    // as an operator installs it: pushed once to a registry (the lab's, on its bridge) under the
    // build's version, then `docker plugin install --alias` with the settings on every node
    version = pluginVersion(pluginDir);
    String ref = lab.lab(Duration.ofSeconds(10), "registry").out().strip() + "/flannel-np:" + version;
    lab.lab(Duration.ofMinutes(3), "push-plugin", pluginDir.toString(), ref).out();
    lab.lab(Duration.ofMinutes(3), "pull-plugin", ref, PLUGIN, "ETCD_ENDPOINTS={etcd}",
        "NODE_NAME={node}", "AVAILABLE_SUBNETS=" + SUBNETS, "DEFAULT_FLANNEL_OPTIONS=-iface=eth0", "DNS_TTL=" + TTL,
        "IS_HOOK_AVAILABLE={hook}").out();
    for (int i = 1; i <= N; i++) {
      assertThat(lab.dk(i, "plugin", "inspect", "-f", "{{.Enabled}} {{.PluginReference}}", PLUGIN).out().strip())
          .as("enabled on node " + i + ", installed from the registry").isEqualTo("true " + ref);
      assertThat(lab.dk(i, "plugin", "inspect", "-f", "{{.Config.Description}}", PLUGIN).out())
          .as("the description names the version on node " + i).startsWith("flannel-np " + version + ": ");
    }
    fid = UUID.randomUUID().toString();
    lab.dk(mgr, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--ipam-opt", "flannel-id=" + fid, "--attachable", "n1").out();
    lab.dk(mgr, "network", "create", "-d", "overlay", "--attachable", "ov1").out();
    for (String[] svc : List.of(new String[] {"web", "vip"}, new String[] {"rr", "dnsrr"})) {
      lab.dk(mgr, "service", "create", "-d", "--name", svc[0], "--endpoint-mode", svc[1], "--network", "n1", "--replicas", "3",
          "--replicas-max-per-node", "1", "--no-resolve-image", "--stop-grace-period", "1s", IMAGE, "sh", "-c", HTTPD).out();
    }
    for (int i = 1; i <= N; i++) {
      lab.dk(i, "run", "-d", "--name", "c" + i, "--network", "n1", IMAGE, "sleep", "1d").out();
    }
    lab.dk(mgr, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--ipam-opt", "flannel-id=" + UUID.randomUUID(),
        "--attachable", "n2").out();
    lab.dk(2, "run", "-d", "--name", "x2", "--network", "n2", IMAGE, "sh", "-c", HTTPD).out();
    await(Duration.ofSeconds(90), "web and rr running with one task on each node",
        () -> tasks("web").size() == N && tasks("rr").size() == N);
    for (int i = 1; i <= N; i++) {
      dockerRules.put(i, dockerRules(i));
    }
  }

  /** The version of the build in a plugin directory: its daemon's `--version`, the tag it is pushed under. */
  String pluginVersion(Path dir) {
    String v = lab.run(Duration.ofSeconds(30), List.of("java", "-jar", dir.resolve("rootfs/opt/flannel-np/flannel-np.jar").toString(),
        "--version")).out().strip();
    assertThat(v).matches("flannel-np [0-9][A-Za-z0-9_.-]*");
    return v.substring("flannel-np ".length());
  }

  void buildPluginIfStale() throws IOException {
    buildPluginIfStale(lab, root, pluginDir);
  }

  /** scripts/build-plugin.sh unless the plugin directory holds this jar, config and entrypoint. */
  static void buildPluginIfStale(SwarmLab lab, Path root, Path pluginDir) throws IOException {
    Path jar = root.resolve("verticles/target/flannel-np.jar");
    assertThat(jar).as("the shaded jar (mvn package)").exists();
    Path cfg = pluginDir.resolve("config.json");
    Path inRootfs = pluginDir.resolve("rootfs/opt/flannel-np/flannel-np.jar");
    // by content: `mvn verify` rewrites the jar every time, mostly with the same bytes
    boolean stale = !Files.exists(cfg) || !Files.exists(inRootfs) || Files.mismatch(jar, inRootfs) != -1
        || !withoutDescription(root.resolve("plugin-bundle/config.json")).equals(withoutDescription(cfg))
        || !Files.exists(pluginDir.resolve("rootfs/opt/flannel-np/entrypoint.sh"))
        || Files.mismatch(root.resolve("plugin-bundle/entrypoint.sh"), pluginDir.resolve("rootfs/opt/flannel-np/entrypoint.sh")) != -1;
    if (stale) {
      lab.run(Duration.ofMinutes(20), List.of(root.resolve("scripts/build-plugin.sh").toString(), pluginDir.toString())).out();
    }
  }

  /** config.json but its description, which build-plugin.sh prefixes with the version. */
  static List<String> withoutDescription(Path cfg) throws IOException {
    return Files.readAllLines(cfg).stream().filter(l -> !l.trim().startsWith("\"description\": \"flannel-np")).toList();
  }

  @AfterAll
  void down() throws IOException {
    if (!up) {
      return;
    }
    Files.createDirectories(logs);
    for (int i = 1; i <= N; i++) { // the plugin's log is in dockerd's: keep it for a failed run
      if (Files.exists(lab.dockerdLog(i))) {
        Files.copy(lab.dockerdLog(i), logs.resolve(prefix + "-dockerd" + i + ".log"), StandardCopyOption.REPLACE_EXISTING);
      }
    }
    // up tears down by itself when it fails; then there is no snapshot left to compare
    boolean snapshot = Files.exists(lab.state.resolve("baseline.txt"));
    Result r = lab.lab(Duration.ofMinutes(3), "down");
    assertThat(r.exit()).as("lab down: the host must be exactly as before up (snapshot diff)\n" + r.err()).isZero();
    if (snapshot) {
      assertThat(r.err()).contains("host identical to the snapshot taken before 'up'");
    }
  }

  // ---- helpers ---------------------------------------------------------------------------------

  static void await(Duration max, String what, Supplier<Boolean> cond) {
    long end = System.nanoTime() + max.toNanos();
    while (true) {
      Boolean ok;
      try {
        ok = cond.get();
      } catch (AssertionError e) {
        ok = false;
      }
      if (Boolean.TRUE.equals(ok)) {
        return;
      }
      if (System.nanoTime() > end) {
        throw new AssertionError("timeout after " + max.toSeconds() + " s waiting for: " + what);
      }
      sleep(300);
    }
  }

  static void sleep(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError(e);
    }
  }

  /** The running task containers of a service on every node, with their n1 address. */
  List<Task> tasks(String svc) {
    List<Task> out = new ArrayList<>();
    for (int i = 1; i <= N; i++) {
      String ids = lab.dk(i, "ps", "-q", "-f", "label=com.docker.swarm.service.name=" + svc, "-f", "status=running").out();
      for (String id : ids.strip().split("\\s+")) {
        if (id.isEmpty()) {
          continue;
        }
        String[] f = lab.dk(i, "inspect", "-f", "{{.Name}} {{(index .NetworkSettings.Networks \"n1\").IPAddress}}", id).out().strip().split(" ");
        out.add(new Task(i, id.substring(0, 12), f[0].replaceFirst("^/", ""), f.length > 1 ? f[1] : ""));
      }
    }
    return out;
  }

  String ipOn(int node, String container, String network) {
    return lab.dk(node, "inspect", "-f", "{{(index .NetworkSettings.Networks \"" + network + "\").IPAddress}}", container).out().strip();
  }

  String vip(String svc) {
    String addr = lab.dk(mgr, "service", "inspect", "-f", "{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}", svc).out().strip();
    assertThat(addr).as("service " + svc + " has one VIP (on n1)").matches("[0-9.]+/\\d+");
    return addr.substring(0, addr.indexOf('/'));
  }

  /** Removes containers, services and networks by name, ignoring what is already gone. */
  void rm(int node, String kind, String... names) {
    List<String> args = new ArrayList<>(List.of(kind, "rm"));
    if (kind.equals("container")) {
      args.add("-f");
    }
    args.addAll(List.of(names));
    lab.dk(node, args.toArray(String[]::new));
  }

  // ---- networks --------------------------------------------------------------------------------

  @Test
  @Order(1)
  void networkCreateWithFlannelIdIsAllocatedByFlannelNpOnEveryNode() {
    String subnet = lab.dk(mgr, "network", "inspect", "-f", "{{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}", "n1").out().strip();
    assertThat(subnet).as("driver and pool of n1").startsWith(PLUGIN + " 10.200.");
    assertThat(lab.etcdctl("get", "--print-value-only", "/flannel/networks/" + fid + "/docker-id").out().strip())
        .as("the network's record in etcd names the Docker network").isNotEmpty();
    for (int i = 1; i <= N; i++) {
      String vni = lab.dk(mgr, "network", "inspect", "-f", "{{index .Options \"io.flannel-np.vni\"}}", "n1").out().strip();
      assertThat(lab.exec(i, "ip", "-d", "link", "show", "flannel." + vni).out()).as("VXLAN device on node " + i).contains("vxlan id " + vni);
    }
  }

  /**
   * In Swarm, networks are allocated asynchronously by the manager: `docker network create`
   * without flannel-id returns success, and our IPAM's refusal surfaces where a user can see it:
   * the manager's dockerd log carries our message, the network has no address pool, and a
   * service on it stays pending. The refused network must not disturb the others (it once broke
   * every Docker-mirror pass: no service reached etcd).
   */
  @Test
  @Order(2)
  void networkCreateWithoutFlannelIdIsRefusedWithOurMessageAndAServiceOnItStaysPending() throws IOException {
    try {
      lab.dk(mgr, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--attachable", "nofid").out();
      await(Duration.ofSeconds(20), "our refusal in the manager's dockerd log",
          () -> read(lab.dockerdLog(mgr)).contains("flannel-np needs a flannel-id IPAM option"));
      assertThat(lab.dk(mgr, "network", "inspect", "-f", "{{json .IPAM.Config}}", "nofid").out().strip()).isIn("null", "[]");
      lab.dk(mgr, "service", "create", "-d", "--name", "pending", "--network", "nofid", "--no-resolve-image", IMAGE, "sleep", "1d").out();
      lab.dk(mgr, "service", "create", "-d", "--name", "probe", "--network", "n1", "--replicas", "0", "--no-resolve-image", IMAGE, "sleep", "1d").out();
      String probeId = lab.dk(mgr, "service", "inspect", "-f", "{{.ID}}", "probe").out().strip();
      await(Duration.ofSeconds(15), "a service created after the refusal mirrored into etcd",
          () -> !lab.etcdctl("get", "--keys-only", "/flannel/docker-data/services/" + probeId).out().isBlank());
      String state = lab.dk(mgr, "service", "ps", "--format", "{{.CurrentState}}", "pending").out();
      assertThat(state).as("a task on the refused network never runs").doesNotContain("Running").isNotBlank();
    } finally {
      rm(mgr, "service", "pending", "probe");
      // service rm is asynchronous: the network is in use until the pending task is gone
      await(Duration.ofSeconds(30), "network nofid removed", () -> {
        rm(mgr, "network", "nofid");
        return !lab.dk(mgr, "network", "inspect", "nofid").ok();
      });
    }
  }

  static String read(Path p) {
    try {
      return Files.readString(p);
    } catch (IOException e) {
      return "";
    }
  }

  // ---- a VIP service ---------------------------------------------------------------------------

  @Test
  @Order(3)
  void vipServiceResolvesToItsSwarmVipAndReachesEveryReplicaFromEveryNode() {
    List<Task> web = tasks("web");
    assertThat(web).extracting(Task::node).as("one replica per node").containsExactlyInAnyOrder(1, 2, 3);
    Set<String> replicas = web.stream().map(Task::cid).collect(Collectors.toSet());
    Set<String> taskIps = web.stream().map(Task::ip).collect(Collectors.toSet());
    String vip = vip("web");
    for (int i = 1; i <= N; i++) {
      String c = "c" + i;
      assertThat(lab.nslookup(i, c, "web")).as("web from node " + i).containsExactly(vip);
      String pid = lab.dk(i, "inspect", "-f", "{{.State.Pid}}", c).out().strip();
      assertThat(lab.dig(i, pid, "web")).as("web from node " + i + " is answered by flannel-np (TTL " + TTL + ")")
          .containsExactly(new SwarmLab.A("web.", TTL, vip));
      assertThat(lab.nslookup(i, c, "web.n1")).as("web.n1 from node " + i).containsExactly(vip);
      assertThat(lab.nslookup(i, c, "tasks.web")).as("tasks.web from node " + i).containsExactlyInAnyOrderElementsOf(taskIps);
      assertThat(lab.vipBackends(i)).as("VIP backends in nft on node " + i).containsEntry(vip, taskIps);
      Set<String> seen = new TreeSet<>();
      for (int k = 0; k < 40 && !seen.containsAll(replicas); k++) {
        seen.add(lab.http(i, c, "web"));
      }
      assertThat(seen).as("HTTP to web from node " + i + " (answers seen)").containsAll(replicas);
      for (Task t : web) {
        assertThat(lab.nslookup(i, c, t.name())).as("task name " + t.name() + " from node " + i).containsExactly(t.ip());
      }
      for (int j = 1; j <= N; j++) {
        if (j != i) {
          assertThat(lab.nslookup(i, c, "c" + j)).as("container c" + j + " from node " + i).containsExactly(ipOn(j, "c" + j, "n1"));
        }
      }
    }
  }

  @Test
  @Order(4)
  void dnsrrServiceResolvesToItsTaskAddressesAndHasNoVipRules() {
    List<Task> rr = tasks("rr");
    Set<String> taskIps = rr.stream().map(Task::ip).collect(Collectors.toSet());
    assertThat(lab.dk(mgr, "service", "inspect", "-f", "{{json .Endpoint.VirtualIPs}}", "rr").out().strip()).isIn("null", "[]");
    for (int i = 1; i <= N; i++) {
      assertThat(lab.nslookup(i, "c" + i, "rr")).as("rr from node " + i).containsExactlyInAnyOrderElementsOf(taskIps);
      String pid = lab.dk(i, "inspect", "-f", "{{.State.Pid}}", "c" + i).out().strip();
      assertThat(lab.dig(i, pid, "rr")).as("rr from node " + i + ", answered by flannel-np").allMatch(a -> a.ttl() == TTL)
          .extracting(SwarmLab.A::ip).containsExactlyInAnyOrderElementsOf(taskIps);
      assertThat(lab.vipBackends(i).values()).as("no nft backends for a DNSRR service on node " + i)
          .noneMatch(b -> b.stream().anyMatch(taskIps::contains));
      int node = i;
      Task other = rr.stream().filter(t -> t.node() != node).findFirst().orElseThrow();
      assertThat(lab.http(i, "c" + i, other.ip())).as("HTTP from node " + i + " to rr task on node " + other.node()).isEqualTo(other.cid());
    }
  }

  @Test
  @Order(5)
  void dockerRunOnTheAttachableNetworkResolvesAndReachesTheService() {
    Set<String> replicas = tasks("web").stream().map(Task::cid).collect(Collectors.toSet());
    String vip = vip("web");
    Result r = lab.dk(2, "run", "--rm", "--network", "n1", IMAGE, "sh", "-c",
        "nslookup web; for i in 1 2 3 4 5 6 7 8 9; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web 80 | tail -n 1; done");
    assertThat(SwarmLab.addresses(r.out())).as("web from a docker run container").containsExactly(vip);
    assertThat(r.out().lines().filter(replicas::contains).count()).as("HTTP answers from replicas\n" + r.out()).isEqualTo(9);
  }

  @Test
  @Order(6)
  void aContainerOnOurNetworkAndAnOverlayResolvesNamesOfBothOnEveryEngine() {
    try {
      lab.dk(2, "run", "-d", "--name", "o2", "--network", "ov1", IMAGE, "sleep", "1d").out();
      String o2 = ipOn(2, "o2", "ov1");
      String vip = vip("web");
      for (int i = 1; i <= N; i++) {
        String m = "mixed" + i;
        String on = "node " + i + " (Docker " + engines.get(i).version() + ")";
        lab.dk(i, "run", "-d", "--name", m, "--network", "n1", IMAGE, "sleep", "1d").out();
        lab.dk(i, "network", "connect", "ov1", m).out();
        assertThat(lab.nslookup(i, m, "o2")).as("overlay container from the mixed one on " + on).containsExactly(o2);
        int other = i % N + 1;
        assertThat(lab.nslookup(i, m, "c" + other)).as("our container from the mixed one on " + on)
            .containsExactly(ipOn(other, "c" + other, "n1"));
        assertThat(lab.nslookup(i, m, "web")).as("web from the mixed one on " + on).containsExactly(vip);
        assertThat(lab.http(i, m, "web")).as("HTTP to web from the mixed container on " + on).matches("[0-9a-f]{12}");
        assertThat(lab.nslookup(2, "o2", m)).as(m + " from the overlay-only container").containsExactly(ipOn(i, m, "ov1"));
      }
    } finally {
      for (int i = 1; i <= N; i++) {
        rm(i, "container", "mixed" + i);
      }
      rm(2, "container", "o2");
    }
  }

  /**
   * Docker 28 orders a container's networks by gw_priority (API 1.48, the engine's own 28 CLI:
   * `--network name=…,gw-priority=N`); the highest that offers a gateway gives the default route.
   * Ours offers none (Join answers no gateway: docker_gwbridge does it). Whichever network is
   * preferred, a container on ours and an overlay reaches the VIP and tasks on other nodes, gets
   * flannel-np's answers, the overlay's names and external names, and not the other network of
   * ours.
   */
  @Test
  @Order(7)
  void onDocker28GwPriorityOnEitherNetworkKeepsVipsDnsAndIsolation() {
    // one node of each such engine: the same code runs on the others
    List<Integer> newer = engines.values().stream().filter(e -> e.major() >= 28)
        .collect(Collectors.toMap(SwarmLab.Engine::version, SwarmLab.Engine::node, Math::min, java.util.TreeMap::new)).values().stream().toList();
    assertThat(newer).as("a node of Docker 28 or newer in " + docker).isNotEmpty();
    String vip = vip("web");
    String x2 = ipOn(2, "x2", "n2");
    try {
      lab.dk(2, "run", "-d", "--name", "o2", "--network", "ov1", IMAGE, "sleep", "1d").out();
      String o2 = ipOn(2, "o2", "ov1");
      for (int i : newer) {
        for (String preferred : List.of("n1", "ov1")) {
          String g = "gw" + i + preferred;
          String n1 = preferred.equals("n1") ? "name=n1,gw-priority=10" : "n1";
          String ov1 = preferred.equals("ov1") ? "name=ov1,gw-priority=10" : "ov1";
          lab.nodeDocker(i, "run", "-d", "--name", g, "--network", n1, "--network", ov1, IMAGE, "sleep", "1d").out();
          String what = g + " (node " + i + ", gw-priority on " + preferred + ")";
          System.out.println(what + " routes:\n  " + lab.dk(i, "exec", g, "ip", "route").out().strip().replace("\n", "\n  "));
          String pid = lab.dk(i, "inspect", "-f", "{{.State.Pid}}", g).out().strip();
          assertThat(lab.dig(i, pid, "web")).as("web from " + what + ", answered by flannel-np")
              .containsExactly(new SwarmLab.A("web.", TTL, vip));
          Set<String> replicas = tasks("web").stream().map(Task::cid).collect(Collectors.toSet());
          Set<String> seen = new TreeSet<>();
          for (int k = 0; k < 40 && !seen.containsAll(replicas); k++) {
            seen.add(lab.http(i, g, "web"));
          }
          assertThat(seen).as("HTTP through the VIP from " + what + " reaches every replica").containsAll(replicas);
          assertThat(lab.nslookup(i, g, "o2")).as("the overlay's container from " + what).containsExactly(o2);
          assertThat(lab.nslookup(i, g, EXT_NAME)).as(EXT_NAME + " from " + what).containsExactly(extIp);
          assertThat(lab.http(i, g, x2)).as("x2 on our other network n2 from " + what).isEmpty();
          rm(i, "container", g);
        }
      }
    } finally {
      for (int i : newer) {
        rm(i, "container", "gw" + i + "n1", "gw" + i + "ov1");
      }
      rm(2, "container", "o2");
    }
  }

  @Test
  @Order(8)
  void anExternalNameIsAnsweredThroughDockersUpstream() {
    for (int i = 1; i <= N; i++) {
      assertThat(lab.nslookup(i, "c" + i, EXT_NAME)).as(EXT_NAME + " from node " + i).containsExactly(extIp);
    }
    assertThat(read(lab.state.resolve("dnsmasq.log"))).as("the lab's upstream got the query").contains("query[A] " + EXT_NAME);
  }

  /**
   * Two networks of ours are isolated from each other on every engine: x2 (n2, node 2) answers a
   * container of n2 on node 1, but no client of n1 on any node (the same node and across), and x2
   * reaches no task of web on another node.
   */
  @Test
  @Order(9)
  void twoNetworksOfOursAreIsolatedOnEveryEngineWhileEachWorksAcrossNodes() {
    String x2 = ipOn(2, "x2", "n2");
    String x2id = lab.dk(2, "inspect", "-f", "{{.Config.Hostname}}", "x2").out().strip();
    try {
      lab.dk(1, "run", "-d", "--name", "x1", "--network", "n2", IMAGE, "sleep", "1d").out();
      assertThat(lab.http(1, "x1", x2)).as("x2 from x1: n2 across nodes 1 and 2").isEqualTo(x2id);
      assertThat(lab.http(1, "x1", "x2")).as("x2 by name from x1").isEqualTo(x2id);
      for (int i = 1; i <= N; i++) {
        assertThat(lab.http(i, "c" + i, x2)).as("x2 (n2) from c" + i + " (n1, node " + i + ")").isEmpty();
      }
      for (Task t : tasks("web")) {
        if (t.node() != 2) {
          assertThat(lab.http(2, "x2", t.ip())).as("web task on node " + t.node() + " (n1) from x2 (n2)").isEmpty();
        }
      }
    } finally {
      rm(1, "container", "x1");
    }
  }

  // ---- a container's first DNS query -----------------------------------------------------------

  /**
   * The very first query of a container, sent by its entrypoint (dnsttl: the answer's TTL tells
   * flannel-np's DNS_TTL from Docker's 600), is answered by flannel-np on every engine: on Docker
   * 28 without the hook (Join runs in the container's namespace before it starts), on 27 and
   * older because the OCI hook held the container until our resolver served it (the plugin logs
   * each handshake).
   */
  @Test
  @Order(10)
  void theFirstDnsQueryOfADockerRunContainerIsAnsweredByFlannelNpOnEveryEngine() {
    String vip = vip("web");
    for (int i = 1; i <= N; i++) {
      SwarmLab.Engine e = engines.get(i);
      String on = "node " + i + " (Docker " + e.version() + (e.hook() ? ", OCI hook" : ", no hook") + ")";
      assertThat(lab.dk(i, "info", "-f", "{{.DefaultRuntime}}").out().strip()).as("default runtime on " + on)
          .isEqualTo(e.hook() ? "flannel-np" : "runc");
      for (int k = 0; k < 4; k++) {
        List<String> out = lab.dk(i, "run", "--rm", "--network", "n1", IMAGE, "sh", "-c", "hostname; dnsttl web").out().lines().toList();
        assertThat(out).as("hostname and first answer of a container on " + on).hasSize(2);
        assertThat(out.get(1)).as("the first query of container " + out.get(0) + " on " + on).isEqualTo(TTL + " " + vip);
        if (e.hook()) {
          assertHookInjected(i, out.get(0));
        }
      }
    }
  }

  /** The same for Swarm tasks: two per node, each entrypoint's first query. */
  @Test
  @Order(11)
  void theFirstDnsQueryOfASwarmTaskIsAnsweredByFlannelNpOnEveryEngine() {
    String vip = vip("web");
    try {
      lab.dk(mgr, "service", "create", "-d", "--name", "first", "--network", "n1", "--replicas", Integer.toString(2 * N),
          "--replicas-max-per-node", "2", "--no-resolve-image", "--stop-grace-period", "1s", IMAGE, "sh", "-c",
          "dnsttl web; exec sleep 1d").out();
      await(Duration.ofSeconds(90), 2 * N + " first tasks running", () -> tasks("first").size() == 2 * N);
      for (Task t : tasks("first")) {
        SwarmLab.Engine e = engines.get(t.node());
        assertThat(lab.dk(t.node(), "logs", t.cid()).out().strip()).as("the first query of task " + t.name() + " on node "
            + t.node() + " (Docker " + e.version() + (e.hook() ? ", OCI hook" : ", no hook") + ")").isEqualTo(TTL + " " + vip);
        if (e.hook()) {
          assertHookInjected(t.node(), t.cid());
        }
      }
    } finally {
      rm(mgr, "service", "first");
      await(Duration.ofSeconds(60), "every first container gone", () -> java.util.stream.IntStream.rangeClosed(1, N)
          .allMatch(i -> lab.dk(i, "ps", "-aq", "-f", "label=com.docker.swarm.service.name=first").out().isBlank()));
    }
  }

  /** The plugin on node I logged that the hook held container CID until our resolver served it. */
  void assertHookInjected(int node, String cid) {
    String line = "OCI hook of container " + cid.substring(0, 12) + ": injected";
    await(Duration.ofSeconds(5), "'" + line + "' in node " + node + "'s log", () -> read(lab.dockerdLog(node)).contains(line));
  }

  // ---- the Docker mirror on every engine -------------------------------------------------------

  /**
   * Each node's plugin speaks the newest Engine API both sides know (1.41 to a 20.10, 1.45 to a 26,
   * its own newest, 1.47, to a 28), and its node's container events reach etcd at once: a
   * container started on n1 gets its record within 3 s, and loses it within 3 s of its removal.
   */
  @Test
  @Order(12)
  void theDockerMirrorNegotiatesTheApiAndFollowsContainerEventsOnEveryEngine() {
    for (int i = 1; i <= N; i++) {
      SwarmLab.Engine e = engines.get(i);
      assertThat(read(lab.dockerdLog(i))).as("node " + i + " (Docker " + e.version() + ", API " + e.minApi() + ".." + e.api()
          + "): the version flannel-np speaks").contains("Docker API reachable: version " + apiOf(i) + ",");
      String node = lab.dk(i, "info", "-f", "{{.Swarm.NodeID}}").out().strip();
      String dir = "/flannel/docker-data/containers/" + node + "/";
      Set<String> running = new TreeSet<>();
      for (String n : List.of("n1", "n2")) {
        running.addAll(lab.dk(i, "ps", "-q", "--no-trunc", "-f", "network=" + n).out().lines().filter(l -> !l.isBlank()).toList());
      }
      await(Duration.ofSeconds(5), "node " + i + "'s containers on our networks are its records in etcd",
          () -> recordIds(dir).equals(running));
      String id = lab.dk(i, "run", "-d", "--name", "ev" + i, "--network", "n1", IMAGE, "sleep", "1d").out().strip();
      try {
        await(Duration.ofSeconds(3), "record of ev" + i + " on node " + i + " (Docker " + e.version() + ")",
            () -> recordIds(dir).contains(id));
      } finally {
        rm(i, "container", "ev" + i);
      }
      await(Duration.ofSeconds(3), "record of ev" + i + " gone on node " + i + " (Docker " + e.version() + ")",
          () -> !recordIds(dir).contains(id));
    }
  }

  /** flannel-np's newest Engine API version (DockerVerticle.MAX_API). */
  static final String MAX_API = "1.47";

  /** The Engine API version flannel-np must speak to node I's daemon: the newest both know. */
  String apiOf(int node) {
    String api = engines.get(node).api();
    return compareApi(api, MAX_API) < 0 ? api : MAX_API;
  }

  static int compareApi(String a, String b) {
    String[] x = a.split("\\.");
    String[] y = b.split("\\.");
    int c = Integer.compare(Integer.parseInt(x[0]), Integer.parseInt(y[0]));
    return c != 0 ? c : Integer.compare(Integer.parseInt(x[1]), Integer.parseInt(y[1]));
  }

  /** The container IDs of the records under an etcd directory. */
  Set<String> recordIds(String dir) {
    return lab.etcdctl("get", "--prefix", "--keys-only", dir).out().lines().filter(l -> !l.isBlank())
        .map(l -> l.substring(dir.length())).collect(Collectors.toCollection(TreeSet::new));
  }

  /**
   * A task the orchestrator shuts down leaves DNS and the VIP on every node before Docker signals
   * any of the tasks' containers: Docker's executor deactivates a task's service binding, waits
   * its 2 s gossip delay and only then stops the container (the `kill` event, which also makes a
   * node mark its own record). So it is the manager's marking (the leader's engine shows the
   * task's desired state shutdown) that takes the task out everywhere, and each node (its
   * engine's events) keeps it out. A loop in each node (nft and dig, a few ms a round) stamps the
   * moment its VIP and DNS are empty; Docker's own event log stamps the kills; the tasks run
   * `sleep` as PID 1, which ignores the SIGTERM, so they stay up through their 10 s grace period.
   */
  void leavingTasksLeaveDnsAndVipBeforeDockerSignalsThem(String leader) throws Exception {
    String svc = "drain";
    Path dir = Files.createTempDirectory(prefix + "-e2e-drain");
    List<Process> loops = new ArrayList<>();
    try {
      lab.dk(mgr, "service", "create", "-d", "--name", svc, "--network", "n1", "--replicas", Integer.toString(N),
          "--replicas-max-per-node", "1", "--no-resolve-image", "--stop-grace-period", "10s", IMAGE, "sleep", "1d").out();
      String vip = vip(svc);
      Map<Integer, String> clientPid = new HashMap<>();
      for (int i = 1; i <= N; i++) {
        clientPid.put(i, lab.dk(i, "inspect", "-f", "{{.State.Pid}}", "c" + i).out().strip());
      }
      await(Duration.ofSeconds(60), N + " drain tasks in every node's VIP and DNS", () -> {
        Set<String> ips = tasks(svc).stream().map(Task::ip).collect(Collectors.toSet());
        return ips.size() == N && java.util.stream.IntStream.rangeClosed(1, N).allMatch(i -> ips.equals(lab.vipBackends(i)
            .getOrDefault(vip, Set.of())) && lab.dig(i, clientPid.get(i), "tasks." + svc).size() == N);
      });
      // $0 VIP, $1 a client's PID: prints the time (ns) when the VIP has no backend and tasks.drain no address
      String loop = "while :; do v=$(nft list table ip flannel-np-lb | grep -cF \"$0 . \"); "
          + "d=$(nsenter -t \"$1\" -n dig +short +time=1 +tries=1 tasks.drain @127.0.0.11 | grep -c '^[0-9]'); "
          + "if [ \"$v\" = 0 ] && [ \"$d\" = 0 ]; then date +%s%N; exit 0; fi; done";
      for (int i = 1; i <= N; i++) {
        loops.add(lab.start(dir.resolve("n" + i), "exec", Integer.toString(i), "timeout", "30", "sh", "-c", loop, vip, clientPid.get(i)));
      }
      sleep(1000);
      long since = System.currentTimeMillis();
      long t0 = since * 1_000_000;
      lab.dk(mgr, "service", "scale", "-d", svc + "=0").out();
      Map<Integer, Long> dropped = new HashMap<>();
      for (int i = 1; i <= N; i++) {
        assertThat(loops.get(i - 1).waitFor(40, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
        String out = Files.readString(dir.resolve("n" + i)).strip();
        assertThat(out).as("node " + i + ": VIP and DNS of the leaving tasks emptied within 30 s").matches("\\d{19}");
        dropped.put(i, Long.parseLong(out));
      }
      // the kills come 2 s after the nodes saw the shutdown: wait until each node logged its own
      Map<Integer, Long> killed = new HashMap<>();
      await(Duration.ofSeconds(20), "Docker's kill event of the drain task on every node", () -> {
        String until = String.format(java.util.Locale.ROOT, "%.3f", System.currentTimeMillis() / 1000.0);
        for (int i = 1; i <= N; i++) {
          List<Long> t = lab.dk(i, "events", "--since", String.format(java.util.Locale.ROOT, "%.3f", since / 1000.0), "--until", until, "--filter", "event=kill",
              "--filter", "label=com.docker.swarm.service.name=" + svc, "--format", "{{.TimeNano}}").out().lines()
              .filter(l -> !l.isBlank()).map(l -> Long.parseLong(l.strip())).toList();
          if (t.isEmpty()) {
            return false;
          }
          killed.put(i, t.stream().min(Long::compare).orElseThrow());
        }
        return true;
      });
      long firstKill = killed.values().stream().min(Long::compare).orElseThrow();
      for (int i = 1; i <= N; i++) {
        System.out.printf("leader %s: node %d (Docker %s) dropped the leaving tasks %d ms after the scale command; its kill event at %d ms%n",
            leader, i, engines.get(i).version(), (dropped.get(i) - t0) / 1_000_000, (killed.get(i) - t0) / 1_000_000);
        assertThat(dropped.get(i)).as("node " + i + " (Docker " + engines.get(i).version() + ") dropped the leaving tasks (ns) before "
            + "Docker signalled the first of them, leader " + leader).isLessThan(firstKill);
      }
    } finally {
      loops.forEach(p -> {
        p.descendants().forEach(ProcessHandle::destroyForcibly);
        p.destroyForcibly();
      });
      try (var files = Files.list(dir)) {
        for (Path f : files.toList()) {
          Files.deleteIfExists(f);
        }
      }
      Files.deleteIfExists(dir);
      rm(mgr, "service", svc);
      await(Duration.ofSeconds(60), "every drain container gone", () -> java.util.stream.IntStream.rangeClosed(1, N)
          .allMatch(i -> lab.dk(i, "ps", "-aq", "-f", "label=com.docker.swarm.service.name=" + svc).out().isBlank()));
    }
  }

  @Test
  @Order(13)
  void leavingTasksLeaveDnsAndVipBeforeDockerSignalsThemUnderTheNewestLeader() throws Exception {
    leavingTasksLeaveDnsAndVipBeforeDockerSignalsThem("node " + mgr + " (Docker " + engines.get(mgr).version() + ")");
  }

  // ---- scaling ---------------------------------------------------------------------------------

  /**
   * Scale 3 → 10 → 1: from the moment `docker service ps` shows the change (exactly the wanted
   * tasks desired and currently Running, the others desired Shutdown), every node's DNS
   * (tasks.scale, asked with dig inside a client's network namespace) and its nft VIP backends
   * reflect it within 2 s.
   */
  @Test
  @Order(14)
  void scaling3To10To1ConvergesOnEveryNodeWithin2sOfDockerServicePs() throws Exception {
    ExecutorService pool = Executors.newFixedThreadPool(N);
    try {
      lab.dk(mgr, "service", "create", "-d", "--name", "scale", "--network", "n1", "--replicas", "3", "--no-resolve-image",
            "--stop-grace-period", "1s", IMAGE, "sleep", "1d").out();
      String vip = vip("scale");
      Map<Integer, String> clientPid = new HashMap<>();
      for (int i = 1; i <= N; i++) {
        clientPid.put(i, lab.dk(i, "inspect", "-f", "{{.State.Pid}}", "c" + i).out().strip());
      }
      await(Duration.ofSeconds(60), "3 scale tasks running", () -> runningTaskIps("scale").size() == 3);
      for (int target : new int[] {10, 1}) {
        long cmd = System.nanoTime();
        lab.dk(mgr, "service", "scale", "-d", "scale=" + target).out();
        List<Future<Long>> seen = new ArrayList<>();
        Map<Integer, String> last = new java.util.concurrent.ConcurrentHashMap<>();
        for (int i = 1; i <= N; i++) {
          int node = i;
          seen.add(pool.submit(() -> {
            long end = System.nanoTime() + Duration.ofSeconds(120).toNanos();
            while (System.nanoTime() < end) {
              List<SwarmLab.A> answer = lab.dig(node, clientPid.get(node), "tasks.scale");
              Set<String> dns = answer.stream().filter(a -> a.ttl() == TTL).map(SwarmLab.A::ip).collect(Collectors.toSet());
              Set<String> nft = lab.vipBackends(node).getOrDefault(vip, Set.of());
              long at = System.nanoTime();
              last.put(node, "dns " + answer + " nft " + nft);
              if (dns.size() == target && answer.size() == target && nft.equals(dns)) {
                return at;
              }
              sleep(100);
            }
            return -1L;
          }));
        }
        awaitServicePs("scale", target);
        long visible = System.nanoTime();
        // Swarm's task addresses are placeholders from the manager's pool; the containers' real
        // ones (what DNS and the VIP must serve) come from each node's subnet
        Set<String> ips = new TreeSet<>();
        await(Duration.ofSeconds(20), target + " scale containers running",
            () -> {
              ips.clear();
              tasks("scale").forEach(t -> ips.add(t.ip()));
              return ips.size() == target;
            });
        for (int i = 1; i <= N; i++) {
          long at = seen.get(i - 1).get();
          assertThat(at).as("node " + i + " converged to " + target + " tasks; last seen " + last.get(i)).isPositive();
          // the node check counted: verify it is the real set
          assertThat(lab.dig(i, clientPid.get(i), "tasks.scale")).as("tasks.scale on node " + i + ", answered by flannel-np")
              .extracting(SwarmLab.A::ip).containsExactlyInAnyOrderElementsOf(ips);
          assertThat(lab.vipBackends(i).get(vip)).as("VIP backends on node " + i).containsExactlyInAnyOrderElementsOf(ips);
          long lagMs = Math.max(0, (at - visible) / 1_000_000);
          System.out.printf("scale → %d: node %d converged %d ms after docker service ps showed it (%d ms after the command)%n",
              target, i, lagMs, (at - cmd) / 1_000_000);
          assertThat(lagMs).as("node " + i + ": DNS and VIP lag behind docker service ps (ms), scale → " + target)
              .isLessThanOrEqualTo(CONVERGE.toMillis());
        }
      }
    } finally {
      pool.shutdownNow();
      rm(mgr, "service", "scale");
    }
  }

  /**
   * The tasks `docker service ps` shows as the service's current set: desired state Running and
   * current state Running, provided no other task is still desired running (with their
   * placeholder addresses). On scale-down that is the moment Docker marks the others Shutdown,
   * before it stops their containers (it first takes them out of its own DNS and LB, waits its
   * 2 s gossip-converge delay, then sends the signal): our planes must follow the desired state.
   */
  Set<String> runningTaskIps(String svc) {
    List<String> ids = lab.dk(mgr, "service", "ps", "-q", "--no-trunc", svc).out().lines().map(String::strip)
        .filter(s -> !s.isEmpty()).toList();
    if (ids.isEmpty()) {
      return Set.of();
    }
    List<String> args = new ArrayList<>(List.of("inspect", "-f",
        "{{.DesiredState}} {{.Status.State}} {{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}"));
    args.addAll(ids);
    Set<String> out = new LinkedHashSet<>();
    // tasks removed meanwhile (scale-down deletes them soon after they stop) fail the inspect
    for (String line : lab.dk(mgr, args.toArray(String[]::new)).stdout().lines().toList()) {
      String[] f = line.strip().split("\\s+");
      if (f.length >= 3 && f[0].equals("running")) {
        if (!f[1].equals("running")) {
          return Set.of(); // a wanted task not running yet
        }
        out.add(f[2].substring(0, f[2].indexOf('/')));
      }
    }
    return out;
  }

  void awaitServicePs(String svc, int n) {
    long end = System.nanoTime() + Duration.ofSeconds(120).toNanos();
    while (System.nanoTime() < end) {
      Set<String> ips = runningTaskIps(svc);
      if (ips.size() == n) {
        return;
      }
      sleep(100);
    }
    throw new AssertionError("docker service ps never showed " + n + " running tasks of " + svc);
  }

  // ---- two managers ----------------------------------------------------------------------------

  /**
   * Every manager mirrors networks and services (leadership can move), so a Swarm with two
   * managers has two writers of the same records. A service created and scaled down through the
   * second manager reaches every node's VIP and DNS, and its record, once written, is not written
   * again by either manager on all the passes the scaling causes on both (compare-before-write:
   * equal records are never rewritten, so two writers cannot fight).
   */
  @Test
  @Order(15)
  void twoManagersMirrorTheSameServiceAndNeitherRewritesWhatTheOtherWrote() {
    int two = second();
    String node2 = lab.dk(two, "info", "-f", "{{.Swarm.NodeID}}").out().strip();
    lab.dk(mgr, "node", "promote", node2).out();
    try {
      await(Duration.ofSeconds(30), "node " + two + " is a manager",
          () -> "true".equals(lab.dk(two, "info", "-f", "{{.Swarm.ControlAvailable}}").stdout().strip()));
      lab.dk(two, "service", "create", "-d", "--name", "mgr", "--network", "n1", "--replicas", "3", "--no-resolve-image",
          "--stop-grace-period", "1s", IMAGE, "sleep", "1d").out();
      String key = "/flannel/docker-data/services/" + lab.dk(two, "service", "inspect", "-f", "{{.ID}}", "mgr").out().strip();
      String vip = vip("mgr");
      for (int target : new int[] {3, 1}) {
        if (target == 1) {
          lab.dk(two, "service", "scale", "-d", "mgr=1").out();
        }
        String[] seen = {""};
        try {
          await(Duration.ofSeconds(60), target + " mgr tasks behind the VIP on every node", () -> {
            // Swarm's desired set (its placeholder addresses) has the count; the VIP holds the
            // addresses the tasks' nodes gave them, of containers that run
            Set<String> real = tasks("mgr").stream().map(Task::ip).collect(Collectors.toSet());
            Set<String> first = lab.vipBackends(1).getOrDefault(vip, Set.of());
            seen[0] = "service ps " + runningTaskIps("mgr") + ", containers " + real + ", node 1 VIP " + first;
            if (runningTaskIps("mgr").size() != target || first.size() != target || !real.containsAll(first)) {
              return false;
            }
            for (int i = 2; i <= N; i++) {
              Set<String> b = lab.vipBackends(i).getOrDefault(vip, Set.of());
              seen[0] += "; node " + i + " VIP " + b;
              if (!first.equals(b)) {
                return false;
              }
            }
            return true;
          });
        } catch (AssertionError e) {
          throw new AssertionError(e.getMessage() + "; last seen: " + seen[0] + "; etcd services: "
              + lab.etcdctl("get", "--prefix", "/flannel/docker-data/services/").out(), e);
        }
      }
      io.vertx.core.json.JsonObject kv = etcdKv(key);
      assertThat(new String(java.util.Base64.getDecoder().decode(kv.getString("value")), java.nio.charset.StandardCharsets.UTF_8))
          .as("the service's record names its VIP").contains(vip);
      System.out.println("two managers: the service record was written " + kv.getLong("version") + " time(s)");
      long rev = kv.getLong("mod_revision");
      lab.dk(mgr, "service", "scale", "-d", "mgr=2").out(); // more events, more passes on both managers
      awaitServicePs("mgr", 2);
      sleep(3000);
      assertThat(etcdKv(key).getLong("mod_revision")).as("the service record after more passes on both managers")
          .isEqualTo(rev);
    } finally {
      rm(mgr, "service", "mgr");
      // its containers' teardown (Leave, DeleteEndpoint) must be over before the next test
      // disables a plugin: a call Docker cannot make then never comes again
      await(Duration.ofSeconds(60), "every mgr container gone", () -> java.util.stream.IntStream.rangeClosed(1, N)
          .allMatch(i -> lab.dk(i, "ps", "-aq", "-f", "label=com.docker.swarm.service.name=mgr").out().isBlank()));
    }
  }

  /** The node of the oldest engine other than node 1 (the lowest number among equals): the second manager. */
  int second() {
    return engines.values().stream().filter(e -> e.node() != 1)
        .min(java.util.Comparator.comparingInt(SwarmLab.Engine::major).thenComparingInt(SwarmLab.Engine::node))
        .orElseThrow().node();
  }

  /**
   * Node 1 (the newest engine, leader so far) demotes itself: the leadership moves to the second
   * manager, the oldest engine, which is the only manager from here on. Both plugins see their
   * node's new role (node events on each engine), and what the suite checks next runs under the
   * oldest engine's leader.
   */
  @Test
  @Order(16)
  void theLeadershipMovesToTheOldestEngine() {
    int two = second();
    assertThat("true".equals(lab.dk(two, "info", "-f", "{{.Swarm.ControlAvailable}}").out().strip()))
        .as("node " + two + " is a manager (the two-manager test promoted it)").isTrue();
    String id1 = lab.dk(1, "info", "-f", "{{.Swarm.NodeID}}").out().strip();
    String id2 = lab.dk(two, "info", "-f", "{{.Swarm.NodeID}}").out().strip();
    lab.dk(1, "node", "demote", id1).out();
    await(Duration.ofSeconds(60), "node " + two + " leads, node 1 a worker", () ->
        "false".equals(lab.dk(1, "info", "-f", "{{.Swarm.ControlAvailable}}").stdout().strip())
            && lab.dk(two, "node", "ls", "--format", "{{.ID}} {{.ManagerStatus}}").stdout().contains(id2 + " Leader"));
    mgr = two;
    System.out.println("leader: node " + two + " (Docker " + engines.get(two).version() + ")");
    await(Duration.ofSeconds(10), "node " + two + "'s plugin sees its node a manager", () -> read(lab.dockerdLog(two))
        .contains("Docker API reachable: version " + apiOf(two) + ", swarm node " + id2 + " (manager)"));
    java.util.regex.Pattern worker = java.util.regex.Pattern.compile(java.util.regex.Pattern.quote(
        "Docker API reachable: version " + apiOf(1) + ", swarm node " + id1) + "(?! \\(manager\\))");
    await(Duration.ofSeconds(10), "node 1's plugin sees its node a worker", () -> worker.matcher(read(lab.dockerdLog(1))).find());
  }

  @Test
  @Order(17)
  void leavingTasksLeaveDnsAndVipBeforeDockerSignalsThemUnderTheOldestLeader() throws Exception {
    assertThat(mgr).as("the leadership moved").isNotEqualTo(1);
    leavingTasksLeaveDnsAndVipBeforeDockerSignalsThem("node " + mgr + " (Docker " + engines.get(mgr).version() + ")");
  }


  /** The one key's etcd entry (etcdctl -w json: base64 value, mod_revision, version). */
  io.vertx.core.json.JsonObject etcdKv(String key) {
    io.vertx.core.json.JsonArray kvs = new io.vertx.core.json.JsonObject(lab.etcdctl("get", "-w", "json", key).out())
        .getJsonArray("kvs");
    assertThat(kvs).as("etcd key " + key).isNotNull().hasSize(1);
    return kvs.getJsonObject(0);
  }

  // ---- the plugin restarted on one node --------------------------------------------------------

  /**
   * `docker plugin disable -f` + `enable` on node 3 while a client on every node loops over the
   * VIP: the other nodes never notice (the kernel state of node 3's tasks stays), node 3 recovers.
   */
  @Test
  @Order(18)
  void pluginDisableAndEnableOnOneNodeLeavesTheOthersServingAndThatNodeRecovers() throws Exception {
    int seconds = 40;
    String loop = "end=$(( $(date +%s) + $0 )); while [ $(date +%s) -lt $end ]; do "
        + "r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 web 80 | tail -n 1); echo \"$(date +%s) ${r:-FAIL}\"; sleep 0.3; done";
    Path dir = Files.createTempDirectory(prefix + "-e2e-loop");
    List<Process> loops = new ArrayList<>();
    try {
      for (int i = 1; i <= N; i++) {
        loops.add(lab.start(dir.resolve("n" + i), "dk", Integer.toString(i), "exec", "c" + i, "sh", "-c", loop, Integer.toString(seconds)));
      }
      sleep(4000);
      long disabled = System.currentTimeMillis() / 1000;
      lab.dk(3, "plugin", "disable", "-f", PLUGIN).out();
      assertThat(lab.dk(3, "plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN).out().strip()).as("disabled on node 3").isEqualTo("false");
      sleep(3000);
      lab.dk(3, "plugin", "enable", PLUGIN).out();
      long enabled = System.currentTimeMillis() / 1000;
      // the restarted daemon serves node 3's running containers again: its DNS answers in c3
      String pid = lab.dk(3, "inspect", "-f", "{{.State.Pid}}", "c3").out().strip();
      String vip = vip("web");
      await(Duration.ofSeconds(15), "flannel-np answering web in c3 again after enable",
          () -> lab.dig(3, pid, "web").equals(List.of(new SwarmLab.A("web.", TTL, vip))));
      for (Process p : loops) {
        assertThat(p.waitFor(seconds + 30, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
      }
      for (int i = 1; i <= N; i++) {
        List<String> lines = Files.readAllLines(dir.resolve("n" + i)).stream().filter(l -> l.matches("\\d+ \\S+")).toList();
        List<String> fails = lines.stream().filter(l -> l.endsWith(" FAIL")).toList();
        System.out.printf("plugin restart on node 3 (%d..%d): node %d client %d requests, %d failed%n", disabled, enabled, i,
            lines.size(), fails.size());
        assertThat(lines.size()).as("loop on node " + i + " ran").isGreaterThan(20);
        if (i != 3) {
          assertThat(fails).as("node %d's client while node 3's plugin was down (%d..%d)", i, disabled, enabled).isEmpty();
        } else {
          long recoverBy = enabled + 10;
          List<String> after = lines.stream().filter(l -> Long.parseLong(l.split(" ")[0]) > recoverBy).toList();
          assertThat(after).as("node 3's client 10 s after enable").isNotEmpty().noneMatch(l -> l.endsWith(" FAIL"));
        }
      }
    } finally {
      loops.forEach(p -> {
        p.descendants().forEach(ProcessHandle::destroyForcibly);
        p.destroyForcibly();
      });
      try (var s = Files.list(dir)) {
        for (Path f : s.toList()) {
          Files.deleteIfExists(f);
        }
      }
      Files.deleteIfExists(dir);
      lab.dk(3, "plugin", "enable", PLUGIN); // enabled again even when the test failed halfway
    }
  }

  // ---- operating it: upgrade, settings, stack deploy ------------------------------------------

  /**
   * Whether this lab runs the operator's tests (upgrade, a refused setting, stack deploy): they
   * take minutes and test the plugin's packaging, not an engine, so one Swarm (the mixed one,
   * every engine in it) runs them.
   */
  boolean operatorTests() {
    return true;
  }

  /**
   * A client loop in cI on every node: each 0.2 s one HTTP request by name (our DNS, then the
   * VIP) and one to the VIP's address (the kernel's load balancer alone), stamped with the
   * kernel's uptime (the same clock on every node). Lines: "T name-result vip-result".
   */
  List<Process> clientLoops(Path dir, int seconds, String vip) {
    String loop = "end=$(( $(date +%s) + $0 )); while [ $(date +%s) -lt $end ]; do t=$(cut -d' ' -f1 /proc/uptime); "
        + "a=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 web 80 | tail -n 1); "
        + "b=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 $1 80 | tail -n 1); "
        + "echo \"$t ${a:-FAIL} ${b:-FAIL}\"; sleep 0.2; done";
    List<Process> loops = new ArrayList<>();
    for (int i = 1; i <= N; i++) {
      loops.add(lab.start(dir.resolve("n" + i), "dk", Integer.toString(i), "exec", "c" + i, "sh", "-c", loop,
          Integer.toString(seconds), vip));
    }
    return loops;
  }

  /** A loop's samples: uptime, by-name ok, by-VIP ok. */
  record Sample(double t, boolean name, boolean vip) {}

  static List<Sample> samples(Path file) throws IOException {
    return Files.readAllLines(file).stream().filter(l -> l.matches("\\d+\\.\\d+ \\S+ \\S+"))
        .map(l -> l.split(" ")).map(f -> new Sample(Double.parseDouble(f[0]), !f[1].equals("FAIL"), !f[2].equals("FAIL")))
        .toList();
  }

  /** The longest time requests by name failed in [from, to]: first failure to the next success. */
  static double longestNameGap(List<Sample> s, double from, double to) {
    double worst = 0;
    Double failSince = null;
    for (Sample x : s) {
      if (x.t() < from || x.t() > to) {
        continue;
      }
      if (!x.name() && failSince == null) {
        failSince = x.t();
      } else if (x.name() && failSince != null) {
        worst = Math.max(worst, x.t() - failSince);
        failSince = null;
      }
    }
    return failSince == null ? worst : Double.POSITIVE_INFINITY;
  }

  double uptime() {
    return Double.parseDouble(lab.exec(1, "cut", "-d", " ", "-f1", "/proc/uptime").out().strip());
  }

  static void destroy(List<Process> loops) {
    loops.forEach(p -> {
      p.descendants().forEach(ProcessHandle::destroyForcibly);
      p.destroyForcibly();
    });
  }

  static void stopLoops(List<Process> loops, Path dir) throws IOException {
    destroy(loops);
    try (var s = Files.list(dir)) {
      for (Path f : s.toList()) {
        Files.deleteIfExists(f);
      }
    }
    Files.deleteIfExists(dir);
  }

  /**
   * The operator's upgrade, one node at a time under a client loop on every node: `docker plugin
   * disable -f`, `docker plugin upgrade` to a second build (the same daemon with another version,
   * pushed to the registry like a release), `enable`. Networks stay because the driver is the
   * alias. The other nodes lose no request; on the upgraded node the VIP (kernel state) loses
   * none and a connection established before stays usable; requests by name fail from the
   * disable until the new daemon serves the node's containers (measured and printed).
   */
  @Test
  @Order(18)
  void pluginUpgradeNodeByNodeUnderLoadKeepsTheOthersAndTheVipServing() throws Exception {
    org.junit.jupiter.api.Assumptions.assumeTrue(operatorTests(), "the operator's tests run on the mixed Swarm only");
    String v2 = version + ".next";
    Path work = Files.createTempDirectory(prefix + "-e2e-v2");
    Path dir = Files.createTempDirectory(prefix + "-e2e-upgrade");
    List<Process> loops = List.of();
    try {
      Path jar2 = work.resolve("flannel-np.jar");
      Files.copy(root.resolve("verticles/target/flannel-np.jar"), jar2);
      Files.writeString(work.resolve("manifest.txt"), "Implementation-Version: " + v2 + "\n");
      lab.run(Duration.ofMinutes(1), List.of("jar", "--update", "--file", jar2.toString(), "--manifest",
          work.resolve("manifest.txt").toString())).out();
      Path plugin2 = work.resolve("plugin");
      lab.run(Duration.ofMinutes(10), List.of(root.resolve("scripts/build-plugin.sh").toString(), plugin2.toString(),
          "--jar", jar2.toString())).out();
      assertThat(pluginVersion(plugin2)).isEqualTo(v2);
      String ref2 = lab.lab(Duration.ofSeconds(10), "registry").out().strip() + "/flannel-np:" + v2;
      lab.lab(Duration.ofMinutes(3), "push-plugin", plugin2.toString(), ref2).out();

      String vip = vip("web");
      int seconds = 90 * N; // longer than the upgrades take: the loops are stopped once they are done
      loops = clientLoops(dir, seconds, vip);
      sleep(3000);
      double[] from = new double[N + 1];
      double[] to = new double[N + 1];
      double[] enabledAt = new double[N + 1];
      for (int k = 1; k <= N; k++) {
        Path held = dir.resolve("held" + k);
        // a connection through the VIP opened before the disable, finished after the enable
        Process conn = lab.start(held, "dk", Integer.toString(k), "exec", "c" + k, "sh", "-c",
            "(printf 'GET / HTTP/1.0\\r\\n'; sleep 15; printf '\\r\\n') | nc -w 40 $0 80", vip);
        sleep(1000);
        from[k] = uptime();
        lab.dk(k, "plugin", "disable", "-f", PLUGIN).out();
        double disabled = uptime();
        // another tag than the installed one: the CLI would ask "Plugin images do not match, are you sure?"
        lab.dk(k, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", PLUGIN, ref2).out();
        double upgraded = uptime();
        // the environment settings stay; a mount source goes back to the new build's default
        assertThat(lab.dk(k, "plugin", "inspect", "-f", "{{.Settings.Env}}", PLUGIN).out())
            .as("node %d's settings after the upgrade", k).contains("AVAILABLE_SUBNETS=" + SUBNETS).contains("NODE_NAME=" + prefix + k);
        lab.dk(k, "plugin", "set", PLUGIN, "config-dir.source=/etc/docker/flannel-np").out();
        lab.dk(k, "plugin", "enable", PLUGIN).out();
        enabledAt[k] = uptime();
        String pid = lab.dk(k, "inspect", "-f", "{{.State.Pid}}", "c" + k).out().strip();
        int node = k;
        await(Duration.ofSeconds(15), "flannel-np " + v2 + " answering web in c" + k,
            () -> lab.dig(node, pid, "web").equals(List.of(new SwarmLab.A("web.", TTL, vip))));
        double served = uptime();
        System.out.printf("upgrade node %d: disable %.1f s, upgrade (pull + unpack) %.1f s, enable %.1f s, DNS served %.1f s after enable%n",
            k, disabled - from[k], upgraded - disabled, enabledAt[k] - upgraded, served - enabledAt[k]);
        assertThat(conn.waitFor(40, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
        assertThat(Files.readString(held)).as("node %d: the connection opened before the upgrade is answered after it", k)
            .containsPattern("HTTP/1\\.[01] 200 ");
        assertThat(lab.dk(k, "plugin", "inspect", "-f", "{{.PluginReference}}|{{.Config.Description}}", PLUGIN).out())
            .as("node %d runs the new build under the same alias", k).startsWith(ref2 + "|flannel-np " + v2 + ": ");
        assertThat(read(lab.dockerdLog(k))).contains("flannel-np " + v2 + " starting on node");
        sleep(2000);
        to[k] = uptime();
      }
      destroy(loops);
      for (int i = 1; i <= N; i++) {
        List<Sample> s = samples(dir.resolve("n" + i));
        assertThat(s.size()).as("loop on node " + i + " ran").isGreaterThan(50);
        for (int k = 1; k <= N; k++) {
          double a = from[k];
          double b = to[k];
          List<Sample> window = s.stream().filter(x -> x.t() >= a && x.t() <= b).toList();
          assertThat(window).as("node %d's samples while node %d was upgraded", i, k).isNotEmpty()
              .allMatch(Sample::vip, "the VIP answers");
          if (i != k) {
            assertThat(window).as("node %d's requests by name while node %d was upgraded", i, k).allMatch(Sample::name);
          } else {
            double gap = longestNameGap(s, a, b);
            System.out.printf("upgrade node %d: requests by name failed for %.1f s on it (VIP by address: no failure)%n", k, gap);
            assertThat(gap).as("node %d: requests by name fail only while its plugin restarts", k)
                .isLessThan(enabledAt[k] - a + 5);
          }
        }
      }
    } finally {
      stopLoops(loops, dir);
      lab.run(Duration.ofSeconds(30), List.of("rm", "-rf", work.toString()));
      for (int k = 1; k <= N; k++) { // enabled again even when the test failed halfway
        lab.dk(k, "plugin", "set", PLUGIN, "config-dir.source=/etc/docker/flannel-np");
        lab.dk(k, "plugin", "enable", PLUGIN);
      }
    }
  }

  /**
   * A setting the daemon refuses: `docker plugin enable` fails (Docker reports only the socket),
   * and the reason is the plugin's one exit-2 line in dockerd's log, which the README's
   * Troubleshooting greps for. Then the operator's fix (disable, set, enable) under a client loop:
   * how long requests by name fail on that node is measured.
   */
  @Test
  @Order(18)
  void aRefusedSettingIsFoundInDockerdsLogAndTheFixRestoresTheNode() throws Exception {
    org.junit.jupiter.api.Assumptions.assumeTrue(operatorTests(), "the operator's tests run on the mixed Swarm only");
    int k = 2;
    String bad = "10.200.0.0/33";
    Path dir = Files.createTempDirectory(prefix + "-e2e-settings");
    List<Process> loops = List.of();
    try {
      String vip = vip("web");
      loops = clientLoops(dir, 150, vip);
      sleep(3000);
      double from = uptime();
      lab.dk(k, "plugin", "disable", "-f", PLUGIN).out();
      lab.dk(k, "plugin", "set", PLUGIN, "AVAILABLE_SUBNETS=" + bad).out();
      Result enable = lab.dk(k, "plugin", "enable", PLUGIN);
      assertThat(enable.exit()).as("enable with a refused setting fails: " + enable.err()).isNotZero();
      String line = read(lab.dockerdLog(k)).lines().filter(l -> l.contains("flannel-np: invalid setting AVAILABLE_SUBNETS"))
          .findFirst().orElse("");
      System.out.println("refused setting, docker plugin enable said: " + enable.err().strip());
      System.out.println("refused setting, dockerd log: " + line);
      assertThat(line).as("the plugin's exit-2 line in dockerd's log")
          .contains("flannel-np: invalid setting AVAILABLE_SUBNETS=\\\"" + bad + "\\\": ");
      lab.dk(k, "plugin", "disable", "-f", PLUGIN); // Docker may leave it marked enabled
      lab.dk(k, "plugin", "set", PLUGIN, "AVAILABLE_SUBNETS=" + SUBNETS).out();
      // Docker restarts a plugin that exited once more and cleans its containerd container up a
      // moment later: an enable right away may be told "id already in use" (and still take)
      List<String> answers = new ArrayList<>();
      for (int attempt = 0; attempt < 20; attempt++) {
        Result r = lab.dk(k, "plugin", "enable", PLUGIN);
        answers.add(r.ok() ? "ok" : r.err().strip());
        if (r.ok() || r.err().contains("already enabled")) {
          break;
        }
        sleep(500);
      }
      System.out.println("refused setting: enable after the fix answered " + answers);
      assertThat(lab.dk(k, "plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN).out().strip()).isEqualTo("true");
      double enabled = uptime();
      String pid = lab.dk(k, "inspect", "-f", "{{.State.Pid}}", "c" + k).out().strip();
      await(Duration.ofSeconds(15), "flannel-np answering web in c" + k + " after the fix",
          () -> lab.dig(k, pid, "web").equals(List.of(new SwarmLab.A("web.", TTL, vip))));
      double served = uptime();
      sleep(2000);
      double to = uptime();
      destroy(loops);
      for (int i = 1; i <= N; i++) {
        List<Sample> s = samples(dir.resolve("n" + i)).stream().filter(x -> x.t() >= from && x.t() <= to).toList();
        assertThat(s).as("node %d's VIP by address during the settings change on node %d", i, k).isNotEmpty().allMatch(Sample::vip);
        if (i != k) {
          assertThat(s).as("node %d's requests by name during the settings change on node %d", i, k).allMatch(Sample::name);
        } else {
          System.out.printf("settings change on node %d: requests by name failed for %.1f s (disable, refused enable, set,"
              + " enable: %.1f s; DNS served %.1f s after the last enable)%n", k, longestNameGap(s, from, to), enabled - from,
              served - enabled);
        }
      }
    } finally {
      stopLoops(loops, dir);
      if (!lab.dk(k, "plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN).out().strip().equals("true")) {
        lab.dk(k, "plugin", "set", PLUGIN, "AVAILABLE_SUBNETS=" + SUBNETS);
        lab.dk(k, "plugin", "enable", PLUGIN);
      }
    }
  }

  /**
   * README's `docker stack deploy` example: a compose file whose service uses a network of ours
   * created beforehand with its flannel-id (compose files cannot pass IPAM options), declared
   * external; its name resolves to its VIP and answers from every node.
   */
  @Test
  @Order(18)
  void aStackDeployedFromAComposeFileRunsOnOurNetwork() throws Exception {
    org.junit.jupiter.api.Assumptions.assumeTrue(operatorTests(), "the operator's tests run on the mixed Swarm only");
    Path compose = Files.createTempFile(prefix + "-stack", ".yml");
    try {
      Files.writeString(compose, """
          version: "3.8"
          services:
            api:
              image: %s
              command: ["sh", "-c", "%s"]
              deploy:
                replicas: 2
              networks: [n1]
          networks:
            n1:
              external: true
          """.formatted(IMAGE, HTTPD));
      lab.dk(mgr, "stack", "deploy", "--resolve-image", "never", "-c", compose.toString(), "demo").out();
      await(Duration.ofSeconds(60), "stack service demo_api with 2 tasks", () -> tasks("demo_api").size() == 2);
      String vip = vip("demo_api");
      for (int i = 1; i <= N; i++) {
        int node = i;
        await(Duration.ofSeconds(10), "demo_api resolves and answers on node " + i,
            () -> lab.nslookup(node, "c" + node, "demo_api").equals(Set.of(vip)) && !lab.http(node, "c" + node, "demo_api").isEmpty());
      }
    } finally {
      lab.dk(mgr, "stack", "rm", "demo");
      Files.deleteIfExists(compose);
      await(Duration.ofSeconds(30), "stack demo removed", () -> tasks("demo_api").isEmpty());
    }
  }

  // ---- Docker's firewall rules ------------------------------------------------------------------

  /**
   * What Docker put in iptables (on 28: its raw-table rules, DOCKER-FORWARD, DOCKER-USER jumped to
   * from FORWARD) is exactly what it was when the fixture stood, after every test so far and a
   * plugin restart on node 3; ours are the three DOCKER-USER accepts, once each, added once per
   * node and never again (no fight over a rule).
   */
  @Test
  @Order(19)
  void dockersFirewallRulesStayDockersAndOursAreAddedOncePerNode() {
    for (int i = 1; i <= N; i++) {
      String on = "node " + i + " (Docker " + engines.get(i).version() + ")";
      assertThat(dockerRules(i)).as("Docker's iptables rules on " + on + " against the fixture's").isEqualTo(dockerRules.get(i));
      assertPerEndpointRulesAreDockers(i);
      List<String> ours = lab.exec(i, "iptables", "-w", "-S", "DOCKER-USER").out().lines().filter(l -> l.contains("flannel-np")).toList();
      assertThat(ours).as("our DOCKER-USER rules on " + on).hasSize(3).doesNotHaveDuplicates();
      long added = read(lab.dockerdLog(i)).lines().filter(l -> l.contains("DOCKER-USER: flannel.* ACCEPT rules added")).count();
      assertThat(added).as("times our DOCKER-USER rules were (re)added on " + on).isEqualTo(1);
    }
  }

  /**
   * Node I's iptables rules (iptables-save of its own engine's iptables) without ours and without
   * counters, and without the rules Docker 28 keeps per endpoint in the raw table (`-d IP/32 ! -i
   * BRIDGE -j DROP`: no direct routing to a bridge's containers), which come and go with
   * containers: {@link #assertPerEndpointRulesAreDockers} checks those.
   */
  List<String> dockerRules(int node) {
    return lab.exec(node, "iptables-save").out().lines().filter(l -> !l.startsWith("#") && !l.contains("flannel-np"))
        .filter(l -> !PER_ENDPOINT.matcher(l).matches()).map(l -> l.replaceAll("\\[\\d+:\\d+\\]", "")).toList();
  }

  static final java.util.regex.Pattern PER_ENDPOINT =
      java.util.regex.Pattern.compile("-A PREROUTING -d (\\d+\\.\\d+\\.\\d+\\.\\d+)/32 ! -i (\\S+) -j DROP");

  /** Docker's per-endpoint raw rules on node I are exactly those of the endpoints Docker's bridges have now. */
  void assertPerEndpointRulesAreDockers(int node) {
    Set<String> rules = new TreeSet<>();
    for (String l : lab.exec(node, "iptables-save", "-t", "raw").out().lines().toList()) {
      java.util.regex.Matcher m = PER_ENDPOINT.matcher(l);
      if (m.matches()) {
        rules.add(m.group(2) + " " + m.group(1));
      }
    }
    Set<String> endpoints = new TreeSet<>();
    for (String bridge : List.of("docker_gwbridge", "bridge")) {
      String br = bridge.equals("bridge") ? "docker0" : bridge;
      for (String a : lab.dk(node, "network", "inspect", "-f", "{{range .Containers}}{{.IPv4Address}} {{end}}", bridge).out().strip().split("\\s+")) {
        if (!a.isEmpty()) {
          endpoints.add(br + " " + a.substring(0, a.indexOf('/')));
        }
      }
    }
    if (engines.get(node).major() >= 28) {
      assertThat(rules).as("Docker's per-endpoint raw rules on node " + node + " against its bridges' endpoints").isEqualTo(endpoints);
    } else {
      assertThat(rules).as("no per-endpoint raw rules before Docker 28 (node " + node + ")").isEmpty();
    }
  }

  // ---- removal ---------------------------------------------------------------------------------

  @Test
  @Order(20)
  void serviceAndNetworkRemovalLeaveNothingBehindOnAnyNode() {
    String vni = lab.dk(mgr, "network", "inspect", "-f", "{{index .Options \"io.flannel-np.vni\"}}", "n1").out().strip();
    rm(mgr, "service", "web", "rr");
    for (int i = 1; i <= N; i++) {
      rm(i, "container", "c" + i);
    }
    rm(2, "container", "x2");
    await(Duration.ofSeconds(60), "every task container gone", () -> {
      for (int i = 1; i <= N; i++) {
        if (!lab.dk(i, "ps", "-aq").out().isBlank()) {
          return false;
        }
      }
      return true;
    });
    await(Duration.ofSeconds(60), "n1, n2 and ov1 removed on every node", () -> {
      rm(mgr, "network", "n1", "n2", "ov1");
      for (int i = 1; i <= N; i++) {
        for (String n : List.of("n1", "n2", "ov1")) {
          if (lab.dk(i, "network", "inspect", n).ok()) {
            return false;
          }
        }
      }
      return true;
    });
    await(Duration.ofSeconds(30), "no kernel state of ours on any node", () -> leftovers(vni).isEmpty());
    await(Duration.ofSeconds(30), "no etcd key under /flannel/ (networks, subnets, VNIs, endpoints, Docker records)",
        () -> etcdLeftovers().isEmpty());
    for (int i = 1; i <= N; i++) {
      assertThat(dockerRules(i)).as("Docker's iptables rules on node " + i + " (Docker " + engines.get(i).version()
          + ") after everything of ours is gone, against the fixture's").isEqualTo(dockerRules.get(i));
      assertPerEndpointRulesAreDockers(i);
    }
  }

  /** Everything of ours still in the nodes' kernels, one line each. */
  List<String> leftovers(String vni) {
    List<String> out = new ArrayList<>();
    for (int i = 1; i <= N; i++) {
      String n = "node " + i + ": ";
      lab.exec(i, "ip", "-br", "link").out().lines().filter(l -> l.startsWith("fnp") || l.startsWith("flannel."))
          .forEach(l -> out.add(n + "link " + l));
      lab.exec(i, "ip", "route", "show", "table", "all").out().lines().filter(l -> l.contains("10.200.") || l.contains("flannel."))
          .forEach(l -> out.add(n + "route " + l));
      lab.exec(i, "bridge", "fdb", "show").out().lines().filter(l -> l.contains("flannel.") || l.contains(" fnp"))
          .forEach(l -> out.add(n + "fdb " + l));
      lab.exec(i, "ip", "neigh", "show").out().lines().filter(l -> l.contains("10.200.") || l.contains("flannel."))
          .forEach(l -> out.add(n + "neigh " + l));
      lab.exec(i, "nft", "list", "tables").out().lines().filter(l -> l.contains("flannel"))
          .forEach(l -> out.add(n + "nft " + l));
      for (String table : List.of("filter", "nat", "raw", "mangle")) {
        lab.exec(i, "iptables", "-w", "-t", table, "-S").out().lines()
            .filter(l -> l.contains("flannel") || l.contains("fnp") || l.contains("10.200."))
            .forEach(l -> out.add(n + "iptables " + table + " " + l));
      }
    }
    if (!out.isEmpty()) {
      System.out.println("left behind (vni " + vni + "):\n  " + String.join("\n  ", out));
    }
    return out;
  }

  /** Every key under /flannel/: none must outlive the last network (measured: none does). */
  List<String> etcdLeftovers() {
    // what lives as long as the plugins do: each running daemon's node record (on its own lease,
    // revoked at its orderly stop) and the cluster's address settings (kept for the next network)
    List<String> keys = lab.etcdctl("get", "--prefix", "--keys-only", "/flannel/").out().lines()
        .filter(l -> !l.isBlank() && !l.startsWith("/flannel/nodes/") && !l.equals("/flannel/settings")).toList();
    if (!keys.isEmpty()) {
      System.out.println("etcd keys left: " + lab.etcdctl("get", "--prefix", "/flannel/").out().strip());
    }
    return keys;
  }
}
