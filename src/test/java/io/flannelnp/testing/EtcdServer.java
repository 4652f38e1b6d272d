package io.flannelnp.testing;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real etcd (Debian's etcd-server) on free loopback ports, data directory on tmpfs, owned by the
 * test: started, killed, restarted on the same data, and removed without a trace.
 */
public final class EtcdServer implements AutoCloseable {
  private final Path dataDir;
  private final int clientPort;
  private final int peerPort;
  private final Path log;
  private Process process;
  private Path tlsDir; // with ca.pem, server.pem, server-key.pem: serve https and require client certs

  private EtcdServer(Path dataDir, int clientPort, int peerPort) {
    this.dataDir = dataDir;
    this.clientPort = clientPort;
    this.peerPort = peerPort;
    this.log = dataDir.resolveSibling(dataDir.getFileName() + ".log");
  }

  /**
   * An etcd that serves https only and requires client certificates signed by the CA in
   * {@code tlsDir} (ca.pem, server.pem, server-key.pem).
   */
  public static EtcdServer startTls(Path tlsDir) {
    try {
      Path base = Files.isDirectory(Path.of("/dev/shm")) ? Path.of("/dev/shm") : Path.of(System.getProperty("java.io.tmpdir"));
      Path dir = Files.createTempDirectory(base, "fnp-etcd-");
      EtcdServer s = new EtcdServer(dir.resolve("data"), freePort(), freePort());
      s.tlsDir = tlsDir;
      Runtime.getRuntime().addShutdownHook(new Thread(s::close));
      s.launch();
      return s;
    } catch (IOException e) {
      throw new IllegalStateException(e);
    }
  }

  public static EtcdServer start() {
    try {
      Path base = Files.isDirectory(Path.of("/dev/shm")) ? Path.of("/dev/shm") : Path.of(System.getProperty("java.io.tmpdir"));
      Path dir = Files.createTempDirectory(base, "fnp-etcd-");
      EtcdServer s = new EtcdServer(dir.resolve("data"), freePort(), freePort());
      Runtime.getRuntime().addShutdownHook(new Thread(s::close));
      s.launch();
      return s;
    } catch (IOException e) {
      throw new IllegalStateException(e);
    }
  }

  public String endpoint() {
    return (tlsDir == null ? "http" : "https") + "://127.0.0.1:" + clientPort;
  }

  public List<String> endpoints() {
    return List.of(endpoint());
  }

  public int clientPort() {
    return clientPort;
  }

  public synchronized void launch() {
    if (process != null && process.isAlive()) {
      return;
    }
    String etcd = Files.isExecutable(Path.of("/usr/bin/etcd")) ? "/usr/bin/etcd" : "etcd";
    java.util.List<String> cmd = new java.util.ArrayList<>(java.util.List.of(etcd,
        "--name", "t1",
        "--data-dir", dataDir.toString(),
        "--listen-client-urls", endpoint(),
        "--advertise-client-urls", endpoint(),
        "--listen-peer-urls", "http://127.0.0.1:" + peerPort,
        "--initial-advertise-peer-urls", "http://127.0.0.1:" + peerPort,
        "--initial-cluster", "t1=http://127.0.0.1:" + peerPort,
        "--logger", "zap", "--log-level", "error"));
    if (tlsDir != null) {
      cmd.addAll(java.util.List.of("--cert-file", tlsDir.resolve("server.pem").toString(),
          "--key-file", tlsDir.resolve("server-key.pem").toString(),
          "--trusted-ca-file", tlsDir.resolve("ca.pem").toString(), "--client-cert-auth"));
    }
    ProcessBuilder pb = new ProcessBuilder(cmd)
        .redirectErrorStream(true)
        .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
    pb.environment().remove("ETCD_NAME");
    try {
      process = pb.start();
    } catch (IOException e) {
      throw new IllegalStateException("cannot start etcd (apt-get install etcd-server): " + e.getMessage(), e);
    }
    awaitHealthy(Duration.ofSeconds(20));
  }

  private void awaitHealthy(Duration max) {
    if (tlsDir != null) {
      awaitListening(max);
      return;
    }
    HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofMillis(300)).build();
    long deadline = System.nanoTime() + max.toNanos();
    while (System.nanoTime() < deadline) {
      if (!process.isAlive()) {
        throw new IllegalStateException("etcd exited with " + process.exitValue() + ": " + tail());
      }
      try {
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(endpoint() + "/health"))
            .timeout(Duration.ofSeconds(1)).build(), HttpResponse.BodyHandlers.ofString());
        if (r.statusCode() == 200 && r.body().contains("\"true\"")) {
          return;
        }
      } catch (IOException e) {
        // not yet listening
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IllegalStateException(e);
      }
      sleep(50);
    }
    throw new IllegalStateException("etcd not healthy within " + max + ": " + tail());
  }

  private void awaitListening(Duration max) {
    long deadline = System.nanoTime() + max.toNanos();
    while (System.nanoTime() < deadline) {
      if (!process.isAlive()) {
        throw new IllegalStateException("etcd exited with " + process.exitValue() + ": " + tail());
      }
      try (java.net.Socket sock = new java.net.Socket("127.0.0.1", clientPort)) {
        sleep(300); // listening; give it a moment to elect itself
        return;
      } catch (IOException e) {
        sleep(50);
      }
    }
    throw new IllegalStateException("etcd not listening within " + max + ": " + tail());
  }

  /** SIGKILL: no chance to flush or say goodbye, like a crashed or partitioned etcd. */
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

  public synchronized boolean isRunning() {
    return process != null && process.isAlive();
  }

  private String tail() {
    try {
      List<String> lines = Files.readAllLines(log);
      return String.join("\n", lines.subList(Math.max(0, lines.size() - 10), lines.size()));
    } catch (IOException e) {
      return "(no log)";
    }
  }

  @Override
  public synchronized void close() {
    kill();
    Path dir = dataDir.getParent();
    if (dir != null && Files.exists(dir)) {
      try (Stream<Path> s = Files.walk(dir)) {
        s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
      } catch (IOException ignored) {
        // best effort
      }
    }
  }

  public static int freePort() {
    try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      s.setReuseAddress(true);
      return s.getLocalPort();
    } catch (IOException e) {
      throw new IllegalStateException(e);
    }
  }

  static void sleep(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
