package io.flannelnp.lb;

import io.flannelnp.flannel.Kernel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;

/**
 * Ends the UDP flows that still point at a task that left a VIP, as kube-proxy does: conntrack
 * keeps a UDP "connection" alive as long as its client keeps sending (a DNS or statsd client with
 * one long-lived socket), so without this such a client would keep talking to a stopped task
 * forever. TCP is left alone: an established connection may finish, and one to a dead task ends
 * by itself. Uses the {@code conntrack} tool (Debian's conntrack package) in the target
 * namespace; without it this is skipped with one notice. Addresses come from
 * {@link LbDesired} (validated dotted quads); commands run from argument lists.
 */
final class Conntrack {
  private static final Logger LOG = Logger.getLogger(Conntrack.class.getName());
  private static final List<String> DIRS = List.of("/usr/sbin", "/sbin", "/usr/bin", "/bin");

  /** One task that left one VIP. */
  record Gone(String vip, String task) {}

  private final Optional<String> netns;
  private final String tool;
  private boolean told;

  Conntrack(Kernel kernel) {
    this.netns = kernel.netns();
    this.tool = DIRS.stream().map(d -> Path.of(d, "conntrack")).filter(Files::isExecutable).map(Path::toString)
        .findFirst().orElse(null);
  }

  boolean available() {
    return tool != null;
  }

  /** Deletes the UDP conntrack entries from each VIP to its gone task; returns how many commands ran. */
  int flush(List<Gone> gone) {
    if (gone.isEmpty()) {
      return 0;
    }
    if (tool == null) {
      if (!told) {
        told = true;
        LOG.info("conntrack tool not found (install the conntrack package): UDP flows to tasks that left a VIP "
            + "are not ended; they last until their client pauses for the UDP conntrack timeout");
      }
      return 0;
    }
    int n = 0;
    for (Gone g : gone) {
      List<String> argv = new ArrayList<>();
      // nsenter enters only the network namespace; `ip netns exec` also builds a mount namespace
      // and remounts /sys, which costs far more than the conntrack call itself
      netns.ifPresent(ns -> {
        String nsenter = Kernel.resolve("nsenter");
        argv.addAll(nsenter != null ? List.of(nsenter, "--net=/var/run/netns/" + Kernel.netnsName(ns))
            : List.of("ip", "netns", "exec", Kernel.netnsName(ns)));
      });
      argv.addAll(List.of(tool, "-D", "-p", "udp", "--orig-dst", Kernel.ipv4(g.vip()), "--reply-src",
          Kernel.ipv4(g.task())));
      try {
        Process p = new ProcessBuilder(argv).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .start();
        if (!p.waitFor(10, TimeUnit.SECONDS)) {
          p.destroyForcibly();
          LOG.warning("conntrack -D for " + g + " did not finish in 10 s");
        }
        n++; // exit 1 only means "0 flow entries have been deleted"
      } catch (IOException e) {
        LOG.warning("cannot run conntrack: " + e.getMessage());
        return n;
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return n;
      }
    }
    return n;
  }

  /** The tasks that left each VIP between {@code before} and {@code after} (both VIP → tasks). */
  static List<Gone> gone(java.util.Map<String, List<String>> before, java.util.Map<String, List<String>> after) {
    List<Gone> out = new ArrayList<>();
    before.forEach((vip, tasks) -> {
      List<String> now = after.getOrDefault(vip, List.of());
      for (String t : tasks) {
        if (!now.contains(t)) {
          out.add(new Gone(vip, t));
        }
      }
    });
    return out;
  }
}
