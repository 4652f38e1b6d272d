package io.flannelnp.dns;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Steering 127.0.0.11:53 inside a container to our listener, and reading Docker's 127.0.0.11
 * rules to find the port of Docker's resolver.
 *
 * <p>Our table {@value #TABLE} in the container's namespace, replaced atomically, holds:
 * <ul>
 *   <li>a chain on the nat output hook at priority {@value #PRIORITY}, which runs before Docker's
 *       DNAT (iptables-nft or legacy {@code nat OUTPUT}, and Docker's own {@code ip docker-dns}
 *       table, are all at -100, "dstnat"): the kernel asks the nat chains of a hook in priority
 *       order and stops at the first that sets up a translation, so our {@code dnat to
 *       127.0.0.11:PORT} wins whatever order the rules were installed in, and replies are
 *       translated back by conntrack so they come from 127.0.0.11:53;</li>
 *   <li>when our listener holds 127.0.0.11:53 itself (the normal case: Docker's resolver listens
 *       on a random port behind its DNAT), a chain at priority raw ({@value #RAW_PRIORITY}) that
 *       exempts 127.0.0.11:53 traffic from connection tracking: untracked packets see no NAT,
 *       neither ours nor Docker's, so they reach our socket as addressed, without a conntrack
 *       entry per query, and no stale entry survives the table.</li>
 * </ul>
 * Docker's rules stay untouched. Deleting the table hands 127.0.0.11:53 back to Docker's
 * resolver at once.
 *
 * <p>Tools run in the container's namespace through {@code nsenter --net=PATH}, from argument
 * lists, never a shell.
 */
final class DnsNat {
  private DnsNat() {}

  static final String TABLE = "flannel-np-dns";
  static final int PRIORITY = -150;
  /** "raw": before connection tracking (-200). */
  static final int RAW_PRIORITY = -300;
  static final Duration TIMEOUT = Duration.ofSeconds(20);

  private static final Pattern SANDBOX = Pattern.compile("/[A-Za-z0-9._/:@+-]{1,4095}");
  private static final List<String> TOOL_DIRS = io.flannelnp.flannel.Kernel.toolDirs();
  private static final ExecutorService PUMPS = Executors.newCachedThreadPool(r -> {
    Thread t = new Thread(r, "fnp-dns-tool-io");
    t.setDaemon(true);
    return t;
  });

  /** Docker's resolver ports in a container; -1 where Docker has no rule. */
  record DockerPorts(int udp, int tcp, String source) {
    static final DockerPorts NONE = new DockerPorts(-1, -1, "none");

    boolean any() {
      return udp > 0 || tcp > 0;
    }
  }

  /** A sandbox key is an absolute, normalised path of ordinary characters (no "..", no spaces). */
  static String sandboxPath(String key) {
    if (key == null || !SANDBOX.matcher(key).matches() || key.contains("//") || key.contains("/../")
        || key.endsWith("/..") || key.contains("/./") || key.endsWith("/.") || key.endsWith("/")) {
      throw new IllegalArgumentException("invalid SandboxKey " + (key == null ? "null" : "'" + clip(key) + "'")
          + ": expected an absolute path such as /var/run/docker/netns/1a2b3c4d5e6f");
    }
    return key;
  }

  static String clip(String s) {
    String t = s.length() > 120 ? s.substring(0, 120) + "..." : s;
    StringBuilder b = new StringBuilder();
    for (char c : t.toCharArray()) {
      b.append(c >= 0x20 && c < 0x7f ? String.valueOf(c) : String.format("\\x%02x", (int) c));
    }
    return b.toString();
  }

  /**
   * The script that (re)fills our table in one transaction, pointing at our listener's ports:
   * the table and chains are added if missing and emptied if present, then the rules are added.
   * Nothing is deleted, so injecting into a fresh namespace queues no nf_tables destroy work
   * (every nft process waits for pending destroy work at exit, and that work waits for an RCU
   * grace period: slow on a busy host). When the listener holds 127.0.0.11:53 itself, a
   * raw-priority chain also exempts that traffic from connection tracking (both directions,
   * our forwards to Docker's resolver included): no NAT at all, neither ours nor Docker's,
   * applies to untracked packets, so they reach our socket as addressed, no conntrack entry is
   * made per query (the NodeLocal DNSCache lesson), and nothing stale is left when the table
   * goes. The DNAT chain does the job when the listener had to take another port.
   */
  static String tableScript(int udpPort, int tcpPort) {
    String t = "ip " + TABLE;
    StringBuilder b = new StringBuilder()
        .append("add table ").append(t).append('\n')
        .append("flush table ").append(t).append('\n');
    List<String> raw = new ArrayList<>();
    if (udpPort == 53) {
      raw.add("udp");
    }
    if (tcpPort == 53) {
      raw.add("tcp");
    }
    if (!raw.isEmpty()) {
      b.append("add chain ").append(t).append(" raw-output { type filter hook output priority ")
          .append(RAW_PRIORITY).append("; policy accept; }\n");
    }
    b.append("add chain ").append(t).append(" output { type nat hook output priority ").append(PRIORITY)
        .append("; policy accept; }\n");
    for (String proto : raw) {
      b.append("add rule ").append(t).append(" raw-output ip daddr 127.0.0.11 ").append(proto)
          .append(" dport 53 counter notrack\n");
      b.append("add rule ").append(t).append(" raw-output ip saddr 127.0.0.11 ").append(proto)
          .append(" sport 53 counter notrack\n");
    }
    b.append("add rule ").append(t).append(" output ip daddr 127.0.0.11 udp dport 53 counter dnat to 127.0.0.11:")
        .append(udpPort).append('\n');
    b.append("add rule ").append(t).append(" output ip daddr 127.0.0.11 tcp dport 53 counter dnat to 127.0.0.11:")
        .append(tcpPort).append('\n');
    return b.toString();
  }

  /**
   * The same, replacing the table as a whole: for a table an older build left with chains of
   * another type or priority, which {@link #tableScript} cannot redefine.
   */
  static String replaceScript(int udpPort, int tcpPort) {
    return "add table ip " + TABLE + "\ndelete table ip " + TABLE + "\n" + tableScript(udpPort, tcpPort);
  }

  /** The nft command that lists our table (with {@code -s}: what the rules are, not what they counted). */
  static String listCommand() {
    return "list table ip " + TABLE;
  }

  /**
   * Our table in the namespace at {@code path} as {@code nft -s list table} prints it, or "" when
   * there is none: a process, for when libnftables cannot be loaded ({@link TableReader}).
   */
  static String listTable(String path) throws IOException {
    String nft = resolve("nft");
    if (nft == null) {
      throw new IOException("nft not found on PATH or in " + TOOL_DIRS + " (install nftables)");
    }
    List<String> argv = new ArrayList<>(List.of(nft, "-s"));
    argv.addAll(List.of(listCommand().split(" ")));
    Result r = run(nsenter(path, argv.toArray(String[]::new)), null);
    if (r.exit == 0) {
      return r.out;
    }
    if (r.err.contains(TableReader.NO_SUCH)) {
      return "";
    }
    throw new IOException("nft -s " + listCommand() + " in " + path + ": " + r.err.strip() + " (exit " + r.exit + ")");
  }

  /** Deletes our table if it is there (a missing table is success). */
  static String removeScript() {
    return "add table ip " + TABLE + "\ndelete table ip " + TABLE + "\n";
  }

  // ---- Docker's rules ----------------------------------------------------------------------------

  private static final Pattern IPT_DNAT = Pattern.compile(
      "(?m)^-A \\S+ -d 127\\.0\\.0\\.11(?:/32)? -p (udp|tcp) -m (?:udp|tcp) --dport 53 -j DNAT --to-destination 127\\.0\\.0\\.11:(\\d{1,5})\\s*$");
  private static final Pattern NFT_DNAT = Pattern.compile(
      "(?m)ip daddr 127\\.0\\.0\\.11 (udp|tcp) dport 53 .*?dnat (?:ip )?to 127\\.0\\.0\\.11:(\\d{1,5})\\s*$");

  /** Docker's ports from {@code iptables-save -t nat} output (iptables-nft or legacy). */
  static DockerPorts parseIptablesSave(String text, String source) {
    return parse(IPT_DNAT, text, source);
  }

  /** Docker's ports from {@code nft list table ip docker-dns} (Docker 28.3+ nftables backend). */
  static DockerPorts parseNft(String text, String source) {
    return parse(NFT_DNAT, text, source);
  }

  private static DockerPorts parse(Pattern p, String text, String source) {
    int udp = -1;
    int tcp = -1;
    Matcher m = p.matcher(text);
    while (m.find()) {
      int port = Integer.parseInt(m.group(2));
      if (port < 1 || port > 65535 || port == 53) {
        continue;
      }
      if (m.group(1).equals("udp") && udp < 0) {
        udp = port;
      } else if (m.group(1).equals("tcp") && tcp < 0) {
        tcp = port;
      }
    }
    return udp < 0 && tcp < 0 ? DockerPorts.NONE : new DockerPorts(udp, tcp, source);
  }

  /**
   * Reads Docker's resolver ports in the namespace at {@code path}: iptables (nft backend), then
   * iptables-legacy, then Docker's nftables table; blocking (forks the tools).
   */
  static DockerPorts discover(String path) {
    for (String tool : List.of("iptables-save", "iptables-legacy-save")) {
      if (resolve(tool) == null) {
        continue;
      }
      try {
        Result r = run(nsenter(path, resolve(tool), "-t", "nat"), null);
        if (r.exit == 0) {
          DockerPorts d = parseIptablesSave(r.out, tool);
          if (d.any()) {
            return d;
          }
        }
      } catch (IOException e) {
        // try the next source
      }
    }
    if (resolve("nft") != null) {
      try {
        Result r = run(nsenter(path, resolve("nft"), "list", "table", "ip", "docker-dns"), null);
        if (r.exit == 0) {
          return parseNft(r.out, "nft docker-dns");
        }
      } catch (IOException e) {
        // none
      }
    }
    return DockerPorts.NONE;
  }

  // ---- processes ---------------------------------------------------------------------------------

  record Result(int exit, String out, String err, long micros) {}

  /** {@code nsenter --net=PATH nft -f -} with the script. */
  static Result nft(String path, String script) throws IOException {
    String nft = resolve("nft");
    if (nft == null) {
      throw new IOException("nft not found on PATH or in " + TOOL_DIRS + " (install nftables)");
    }
    return run(nsenter(path, nft, "-f", "-"), script);
  }

  static List<String> nsenter(String path, String... cmd) throws IOException {
    String nsenter = resolve("nsenter");
    if (nsenter == null) {
      throw new IOException("nsenter not found on PATH or in " + TOOL_DIRS + " (install util-linux)");
    }
    List<String> argv = new ArrayList<>(List.of(nsenter, "--net=" + sandboxPath(path), "--"));
    argv.addAll(List.of(cmd));
    return argv;
  }

  static Result run(List<String> argv, String stdin) throws IOException {
    ProcessBuilder pb = new ProcessBuilder(argv);
    pb.environment().put("LC_ALL", "C");
    if (stdin == null) {
      pb.redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
    }
    long t0 = System.nanoTime();
    Process p = pb.start();
    CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> readAll(p.getErrorStream()), PUMPS);
    CompletableFuture<String> out = CompletableFuture.supplyAsync(() -> readAll(p.getInputStream()), PUMPS);
    if (stdin != null) {
      try (OutputStream os = p.getOutputStream()) {
        os.write(stdin.getBytes(StandardCharsets.UTF_8));
      } catch (IOException ignored) {
        // the tool exited early; its exit code and stderr say why
      }
    }
    try {
      if (!p.waitFor(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
        p.destroyForcibly();
        throw new IOException(String.join(" ", argv) + " did not finish in " + TIMEOUT.toSeconds() + " s");
      }
    } catch (InterruptedException e) {
      p.destroyForcibly();
      Thread.currentThread().interrupt();
      throw new IOException("interrupted running " + String.join(" ", argv));
    }
    return new Result(p.exitValue(), out.join(), err.join(), (System.nanoTime() - t0) / 1000);
  }

  /** All of a tool's output; what a broken pipe cut off is lost, the exit code says the rest. */
  private static String readAll(InputStream is) {
    try (is) {
      return new String(is.readAllBytes(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "";
    }
  }

  static String resolve(String name) {
    return io.flannelnp.flannel.Kernel.resolve(name);
  }
}
