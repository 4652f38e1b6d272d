package io.flannelnp.replay;

import io.flannelnp.config.Config;
import io.flannelnp.config.ConfigException;
import io.flannelnp.config.Setting;
import io.flannelnp.log.Logging;
import io.flannelnp.replay.Recording.ReplayException;
import java.io.IOException;
import java.io.PrintStream;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@code replay --from-revision N [--to-revision M] [--node IP] [--plane flannel|lb|dns|ipam] [--file F]}
 * and {@code record --from-revision N [--to-revision M] --out FILE}. Without {@code --file} the history comes
 * from the etcd of ETCD_ENDPOINTS under ETCD_PREFIX (the daemon's settings). Exit 0 on success,
 * 2 on bad arguments, 1 when etcd cannot deliver the history (e.g. compacted).
 */
public final class ReplayCommand {
  private static final Set<String> PLANES = Set.of("flannel", "lb", "dns", "ipam");
  static final String USAGE = "usage: java -jar flannel-np.jar replay --from-revision N [--to-revision M]"
      + " [--node PUBLIC-IP] [--plane flannel|lb|dns|ipam]... [--file F]\n"
      + "       java -jar flannel-np.jar record --from-revision N [--to-revision M] --out FILE";

  private ReplayCommand() {}

  public static int run(String[] args, Map<String, String> env, PrintStream out, PrintStream err) {
    Logging.configure("error");
    String cmd = args[0];
    Map<String, String> opts = new LinkedHashMap<>();
    Set<String> planes = new LinkedHashSet<>();
    if (List.of(args).subList(1, args.length).stream().anyMatch(a -> a.equals("--help") || a.equals("-h"))) {
      out.println(USAGE);
      out.println(cmd.equals("record")
          ? "Writes the etcd history under ETCD_PREFIX (from ETCD_ENDPOINTS, with the daemon's TLS and auth settings) to FILE (mode 0600)."
          : "Replays the history (from etcd, as the daemon's settings reach it, or from a record --out FILE) through the planes' planners and prints what each would apply.");
      out.println("exit codes: 0 ok, 1 etcd cannot deliver the history, 2 bad arguments or settings");
      return 0;
    }
    List<String> known = cmd.equals("record") ? List.of("--from-revision", "--to-revision", "--out")
        : List.of("--from-revision", "--to-revision", "--node", "--plane", "--file");
    for (int i = 1; i < args.length; i++) {
      String a = args[i];
      String v = null;
      if (a.contains("=")) {
        v = a.substring(a.indexOf('=') + 1);
        a = a.substring(0, a.indexOf('='));
      } else if (i + 1 < args.length) {
        v = args[++i];
      }
      if (!known.contains(a)) {
        return usage(err, cmd + ": unknown option '" + a + "'");
      }
      if (v == null || v.isEmpty()) {
        return usage(err, cmd + ": " + a + " needs a value");
      }
      if (a.equals("--plane")) {
        if (!PLANES.contains(v)) {
          return usage(err, cmd + ": --plane '" + v + "' is not one of flannel, lb, dns, ipam");
        }
        planes.add(v);
      } else {
        opts.put(a, v);
      }
    }
    long from = revision(opts.get("--from-revision"));
    long to = opts.containsKey("--to-revision") ? revision(opts.get("--to-revision")) : 0;
    if (from < 1) {
      return usage(err, cmd + ": --from-revision must be a revision number of 1 or more, got '"
          + opts.getOrDefault("--from-revision", "") + "'");
    }
    if (opts.containsKey("--to-revision") && to < from) {
      return usage(err, cmd + ": --to-revision '" + opts.get("--to-revision") + "' must be a number not below --from-revision "
          + from);
    }
    if (cmd.equals("record") && !opts.containsKey("--out")) {
      return usage(err, "record: --out FILE is required");
    }
    if (planes.isEmpty()) {
      planes.addAll(List.of("flannel", "lb", "dns", "ipam"));
    }
    if (cmd.equals("replay") && planes.contains("flannel") && !opts.containsKey("--node")) {
      if (opts.containsKey("--file") || !env.containsKey("DEFAULT_FLANNEL_OPTIONS")) {
        planes.remove("flannel"); // which node's VXLAN plan: only known with --node
        err.println("flannel-np " + cmd + ": no --node PUBLIC-IP given; the flannel plane is left out");
      }
    }
    try {
      Recording rec;
      if (opts.containsKey("--file")) {
        rec = Recording.read(Path.of(opts.get("--file")));
        if (from < rec.fromRevision()) {
          throw new ReplayException("--from-revision " + from + " is before the recording, which starts at revision "
              + rec.fromRevision());
        }
      } else {
        String endpoints = env.getOrDefault(Setting.ETCD_ENDPOINTS.name(), "");
        if (endpoints.isBlank()) {
          return usage(err, cmd + ": set ETCD_ENDPOINTS (and ETCD_PREFIX) as for the daemon, or give --file");
        }
        Map<String, String> probe = new LinkedHashMap<>(env);
        probe.putIfAbsent(Setting.AVAILABLE_SUBNETS.name(), "10.0.0.0/8");
        Config c = Config.fromEnv(probe, () -> "replay");
        rec = Recording.fromEtcd(c.etcdEndpoints(), c.etcdTls(), c.etcdAuth(), c.etcdPrefix(), from, to, 30_000);
      }
      if (cmd.equals("record")) {
        Path file = Path.of(opts.get("--out"));
        try (Writer w = Files.newBufferedWriter(create0600(file), StandardCharsets.UTF_8)) {
          rec.write(w);
        }
        err.println("flannel-np record: revisions " + rec.fromRevision() + ".." + rec.toRevision() + " ("
            + rec.steps().size() + " with changes under " + rec.prefix() + ") written to " + file);
        return 0;
      }
      String node = opts.get("--node");
      if (node == null && planes.contains("flannel")) {
        node = Config.fromEnv(withSubnets(env), () -> "replay").flannelOptions().publicIp().orElse(null);
      }
      int n = new Replayer(rec.prefix(), node, planes, out).run(rec, from, to);
      out.flush();
      err.println("flannel-np replay: " + n + " revisions replayed (" + String.join(",", planes) + ")");
      return 0;
    } catch (ConfigException | Recording.BadFileException e) {
      err.println("flannel-np " + cmd + ": " + e.getMessage());
      return 2;
    } catch (ReplayException e) {
      err.println("flannel-np " + cmd + ": " + e.getMessage());
      return 1;
    } catch (IOException e) {
      err.println("flannel-np " + cmd + ": " + e);
      return 1;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return 1;
    }
  }

  /**
   * The recording holds every key and value under the prefix: the file is made readable by its
   * owner only, whatever the umask, before anything is written to it (an existing file is
   * truncated and its mode set the same way).
   */
  private static Path create0600(Path file) throws IOException {
    java.util.Set<java.nio.file.attribute.PosixFilePermission> rw =
        java.nio.file.attribute.PosixFilePermissions.fromString("rw-------");
    if (Files.exists(file, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
      Files.setPosixFilePermissions(file, rw);
    } else {
      Files.createFile(file, java.nio.file.attribute.PosixFilePermissions.asFileAttribute(rw));
    }
    return file;
  }

  private static Map<String, String> withSubnets(Map<String, String> env) {
    Map<String, String> m = new LinkedHashMap<>(env);
    m.putIfAbsent(Setting.ETCD_ENDPOINTS.name(), "http://127.0.0.1:2379");
    m.putIfAbsent(Setting.AVAILABLE_SUBNETS.name(), "10.0.0.0/8");
    return m;
  }

  private static long revision(String s) {
    return s != null && s.matches("\\d{1,18}") ? Long.parseLong(s) : -1;
  }

  private static int usage(PrintStream err, String msg) {
    err.println("flannel-np " + msg);
    err.println(USAGE);
    return 2;
  }
}
