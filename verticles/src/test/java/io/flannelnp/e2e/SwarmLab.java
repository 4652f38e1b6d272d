package io.flannelnp.e2e;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * scripts/swarm-lab.sh driven from Java: every command is an argv list (never a shell string),
 * bounded by a timeout after which the command and its children are killed.
 */
final class SwarmLab {
  /** What one command did. */
  record Result(List<String> argv, int exit, String stdout, String stderr) {
    boolean ok() {
      return exit == 0;
    }

    /** stdout, or an AssertionError naming the command, its exit code and stderr. */
    String out() {
      if (exit != 0) {
        throw new AssertionError("exit " + exit + " from " + String.join(" ", argv) + "\nstderr: " + stderr.strip()
            + (stdout.isBlank() ? "" : "\nstdout: " + stdout.strip()));
      }
      return stdout;
    }

    String err() {
      return stderr;
    }

    String text() {
      return stdout + stderr;
    }
  }

  static final Pattern IPV4 = Pattern.compile("\\d{1,3}(?:\\.\\d{1,3}){3}");
  /** nslookup's answer lines; the server line ("Address: 127.0.0.11:53") has a port and does not match. */
  private static final Pattern NSLOOKUP_ADDR = Pattern.compile("(?m)^Address(?: \\d+)?:\\s+(" + IPV4 + ")\\s*$");
  private static final Pattern BACKEND = Pattern.compile("(" + IPV4 + ") \\. \\d+ : (" + IPV4 + ")");

  final Path root;
  final Path script;
  final String prefix;
  final Path state;
  final String net;
  private final Map<String, String> env = new LinkedHashMap<>();

  SwarmLab(Path root, String prefix, String net, String dnsHosts) {
    this.root = root;
    this.script = root.resolve("scripts/swarm-lab.sh");
    this.prefix = prefix;
    this.state = Path.of("/tmp", prefix + "-lab");
    this.net = net;
    env.put("FNP_LAB_PREFIX", prefix);
    env.put("FNP_LAB_STATE", state.toString());
    env.put("FNP_LAB_NET", net);
    env.put("FNP_LAB_DNS_HOSTS", dnsHosts);
  }

  /** The lab bridge's address: etcd and the upstream resolver. */
  String bridgeIp() {
    return net + ".1";
  }

  Path dockerdLog(int node) {
    return state.resolve("n" + node).resolve("dockerd.log");
  }

  Result run(Duration timeout, List<String> argv) {
    ProcessBuilder pb = new ProcessBuilder(argv).directory(root.toFile());
    pb.environment().putAll(env);
    Path out = null;
    Path err = null;
    try {
      out = Files.createTempFile(prefix + "-e2e-", ".out");
      err = Files.createTempFile(prefix + "-e2e-", ".err");
      pb.redirectOutput(out.toFile()).redirectError(err.toFile()).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
      Process p = pb.start();
      if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
        p.descendants().forEach(ProcessHandle::destroyForcibly);
        p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        return new Result(argv, -1, Files.readString(out), "timed out after " + timeout.toSeconds() + " s; " + Files.readString(err));
      }
      return new Result(argv, p.exitValue(), Files.readString(out, StandardCharsets.UTF_8), Files.readString(err, StandardCharsets.UTF_8));
    } catch (IOException e) {
      throw new AssertionError("cannot run " + argv + ": " + e, e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError("interrupted running " + argv, e);
    } finally {
      for (Path f : new Path[] {out, err}) {
        if (f != null) {
          try {
            Files.deleteIfExists(f);
          } catch (IOException ignored) {
            // a temp file; the next run does not depend on it
          }
        }
      }
    }
  }

  Result lab(Duration timeout, String... args) {
    List<String> argv = new ArrayList<>(List.of(script.toString()));
    argv.addAll(List.of(args));
    return run(timeout, argv);
  }

  private static String[] concat(String a, String b, String... rest) {
    String[] out = new String[rest.length + 2];
    out[0] = a;
    out[1] = b;
    System.arraycopy(rest, 0, out, 2, rest.length);
    return out;
  }

  /** Starts a command in the background, output to a file (long client loops). */
  Process start(Path output, String... args) {
    List<String> argv = new ArrayList<>(List.of(script.toString()));
    argv.addAll(List.of(args));
    ProcessBuilder pb = new ProcessBuilder(argv).directory(root.toFile()).redirectErrorStream(true)
        .redirectOutput(output.toFile()).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
    pb.environment().putAll(env);
    try {
      return pb.start();
    } catch (IOException e) {
      throw new AssertionError("cannot run " + argv + ": " + e, e);
    }
  }

  /** The docker 20.10 CLI against node I. */
  Result dk(int node, String... args) {
    return lab(Duration.ofSeconds(90), concat("dk", Integer.toString(node), args));
  }

  /** A command in node I's network, mount and UTS namespaces (dockerd's view of the node). */
  Result exec(int node, String... args) {
    return lab(Duration.ofSeconds(30), concat("exec", Integer.toString(node), args));
  }

  /**
   * `swarm-lab.sh up N --docker ENGINES --etcd MEMBERS [--hook]`: ENGINES one per node ("28,host,26";
   * host is this machine's docker.io), the OCI hook on every node of engine 27 or older when asked.
   * A first run builds the 26/28 roots (mmdebstrap, a few minutes); later runs find them cached.
   */
  Result up(int nodes, String engines, int etcdMembers, boolean hook) {
    List<String> a = new ArrayList<>(List.of("up", Integer.toString(nodes), "--docker", engines, "--etcd", Integer.toString(etcdMembers)));
    if (hook) {
      a.add("--hook");
    }
    return lab(Duration.ofMinutes(15), a.toArray(String[]::new));
  }

