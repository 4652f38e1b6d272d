package io.flannelnp.testing;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * A real etcd cluster of N members (Debian's etcd-server) on free loopback ports, data on tmpfs,
 * for tests about faults: a member (or all) can be killed and restarted on its data, frozen
 * (SIGSTOP) and thawed, and the leader found. Everything is removed on close.
 */
public final class EtcdCluster implements AutoCloseable {
  private final Path dir;
  private final List<Member> members = new ArrayList<>();

  /** One member: its ports, data directory and process. */
  public final class Member {
    final String name;
    final int clientPort;
    final int peerPort;
    final Path data;
    final Path log;
    Process process;
    boolean started;

    Member(String name, int clientPort, int peerPort) {
      this.name = name;
      this.clientPort = clientPort;
      this.peerPort = peerPort;
      this.data = dir.resolve(name);
      this.log = dir.resolve(name + ".log");
    }

    public String endpoint() {
      return "http://127.0.0.1:" + clientPort;
    }

    synchronized void launch() {
      if (process != null && process.isAlive()) {
        return;
      }
      String etcd = Files.isExecutable(Path.of("/usr/bin/etcd")) ? "/usr/bin/etcd" : "etcd";
      String cluster = members.stream().map(m -> m.name + "=http://127.0.0.1:" + m.peerPort)
          .collect(Collectors.joining(","));
      ProcessBuilder pb = new ProcessBuilder(etcd, "--name", name, "--data-dir", data.toString(),
          "--listen-client-urls", endpoint(), "--advertise-client-urls", endpoint(),
          "--listen-peer-urls", "http://127.0.0.1:" + peerPort,
          "--initial-advertise-peer-urls", "http://127.0.0.1:" + peerPort,
          "--initial-cluster", cluster, "--initial-cluster-state", started ? "existing" : "new",
          "--initial-cluster-token", dir.getFileName().toString(),
          "--heartbeat-interval", "100", "--election-timeout", "1000",
          "--logger", "zap", "--log-level", "error")
          .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
      pb.environment().keySet().removeIf(k -> k.startsWith("ETCD_"));
      try {
        process = pb.start();
      } catch (IOException e) {
        throw new IllegalStateException("cannot start etcd (apt-get install etcd-server): " + e.getMessage(), e);
      }
      started = true;
    }

    /** SIGKILL: a crashed member. */
    public synchronized void kill() {
      if (process != null) {
        process.destroyForcibly();
        try {
          process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
        process = null;
      }
    }

    /** Starts a killed member again on its data; it rejoins the cluster. */
    public void restart() {
      launch();
      awaitHealthy(List.of(this), Duration.ofSeconds(30));
    }

    /** SIGSTOP: the member is still there (its sockets accept) but answers nothing. */
    public void freeze() {
      signal("STOP");
    }

    public void thaw() {
      signal("CONT");
    }

    private synchronized void signal(String sig) {
      if (process == null) {
        return;
      }
      try {
        new ProcessBuilder("kill", "-" + sig, Long.toString(process.pid())).inheritIO().start().waitFor();
      } catch (IOException e) {
        throw new IllegalStateException(e);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }

    /** Whether this member says it is the leader (false when it does not answer). */
    public boolean isLeader() {
      try {
        HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create(endpoint() + "/v3/maintenance/status"))
            .timeout(Duration.ofSeconds(1)).POST(HttpRequest.BodyPublishers.ofString("{}")).build(),
            HttpResponse.BodyHandlers.ofString());
        io.vertx.core.json.JsonObject j = new io.vertx.core.json.JsonObject(r.body());
        String leader = String.valueOf(j.getValue("leader"));
        String self = String.valueOf(j.getJsonObject("header").getValue("member_id"));
        return leader.equals(self);
      } catch (IOException | RuntimeException e) {
        return false;
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return false;
      }
    }
  }

  private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofMillis(300)).build();

  private EtcdCluster(Path dir) {
    this.dir = dir;
  }

  public static EtcdCluster start(int size) {
    try {
      Path base = Files.isDirectory(Path.of("/dev/shm")) ? Path.of("/dev/shm") : Path.of(System.getProperty("java.io.tmpdir"));
      EtcdCluster c = new EtcdCluster(Files.createTempDirectory(base, "fnp-etcd-cluster-"));
      for (int i = 0; i < size; i++) {
        c.members.add(c.new Member("m" + i, EtcdServer.freePort(), EtcdServer.freePort()));
      }
      Runtime.getRuntime().addShutdownHook(new Thread(c::close));
      c.members.forEach(Member::launch);
      c.awaitHealthy(c.members, Duration.ofSeconds(30));
      return c;
    } catch (IOException e) {
      throw new IllegalStateException(e);
    }
  }

  public List<String> endpoints() {
    return members.stream().map(Member::endpoint).toList();
  }

  public Member member(int i) {
    return members.get(i);
  }

  public List<Member> members() {
    return List.copyOf(members);
  }

  /** The member that leads now (waits up to 10 s for an election). */
  public Member leader() {
    long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
    while (System.nanoTime() < deadline) {
      for (Member m : members) {
        if (m.isLeader()) {
          return m;
        }
      }
      EtcdServer.sleep(100);
    }
    throw new IllegalStateException("no etcd member leads");
  }

  public void freezeAll() {
    members.forEach(Member::freeze);
  }

  public void thawAll() {
    members.forEach(Member::thaw);
  }

  public void killAll() {
    members.forEach(Member::kill);
  }

  public void restartAll() {
    members.forEach(Member::launch);
    awaitHealthy(members, Duration.ofSeconds(30));
  }

  /** Waits until each of {@code ms} answers /health with a leader elected. */
  void awaitHealthy(List<Member> ms, Duration max) {
    long deadline = System.nanoTime() + max.toNanos();
    for (Member m : ms) {
      while (true) {
        if (m.process == null || !m.process.isAlive()) {
          throw new IllegalStateException("etcd member " + m.name + " is not running: " + tail(m));
        }
        try {
          HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create(m.endpoint() + "/health"))
              .timeout(Duration.ofSeconds(1)).build(), HttpResponse.BodyHandlers.ofString());
          if (r.statusCode() == 200 && r.body().contains("\"true\"")) {
            break;
          }
        } catch (IOException e) {
          // not yet
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new IllegalStateException(e);
        }
        if (System.nanoTime() > deadline) {
          throw new IllegalStateException("etcd member " + m.name + " not healthy within " + max + ": " + tail(m));
        }
        EtcdServer.sleep(50);
      }
    }
  }

  private static String tail(Member m) {
    try {
      List<String> lines = Files.readAllLines(m.log);
      return String.join("\n", lines.subList(Math.max(0, lines.size() - 10), lines.size()));
    } catch (IOException e) {
      return "(no log)";
    }
  }

  @Override
  public synchronized void close() {
    members.forEach(m -> {
      m.thaw();
      m.kill();
    });
    if (Files.exists(dir)) {
      try (Stream<Path> s = Files.walk(dir)) {
        s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
      } catch (IOException ignored) {
        // best effort
      }
    }
  }
}
