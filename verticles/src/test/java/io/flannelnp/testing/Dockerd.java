package io.flannelnp.testing;

import io.flannelnp.testing.Netns.Result;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * One real dockerd (Debian's docker.io 20.10) for a test, isolated the way the lab's node-init.sh
 * does it: its own network namespace {@code fnd-<6 hex>} (a veth eth0 looped inside it, with a benchmark-range
 * address, nothing routed anywhere), a private mount + UTS namespace with its own /run, /sys and a
 * tmpfs /var/lib/docker, and containers under the cgroup parent {@code /fnd/<name>}. It is a
 * single-node Swarm manager and holds a busybox image imported from busybox-static.
 *
 * <p>{@link #close()} stops dockerd by PID, kills by PID whatever is left in its namespaces and
 * cgroups, removes the cgroups, the network namespace and the state directory. Commands are
 * argument lists, never shell strings. Needs root.
 */
public final class Dockerd implements AutoCloseable {
  public static final String IMAGE = "fnd/busybox:latest";
  private static final String ADDRESS = "198.18.77.2";
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final Path DOCKER_CLI = Path.of("/usr/bin/docker"); // 20.10, matching the daemon

  /** Makes the private view of the host and execs dockerd (PID preserved for the caller). */
  private static final String NODE_INIT = """
      #!/bin/bash
      # node-init.sh DIR IP NAME: inside a new mount+UTS namespace (unshare --propagation slave)
      set -euo pipefail
      dir="$1"; ip="$2"; name="$3"
      hostname "$name"
      # a sysfs of this netns, keeping the cgroup mounts
      mkdir -p "$dir/.cg"
      mount -n --rbind /sys/fs/cgroup "$dir/.cg"
      mount -n -t sysfs -o nosuid,nodev,noexec sysfs /sys
      mount -n --rbind "$dir/.cg" /sys/fs/cgroup
      umount -n -R "$dir/.cg"
      rmdir "$dir/.cg"
      # own /run (plugins, containerd shims, docker.sock)
      mount -n --bind "$dir/run" /run
      mkdir -p /run/lock /run/docker/netns
      # own /var/lib/docker: an overlay over /var/lib so it exists here only, data on tmpfs
      mkdir -p "$dir/varlib/upper" "$dir/varlib/work"
      mount -n -t overlay fnd-varlib -o "lowerdir=/var/lib,upperdir=$dir/varlib/upper,workdir=$dir/varlib/work" /var/lib
      mkdir -p /var/lib/docker
      # /etc too: dockerd 20.10 writes /etc/docker/key.json and has no flag to move it
      mkdir -p "$dir/etc/upper" "$dir/etc/work"
      mount -n -t overlay fnd-etc -o "lowerdir=/etc,upperdir=$dir/etc/upper,workdir=$dir/etc/work" /etc
      mount -n -t tmpfs -o mode=0711,size=2g fnd-lib /var/lib/docker
      mount -n --make-rshared /
      exec dockerd --data-root /var/lib/docker --exec-root /run/docker --pidfile /run/docker.pid \\
        -H unix:///run/docker.sock --config-file "$dir/daemon.json" \\
        --swarm-default-advertise-addr "$ip" --log-level warn
      """;

  private final String name;
  private final Path dir;
  private Process process;
  private String mountNs = "";
  private boolean netnsMade;

  private Dockerd() {
    byte[] b = new byte[3];
    RANDOM.nextBytes(b);
    name = "fnd-" + HexFormat.of().formatHex(b);
    dir = Path.of("/tmp", name);
  }

  /** Starts dockerd, makes it a Swarm manager and imports {@link #IMAGE}. */
  public static Dockerd start() {
    for (String[] need : new String[][] {{"/usr/sbin/dockerd", "docker.io"}, {DOCKER_CLI.toString(), "docker.io"},
        {"/usr/bin/busybox", "busybox-static"}}) {
      if (!Files.isExecutable(Path.of(need[0]))) {
        throw new AssertionError(need[0] + " is missing: install the Debian package " + need[1]);
      }
    }
    Dockerd d = new Dockerd();
    try {
      d.launch();
      d.docker("swarm", "init", "--advertise-addr", ADDRESS).ok();
      d.importImage();
      return d;
    } catch (RuntimeException | Error e) {
      String log = d.logTail();
      try {
        d.close();
      } catch (RuntimeException | Error suppressed) {
        e.addSuppressed(suppressed);
      }
      throw new AssertionError("dockerd did not come up: " + e.getMessage() + "\n" + log, e);
    }
  }

  public String name() {
    return name;
  }

  /** Host-side path of dockerd's API socket (inside its mount namespace: /run/docker.sock). */
  public Path socket() {
    return dir.resolve("run/docker.sock");
  }

  /** A directory of this fixture for a test's own files (removed at close). */
  public Path dir() {
    return dir;
  }

  private void launch() {
    try {
      Files.createDirectories(dir.resolve("run"));
      Files.createDirectories(dir.resolve("cli"));
      Files.writeString(dir.resolve("daemon.json"), """
          {"storage-driver": "overlay2", "cgroup-parent": "/fnd/%s", "shutdown-timeout": 3,
           "live-restore": false, "bridge": "none", "log-driver": "json-file", "log-opts": {"max-size": "1m"}}
          """.formatted(name));
      Path init = dir.resolve("node-init.sh");
      Files.writeString(init, NODE_INIT);
      init.toFile().setExecutable(true);
    } catch (IOException e) {
      throw new AssertionError("cannot prepare " + dir + ": " + e.getMessage(), e);
    }
    run(List.of("ip", "netns", "add", name), Map.of()).ok();
    netnsMade = true;
    run(List.of("ip", "-n", name, "-batch", "-"), Map.of(), String.join("\n",
        "link set lo up",
        "link add eth0 type veth peer name eth0p",
        "link set eth0p up",
        "addr add " + ADDRESS + "/24 dev eth0",
        "link set eth0 up") + "\n").ok();
    ProcessBuilder pb = new ProcessBuilder("setsid", "nsenter", "--net=/run/netns/" + name, "--",
        "unshare", "--mount", "--uts", "--propagation", "slave", "--",
        dir.resolve("node-init.sh").toString(), dir.toString(), ADDRESS, name);
    pb.redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
    pb.redirectErrorStream(true);
    pb.redirectOutput(dir.resolve("dockerd.log").toFile());
    try {
      process = pb.start();
    } catch (IOException e) {
      throw new AssertionError("cannot start dockerd: " + e.getMessage(), e);
    }
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (docker("version").exit() != 0) {
      if (!process.isAlive() || System.nanoTime() > deadline) {
        throw new AssertionError("dockerd " + name + " did not answer within 60 s");
      }
      sleep(200);
    }
    mountNs = readLink(Path.of("/proc", Long.toString(process.pid()), "ns", "mnt"));
  }

  private void importImage() {
    Path rootfs = dir.resolve("img/rootfs");
    try {
      for (String d : List.of("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www")) {
        Files.createDirectories(rootfs.resolve(d));
      }
      Files.copy(Path.of("/usr/bin/busybox"), rootfs.resolve("bin/busybox"));
      rootfs.resolve("bin/busybox").toFile().setExecutable(true, false);
      for (String applet : run(List.of("/usr/bin/busybox", "--list"), Map.of()).ok().out().split("\n")) {
        String a = applet.strip();
        if (!a.isEmpty() && !a.equals("busybox") && a.matches("[A-Za-z0-9._\\[-]+")) {
          Files.createSymbolicLink(rootfs.resolve("bin").resolve(a), Path.of("busybox"));
        }
      }
      Files.writeString(rootfs.resolve("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n");
      Files.writeString(rootfs.resolve("etc/group"), "root:x:0:\nnobody:x:65534:\n");
      Files.writeString(rootfs.resolve("var/www/index.html"), "<h1>fnd</h1>\n");
      rootfs.resolve("tmp").toFile().setWritable(true, false);
    } catch (IOException e) {
      throw new AssertionError("cannot build the busybox rootfs: " + e.getMessage(), e);
    }
    Path tar = dir.resolve("img/rootfs.tar");
    run(List.of("tar", "-C", rootfs.toString(), "-cf", tar.toString(), "."), Map.of()).ok();
    docker("import", "--change", "CMD [\"sh\"]", "--change", "ENV PATH=/bin", tar.toString(), IMAGE).ok();
  }

  /** The docker CLI (20.10) against this daemon. */
  public Result docker(String... args) {
    List<String> argv = new ArrayList<>(List.of(DOCKER_CLI.toString()));
    argv.addAll(List.of(args));
    return run(argv, Map.of("DOCKER_HOST", "unix://" + socket(), "DOCKER_CONFIG", dir.resolve("cli").toString()));
  }

  /** The last lines of dockerd's log, for failure messages. */
  public String logTail() {
    try {
      List<String> lines = Files.readAllLines(dir.resolve("dockerd.log"));
      return String.join("\n", lines.subList(Math.max(0, lines.size() - 20), lines.size()));
    } catch (IOException e) {
      return "(no dockerd log)";
    }
  }

  @Override
  public void close() {
    List<String> problems = new ArrayList<>();
    if (process != null && process.isAlive()) {
      process.destroy(); // SIGTERM: dockerd stops its containers (shutdown-timeout 3 s)
      try {
        if (!process.waitFor(20, TimeUnit.SECONDS)) {
          process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    // containerd, shims and container processes: by PID, found through our namespaces and cgroups
    for (int round = 0; round < 50; round++) {
      Set<Long> left = leftovers();
      if (left.isEmpty()) {
        break;
      }
      for (long pid : left) {
        ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
      }
      sleep(100);
      if (round == 49) {
        problems.add("processes still alive: " + left);
      }
    }
    for (Path cg : cgroupDirs()) {
      try (Stream<Path> s = Files.walk(cg)) {
        for (Path p : s.filter(Files::isDirectory).sorted(Comparator.reverseOrder()).toList()) {
          if (!p.toFile().delete()) {
            problems.add("cgroup " + p + " not removed");
          }
        }
      } catch (IOException e) {
        problems.add("cgroup " + cg + ": " + e.getMessage());
      }
      Path parent = cg.getParent(); // /sys/fs/cgroup/<ctl>/fnd, shared by concurrent fixtures
      String[] rest = parent.toFile().list();
      if (rest != null && Stream.of(rest).noneMatch(n -> n.startsWith("fnd-"))) {
        parent.toFile().delete(); // may race with another fixture: then it is theirs to remove
      }
    }
    if (netnsMade) {
      Result r = run(List.of("ip", "netns", "del", name), Map.of());
      if (r.exit() != 0) {
        problems.add("netns " + name + ": " + r.err().strip());
      }
    }
    try {
      if (Files.exists(dir)) {
        try (Stream<Path> s = Files.walk(dir)) {
          for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
            Files.deleteIfExists(p);
          }
        }
      }
    } catch (IOException e) {
      problems.add("state dir " + dir + ": " + e.getMessage());
    }
    if (!problems.isEmpty()) {
      throw new AssertionError("Dockerd " + name + " left things behind: " + problems);
    }
  }

  private List<Path> cgroupDirs() {
    List<Path> out = new ArrayList<>();
    try (Stream<Path> ctl = Files.list(Path.of("/sys/fs/cgroup"))) {
      ctl.forEach(c -> {
        Path p = c.resolve("fnd").resolve(name);
        if (Files.isDirectory(p)) {
          out.add(p);
        }
      });
    } catch (IOException e) {
      // no cgroup v1 hierarchy: nothing of ours there
    }
    return out;
  }

  /** Processes in our netns, our mount namespace or our cgroups. */
  private Set<Long> leftovers() {
    Set<Long> pids = new LinkedHashSet<>();
    if (netnsMade) {
      for (String l : run(List.of("ip", "netns", "pids", name), Map.of()).out().split("\n")) {
        if (l.strip().matches("\\d+")) {
          pids.add(Long.parseLong(l.strip()));
        }
      }
    }
    for (Path cg : cgroupDirs()) {
      try (Stream<Path> s = Files.walk(cg)) {
        s.filter(p -> p.getFileName().toString().equals("cgroup.procs")).forEach(p -> {
          try {
            for (String l : Files.readAllLines(p)) {
              if (l.strip().matches("\\d+")) {
                pids.add(Long.parseLong(l.strip()));
              }
            }
          } catch (IOException e) {
            // the cgroup went away meanwhile
          }
        });
      } catch (IOException | java.io.UncheckedIOException e) {
        // the cgroup went away meanwhile
      }
    }
    if (!mountNs.isEmpty()) {
      try (Stream<Path> procs = Files.list(Path.of("/proc"))) {
        procs.filter(p -> p.getFileName().toString().matches("\\d+")).forEach(p -> {
          if (mountNs.equals(readLink(p.resolve("ns/mnt")))) {
            pids.add(Long.parseLong(p.getFileName().toString()));
          }
        });
      } catch (IOException e) {
        // /proc always lists
      }
    }
    pids.remove(ProcessHandle.current().pid());
    return pids;
  }

  private static String readLink(Path p) {
    try {
      return Files.readSymbolicLink(p).toString();
    } catch (IOException | UnsupportedOperationException e) {
      return "";
    }
  }

  private static void sleep(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError("interrupted", e);
    }
  }

  static Result run(List<String> argv, Map<String, String> env) {
    return run(argv, env, null);
  }

  /** Runs a command (120 s limit: dockerd and swarm commands can be slow), output captured. */
  static Result run(List<String> argv, Map<String, String> env, String stdin) {
    return Netns.run(argv, env, stdin, 120);
  }
}