  /** One node's engine as its daemon reports it (`swarm-lab.sh versions`). */
  record Engine(int node, String version, String api, String minApi, String containerd, String runc, boolean hook, String kind) {
    int major() {
      return Integer.parseInt(version.split("\\.")[0]);
    }
  }

  /** Every node's engine, by node number. */
  Map<Integer, Engine> versions() {
    Map<Integer, Engine> out = new LinkedHashMap<>();
    for (String line : lab(Duration.ofSeconds(60), "versions").out().lines().toList()) {
      String[] f = line.strip().split(" ");
      int node = Integer.parseInt(f[0]);
      out.put(node, new Engine(node, f[1], f[2], f[3], f[4].substring("containerd=".length()), f[5].substring("runc=".length()),
          f[6].equals("hook=true"), f[7].substring("engine=".length())));
    }
    return out;
  }

  /** The node's own docker CLI (from its engine's root) against its daemon: for options the host's 20.10 CLI lacks. */
  Result nodeDocker(int node, String... args) {
    List<String> a = new ArrayList<>(List.of("exec", Integer.toString(node), "docker", "-H", "unix:///run/docker.sock"));
    a.addAll(List.of(args));
    return lab(Duration.ofSeconds(90), a.toArray(String[]::new));
  }

  // ---- etcd (one member, or three with up(…, 3, …)) ---------------------------------------------

  /** etcdctl against every member. */
  Result etcdctl(String... args) {
    List<String> a = new ArrayList<>(List.of("etcdctl"));
    a.addAll(List.of(args));
    return lab(Duration.ofSeconds(30), a.toArray(String[]::new));
  }

  /** etcdctl against member (1..M) alone. */
  Result etcdctlAt(int member, String... args) {
    List<String> a = new ArrayList<>(List.of("etcdctl-member", Integer.toString(member)));
    a.addAll(List.of(args));
    return lab(Duration.ofSeconds(30), a.toArray(String[]::new));
  }

  /** The members' client URLs, member 1 first. */
  List<String> etcdEndpoints() {
    return lab(Duration.ofSeconds(10), "etcd-endpoints").out().lines().map(String::strip).filter(l -> !l.isEmpty()).toList();
  }

  /** The member (1..M) that is raft leader, as the first member that answers says. */
  int etcdLeader() {
    return Integer.parseInt(lab(Duration.ofSeconds(30), "etcd-leader").out().strip());
  }

  /** SIGSTOP member (1..M): it keeps its sockets open and answers nothing. */
  void etcdStop(int member) {
    etcdSignal("etcd-stop", Integer.toString(member));
  }

  void etcdStopAll() {
    etcdSignal("etcd-stop", "all");
  }

  /** SIGCONT member (1..M). */
  void etcdCont(int member) {
    etcdSignal("etcd-cont", Integer.toString(member));
  }

  void etcdContAll() {
    etcdSignal("etcd-cont", "all");
  }

  /** SIGKILL member (1..M); its data stays for {@link #etcdStart}. */
  void etcdKill(int member) {
    etcdSignal("etcd-kill", Integer.toString(member));
  }

  /** Starts a killed member again on its data; returns once it serves (quorum is not waited for). */
  void etcdStart(int member) {
    etcdSignal("etcd-start", Integer.toString(member));
  }

  private void etcdSignal(String cmd, String member) {
    lab(Duration.ofSeconds(90), cmd, member).out();
  }

  /** nslookup NAME in a container on node I (busybox; both A and AAAA are asked). */
  Set<String> nslookup(int node, String container, String name) {
    return addresses(dk(node, "exec", container, "nslookup", name).text());
  }

  /** One A record of a dig answer. */
  record A(String name, int ttl, String ip) {}

  /**
   * dig NAME (type A) at 127.0.0.11 inside the network namespace of the process PID on node I,
   * without `docker exec` (a tenth of its cost, for tight polling): the same resolver the
   * container's processes use. dig shows TTLs, which tell flannel-np's answers from Docker's.
   */
  List<A> dig(int node, String pid, String name) {
    Result r = exec(node, "nsenter", "-t", pid, "-n", "dig", "+noall", "+answer", "+time=1", "+tries=1", "@127.0.0.11", name, "A");
    List<A> out = new ArrayList<>();
    for (String line : r.stdout().lines().toList()) {
      String[] f = line.strip().split("\\s+");
      if (f.length == 5 && f[2].equals("IN") && f[3].equals("A")) {
        out.add(new A(f[0], Integer.parseInt(f[1]), f[4]));
      }
    }
    return out;
  }

  static Set<String> addresses(String nslookup) {
    Set<String> out = new LinkedHashSet<>();
    Matcher m = NSLOOKUP_ADDR.matcher(nslookup);
    while (m.find()) {
      out.add(m.group(1));
    }
    return out;
  }

  /** One HTTP GET through busybox nc from a container on node I; the body's last line or "". */
  String http(int node, String container, String host) {
    Result r = dk(node, "exec", container, "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \"$0\" 80 | tail -n 1", host);
    return r.ok() ? r.stdout().strip() : "";
  }

  /** The VIP backends of the load balancer on node I (the backends-N maps of table ip flannel-np-lb). */
  Map<String, Set<String>> vipBackends(int node) {
    Result r = exec(node, "nft", "list", "table", "ip", "flannel-np-lb");
    Map<String, Set<String>> out = new LinkedHashMap<>();
    if (!r.ok()) {
      return out; // no table: no VIP on this node
    }
    Matcher m = BACKEND.matcher(r.stdout());
    while (m.find()) {
      out.computeIfAbsent(m.group(1), k -> new LinkedHashSet<>()).add(m.group(2));
    }
    return out;
  }
}
