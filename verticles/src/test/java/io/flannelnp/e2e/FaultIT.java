package io.flannelnp.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.e2e.SwarmLab.Result;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.UUID;
import java.util.function.Supplier;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * The faults Swarm and etcd really produce, on the lab Swarm (scripts/swarm-lab.sh) with the
 * managed plugin on every node and a 3-member etcd cluster: etcd's leader killed, the whole
 * cluster frozen (10 s, and longer than NODE_RECORDS_TTL), etcd restarted; a Swarm leader change
 * while a service scales; Swarm's rollback of a network allocation; a flannel-id given to a second
 * network; the plugin SIGKILLed; a node's dockerd killed and started again; malformed values in
 * etcd; a node gone for good and a new node taking its place.
 *
 * <p>Throughout, a client container on every node runs a loop: an HTTP request to the VIP of the
 * service {@code web} (three replicas, one per node) and a DNS query for {@code tasks.rr} (a
 * DNSRR service, one task per node), five times a second, each printing ok or fail. Each fault
 * states what must keep working and asserts it over the fault's window; it prints "failed/made"
 * and the seconds to converge. After each fault: no address with two owners, and (once Docker's
 * state settles) no allocation or endpoint record Docker does not hold.
 *
 * <p>Lowered for the test: SUBNET_LEASE_TTL 20 s, NODE_RECORDS_TTL 10 s, GC_GRACE 15 s.
 * `-Dflannelnp.fault.soak=N` repeats the etcd faults N times (the soak; CI runs them once).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class FaultIT {
  static final int N = 3;
  static final String PLUGIN = "flannel-np:fault";
  static final String IMAGE = "fnp/busybox:latest";
  static final String SUBNETS = "10.210.0.0/16";
  static final String HTTPD = "hostname > /www/index.html && exec httpd -f -p 80 -h /www";
  static final int LEASE_TTL = 20;
  static final int RECORDS_TTL = 10;
  static final int GC_GRACE = 15;
  static final String P = "/flannel";
  /** flannel-np's DNS_TTL here: Docker's resolver answers with 600, so a 599 is ours. */
  static final int TTL = 599;

  final Path root = SwarmE2EIT.root();
  final String docker = System.getProperty("flannelnp.fault.docker", "28,host,26");
  final int soak = Integer.getInteger("flannelnp.fault.soak", 1);
  final SwarmLab lab = new SwarmLab(root, "fnf", "198.18.9", "");
  final Path pluginDir = Path.of(System.getProperty("flannelnp.e2e.pluginDir", "/tmp/fne-plugin"));
  final Path logs = Path.of(System.getProperty("flannelnp.e2e.logs", "target/e2e-logs"));
  final List<String> report = new ArrayList<>();
  boolean up;
  String fid;
  String vip;
  int mgr = 1;
  /** Nodes that are part of the lab now (a node gone for good leaves, a new one joins). */
  final List<Integer> nodes = new ArrayList<>(List.of(1, 2, 3));

  // ---- lab lifecycle ---------------------------------------------------------------------------

  @BeforeAll
  void up() throws IOException {
    assertThat(new com.sun.security.auth.module.UnixSystem().getUid()).as("needs root (netns, dockerd)").isZero();
    SwarmE2ESuite.buildPluginIfStale(lab, root, pluginDir);
    up = true;
    long t0 = System.nanoTime();
    lab.up(N, docker, 3, false).out();
    System.out.printf("fault lab up (%s, 3 etcd members) in %d s%n", docker, (System.nanoTime() - t0) / 1_000_000_000);
    install(List.of());
    fid = UUID.randomUUID().toString();
    lab.dk(mgr, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--ipam-opt", "flannel-id=" + fid,
        "--attachable", "n1").out();
    for (String[] svc : List.of(new String[] {"web", "vip"}, new String[] {"rr", "dnsrr"})) {
      lab.dk(mgr, "service", "create", "-d", "--name", svc[0], "--endpoint-mode", svc[1], "--network", "n1",
          "--replicas", "3", "--replicas-max-per-node", "1", "--no-resolve-image", "--stop-grace-period", "1s", IMAGE,
          "sh", "-c", HTTPD).out();
    }
    await(Duration.ofSeconds(120), "web and rr running with one task on each node",
        () -> running("web") == N && running("rr") == N);
    String addr = lab.dk(mgr, "service", "inspect", "-f", "{{range .Endpoint.VirtualIPs}}{{.Addr}}{{end}}", "web").out().strip();
    vip = addr.substring(0, addr.indexOf('/'));
    for (int i : nodes) {
      startClient(i);
    }
    await(Duration.ofSeconds(30), "every client's requests and lookups succeed", () -> {
      Instant since = Instant.now().minusSeconds(3);
      return nodes.stream().allMatch(i -> {
        Window w = window(i, since, Instant.now());
        return w.httpOk() > 3 && w.httpFail() == 0 && w.dnsOk() > 3 && w.dnsFail() == 0;
      });
    });
  }

  /** `install-plugin` with the fault suite's settings on every node (or, given, only these). */
  void install(List<Integer> only) {
    List<String> args = new ArrayList<>();
    if (!only.isEmpty()) {
      args.addAll(List.of("--nodes", only.stream().map(String::valueOf).collect(Collectors.joining(","))));
    }
    args.addAll(List.of(pluginDir.toString(), PLUGIN, "ETCD_ENDPOINTS={etcd}", "NODE_NAME={node}",
        "AVAILABLE_SUBNETS=" + SUBNETS, "DEFAULT_FLANNEL_OPTIONS=-iface=eth0", "SUBNET_LEASE_TTL=" + LEASE_TTL,
        "NODE_RECORDS_TTL=" + RECORDS_TTL, "GC_GRACE=" + GC_GRACE, "ADMIN_LISTEN=127.0.0.1:9090", "ADMIN_INSECURE_LOOPBACK=true", "LOG_LEVEL=info",
        "DNS_TTL=" + TTL));
    args.add(0, "install-plugin");
    lab.lab(Duration.ofMinutes(3), args.toArray(String[]::new)).out();
  }

  /** A client on node I: every 0.2 s one HTTP request to web's VIP and one query of tasks.rr. */
  void startClient(int i) {
    String loop = "while :; do "
        + "r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 " + vip + " 80 2>/dev/null | head -n 1); "
        + "case \"$r\" in *200*) echo 'H ok' ;; *) echo 'H fail' ;; esac; "
        + "d=$(dnsttl tasks.rr); case \"$d\" in [0-9]*) echo \"D ok $d\" ;; *) echo \"D fail $d\" ;; esac; "
        + "usleep 200000; done";
    lab.dk(i, "rm", "-f", "cl" + i);
    lab.dk(i, "run", "-d", "--name", "cl" + i, "--network", "n1", IMAGE, "sh", "-c", loop).out();
  }

  @AfterEach
  void print() {
    report.forEach(System.out::println);
    report.clear();
  }

  @AfterAll
  void down() throws IOException {
    if (!up) {
      return;
    }
    Files.createDirectories(logs);
    for (int i = 1; i <= 6; i++) {
      if (Files.exists(lab.dockerdLog(i))) {
        Files.copy(lab.dockerdLog(i), logs.resolve("fnf-dockerd" + i + ".log"), StandardCopyOption.REPLACE_EXISTING);
      }
    }
    boolean snapshot = Files.exists(lab.state.resolve("baseline.txt"));
    Result r = lab.lab(Duration.ofMinutes(3), "down");
    assertThat(r.exit()).as("lab down: the host must be exactly as before up (snapshot diff)\n" + r.err()).isZero();
    if (snapshot) {
      assertThat(r.err()).contains("host identical to the snapshot taken before 'up'");
    }
  }

  // ---- the client loops ------------------------------------------------------------------------

  /** What a client saw in a window: HTTP and DNS answers that worked and that failed. */
  record Window(int httpOk, int httpFail, int dnsOk, int dnsFail, int dnsByDocker) {
    int failed() {
      return httpFail + dnsFail;
    }

    int made() {
      return httpOk + httpFail + dnsOk + dnsFail;
    }
  }

  Window window(int node, Instant since, Instant until) {
    Result r = lab.dk(node, "logs", "--since", since.toString(), "--until", until.toString(), "cl" + node);
    int ho = 0;
    int hf = 0;
    int dok = 0;
    int df = 0;
    int byDocker = 0;
    for (String l : r.stdout().lines().toList()) {
      if (l.startsWith("H ok")) {
        ho++;
      } else if (l.startsWith("H fail")) {
        hf++;
      } else if (l.startsWith("D ok")) {
        dok++;
        if (l.startsWith("D ok 600 ")) {
          byDocker++;
        }
      } else if (l.startsWith("D fail")) {
        df++;
      }
    }
    return new Window(ho, hf, dok, df, byDocker);
  }

  /** Every client's window, by node. */
  Map<Integer, Window> windows(Instant since, Instant until) {
    Map<Integer, Window> out = new TreeMap<>();
    for (int i : nodes) {
      out.put(i, window(i, since, until));
    }
    return out;
  }

  /** Records "fault: failed/made per node" and returns the windows. */
  Map<Integer, Window> measured(String fault, Instant since, Instant until) {
    Map<Integer, Window> w = windows(since, until);
    report.add(String.format("%-58s %s (%.1f s)", fault, w.entrySet().stream()
        .map(e -> "node " + e.getKey() + " " + e.getValue().failed() + "/" + e.getValue().made()
            + (e.getValue().dnsByDocker() > 0 ? " (" + e.getValue().dnsByDocker() + " by Docker)" : ""))
        .collect(Collectors.joining(", ")), Duration.between(since, until).toMillis() / 1000.0));
    return w;
  }

  void assertNoFailures(String fault, Map<Integer, Window> w) {
    for (Map.Entry<Integer, Window> e : w.entrySet()) {
      assertThat(e.getValue().made()).as(fault + ": requests made on node " + e.getKey()).isGreaterThan(5);
      assertThat(e.getValue().failed()).as(fault + ": failed requests on node " + e.getKey() + " " + e.getValue())
          .isZero();
    }
  }

  // ---- checks after every fault ----------------------------------------------------------------

  /** /health of the plugin on node I. */
  JsonObject health(int node) {
    Result r = lab.exec(node, "curl", "-s", "--max-time", "3", "http://127.0.0.1:9090/health");
    return r.ok() && r.stdout().startsWith("{") ? new JsonObject(r.stdout()) : new JsonObject();
  }

  /** Every key under the prefix with its value (etcdctl). */
  Map<String, String> etcd(String prefix) {
    List<String> lines = lab.etcdctl("get", "--prefix", prefix).out().lines().toList();
    Map<String, String> out = new TreeMap<>();
    for (int k = 0; k + 1 < lines.size(); k += 2) {
      out.put(lines.get(k), lines.get(k + 1));
    }
    return out;
  }

  /**
   * etcd agrees with Docker: every address of network n1 has one owner and is held by a running
   * container on its node (by IP), a task or VIP of the Swarm, or a gateway; every endpoint
   * record names an endpoint its node's Docker has; every container endpoint Docker has on n1
   * has its allocation and record. Waits (up to GC_GRACE and a few passes) for Docker's state to
   * settle and the collector to act.
   */
  void consistent(String after) {
    long end = System.nanoTime() + Duration.ofSeconds(GC_GRACE + 45).toNanos();
    List<String> found = inconsistencies();
    while (!found.isEmpty() && System.nanoTime() < end) {
      sleep(2000);
      found = inconsistencies();
    }
    assertThat(found).as("etcd against Docker after " + after).isEmpty();
  }

  List<String> inconsistencies() {
    List<String> out = new ArrayList<>();
    Map<String, String> allocs = etcd(P + "/networks/" + fid + "/allocations/");
    Map<String, String> eps = etcd(P + "/endpoints/");
    Set<String> dockerEps = new TreeSet<>();
    Map<String, String> dockerIps = new HashMap<>(); // ip → node
    for (int i : nodes) {
      String nodeName = "fnf" + i;
      for (String line : lab.dk(i, "ps", "-aq").out().lines().map(String::strip).filter(s -> !s.isEmpty()).toList()) {
        String f = lab.dk(i, "inspect", "-f", "{{with index .NetworkSettings.Networks \"n1\"}}{{.EndpointID}} {{.IPAddress}}{{end}}",
            line).stdout().strip();
        if (f.isEmpty() || f.startsWith(" ")) {
          continue;
        }
        String[] p = f.split(" ");
        dockerEps.add(nodeName + "/" + p[0]);
        if (p.length > 1 && dockerIps.put(p[1], nodeName) != null) {
          out.add("address " + p[1] + " is used by two containers");
        }
      }
    }
    String held = swarmAddresses();
    for (Map.Entry<String, String> e : allocs.entrySet()) {
      String ip = e.getKey().substring(e.getKey().lastIndexOf('/') + 1);
      JsonObject o = new JsonObject(e.getValue());
      String kind = o.getString("Kind");
      if (kind.equals("gateway")) {
        continue;
      }
      if (o.getString("Space").equals("local")) {
        String on = dockerIps.get(ip);
        if (on == null) {
          out.add("allocation " + ip + " of " + o.getString("Node") + ": no container has it");
        } else if (!on.equals(o.getString("Node"))) {
          out.add("allocation " + ip + " is " + o.getString("Node") + "'s but the container is on " + on);
        }
      } else if (!held.contains(" " + ip + "/")) {
        out.add("cluster address " + ip + ": no task or VIP holds it");
      }
    }
    for (String k : eps.keySet()) {
      String rest = k.substring((P + "/endpoints/").length());
      if (!dockerEps.contains(rest)) {
        out.add("endpoint record " + rest + ": Docker has no such endpoint");
      }
    }
    for (String ep : dockerEps) {
      if (!eps.containsKey(P + "/endpoints/" + ep)) {
        out.add("endpoint " + ep + " has no record");
      }
    }
    for (Map.Entry<String, String> ipNode : dockerIps.entrySet()) {
      String v = allocs.get(P + "/networks/" + fid + "/allocations/" + ipNode.getKey());
      if (v == null) {
        out.add("address " + ipNode.getKey() + " of a container on " + ipNode.getValue() + " is not allocated");
      }
    }
    return out;
  }

  /**
   * Every address the Swarm holds, space-separated with their prefix: the attachments of every
   * task in any state (services' tasks and the attachments of `docker run` containers) and VIPs.
   */
  String swarmAddresses() {
    StringBuilder b = new StringBuilder(" ");
    List<String> ids = new ArrayList<>(lab.dk(mgr, "service", "ps", "-q", "web", "rr").out().lines()
        .map(String::strip).filter(x -> !x.isEmpty()).toList());
    for (int i : nodes) {
      ids.addAll(lab.dk(mgr, "node", "ps", "-q", "fnf" + i).stdout().lines().map(String::strip).filter(x -> !x.isEmpty())
          .toList());
    }
    List<String> args = new ArrayList<>(List.of("inspect", "--type", "task", "-f",
        "{{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}"));
    args.addAll(new TreeSet<>(ids));
    b.append(lab.dk(mgr, args.toArray(String[]::new)).stdout().replace('\n', ' ')).append(' ');
    b.append(lab.dk(mgr, "service", "inspect", "-f", "{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}", "web", "rr")
        .stdout().replace('\n', ' '));
    return b.append(' ').toString();
  }

  // ---- helpers ---------------------------------------------------------------------------------

  int running(String svc) {
    int n = 0;
    for (int i : nodes) {
      n += (int) lab.dk(i, "ps", "-q", "-f", "label=com.docker.swarm.service.name=" + svc, "-f", "status=running")
          .stdout().lines().filter(l -> !l.isBlank()).count();
    }
    return n;
  }

  static void await(Duration max, String what, Supplier<Boolean> cond) {
    SwarmE2EIT.await(max, what, cond);
  }

  static void sleep(long ms) {
    SwarmE2EIT.sleep(ms);
  }

  /** Seconds from {@code t0} until {@code cond} holds (polled every 0.3 s), bounded by {@code max}. */
  static double secondsUntil(Instant t0, Duration max, String what, Supplier<Boolean> cond) {
    await(max, what, cond);
    return Duration.between(t0, Instant.now()).toMillis() / 1000.0;
  }

  /** A state-changing call: a container on n1 on node I starts (and is removed again). */
  Result dockerRun(int node) {
    return lab.dk(node, "run", "--rm", "--network", "n1", IMAGE, "true");
  }

  // ---- etcd -------------------------------------------------------------------------------------

  @Test
  @Order(1)
  void etcdsLeaderKilledAndStartedAgainLosesNothing() {
    for (int round = 0; round < soak; round++) {
      int leader = lab.etcdLeader();
      Instant t0 = Instant.now();
      lab.etcdKill(leader);
      sleep(3000);
      lab.etcdStart(leader);
      sleep(5000);
      assertNoFailures("etcd leader killed", measured("etcd leader (member " + leader + ") killed, started after 3 s",
          t0, Instant.now()));
      assertThat(dockerRun(2).exit()).as("a container starts after etcd's leader came back").isZero();
    }
  }

  @Test
  @Order(2)
  void theWholeEtcdClusterFrozenFor10sLosesNothingAndStateChangingCallsFailFast() {
    Instant t0 = Instant.now();
    lab.etcdStopAll();
    long c0 = System.nanoTime();
    Result run = dockerRun(mgr);
    double failedIn = (System.nanoTime() - c0) / 1e9;
    assertThat(run.exit()).as("a container start while etcd is away fails").isNotZero();
    // the leader's allocation failed with our error; Docker tells the user only "check manager logs"
    await(Duration.ofSeconds(10), "our etcd error in the manager's log", () -> SwarmE2EIT.read(lab.dockerdLog(mgr))
        .contains("etcd unreachable (tried "));
    report.add(String.format("  docker run while etcd was frozen failed after %.1f s: %s", failedIn,
        run.text().strip().lines().reduce((a, b) -> b).orElse("")));
    sleep(Math.max(0, 10_000 - Duration.between(t0, Instant.now()).toMillis()));
    lab.etcdContAll();
    Instant thawed = Instant.now();
    double again = secondsUntil(thawed, Duration.ofSeconds(60), "a container starts again", () -> dockerRun(2).ok());
    report.add(String.format("  docker run worked again %.1f s after etcd thawed", again));
    sleep(5000);
    assertNoFailures("etcd frozen 10 s", measured("the whole etcd cluster frozen for 10 s", t0, Instant.now()));
    consistent("etcd frozen 10 s");
  }

  @Test
  @Order(3)
  void theWholeEtcdClusterFrozenLongerThanTheRecordsTtlLosesNothing() {
    Instant t0 = Instant.now();
    lab.etcdStopAll();
    sleep((RECORDS_TTL + 5) * 1000L);
    lab.etcdContAll();
    sleep(10_000);
    assertNoFailures("etcd frozen > NODE_RECORDS_TTL", measured("the whole etcd cluster frozen for "
        + (RECORDS_TTL + 5) + " s (> NODE_RECORDS_TTL)", t0, Instant.now()));
    consistent("etcd frozen > NODE_RECORDS_TTL");
  }

  @Test
  @Order(4)
  void anEtcdRestartLosesNothingAndEveryLeaseIsStillHeldAfterItsTtl() {
    Map<String, String> leasesBefore = etcd(P + "/networks/" + fid + "/subnets/");
    Instant t0 = Instant.now();
    lab.lab(Duration.ofSeconds(60), "etcd-kill", "all").out();
    sleep(2000);
    lab.lab(Duration.ofSeconds(90), "etcd-start", "all").out();
    sleep(5000);
    assertNoFailures("etcd restarted", measured("etcd restarted (every member killed, started after 2 s)", t0,
        Instant.now()));
    // the leases outlive their TTL: their renewal went on after the stream broke
    sleep((LEASE_TTL + 5) * 1000L);
    assertThat(etcd(P + "/networks/" + fid + "/subnets/")).as("every node's lease, %d s after the restart",
        LEASE_TTL + 10).isEqualTo(leasesBefore);
    assertNoFailures("after etcd's restart", measured("  the lease TTL after the restart", t0, Instant.now()));
    consistent("etcd restarted");
  }

  // ---- Swarm ------------------------------------------------------------------------------------

  @Test
  @Order(10)
  void swarmsRollbackOfALiveNetworksAllocationChangesNothing() {
    Map<String, String> before = etcd(P + "/networks/" + fid + "/");
    String subnet = lab.dk(mgr, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "n1").out().strip();
    Instant t0 = Instant.now();
    String pool = "FlannelGlobal/" + fid;
    for (String[] call : List.of(
        new String[] {"IpamDriver.RequestPool", "{\"AddressSpace\":\"FlannelGlobal\",\"Pool\":\"" + subnet
            + "\",\"Options\":{\"flannel-id\":\"" + fid + "\"}}"},
        new String[] {"IpamDriver.RequestAddress", "{\"PoolID\":\"" + pool + "\",\"Address\":\"" + subnet.replaceAll("0/\\d+$", "1")
            + "\",\"Options\":{\"RequestAddressType\":\"com.docker.network.gateway\"}}"},
        new String[] {"IpamDriver.ReleaseAddress", "{\"PoolID\":\"" + pool + "\",\"Address\":\""
            + subnet.replaceAll("0/\\d+$", "1") + "\"}"},
        new String[] {"IpamDriver.ReleasePool", "{\"PoolID\":\"" + pool + "\"}"})) {
      Result r = pluginCall(mgr, call[0], call[1]);
      assertThat(r.stdout()).as(call[0]).doesNotContain("\"Error\":\"e");
    }
    sleep(5000);
    assertThat(etcd(P + "/networks/" + fid + "/")).as("the network's state after Swarm's rollback").isEqualTo(before);
    assertNoFailures("Swarm rollback", measured("Swarm's rollback (RequestPool, gateway, ReleaseAddress, ReleasePool)",
        t0, Instant.now()));
  }

  /** A plugin call on node I's plugin socket, as dockerd makes it (curl inside the node). */
  Result pluginCall(int node, String call, String body) {
    String id = lab.dk(node, "plugin", "inspect", "-f", "{{.Id}}", PLUGIN).out().strip();
    return lab.exec(node, "curl", "-s", "--max-time", "20", "--unix-socket", "/run/docker/plugins/" + id + "/flannel-np.sock",
        "-H", "Content-Type: application/json", "-d", body, "http://plugin/" + call);
  }

  @Test
  @Order(11)
  void aSecondNetworkWithTheSameFlannelIdIsRefusedNamingTheFirstAndTheFirstKeepsWorking() {
    Map<String, String> before = etcd(P + "/networks/" + fid + "/");
    Instant t0 = Instant.now();
    try {
      lab.dk(mgr, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--ipam-opt", "flannel-id=" + fid,
          "--attachable", "n1copy").out();
      await(Duration.ofSeconds(30), "our refusal naming n1 in the manager's log", () -> SwarmE2EIT.read(lab.dockerdLog(mgr))
          .contains("flannel-id " + fid + " already belongs to network 'n1'"));
      assertThat(lab.dk(mgr, "network", "inspect", "-f", "{{json .IPAM.Config}}", "n1copy").out().strip()).isIn("null", "[]");
    } finally {
      lab.dk(mgr, "network", "rm", "n1copy");
    }
    sleep(3000);
    assertThat(etcd(P + "/networks/" + fid + "/")).as("n1's state after the refusal and its rollback").isEqualTo(before);
    assertNoFailures("second network, same flannel-id", measured("a second network with n1's flannel-id", t0, Instant.now()));
  }

  @Test
  @Order(12)
  void aSwarmLeaderChangeWhileAServiceScalesLosesNothing() {
    lab.dk(1, "node", "promote", "fnf2", "fnf3").out();
    await(Duration.ofSeconds(60), "three reachable managers", () -> lab.dk(1, "node", "ls", "--format",
        "{{.ManagerStatus}}").stdout().lines().filter(l -> l.equals("Reachable") || l.equals("Leader")).count() == 3
        && lab.dk(2, "node", "ls").ok() && lab.dk(3, "node", "ls").ok());
    lab.dk(1, "service", "update", "-d", "--replicas-max-per-node", "0", "web").out();
    Instant t0 = Instant.now();
    lab.dk(1, "service", "scale", "-d", "web=6").out();
    lab.dk(2, "node", "demote", "fnf1").out(); // the leader steps down while the scale runs
    mgr = 2;
    await(Duration.ofSeconds(60), "a new leader", () -> lab.dk(2, "node", "ls", "--format", "{{.ManagerStatus}}").stdout()
        .contains("Leader"));
    mgr = leader();
    double converged = secondsUntil(t0, Duration.ofSeconds(120), "web at 6 running tasks", () -> running("web") == 6);
    report.add(String.format("  web scaled 3 → 6 across the leader change in %.1f s", converged));
    lab.dk(mgr, "service", "update", "-d", "--replicas", "3", "--replicas-max-per-node", "1", "web").out();
    await(Duration.ofSeconds(90), "web back at 3, one per node", () -> running("web") == 3
        && nodes.stream().allMatch(i -> runningOn(i, "web")));
    lab.dk(mgr, "node", "promote", "fnf1").out(); // three managers again: the Swarm survives losing one
    sleep(3000);
    Map<Integer, Window> w = measured("Swarm leader change while web scales 3 → 6 → 3", t0, Instant.now());
    // requests to a task that is being scaled away may fail while it stops; every other must not
    w.forEach((node, win) -> assertThat(win.dnsFail()).as("DNS failures on node " + node).isZero());
    consistent("the leader change");
  }

  /** The node whose Swarm role is Leader. */
  int leader() {
    for (int i : nodes) {
      Result r = lab.dk(i, "node", "inspect", "self", "-f", "{{.ManagerStatus.Leader}}");
      if (r.ok() && r.stdout().strip().equals("true")) {
        return i;
      }
    }
    throw new AssertionError("no leader");
  }

  // ---- nodes --------------------------------------------------------------------------------------

  @Test
  @Order(20)
  void thePluginSigkilledUnderLoadLosesNoConnectionAnywhere() {
    int victim = 3;
    // a connection through the VIP established before the kill, its request finished after it
    lab.dk(victim, "exec", "-d", "cl" + victim, "sh", "-c", "(printf 'GET / HTTP/1.0\\r\\n'; sleep 10; printf '\\r\\n') | nc -w 20 "
        + vip + " 80 > /tmp/held 2>&1; echo end >> /tmp/held").out();
    sleep(1000);
    Instant t0 = Instant.now();
    int pid = pluginPid(victim);
    lab.exec(victim, "kill", "-KILL", Integer.toString(pid)).out();
    double back = secondsUntil(t0, Duration.ofSeconds(60), "the plugin on node " + victim + " ready again",
        () -> pluginPid(victim) != pid && health(victim).getBoolean("ready", false));
    sleep(3000);
    Map<Integer, Window> w = measured("the plugin SIGKILLed on node " + victim + " (ready again after "
        + String.format("%.1f s)", back), t0, Instant.now());
    w.forEach((node, win) -> assertThat(win.httpFail()).as("HTTP failures through the VIP on node " + node).isZero());
    await(Duration.ofSeconds(20), "the held connection's answer", () -> lab.dk(victim, "exec", "cl" + victim, "cat", "/tmp/held")
        .stdout().contains("end"));
    assertThat(lab.dk(victim, "exec", "cl" + victim, "cat", "/tmp/held").stdout())
        .as("a connection through the VIP established before the plugin's kill, answered after it").contains("200 OK");
    report.add("  a connection through the VIP established before the kill was answered after it");
    w.forEach((node, win) -> {
      if (node != victim) {
        assertThat(win.dnsFail()).as("DNS failures on node " + node).isZero();
      }
    });
    consistent("the plugin killed");
  }

  /** The PID (in the node's view, which is the host's) of the plugin's daemon on node I. */
  int pluginPid(int node) {
    Result r = lab.lab(Duration.ofSeconds(20), "plugin-pid", Integer.toString(node));
    return r.ok() ? Integer.parseInt(r.stdout().strip()) : -1;
  }

  @Test
  @Order(21)
  void aNodesDockerdKilledAndStartedAgainConvergesAndLeaksNothing() {
    int victim = 3;
    Instant t0 = Instant.now();
    lab.lab(Duration.ofSeconds(60), "dockerd-kill", Integer.toString(victim)).out();
    sleep(3000);
    lab.lab(Duration.ofSeconds(120), "dockerd-start", Integer.toString(victim)).out();
    double back = secondsUntil(t0, Duration.ofSeconds(120), "web and rr running again with one task on each node",
        () -> running("web") == 3 && running("rr") == 3 && health(victim).getBoolean("ready", false));
    startClient(victim); // its client was a container of the killed dockerd
    sleep(5000);
    Map<Integer, Window> w = measured("node " + victim + "'s dockerd killed and started (converged after "
        + String.format("%.1f s)", back), t0, Instant.now());
    w.forEach((node, win) -> {
      if (node != victim) {
        assertThat(win.dnsFail()).as("DNS failures on node " + node).isZero();
      }
    });
    consistent("the dockerd restart");
  }

  // ---- bad state ----------------------------------------------------------------------------------

  @Test
  @Order(30)
  void malformedValuesInEtcdTearNothingDownAreReportedAndNewNetworksStillWork() {
    String cfgKey = P + "/networks/" + fid + "/config";
    String good = etcd(cfgKey).get(cfgKey);
    Map<Integer, String> kernel = new HashMap<>();
    for (int i : nodes) {
      kernel.put(i, kernelOf(i));
    }
    String subnet = new JsonObject(good).getString("Network");
    String lease = etcd(P + "/networks/" + fid + "/subnets/").values().iterator().next();
    Map<String, String> bad = new LinkedHashMap<>();
    bad.put(cfgKey, good.replaceFirst("\"VNI\":(\\d+)", "\"VNI\":\"$1\"")); // 4: a string VNI
    bad.put(P + "/vnis/abc", "x"); // 7
    bad.put(P + "/address-space/not-a-subnet", "x");
    bad.put(P + "/networks/" + fid + "/subnets/" + subnet.replace("/", "-").replaceFirst("\\.0-", ".0-") + "&fc00::-64", lease);
    bad.put(P + "/networks/" + fid + "/subnets/10.210.15.128-25", "not json");
    bad.put(P + "/networks/" + fid + "/allocations/10.210.15.200", "{\"Kind\":\"bogus\"}");
    bad.put(P + "/networks/rogue/config", "{\"Network\":\"0.0.0.0/0\",\"Backend\":{\"Type\":\"vxlan\",\"VNI\":7001}}"); // 8
    bad.put(P + "/networks/wide/config", "{\"Network\":\"10.210.0.0/16\",\"Backend\":{\"Type\":\"vxlan\",\"VNI\":7002}}");
    Instant t0 = Instant.now();
    try {
      bad.forEach((k, v) -> lab.etcdctl("put", k, v).out());
      await(Duration.ofSeconds(60), "every bad value reported in every node's /health", () -> nodes.stream().allMatch(i -> {
        String p = health(i).getJsonObject("problems", new JsonObject()).encode();
        return p.contains("config rejected") && p.contains("vnis/abc") && p.contains("not-a-subnet")
            && p.contains("allocations/10.210.15.200") && p.contains("network rogue") && p.contains("network wide");
      }));
      sleep(15_000); // full passes on every node
      for (int i : nodes) {
        assertThat(kernelOf(i)).as("node " + i + "'s bridges, veths, devices, routes and tables with bad values in etcd")
            .isEqualTo(kernel.get(i));
      }
      // a new network is created, gets a subnet that is not the broken ones', and carries traffic
      lab.dk(mgr, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--ipam-opt", "flannel-id=" + UUID.randomUUID(),
          "--attachable", "n3").out();
      lab.dk(1, "run", "-d", "--name", "n3a", "--network", "n3", IMAGE, "sh", "-c", HTTPD).out();
      String ip = lab.dk(1, "inspect", "-f", "{{(index .NetworkSettings.Networks \"n3\").IPAddress}}", "n3a").out().strip();
      lab.dk(2, "run", "-d", "--name", "n3b", "--network", "n3", IMAGE, "sleep", "1d").out();
      await(Duration.ofSeconds(20), "n3 reachable across nodes", () -> lab.dk(2, "exec", "n3b", "sh", "-c",
          "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 " + ip + " 80").stdout().contains("200"));
    } finally {
      lab.etcdctl("put", cfgKey, good).out();
      bad.keySet().stream().filter(k -> !k.equals(cfgKey)).forEach(k -> lab.etcdctl("del", k));
      lab.dk(1, "rm", "-f", "n3a");
      lab.dk(2, "rm", "-f", "n3b");
      await(Duration.ofSeconds(30), "n3 removed", () -> {
        lab.dk(mgr, "network", "rm", "n3");
        return !lab.dk(mgr, "network", "inspect", "n3").ok();
      });
    }
    assertNoFailures("malformed values", measured("malformed values in etcd (config, keys, lease, allocation, networks)",
        t0, Instant.now()));
    await(Duration.ofSeconds(30), "the problems solved", () -> nodes.stream()
        .allMatch(i -> health(i).getInteger("problemCount", -1) == 0));
  }

  /** Our links, the routes and neighbours on them and our nft tables on node I. */
  String kernelOf(int node) {
    String links = lab.exec(node, "ip", "-br", "link").out().lines().filter(l -> l.startsWith("flannel.") || l.startsWith("fnp"))
        .map(l -> l.split("\\s+")[0]).sorted().collect(Collectors.joining(" "));
    String routes = lab.exec(node, "ip", "route").out().lines().filter(l -> l.contains("flannel.") || l.contains(" fnp"))
        .map(l -> l.replace(" linkdown", "")).sorted().collect(Collectors.joining("\n"));
    String nft = lab.exec(node, "nft", "list", "table", "inet", "flannel-np").stdout().replaceAll("packets \\d+ bytes \\d+", "");
    return links + "\n" + routes + "\n" + nft;
  }

  // ---- a node gone for good -----------------------------------------------------------------

  @Test
  @Order(40)
  void aNodeGoneForGoodLeavesDnsAndVipsItsBlockAndAddressesAreReclaimedAndANewNodeTakesItsBlock() {
    int gone = 3;
    String name = "fnf" + gone;
    List<String> itsTasks = taskIpsOn(gone);
    Map<String, String> leases = etcd(P + "/networks/" + fid + "/subnets/");
    String block = leases.entrySet().stream().filter(e -> e.getValue().contains("198.18.9." + (10 + gone) + "\""))
        .map(Map.Entry::getKey).findFirst().orElseThrow();
    Instant t0 = Instant.now();
    lab.lab(Duration.ofSeconds(60), "node-kill", Integer.toString(gone)).out(); // a manager: two of three remain
    nodes.remove(Integer.valueOf(gone));
    await(Duration.ofSeconds(60), "a leader among the nodes left", () -> {
      try {
        mgr = leader();
        return true;
      } catch (AssertionError e) {
        return false;
      }
    });
    double left = secondsUntil(t0, Duration.ofSeconds(RECORDS_TTL + 30), "its tasks out of every other node's DNS and VIP",
        () -> nodes.stream().allMatch(i -> {
          Set<String> backends = lab.vipBackends(i).getOrDefault(vip, Set.of());
          Set<String> rr = Set.copyOf(lab.nslookup(i, "cl" + i, "tasks.rr"));
          return itsTasks.stream().noneMatch(backends::contains) && itsTasks.stream().noneMatch(rr::contains);
        }));
    report.add(String.format("  node %d gone: its tasks left every other node's DNS and VIP after %.1f s (NODE_RECORDS_TTL %d s)",
        gone, left, RECORDS_TTL));
    assertThat(left).isLessThan(RECORDS_TTL + 10);
    double reclaimed = secondsUntil(t0, Duration.ofSeconds(LEASE_TTL + GC_GRACE + 60), "its block and addresses reclaimed",
        () -> !etcd(P + "/networks/" + fid + "/subnets/").containsKey(block) && etcd(P + "/").entrySet().stream()
            .noneMatch(e -> e.getKey().contains("/" + name + "/") || e.getKey().endsWith("/" + name)
                || e.getValue().contains("\"Node\":\"" + name + "\"")));
    report.add(String.format("  its block and addresses reclaimed after %.1f s (SUBNET_LEASE_TTL %d s, GC_GRACE %d s)",
        reclaimed, LEASE_TTL, GC_GRACE));
    // a new node joins: it takes the first free block, the gone node's, and its tasks work
    int added = Integer.parseInt(lab.lab(Duration.ofMinutes(5), "node-add", "--docker", "host").out().strip());
    nodes.add(added);
    install(List.of(added));
    lab.dk(mgr, "service", "update", "-d", "--replicas-max-per-node", "1", "web").out();
    await(Duration.ofSeconds(120), "web and rr with a task on the new node", () -> runningOn(added, "web") && runningOn(added, "rr"));
    await(Duration.ofSeconds(30), "the new node leased the gone node's block", () ->
        etcd(P + "/networks/" + fid + "/subnets/").getOrDefault(block, "").contains("198.18.9." + (10 + added) + "\""));
    startClient(added);
    sleep(8000);
    Instant check = Instant.now().minusSeconds(5);
    assertNoFailures("after the new node joined", measured("  a new node " + added + " in the gone node's block", check,
        Instant.now()));
    consistent("the node gone for good");
  }

  List<String> taskIpsOn(int node) {
    List<String> out = new ArrayList<>();
    for (String svc : List.of("web", "rr")) {
      for (String id : lab.dk(node, "ps", "-q", "-f", "label=com.docker.swarm.service.name=" + svc).out().split("\\s+")) {
        if (!id.isBlank()) {
          out.add(lab.dk(node, "inspect", "-f", "{{(index .NetworkSettings.Networks \"n1\").IPAddress}}", id).out().strip());
        }
      }
    }
    return out;
  }

  boolean runningOn(int node, String svc) {
    return !lab.dk(node, "ps", "-q", "-f", "label=com.docker.swarm.service.name=" + svc, "-f", "status=running").stdout()
        .isBlank();
  }

  // ---- the end --------------------------------------------------------------------------------

  @Test
  @Order(90)
  void afterEveryFaultNoAddressHasTwoOwnersAndEtcdMatchesDocker() {
    consistent("every fault");
    for (int i : nodes) {
      JsonObject h = health(i);
      assertThat(h.getBoolean("ready")).as("node " + i + " ready: " + h.getString("reasons")).isTrue();
      JsonArray ipam = h.getJsonObject("problems", new JsonObject()).getJsonArray("ipam", new JsonArray());
      assertThat(ipam.encode()).as("node " + i + " reports no two owners").doesNotContain("two owners");
    }
  }
}
