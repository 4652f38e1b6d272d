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
 * flannel-np on a real three-node Swarm (scripts/swarm-lab.sh: dockerd 20.10 per network
 * namespace, one etcd, dnsmasq on the lab bridge as the daemons' upstream), installed as an
 * operator does: plugin create + set + enable on every node. Everything is driven through the
 * docker CLI of each node and checked from client containers on every node.
 *
 * <p>Shared fixture (built once, the tests read it): network n1 (ours, attachable), overlay ov1
 * (Docker's), VIP service web and DNSRR service rr with one busybox httpd per node (serving its
 * hostname, i.e. its container's short ID), and a client container cI on n1 on every node I.
 * Tests run in order; the last removes everything and checks nothing is left; {@link #down()}
 * always tears the lab down and asserts the host is as before.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class SwarmE2EIT {
  static final int N = 3;
  static final String PLUGIN = "flannel-np:e2e";
  static final String IMAGE = "fnp/busybox:latest";
  static final String SUBNETS = "10.200.0.0/16";
  static final String EXT_NAME = "ext.fne.test";
  static final String HTTPD = "hostname > /www/index.html && exec httpd -f -p 80 -h /www";
  static final Duration CONVERGE = Duration.ofSeconds(2);
  /** flannel-np's DNS_TTL in the lab: Docker's resolver answers with 600, so a 599 is ours. */
  static final int TTL = 599;

  final Path root = root();
  final String prefix = System.getProperty("flannelnp.e2e.prefix", "fne");
  final String net = System.getProperty("flannelnp.e2e.net", "198.18.8");
  final String extIp = net + ".200"; // only ever a DNS answer: nothing is sent to it
  final SwarmLab lab = new SwarmLab(root, prefix, net, EXT_NAME + "=" + extIp);
  final Path pluginDir = Path.of(System.getProperty("flannelnp.e2e.pluginDir", "/tmp/" + prefix + "-plugin"));
  final Path logs = Path.of(System.getProperty("flannelnp.e2e.logs", "target/e2e-logs"));
  String fid;
  boolean up;

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
    lab.lab(Duration.ofMinutes(3), "up", Integer.toString(N)).out();
    lab.lab(Duration.ofMinutes(3), "install-plugin", pluginDir.toString(), PLUGIN, "ETCD_ENDPOINTS={etcd}",
        "NODE_NAME={node}", "AVAILABLE_SUBNETS=" + SUBNETS, "DEFAULT_FLANNEL_OPTIONS=-iface=eth0", "DNS_TTL=" + TTL).out();
    for (int i = 1; i <= N; i++) {
      assertThat(lab.dk(i, "plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN).out().strip()).as("enabled on node " + i).isEqualTo("true");
    }
    fid = UUID.randomUUID().toString();
    lab.dk(1, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--ipam-opt", "flannel-id=" + fid, "--attachable", "n1").out();
    lab.dk(1, "network", "create", "-d", "overlay", "--attachable", "ov1").out();
    for (String[] svc : List.of(new String[] {"web", "vip"}, new String[] {"rr", "dnsrr"})) {
      lab.dk(1, "service", "create", "-d", "--name", svc[0], "--endpoint-mode", svc[1], "--network", "n1", "--replicas", "3",
          "--replicas-max-per-node", "1", "--no-resolve-image", "--stop-grace-period", "1s", IMAGE, "sh", "-c", HTTPD).out();
    }
    for (int i = 1; i <= N; i++) {
      lab.dk(i, "run", "-d", "--name", "c" + i, "--network", "n1", IMAGE, "sleep", "1d").out();
    }
    await(Duration.ofSeconds(90), "web and rr running with one task on each node",
        () -> tasks("web").size() == N && tasks("rr").size() == N);
  }

  /** scripts/build-plugin.sh unless the plugin directory holds this jar, config and entrypoint. */
  void buildPluginIfStale() throws IOException {
    Path jar = root.resolve("verticles/target/flannel-np.jar");
    assertThat(jar).as("the shaded jar (mvn package)").exists();
    Path cfg = pluginDir.resolve("config.json");
    Path inRootfs = pluginDir.resolve("rootfs/opt/flannel-np/flannel-np.jar");
    // by content: `mvn verify` rewrites the jar every time, mostly with the same bytes
    boolean stale = !Files.exists(cfg) || !Files.exists(inRootfs) || Files.mismatch(jar, inRootfs) != -1
        || Files.mismatch(root.resolve("plugin-bundle/config.json"), cfg) != -1
        || !Files.exists(pluginDir.resolve("rootfs/opt/flannel-np/entrypoint.sh"))
        || Files.mismatch(root.resolve("plugin-bundle/entrypoint.sh"), pluginDir.resolve("rootfs/opt/flannel-np/entrypoint.sh")) != -1;
    if (stale) {
      lab.run(Duration.ofMinutes(20), List.of(root.resolve("scripts/build-plugin.sh").toString(), pluginDir.toString())).out();
    }
  }

  @AfterAll
  void down() throws IOException {
    if (!up) {
      return;
    }
    Files.createDirectories(logs);
    for (int i = 1; i <= N; i++) { // the plugin's log is in dockerd's: keep it for a failed run
      if (Files.exists(lab.dockerdLog(i))) {
        Files.copy(lab.dockerdLog(i), logs.resolve("dockerd" + i + ".log"), StandardCopyOption.REPLACE_EXISTING);
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
    String addr = lab.dk(1, "service", "inspect", "-f", "{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}", svc).out().strip();
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
    String subnet = lab.dk(1, "network", "inspect", "-f", "{{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}", "n1").out().strip();
    assertThat(subnet).as("driver and pool of n1").startsWith(PLUGIN + " 10.200.");
    assertThat(lab.etcdctl("get", "--print-value-only", "/flannel/networks/" + fid + "/docker-id").out().strip())
        .as("the network's record in etcd names the Docker network").isNotEmpty();
    for (int i = 1; i <= N; i++) {
      String vni = lab.dk(1, "network", "inspect", "-f", "{{index .Options \"io.flannel-np.vni\"}}", "n1").out().strip();
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
      lab.dk(1, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--attachable", "nofid").out();
      await(Duration.ofSeconds(20), "our refusal in the manager's dockerd log",
          () -> read(lab.dockerdLog(1)).contains("flannel-np needs a flannel-id IPAM option"));
      assertThat(lab.dk(1, "network", "inspect", "-f", "{{json .IPAM.Config}}", "nofid").out().strip()).isIn("null", "[]");
      lab.dk(1, "service", "create", "-d", "--name", "pending", "--network", "nofid", "--no-resolve-image", IMAGE, "sleep", "1d").out();
      lab.dk(1, "service", "create", "-d", "--name", "probe", "--network", "n1", "--replicas", "0", "--no-resolve-image", IMAGE, "sleep", "1d").out();
      String probeId = lab.dk(1, "service", "inspect", "-f", "{{.ID}}", "probe").out().strip();
      await(Duration.ofSeconds(15), "a service created after the refusal mirrored into etcd",
          () -> !lab.etcdctl("get", "--keys-only", "/flannel/docker-data/services/" + probeId).out().isBlank());
      String state = lab.dk(1, "service", "ps", "--format", "{{.CurrentState}}", "pending").out();
      assertThat(state).as("a task on the refused network never runs").doesNotContain("Running").isNotBlank();
    } finally {
      rm(1, "service", "pending", "probe");
      // service rm is asynchronous: the network is in use until the pending task is gone
      await(Duration.ofSeconds(30), "network nofid removed", () -> {
        rm(1, "network", "nofid");
        return !lab.dk(1, "network", "inspect", "nofid").ok();
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
    assertThat(lab.dk(1, "service", "inspect", "-f", "{{json .Endpoint.VirtualIPs}}", "rr").out().strip()).isIn("null", "[]");
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
  void aContainerOnOurNetworkAndAnOverlayResolvesNamesOfBoth() {
    try {
      lab.dk(3, "run", "-d", "--name", "mixed", "--network", "n1", IMAGE, "sleep", "1d").out();
      lab.dk(3, "network", "connect", "ov1", "mixed").out();
      lab.dk(2, "run", "-d", "--name", "o2", "--network", "ov1", IMAGE, "sleep", "1d").out();
      String o2 = ipOn(2, "o2", "ov1");
      assertThat(lab.nslookup(3, "mixed", "o2")).as("overlay container from the mixed one").containsExactly(o2);
      assertThat(lab.nslookup(3, "mixed", "c1")).as("our container from the mixed one").containsExactly(ipOn(1, "c1", "n1"));
      assertThat(lab.nslookup(3, "mixed", "web")).containsExactly(vip("web"));
      assertThat(lab.http(3, "mixed", "web")).as("HTTP to web from the mixed container").matches("[0-9a-f]{12}");
      assertThat(lab.nslookup(2, "o2", "mixed")).as("mixed from the overlay-only container").containsExactly(ipOn(3, "mixed", "ov1"));
    } finally {
      rm(3, "container", "mixed");
      rm(2, "container", "o2");
    }
  }

  @Test
  @Order(7)
  void anExternalNameIsAnsweredThroughDockersUpstream() {
    for (int i = 1; i <= N; i++) {
      assertThat(lab.nslookup(i, "c" + i, EXT_NAME)).as(EXT_NAME + " from node " + i).containsExactly(extIp);
    }
    assertThat(read(lab.state.resolve("dnsmasq.log"))).as("the lab's upstream got the query").contains("query[A] " + EXT_NAME);
  }

  // ---- scaling ---------------------------------------------------------------------------------

  /**
   * Scale 3 → 10 → 1: from the moment `docker service ps` shows the change (exactly the wanted
   * tasks desired and currently Running, the others desired Shutdown), every node's DNS
   * (tasks.scale, asked with dig inside a client's network namespace) and its nft VIP backends
   * reflect it within 2 s.
   */
  @Test
  @Order(8)
  void scaling3To10To1ConvergesOnEveryNodeWithin2sOfDockerServicePs() throws Exception {
    ExecutorService pool = Executors.newFixedThreadPool(N);
    try {
      lab.dk(1, "service", "create", "-d", "--name", "scale", "--network", "n1", "--replicas", "3", "--no-resolve-image",
            "--stop-grace-period", "1s", IMAGE, "sleep", "1d").out();
      String vip = vip("scale");
      Map<Integer, String> clientPid = new HashMap<>();
      for (int i = 1; i <= N; i++) {
        clientPid.put(i, lab.dk(i, "inspect", "-f", "{{.State.Pid}}", "c" + i).out().strip());
      }
      await(Duration.ofSeconds(60), "3 scale tasks running", () -> runningTaskIps("scale").size() == 3);
      for (int target : new int[] {10, 1}) {
        long cmd = System.nanoTime();
        lab.dk(1, "service", "scale", "-d", "scale=" + target).out();
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
      rm(1, "service", "scale");
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
    List<String> ids = lab.dk(1, "service", "ps", "-q", "--no-trunc", svc).out().lines().map(String::strip)
        .filter(s -> !s.isEmpty()).toList();
    if (ids.isEmpty()) {
      return Set.of();
    }
    List<String> args = new ArrayList<>(List.of("inspect", "-f",
        "{{.DesiredState}} {{.Status.State}} {{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}"));
    args.addAll(ids);
    Set<String> out = new LinkedHashSet<>();
    // tasks removed meanwhile (scale-down deletes them soon after they stop) fail the inspect
    for (String line : lab.dk(1, args.toArray(String[]::new)).stdout().lines().toList()) {
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
  @Order(9)
  void twoManagersMirrorTheSameServiceAndNeitherRewritesWhatTheOtherWrote() {
    String node2 = lab.dk(2, "info", "-f", "{{.Swarm.NodeID}}").out().strip();
    lab.dk(1, "node", "promote", node2).out();
    try {
      await(Duration.ofSeconds(30), "node 2 is a manager",
          () -> "true".equals(lab.dk(2, "info", "-f", "{{.Swarm.ControlAvailable}}").stdout().strip()));
      lab.dk(2, "service", "create", "-d", "--name", "mgr", "--network", "n1", "--replicas", "3", "--no-resolve-image",
          "--stop-grace-period", "1s", IMAGE, "sleep", "1d").out();
      String key = "/flannel/docker-data/services/" + lab.dk(2, "service", "inspect", "-f", "{{.ID}}", "mgr").out().strip();
      String vip = vip("mgr");
      for (int target : new int[] {3, 1}) {
        if (target == 1) {
          lab.dk(2, "service", "scale", "-d", "mgr=1").out();
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
      lab.dk(1, "service", "scale", "-d", "mgr=2").out(); // more events, more passes on both managers
      awaitServicePs("mgr", 2);
      sleep(3000);
      assertThat(etcdKv(key).getLong("mod_revision")).as("the service record after more passes on both managers")
          .isEqualTo(rev);
    } finally {
      rm(1, "service", "mgr");
      // its containers' teardown (Leave, DeleteEndpoint) must be over before the next test
      // disables a plugin: a call Docker cannot make then never comes again
      await(Duration.ofSeconds(60), "every mgr container gone", () -> java.util.stream.IntStream.rangeClosed(1, N)
          .allMatch(i -> lab.dk(i, "ps", "-aq", "-f", "label=com.docker.swarm.service.name=mgr").out().isBlank()));
      lab.dk(1, "node", "demote", node2);
      await(Duration.ofSeconds(30), "node 2 a worker again",
          () -> "false".equals(lab.dk(2, "info", "-f", "{{.Swarm.ControlAvailable}}").stdout().strip()));
    }
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
  @Order(10)
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

  // ---- removal ---------------------------------------------------------------------------------

  @Test
  @Order(11)
  void serviceAndNetworkRemovalLeaveNothingBehindOnAnyNode() {
    String vni = lab.dk(1, "network", "inspect", "-f", "{{index .Options \"io.flannel-np.vni\"}}", "n1").out().strip();
    rm(1, "service", "web", "rr");
    for (int i = 1; i <= N; i++) {
      rm(i, "container", "c" + i);
    }
    await(Duration.ofSeconds(60), "every task container gone", () -> {
      for (int i = 1; i <= N; i++) {
        if (!lab.dk(i, "ps", "-aq").out().isBlank()) {
          return false;
        }
      }
      return true;
    });
    await(Duration.ofSeconds(60), "n1 and ov1 removed on every node", () -> {
      rm(1, "network", "n1", "ov1");
      for (int i = 1; i <= N; i++) {
        if (lab.dk(i, "network", "inspect", "n1").ok() || lab.dk(i, "network", "inspect", "ov1").ok()) {
          return false;
        }
      }
      return true;
    });
    await(Duration.ofSeconds(30), "no kernel state of ours on any node", () -> leftovers(vni).isEmpty());
    await(Duration.ofSeconds(30), "no etcd key under /flannel/ (networks, subnets, VNIs, endpoints, Docker records)",
        () -> etcdLeftovers().isEmpty());
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
      lab.exec(i, "iptables", "-w", "-S").out().lines().filter(l -> l.contains("flannel") || l.contains("fnp"))
          .forEach(l -> out.add(n + "iptables " + l));
      lab.exec(i, "iptables", "-w", "-t", "nat", "-S").out().lines().filter(l -> l.contains("flannel") || l.contains("10.200."))
          .forEach(l -> out.add(n + "iptables nat " + l));
    }
    if (!out.isEmpty()) {
      System.out.println("left behind (vni " + vni + "):\n  " + String.join("\n  ", out));
    }
    return out;
  }

  /** Every key under /flannel/: none must outlive the last network (measured: none does). */
  List<String> etcdLeftovers() {
    List<String> keys = lab.etcdctl("get", "--prefix", "--keys-only", "/flannel/").out().lines()
        .filter(l -> !l.isBlank()).toList();
    if (!keys.isEmpty()) {
      System.out.println("etcd keys left: " + lab.etcdctl("get", "--prefix", "/flannel/").out().strip());
    }
    return keys;
  }
}
