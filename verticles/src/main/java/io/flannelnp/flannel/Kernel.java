package io.flannelnp.flannel;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The kernel through its ordinary tools: {@code ip} and {@code bridge} (iproute2) and {@code nft},
 * each fed a whole batch on stdin ({@code ip -batch -}, {@code bridge -batch -}, {@code nft -f -})
 * and read back with {@code -json}. Commands are started with {@link ProcessBuilder} from
 * argument lists, never through a shell, with {@code LC_ALL=C} so error texts are stable.
 *
 * <p>A Kernel targets either the current network namespace ({@link #current()}) or a named one
 * ({@link #inNetns(String)}: {@code ip -n NAME}, {@code bridge -netns NAME},
 * {@code ip netns exec NAME nft}).
 *
 * <p><b>Blocking:</b> every call runs a process and waits for it (for batches, one started ahead
 * of time when {@link #keepWarm()} is on). Callers run them with {@code vertx.executeBlocking} or
 * on a dedicated worker, never on an event loop.
 *
 * <p><b>Input:</b> a value that goes into a command must first pass one of the validators here
 * ({@link #ifname}, {@link #ipv4}, {@link #ipv4Cidr}, {@link #mac}, {@link #netnsName},
 * {@link #mtu}) or {@link Names}. As a second line of defence, {@code ip}/{@code bridge} batch
 * lines may only hold {@code A-Z a-z 0-9 space . _ : / @ , = + -} (no quotes, no comments, no
 * line breaks), and nft scripts only printable ASCII, tabs and line breaks.
 *
 * <p><b>Batches:</b> {@code ip}/{@code bridge} batches stop at the first failing line (or go on
 * past failures with {@code force}); they are not transactions, so a caller that needs all or
 * nothing deletes what a failed batch left. nft scripts are transactions. A failure is a
 * {@link KernelException} naming the tool, the failing line (when the tool says which) and
 * stderr.
 */
public final class Kernel {
  /** How long one tool invocation may take before it is killed. */
  public static final Duration TIMEOUT = Duration.ofSeconds(30);

  private static final Pattern IFNAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,14}");
  private static final Pattern NETNS = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
  private static final Pattern MAC = Pattern.compile("[0-9a-f]{2}(:[0-9a-f]{2}){5}");
  private static final Pattern BATCH_LINE = Pattern.compile("[A-Za-z0-9 ._:/@,=+-]+");
  private static final Pattern READ_ARG = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._:/@,=+-]*");
  private static final Set<String> READ_OPTIONS = Set.of("-d", "-s", "-4", "-6");
  private static final Pattern IP_FAILED_LINE = Pattern.compile("Command failed \\S*?:(\\d+)");
  private static final Pattern NFT_FAILED_LINE = Pattern.compile("(?m)^(?:/dev/stdin|-):(\\d+):");
  private static final List<String> TOOL_DIRS = List.of("/usr/sbin", "/sbin", "/usr/bin", "/bin");

  private static final Map<String, String> RESOLVED = new ConcurrentHashMap<>();
  private static final ExecutorService PUMPS = Executors.newCachedThreadPool(r -> {
    Thread t = new Thread(r, "kernel-tool-io");
    t.setDaemon(true);
    return t;
  });

  private final Optional<String> netns;
  private final Map<String, String> tools;
  /** Waiting processes per command line ({@link #keepWarm()}), at most {@link #WARM} each. */
  private final Map<List<String>, java.util.Deque<Process>> standby = new ConcurrentHashMap<>();
  /** How many waiting processes per command: a pass runs the same `ip` batch command twice. */
  private static final int WARM = 2;
  private volatile boolean warm;

  private Kernel(Optional<String> netns, Map<String, String> tools) {
    this.netns = netns;
    this.tools = Map.copyOf(tools);
  }

  /** The network namespace this process (its calling thread) is in. */
  public static Kernel current() {
    return new Kernel(Optional.empty(), Map.of());
  }

  /** A named network namespace, as {@code ip netns add NAME} creates under /var/run/netns. */
  public static Kernel inNetns(String name) {
    return new Kernel(Optional.of(netnsName(name)), Map.of());
  }

  /**
   * For tests: a named namespace whose tools ("ip", "bridge", "nft") may be replaced by other
   * executables (absolute paths), e.g. to inject a failure in the middle of a batch.
   */
  static Kernel inNetns(String name, Map<String, String> toolOverrides) {
    for (String path : toolOverrides.values()) {
      if (!Path.of(path).isAbsolute()) {
        throw new IllegalArgumentException("tool override " + path + " is not an absolute path");
      }
    }
    return new Kernel(Optional.of(netnsName(name)), toolOverrides);
  }

  public Optional<String> netns() {
    return netns;
  }

  /** For messages: "the current network namespace" or "network namespace NAME". */
  public String where() {
    return netns.map(n -> "network namespace " + n).orElse("the current network namespace");
  }

  @Override
  public String toString() {
    return "Kernel[" + where() + "]";
  }

  // ---- batches ---------------------------------------------------------------------------------

  /** One batch a tool applied: the exact text it was given and how long it took. */
  public record Applied(String tool, String text, long micros) {}

  /** {@code ip [-n NS] [-force] -batch -} with these lines. */
  public Applied ipBatch(List<String> lines, boolean force) throws KernelException {
    List<String> argv = new ArrayList<>(List.of("ip"));
    netns.ifPresent(n -> argv.addAll(List.of("-n", n)));
    return batch("ip", argv, lines, force);
  }

  /** {@code bridge [-netns NS] [-force] -batch -} with these lines. */
  public Applied bridgeBatch(List<String> lines, boolean force) throws KernelException {
    List<String> argv = new ArrayList<>(List.of("bridge"));
    netns.ifPresent(n -> argv.addAll(List.of("-netns", n)));
    return batch("bridge", argv, lines, force);
  }

  /** {@code [ip netns exec NS] nft -f -}: the script is one transaction. */
  public Applied nftBatch(String script) throws KernelException {
    if (script == null || script.isBlank()) {
      throw new IllegalArgumentException("empty nft script");
    }
    for (int i = 0; i < script.length(); i++) {
      char c = script.charAt(i);
      if (!(c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f))) {
        throw new IllegalArgumentException("nft script holds a forbidden character 0x"
            + Integer.toHexString(c) + " at offset " + i);
      }
    }
    String text = script.endsWith("\n") ? script : script + "\n";
    List<String> argv = nftArgv();
    argv.addAll(List.of("-f", "-"));
    Result r = run("nft", argv, text);
    if (r.exit != 0) {
      List<String> lines = List.of(text.split("\n", -1));
      throw failure("nft", text, lines, NFT_FAILED_LINE, r);
    }
    return new Applied("nft", text, r.micros);
  }

  /**
   * Sets IPv4 sysctls (names like "net.ipv4.ip_forward", values digits) in the kernel's namespace
   * with one `sysctl -w` run; only names and values of that strict form are accepted.
   */
  public Applied sysctl(java.util.Map<String, String> settings) throws KernelException {
    List<String> argv = new ArrayList<>();
    netns.ifPresentOrElse(n -> argv.addAll(List.of("ip", "netns", "exec", n, "sysctl")), () -> argv.add("sysctl"));
    argv.add("-q");
    argv.add("-w");
    StringBuilder text = new StringBuilder();
    for (java.util.Map.Entry<String, String> e : new java.util.TreeMap<>(settings).entrySet()) {
      if (!e.getKey().matches("net\\.ipv4\\.[a-z0-9_.]{1,80}") || !e.getValue().matches("[0-9]{1,6}")) {
        throw new IllegalArgumentException("sysctl " + Names.quote(e.getKey()) + "=" + Names.quote(e.getValue())
            + " is not an IPv4 sysctl with a numeric value");
      }
      argv.add(e.getKey() + "=" + e.getValue());
      text.append(e.getKey()).append(" = ").append(e.getValue()).append('\n');
    }
    Result r = run("sysctl", argv, "");
    if (r.exit != 0) {
      throw failure("sysctl", text.toString(), List.of(text.toString().split("\n")), IP_FAILED_LINE, r);
    }
    return new Applied("sysctl", text.toString(), r.micros);
  }

  /**
   * Docker sets the filter FORWARD policy to DROP and sends forwarded packets through its
   * DOCKER-USER chain first; an accept in our own nft table cannot override an iptables drop.
   * Keeps (present) or removes one ACCEPT rule each for packets into and out of flannel.*
   * devices and one for packets between flannel-np bridges there; isolation has already dropped cross-network traffic at priority filter - 5.
   * Returns false, changing nothing, when there is no DOCKER-USER chain (no dockerd, or one with
   * iptables off); true when it changed a rule.
   */
  public boolean dockerUserAccept(boolean present) throws KernelException {
    return dockerUserAccept(present, false);
  }

  /**
   * As {@link #dockerUserAccept(boolean)}; with {@code direct} (a network has Backend.DirectRouting)
   * also packets into and out of flannel-np bridges whatever the other interface, as directly
   * routed peers' traffic enters and leaves by the uplink (the isolation table still passes only
   * a network's own addresses to it).
   */
  public boolean dockerUserAccept(boolean present, boolean direct) throws KernelException {
    List<String> base = new ArrayList<>();
    netns.ifPresent(n -> base.addAll(List.of("ip", "netns", "exec", n)));
    base.addAll(List.of("iptables", "-w", "5"));
    List<String> list = new ArrayList<>(base);
    list.addAll(List.of("-S", "DOCKER-USER"));
    if (run("iptables", list, "").exit != 0) {
      return false;
    }
    boolean changed = false;
    // br_netfilter (dockerd loads it) also sends frames bridged between two containers on one
    // flannel-np bridge through FORWARD: without the third rule same-node traffic is dropped.
    String bridges = Names.BRIDGE_PREFIX + "+";
    List<List<String>> matches = List.of(List.of("-i", "flannel.+"), List.of("-o", "flannel.+"),
        List.of("-i", bridges, "-o", bridges), List.of("-i", bridges), List.of("-o", bridges));
    for (int m = 0; m < matches.size(); m++) {
      List<String> rule = new ArrayList<>(List.of("DOCKER-USER"));
      rule.addAll(matches.get(m));
      boolean directRule = m >= 3;
      rule.addAll(List.of("-m", "comment", "--comment", directRule ? "flannel-np direct routing" : "flannel-np", "-j",
          "ACCEPT"));
      boolean want = present && (!directRule || direct);
      List<String> check = new ArrayList<>(base);
      check.add("-C");
      check.addAll(rule);
      if ((run("iptables", check, "").exit == 0) != want) {
        List<String> edit = new ArrayList<>(base);
        edit.add(want ? "-I" : "-D");
        edit.addAll(rule);
        Result r = run("iptables", edit, "");
        if (r.exit != 0) {
          String text = String.join(" ", edit.subList(edit.indexOf("iptables"), edit.size()));
          throw failure("iptables", text, List.of(text), IP_FAILED_LINE, r);
        }
        changed = true;
      }
    }
    return changed;
  }

  private Applied batch(String tool, List<String> argv, List<String> lines, boolean force) throws KernelException {
    if (lines == null || lines.isEmpty()) {
      throw new IllegalArgumentException("empty " + tool + " batch");
    }
    for (String line : lines) {
      if (line == null || !BATCH_LINE.matcher(line).matches()) {
        throw new IllegalArgumentException(tool + " batch line " + Names.quote(line)
            + " holds characters other than A-Z a-z 0-9 space . _ : / @ , = + -");
      }
    }
    if (force) {
      argv.add("-force");
    }
    argv.addAll(List.of("-batch", "-"));
    String text = String.join("\n", lines) + "\n";
    Result r = run(tool, argv, text);
    if (r.exit != 0) {
      throw failure(tool, text, lines, IP_FAILED_LINE, r);
    }
    return new Applied(tool, text, r.micros);
  }

  private KernelException failure(String tool, String text, List<String> lines, Pattern where, Result r) {
    int n = 0;
    Matcher m = where.matcher(r.stderr);
    if (m.find()) {
      n = Integer.parseInt(m.group(1));
    }
    String line = n >= 1 && n <= lines.size() ? lines.get(n - 1) : null;
    return new KernelException(tool, this.where(), text, n, line, r.stderr, r.exit, r.micros, false);
  }

  // ---- reads -----------------------------------------------------------------------------------

  /** {@code ip [-n NS] -json ARGS}: the JSON text ("[]" when the tool printed nothing). */
  public String ipJson(String... args) throws KernelException {
    List<String> argv = new ArrayList<>(List.of("ip"));
    netns.ifPresent(n -> argv.addAll(List.of("-n", n)));
    argv.add("-json");
    return read("ip", argv, args);
  }

  /** {@code bridge [-netns NS] -json ARGS}. */
  public String bridgeJson(String... args) throws KernelException {
    List<String> argv = new ArrayList<>(List.of("bridge"));
    netns.ifPresent(n -> argv.addAll(List.of("-netns", n)));
    argv.add("-json");
    return read("bridge", argv, args);
  }

  /** {@code [ip netns exec NS] nft -j ARGS}, e.g. {@code nftJson("list", "table", "inet", "x")}. */
  public String nftJson(String... args) throws KernelException {
    List<String> argv = nftArgv();
    argv.add("-j");
    return read("nft", argv, args);
  }

  private String read(String tool, List<String> argv, String... args) throws KernelException {
    for (String a : args) {
      if (a == null || !(READ_OPTIONS.contains(a) || READ_ARG.matcher(a).matches())) {
        throw new IllegalArgumentException(tool + " argument " + Names.quote(a) + " is not allowed");
      }
      argv.add(a);
    }
    Result r = run(tool, argv, null);
    String cmd = String.join(" ", argv.subList(1, argv.size()));
    if (r.exit != 0) {
      throw new KernelException(tool, where(), cmd, 0, null, r.stderr, r.exit, r.micros, false);
    }
    String out = r.stdout.strip();
    return out.isEmpty() ? "[]" : out;
  }

  /**
   * {@code ip [-n NS] -json OPTIONS -batch -} with read-only commands ("addr show", "route show",
   * …): one JSON text per command, in order. One process for all of them.
   */
  public List<String> ipJsonBatch(List<String> commands, String... options) throws KernelException {
    List<String> argv = new ArrayList<>(List.of("ip"));
    netns.ifPresent(n -> argv.addAll(List.of("-n", n)));
    return readBatch("ip", argv, commands, options);
  }

  /**
   * The JSON array text of each of these links that exists, by name ({@code ip -d -json link show
   * dev NAME} each); a link that does not exist is left out. The hot paths (Join, DeleteEndpoint)
   * look at two or three links, where a dump of every link grows with the node's containers.
   * With {@link #keepWarm()} on, the long-lived {@code ip} session answers (no process start).
   */
  public Map<String, String> ipLinks(List<String> names) throws KernelException {
    if (names == null || names.isEmpty()) {
      throw new IllegalArgumentException("no link names to show");
    }
    List<String> commands = new ArrayList<>();
    for (String n : names) {
      commands.add("link show dev " + ifname(n));
    }
    for (int attempt = 1; ; attempt++) {
      SessionResult r = ipSession(commands);
      Map<String, String> found = new java.util.LinkedHashMap<>();
      boolean stale = r.ended();
      for (int i = 0; i < names.size() && !stale; i++) {
        String err = r.errors().get(i);
        if (err == null) {
          // `ip` resolves a name through its cache: a link renamed since shows under its new name
          stale = !r.outputs().get(i).contains("\"ifname\":\"" + names.get(i) + "\"");
          found.put(names.get(i), r.outputs().get(i));
        } else if (!err.contains("Device \"" + names.get(i) + "\" does not exist")) {
          stale = true;
        }
      }
      if (!stale) {
        return found;
      }
      if (attempt == 2) {
        throw r.failure(r.firstError());
      }
      // a stale name cache (a link deleted or renamed behind the session; `ip` may answer `[{}]`
      // without an error for a cached index that is gone): ask a fresh one
      dropSession();
    }
  }

  /**
   * Applies these {@code ip} lines like {@link #ipBatch}, but with {@link #keepWarm()} on in the
   * long-lived session, and going on past a failing line ({@code -force}): the exception names the
   * first one that failed. For callers that undo a failed change as a whole anyway. The lines may
   * only name links just looked up with {@link #ipLinks} (or links they create): the session's
   * name cache is right for those.
   */
  public Applied ipApply(List<String> lines) throws KernelException {
    SessionResult r = ipSession(lines);
    if (r.ended() || r.errors().stream().anyMatch(java.util.Objects::nonNull)) {
      throw r.failure(r.firstError());
    }
    return new Applied("ip", String.join("\n", lines) + "\n", r.micros());
  }

  /**
   * What a session call left: per line its JSON output (show commands) and its error text, or
   * null; {@code ended}: the process exited before the marker ({@code ip} exits on some errors,
   * such as a name its cache maps to a link that is gone), so lines without an error may or may
   * not have been applied.
   */
  record SessionResult(Kernel kernel, List<String> lines, List<String> outputs, List<String> errors, String stderr,
      boolean ended, long micros) {
    int firstError() {
      for (int i = 0; i < errors.size(); i++) {
        if (errors.get(i) != null) {
          return i;
        }
      }
      return -1;
    }

    /** The failure of line i (index), or of the batch as a whole when i < 0. */
    KernelException failure(int i) {
      String text = String.join("\n", lines) + "\n";
      if (i < 0) {
        return new KernelException("ip", kernel.where(), text, 0, null,
            (ended ? "ip exited half-way: " : "ip failed: ") + (stderr.isBlank() ? "no error text" : stderr), 1, micros,
            false);
      }
      return new KernelException("ip", kernel.where(), text, i + 1, lines.get(i), errors.get(i), 1, micros, false);
    }
  }

  private SessionResult ipSession(List<String> lines) throws KernelException {
    if (lines == null || lines.isEmpty()) {
      throw new IllegalArgumentException("empty ip batch");
    }
    for (String line : lines) {
      if (line == null || !BATCH_LINE.matcher(line).matches() || line.endsWith(" dev lo")) {
        throw new IllegalArgumentException("ip batch line " + Names.quote(line)
            + " holds characters other than A-Z a-z 0-9 space . _ : / @ , = + - (or names lo)");
      }
    }
    if (!warm || tools.containsKey("ip")) {
      return oneShot(lines); // (a test's stand-in ip reads its whole input first)
    }
    synchronized (sessionLock) {
      if (session == null || !session.alive()) {
        if (session != null) {
          session.close();
        }
        String exe = resolve("ip");
        if (exe == null) {
          throw new KernelException("ip", where(), String.join("\n", lines), 0, null,
              "ip not found on PATH or in " + TOOL_DIRS + " (install iproute2)", -1, 0, true);
        }
        List<String> argv = new ArrayList<>(List.of(exe));
        netns.ifPresent(n -> argv.addAll(List.of("-n", n)));
        argv.addAll(List.of("-d", "-json", "-force", "-batch", "-"));
        // a waiting one from the standby pool if there is one; a new one waits for the next
        Process p = null;
        java.util.Deque<Process> q = standby.get(argv);
        while (q != null && p == null && !q.isEmpty()) {
          Process w = q.pollFirst();
          p = w != null && w.isAlive() ? w : null;
        }
        try {
          session = new IpSession(p != null ? p : start(argv));
        } catch (IOException e) {
          throw new KernelException("ip", where(), String.join("\n", lines), 0, null,
              "cannot start " + exe + ": " + e.getMessage(), -1, 0, true);
        }
        prespawn(argv);
      }
      SessionResult r;
      try {
        r = session.call(this, lines);
      } catch (KernelException e) {
        session.close(); // its state is unknown now: the next call starts a fresh one
        session = null;
        throw e;
      }
      // `ip` caches name → ifindex for its lifetime. ifindexes are never reused, so a stale entry
      // (a link deleted or renamed since) makes a show fail or name another link, which
      // ipLinks detects and retries in a fresh session. After a clean ipLinks of some names
      // the session resolves exactly those names right, so a write that only uses names just
      // read (or new ones) is safe: callers read, then write, on one thread. After an error the
      // session's state is unknown: a fresh one -- except a lookup of a link that does not exist
      // (every new endpoint's veth names): `ip` caches no misses, so the session stays good.
      if (r.ended() || (r.firstError() >= 0 && !onlyAbsentLinks(lines, r))) {
        dropSession();
      }
      return r;
    }
  }

  /** Ends the long-lived session, if any (its exit is not the caller's business); the next call starts a fresh one. */
  private void dropSession() {
    synchronized (sessionLock) {
      if (session != null) {
        IpSession old = session;
        session = null;
        PUMPS.submit(old::close);
      }
    }
  }

  /** Whether every failed line is a {@code link show dev X} answered "Device "X" does not exist". */
  private static boolean onlyAbsentLinks(List<String> lines, SessionResult r) {
    for (int i = 0; i < lines.size(); i++) {
      String err = r.errors().get(i);
      if (err == null) {
        continue;
      }
      String line = lines.get(i);
      if (!line.startsWith("link show dev ")
          || !err.contains("Device \"" + line.substring("link show dev ".length()) + "\" does not exist")) {
        return false;
      }
    }
    return true;
  }

  /** Without a session: one {@code ip -force -batch} process, the result read the same way. */
  private SessionResult oneShot(List<String> lines) throws KernelException {
    List<String> argv = new ArrayList<>(List.of("ip"));
    netns.ifPresent(n -> argv.addAll(List.of("-n", n)));
    argv.addAll(List.of("-d", "-json", "-force", "-batch", "-"));
    List<String> withMarker = new ArrayList<>(lines);
    withMarker.add(IpSession.MARKER);
    Result r = run("ip", argv, String.join("\n", withMarker) + "\n");
    return IpSession.split(this, lines, 1, List.of(r.stdout.split("\n")), r.stderr, r.micros, false);
  }

  private final Object sessionLock = new Object();
  private IpSession session;

  /**
   * One long-lived {@code ip -d -json -force -batch -}: a call writes its lines and a marker
   * ({@code link show dev lo}, which every namespace has); in -json mode {@code ip} flushes each
   * show's output, so the marker's line on stdout means every line before it is done, and their
   * errors are on stderr by then (written first, unbuffered). Round trip: tens of microseconds,
   * where starting a process costs milliseconds, far more when the machine is loaded.
   */
  private static final class IpSession {
    static final String MARKER = "link show dev lo";

    private static final java.util.concurrent.ScheduledExecutorService WATCHDOG =
        Executors.newSingleThreadScheduledExecutor(r -> {
          Thread t = new Thread(r, "kernel-ip-session-watchdog");
          t.setDaemon(true);
          return t;
        });
    private final Process process;
    private final OutputStream in;
    private final InputStream out;
    private final InputStream err;
    private final byte[] buf = new byte[1 << 16];
    private final ByteArrayOutputStream pending = new ByteArrayOutputStream();
    /** Lines the process has read so far: its "Command failed -:N" counts from the first ever. */
    private int lineNo;

    IpSession(Process p) {
      this.process = p;
      this.in = p.getOutputStream();
      this.out = p.getInputStream();
      this.err = p.getErrorStream();
    }

    boolean alive() {
      return process.isAlive();
    }

    SessionResult call(Kernel k, List<String> lines) throws KernelException {
      long t0 = System.nanoTime();
      String text = String.join("\n", lines) + "\n" + MARKER + "\n";
      java.util.concurrent.ScheduledFuture<?> kill = WATCHDOG.schedule(process::destroyForcibly,
          TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
      List<String> got = new ArrayList<>();
      boolean ended = false;
      try {
        in.write(text.getBytes(StandardCharsets.UTF_8));
        in.flush();
        while (true) {
          String line = readLine();
          if (line == null) {
            ended = true;
            break;
          }
          got.add(line);
          if (line.contains("\"ifname\":\"lo\"")) {
            break;
          }
        }
      } catch (IOException e) {
        throw new KernelException("ip", k.where(), text, 0, null, "the ip session failed: " + e.getMessage()
            + (process.isAlive() ? "" : " (killed after " + TIMEOUT.toSeconds() + " s or exited)"), -1, micros(t0), true);
      } finally {
        kill.cancel(false);
      }
      int base = lineNo + 1;
      lineNo += lines.size() + 1;
      String stderr;
      try {
        stderr = drainAvailable();
      } catch (IOException e) {
        stderr = "";
      }
      if (ended) {
        try {
          process.waitFor(2, TimeUnit.SECONDS); // the rest of its stderr
          stderr += drainAvailable();
        } catch (IOException | InterruptedException e) {
          // what we have
        }
      }
      return split(k, lines, base, got, stderr, micros(t0), ended);
    }

    /**
     * Per line: its output and its error. Errors come from "Command failed -:N" (N counted from
     * {@code base} for this call's first line), the text before each belonging to that line; each
     * successful show printed one line, in order, and the marker's is the last.
     */
    static SessionResult split(Kernel k, List<String> lines, int base, List<String> stdout, String stderr,
        long micros, boolean ended) {
      String[] errors = new String[lines.size()];
      Matcher m = IP_FAILED_LINE.matcher(stderr);
      int from = 0;
      while (m.find()) {
        int n = Integer.parseInt(m.group(1)) - base;
        String why = stderr.substring(from, m.start()).strip();
        from = m.end();
        if (n >= 0 && n < lines.size()) {
          errors[n] = why.isEmpty() ? "failed" : why;
        }
      }
      List<String> outs = new ArrayList<>();
      for (String s : stdout) {
        if (!s.isBlank()) {
          outs.add(s.strip());
        }
      }
      String[] outputs = new String[lines.size()];
      int j = 0;
      for (int i = 0; i < lines.size(); i++) {
        if (errors[i] == null && lines.get(i).contains(" show") && j < outs.size() - 1) {
          outputs[i] = outs.get(j++);
        }
      }
      boolean markerSeen = !outs.isEmpty() && outs.get(outs.size() - 1).contains("\"ifname\":\"lo\"");
      return new SessionResult(k, lines, java.util.Arrays.asList(outputs), java.util.Arrays.asList(errors), stderr,
          ended || !markerSeen || j != outs.size() - 1, micros);
    }

    private String readLine() throws IOException {
      while (true) {
        byte[] b = pending.toByteArray();
        for (int i = 0; i < b.length; i++) {
          if (b[i] == '\n') {
            pending.reset();
            pending.write(b, i + 1, b.length - i - 1);
            return new String(b, 0, i, StandardCharsets.UTF_8);
          }
        }
        int n = out.read(buf);
        if (n < 0) {
          return null;
        }
        pending.write(buf, 0, n);
      }
    }

    private String drainAvailable() throws IOException {
      StringBuilder b = new StringBuilder();
      int n;
      while ((n = err.available()) > 0) {
        byte[] chunk = new byte[n];
        int r = err.read(chunk);
        if (r <= 0) {
          break;
        }
        b.append(new String(chunk, 0, r, StandardCharsets.UTF_8));
      }
      return b.toString();
    }

    void close() {
      try {
        in.close();
      } catch (IOException ignored) {
        // gone
      }
      awaitEnd(process);
    }
  }

  /** A tool whose stdin was closed: 2 s to end by itself, then it is killed. */
  private static void awaitEnd(Process p) {
    try {
      if (!p.waitFor(2, TimeUnit.SECONDS)) {
        p.destroyForcibly();
      }
    } catch (InterruptedException e) {
      p.destroyForcibly();
      Thread.currentThread().interrupt();
    }
  }

  /** {@code bridge [-netns NS] -json -batch -} with read-only commands ("fdb show dev X", …). */
  public List<String> bridgeJsonBatch(List<String> commands) throws KernelException {
    List<String> argv = new ArrayList<>(List.of("bridge"));
    netns.ifPresent(n -> argv.addAll(List.of("-netns", n)));
    return readBatch("bridge", argv, commands);
  }

  private List<String> readBatch(String tool, List<String> argv, List<String> commands, String... options)
      throws KernelException {
    if (commands == null || commands.isEmpty()) {
      throw new IllegalArgumentException("empty " + tool + " read batch");
    }
    for (String line : commands) {
      if (line == null || !BATCH_LINE.matcher(line).matches() || !line.contains(" show")) {
        throw new IllegalArgumentException(tool + " read batch line " + Names.quote(line)
            + " is not a show command of A-Z a-z 0-9 space . _ : / @ , = + -");
      }
    }
    for (String o : options) {
      if (!READ_OPTIONS.contains(o)) {
        throw new IllegalArgumentException(tool + " option " + Names.quote(o) + " is not allowed");
      }
      argv.add(o);
    }
    argv.addAll(List.of("-json", "-batch", "-"));
    String text = String.join("\n", commands) + "\n";
    Result r = run(tool, argv, text);
    if (r.exit != 0) {
      throw failure(tool, text, commands, IP_FAILED_LINE, r);
    }
    // each command prints one JSON array on one line (a string in it cannot hold a raw line break)
    List<String> out = new ArrayList<>();
    for (String line : r.stdout.split("\n")) {
      if (!line.isBlank()) {
        out.add(line.strip());
      }
    }
    if (out.size() != commands.size()) {
      throw new KernelException(tool, where(), text, 0, null, "expected " + commands.size()
          + " JSON outputs, got " + out.size() + "; stderr: " + r.stderr, r.exit, r.micros, false);
    }
    return out;
  }

  private List<String> nftArgv() {
    List<String> argv = new ArrayList<>();
    netns.ifPresentOrElse(n -> argv.addAll(List.of("ip", "netns", "exec", n, "nft")), () -> argv.add("nft"));
    return argv;
  }

  // ---- processes -------------------------------------------------------------------------------

  private record Result(int exit, String stdout, String stderr, long micros) {}

  private Result run(String tool, List<String> argv, String stdin) throws KernelException {
    String exe = tools.containsKey(argv.get(0)) ? tools.get(argv.get(0)) : resolve(argv.get(0));
    if (exe == null) {
      throw new KernelException(tool, where(), String.join(" ", argv), 0, null,
          argv.get(0) + " not found on PATH or in " + TOOL_DIRS + " (install "
              + ("nft".equals(argv.get(0)) ? "nftables" : "iptables".equals(argv.get(0)) ? "iptables" : "iproute2") + ")", -1, 0, true);
    }
    List<String> cmd = new ArrayList<>(argv);
    cmd.set(0, exe);
    long t0 = System.nanoTime();
    Process p = null;
    boolean warmable = warm && stdin != null && cmd.contains("-batch");
    if (warmable) {
      java.util.Deque<Process> q = standby.get(cmd);
      while (q != null && p == null) {
        Process w = q.pollFirst();
        if (w == null) {
          break;
        }
        p = w.isAlive() ? w : null;
      }
    }
    if (p == null) {
      try {
        p = start(cmd);
      } catch (IOException e) {
        throw new KernelException(tool, where(), String.join(" ", argv), 0, null,
            "cannot start " + exe + ": " + e.getMessage(), -1, 0, true);
      }
    }
    if (warmable) {
      prespawn(cmd);
    }
    Process proc = p;
    Future<?> in = PUMPS.submit(() -> {
      try (OutputStream os = proc.getOutputStream()) {
        if (stdin != null) {
          os.write(stdin.getBytes(StandardCharsets.UTF_8));
        }
      } catch (IOException ignored) {
        // the tool exited early; its exit code and stderr say why
      }
      return null;
    });
    Future<String> out = PUMPS.submit(() -> drain(proc.getInputStream()));
    Future<String> err = PUMPS.submit(() -> drain(proc.getErrorStream()));
    try {
      if (!proc.waitFor(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
        proc.destroyForcibly();
        throw new KernelException(tool, where(), stdin == null ? String.join(" ", argv) : stdin, 0, null,
            "killed after " + TIMEOUT.toSeconds() + " s without finishing", -1, micros(t0), true);
      }
      in.get(5, TimeUnit.SECONDS);
      String o = out.get(5, TimeUnit.SECONDS);
      String e = err.get(5, TimeUnit.SECONDS);
      return new Result(proc.exitValue(), o, e, micros(t0));
    } catch (InterruptedException e) {
      proc.destroyForcibly();
      Thread.currentThread().interrupt();
      throw new KernelException(tool, where(), String.join(" ", argv), 0, null, "interrupted", -1, micros(t0), true);
    } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
      proc.destroyForcibly();
      throw new KernelException(tool, where(), String.join(" ", argv), 0, null,
          "reading its output failed: " + e, -1, micros(t0), true);
    }
  }

  private static Process start(List<String> cmd) throws IOException {
    ProcessBuilder pb = new ProcessBuilder(cmd);
    pb.environment().put("LC_ALL", "C");
    return pb.start();
  }

  // ---- warm tools ------------------------------------------------------------------------------

  /**
   * From now on, keeps up to {@value #WARM} processes of each batch command this Kernel has run
   * started and waiting on their stdin, so the next batch only costs the tool's work, not its
   * start (fork, exec, loading, entering the namespace: most of a small batch's time; measured
   * here, a one-line {@code ip -n NS -batch} takes about half as long). A waiting {@code ip -batch}
   * does nothing until it reads its input, and exits at end of input, so an unused one is
   * harmless; {@link #release()} ends them. A waiting process stays in the namespace it entered:
   * use this only for a namespace that outlives the Kernel (the daemon's host).
   */
  public void keepWarm() {
    warm = true;
  }

  /** Ends the waiting processes of {@link #keepWarm()} (their stdin is closed: they exit). */
  public void release() {
    warm = false;
    synchronized (sessionLock) {
      if (session != null) {
        session.close();
        session = null;
      }
    }
    List<Process> all = new ArrayList<>();
    for (List<String> k : List.copyOf(standby.keySet())) {
      java.util.Deque<Process> q = standby.remove(k);
      if (q != null) {
        all.addAll(q);
      }
    }
    for (Process p : all) {
      try {
        p.getOutputStream().close();
      } catch (IOException ignored) {
        // already gone
      }
    }
    all.forEach(Kernel::awaitEnd);
  }

  private void prespawn(List<String> cmd) {
    PUMPS.submit(() -> {
      java.util.Deque<Process> q = standby.computeIfAbsent(cmd, k -> new java.util.concurrent.ConcurrentLinkedDeque<>());
      while (warm && q.size() < WARM) {
        Process p;
        try {
          p = start(cmd);
        } catch (IOException e) {
          return; // the next batch starts its own
        }
        q.addLast(p);
        if (!warm && q.remove(p)) {
          try {
            p.getOutputStream().close(); // released meanwhile: let it exit
          } catch (IOException ignored) {
            // gone
          }
        }
      }
    });
  }

  private static long micros(long t0) {
    return (System.nanoTime() - t0) / 1000;
  }

  private static String drain(InputStream is) throws IOException {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    is.transferTo(b);
    return b.toString(StandardCharsets.UTF_8);
  }

  /** The usual sbin/bin directories searched after PATH (root's tools). */
  public static List<String> toolDirs() {
    return TOOL_DIRS;
  }

  /**
   * The tool's absolute path: PATH first, then the usual sbin/bin directories (root's tools);
   * null if it is nowhere. Shared by every plane that runs a tool.
   */
  public static String resolve(String name) {
    String hit = RESOLVED.get(name);
    if (hit != null) {
      return hit;
    }
    List<String> dirs = new ArrayList<>();
    String path = System.getenv("PATH");
    if (path != null) {
      for (String d : path.split(File.pathSeparator)) {
        if (!d.isEmpty()) {
          dirs.add(d);
        }
      }
    }
    dirs.addAll(TOOL_DIRS);
    for (String d : dirs) {
      Path p = Path.of(d, name);
      if (Files.isRegularFile(p) && Files.isExecutable(p)) {
        RESOLVED.put(name, p.toString());
        return p.toString();
      }
    }
    return null;
  }

  // ---- validators ------------------------------------------------------------------------------

  /** A Linux interface name: 1-15 of {@code A-Z a-z 0-9 _ . -}, not starting with a punctuation. */
  public static String ifname(String s) {
    if (s == null || !IFNAME.matcher(s).matches()) {
      throw new IllegalArgumentException("invalid interface name " + Names.quote(s)
          + ": expected 1-15 characters of A-Z a-z 0-9 _ . - starting with a letter or digit");
    }
    return s;
  }

  /** A named network namespace: 1-64 of {@code A-Z a-z 0-9 _ . -}, starting with a letter or digit. */
  public static String netnsName(String s) {
    if (s == null || !NETNS.matcher(s).matches()) {
      throw new IllegalArgumentException("invalid network namespace name " + Names.quote(s)
          + ": expected 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit");
    }
    return s;
  }

  /** The file of named namespace {@code name} as {@code ip netns add} makes it (/var/run is /run on Debian). */
  public static java.nio.file.Path netnsPath(String name) {
    java.nio.file.Path p = java.nio.file.Path.of("/var/run/netns", netnsName(name));
    return java.nio.file.Files.exists(p) ? p : java.nio.file.Path.of("/run/netns", name);
  }

  /** A dotted-quad IPv4 address (no leading zeros); returned unchanged. */
  public static String ipv4(String s) {
    if (parseIpv4(s) < 0) {
      throw new IllegalArgumentException("invalid IPv4 address " + Names.quote(s) + ": expected a.b.c.d");
    }
    return s;
  }

  /**
   * An interface address with its prefix, e.g. "10.50.0.129/25": prefix 1-30 and the address
   * neither the network nor the broadcast address of its block.
   */
  public static String ipv4Cidr(String s) {
    String what = "invalid IPv4 interface address " + Names.quote(s);
    int slash = s == null ? -1 : s.indexOf('/');
    if (slash < 0) {
      throw new IllegalArgumentException(what + ": expected address/prefix such as 10.50.0.129/25");
    }
    long a = parseIpv4(s.substring(0, slash));
    String pfx = s.substring(slash + 1);
    if (a < 0 || !pfx.matches("[1-9][0-9]?")) {
      throw new IllegalArgumentException(what + ": expected address/prefix such as 10.50.0.129/25");
    }
    int prefix = Integer.parseInt(pfx);
    if (prefix > 30) {
      throw new IllegalArgumentException(what + ": the prefix must be 1-30 so the block holds other hosts");
    }
    long hostMask = (1L << (32 - prefix)) - 1;
    if ((a & hostMask) == 0 || (a & hostMask) == hostMask) {
      throw new IllegalArgumentException(what + ": it is the " + ((a & hostMask) == 0 ? "network" : "broadcast")
          + " address of its /" + prefix + " block");
    }
    return s;
  }

  /**
   * A unicast Ethernet address aa:bb:cc:dd:ee:ff (either case; returned in lower case), not all
   * zeros and without the multicast bit, which the kernel refuses on a veth.
   */
  public static String mac(String s) {
    String m = s == null ? null : s.toLowerCase(Locale.ROOT);
    if (m == null || !MAC.matcher(m).matches()) {
      throw new IllegalArgumentException("invalid MAC address " + Names.quote(s) + ": expected aa:bb:cc:dd:ee:ff");
    }
    if (m.equals("00:00:00:00:00:00")) {
      throw new IllegalArgumentException("invalid MAC address " + Names.quote(s) + ": all zeros");
    }
    if ((Integer.parseInt(m.substring(0, 2), 16) & 1) != 0) {
      throw new IllegalArgumentException("invalid MAC address " + Names.quote(s)
          + ": it is a multicast address (lowest bit of the first octet set); an interface needs a unicast one");
    }
    return m;
  }

  /** An MTU an Ethernet-like link takes: 68-65535. */
  public static int mtu(int mtu) {
    if (mtu < 68 || mtu > 65535) {
      throw new IllegalArgumentException("MTU " + mtu + " is outside 68-65535");
    }
    return mtu;
  }

  /** The address as an unsigned value, or -1 if it is not a strict dotted quad. */
  private static long parseIpv4(String s) {
    if (s == null) {
      return -1;
    }
    String[] parts = s.split("\\.", -1);
    if (parts.length != 4) {
      return -1;
    }
    long v = 0;
    for (String p : parts) {
      if (!p.matches("0|[1-9][0-9]{0,2}")) {
        return -1;
      }
      int o = Integer.parseInt(p);
      if (o > 255) {
        return -1;
      }
      v = (v << 8) | o;
    }
    return v;
  }

  // ---- failures --------------------------------------------------------------------------------

  /**
   * A tool failed (or could not be run). The message names the tool, the namespace, the failing
   * line when the tool said which, and the tool's stderr.
   */
  public static final class KernelException extends Exception {
    private final String tool;
    private final String text;
    private final int lineNumber;
    private final String line;
    private final String stderr;
    private final int exitCode;
    private final long micros;
    private final boolean unavailable;

    KernelException(String tool, String where, String text, int lineNumber, String line, String stderr,
        int exitCode, long micros, boolean unavailable) {
      super(message(tool, where, text, lineNumber, line, stderr, exitCode));
      this.tool = tool;
      this.text = text;
      this.lineNumber = lineNumber;
      this.line = line;
      this.stderr = stderr;
      this.exitCode = exitCode;
      this.micros = micros;
      this.unavailable = unavailable;
    }

    private static String message(String tool, String where, String text, int n, String line, String stderr,
        int exit) {
      StringBuilder b = new StringBuilder(tool).append(" in ").append(where);
      if (line != null) {
        b.append(": line ").append(n).append(" \"").append(line).append("\" failed");
      } else if (text != null && !text.contains("\n")) {
        b.append(": \"").append(text).append("\" failed");
      } else {
        b.append(": batch failed");
      }
      if (exit >= 0) {
        b.append(" (exit ").append(exit).append(')');
      }
      String why = stderr.lines().map(String::strip)
          .filter(l -> !l.isEmpty() && !l.startsWith("Command failed") && !l.matches("[\\^~ ]+"))
          .reduce((x, y) -> x + "; " + y).orElse("no error text");
      return b.append(": ").append(why).toString();
    }

    /** "ip", "bridge" or "nft". */
    public String tool() {
      return tool;
    }

    /** The batch text (or, for a read, the command line) that failed. */
    public String text() {
      return text;
    }

    /** 1-based number of the failing batch line; 0 if the tool did not say. */
    public int lineNumber() {
      return lineNumber;
    }

    /** The failing batch line, or null if the tool did not say. */
    public String line() {
      return line;
    }

    public String stderr() {
      return stderr;
    }

    /** The tool's exit code; -1 if it did not run to an end. */
    public int exitCode() {
      return exitCode;
    }

    public long micros() {
      return micros;
    }

    /** True when the tool could not be run at all (missing, hung), as opposed to refusing. */
    public boolean unavailable() {
      return unavailable;
    }
  }
}
