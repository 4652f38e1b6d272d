package io.flannelnp.lb;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.Netns;
import io.vertx.core.json.JsonObject;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * The traffic ends of the load balancer tests, small Python programs run inside container
 * namespaces ({@code ip netns exec}): a task that answers every TCP connection and UDP datagram
 * with its name and the peer address it saw, and a client that makes a bounded number of
 * connections (or connects for a bounded time) and prints what answered as JSON. Traffic only
 * ever goes to addresses inside the test's namespaces.
 */
final class LbPeers implements AutoCloseable {
  static final String PYTHON = Files.isExecutable(Path.of("/usr/bin/python3")) ? "/usr/bin/python3" : "python3";

  static final String SERVER = """
      import socket, sys, threading
      name = sys.argv[1]
      def tcp(port):
          s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
          s.bind(("0.0.0.0", port)); s.listen(512)
          while True:
              c, a = s.accept()
              try:
                  c.sendall(("%s %s\\n" % (name, a[0])).encode())
              except OSError:
                  pass
              finally:
                  c.close()
      def udp(port):
          u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
          while True:
              d, a = u.recvfrom(2048)
              u.sendto(("%s %s\\n" % (name, a[0])).encode(), a)
      for p in sys.argv[2].split(","):
          threading.Thread(target=tcp, args=(int(p),), daemon=True).start()
      threading.Thread(target=udp, args=(int(sys.argv[3]),), daemon=True).start()
      import time; time.sleep(0.2)
      print("ready", flush=True)
      threading.Event().wait(600)
      """;

  /** argv: tcp|udp VIP PORT COUNT, or loop VIP PORT SECONDS INTERVAL_MS. */
  static final String CLIENT = """
      import json, socket, sys, time
      mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
      src = int(sys.argv[5]) if mode == "udp" and len(sys.argv) > 5 else 0
      ok, err, worst, n = {}, {}, 0.0, 0
      def one(proto):
          global n
          global worst
          t = time.monotonic()
          try:
              if proto == "tcp":
                  s = socket.create_connection((ip, port), timeout=2)
              else:
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
                  if src:
                      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                      s.bind(("0.0.0.0", src + (0 if len(sys.argv) > 6 else n)))
                  n += 1
                  s.connect((ip, port)); s.send(b"?")
              try:
                  k = s.recv(200).decode().strip()
                  ok[k] = ok.get(k, 0) + 1
              finally:
                  s.close()
          except Exception as e:
              k = type(e).__name__
              err[k] = err.get(k, 0) + 1
          worst = max(worst, (time.monotonic() - t) * 1000)
      if mode == "loop":
          end = time.monotonic() + float(sys.argv[4])
          while time.monotonic() < end:
              one("tcp"); time.sleep(int(sys.argv[5]) / 1000)
      else:
          for i in range(int(sys.argv[4])):
              one(mode)
      print(json.dumps({"ok": ok, "err": err, "worstMs": worst}))
      """;

  /** What a client run saw: answers ("NAME PEER" → count), errors (exception → count), slowest attempt. */
  record Seen(Map<String, Integer> ok, Map<String, Integer> err, double worstMs) {
    int total() {
      return ok.values().stream().mapToInt(Integer::intValue).sum() + err.values().stream().mapToInt(Integer::intValue).sum();
    }

    /** Answers per task name. */
    Map<String, Integer> byTask() {
      Map<String, Integer> m = new TreeMap<>();
      ok.forEach((k, v) -> m.merge(k.split(" ")[0], v, Integer::sum));
      return m;
    }

    /** Peer addresses a task saw. */
    List<String> peersOf(String task) {
      return ok.keySet().stream().filter(k -> k.startsWith(task + " ")).map(k -> k.split(" ")[1]).sorted().toList();
    }
  }

  private final Path dir;
  private final List<Process> servers = new ArrayList<>();

  LbPeers(Path dir) throws IOException {
    this.dir = dir;
    Files.writeString(dir.resolve("server.py"), SERVER);
    Files.writeString(dir.resolve("client.py"), CLIENT);
  }

  /** Starts a task answering on TCP {@code tcpPorts} and UDP {@code udpPort} in {@code ns}. */
  Process serve(String ns, String name, String tcpPorts, int udpPort) throws IOException {
    Process p = new ProcessBuilder("ip", "netns", "exec", ns, PYTHON, dir.resolve("server.py").toString(), name,
        tcpPorts, Integer.toString(udpPort)).redirectErrorStream(true).start();
    servers.add(p);
    BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
    CompletableFuture<String> line = CompletableFuture.supplyAsync(() -> {
      try {
        return r.readLine();
      } catch (IOException e) {
        return null;
      }
    });
    try {
      assertThat(line.get(15, TimeUnit.SECONDS)).as("task " + name + " in " + ns + " started").isEqualTo("ready");
    } catch (Exception e) {
      throw new AssertionError("task " + name + " did not start: " + e, e);
    }
    return p;
  }

  /**
   * {@code count} sequential TCP connections or UDP exchanges from {@code ns} to ip:port. UDP
   * exchanges use source ports never used before by this fixture: a reused source port would
   * continue an older flow that conntrack still maps to the task chosen back then.
   */
  Seen connect(String ns, String proto, String ip, int port, int count) {
    int src = 0;
    if (proto.equals("udp")) {
      src = nextUdpPort;
      nextUdpPort += count;
      if (nextUdpPort > 32000) {
        throw new IllegalStateException("out of fresh UDP source ports");
      }
    }
    return parse(Netns.run("ip", "netns", "exec", ns, PYTHON, dir.resolve("client.py").toString(), proto, ip,
        Integer.toString(port), Integer.toString(count), Integer.toString(src)).ok().out());
  }

  private int nextUdpPort = 10000;

  /** UDP exchanges from one fixed source port (one conntrack flow, as a long-lived socket makes). */
  Seen udpFrom(String ns, String ip, int port, int count, int srcPort) {
    return parse(Netns.run("ip", "netns", "exec", ns, PYTHON, dir.resolve("client.py").toString(), "udp", ip,
        Integer.toString(port), Integer.toString(count), Integer.toString(srcPort), "fixed").ok().out());
  }

  /** TCP connections from {@code ns} for {@code seconds}, one every {@code intervalMs}, in the background. */
  CompletableFuture<Seen> loop(String ns, String ip, int port, double seconds, int intervalMs) {
    return CompletableFuture.supplyAsync(() -> parse(Netns.run("ip", "netns", "exec", ns, PYTHON,
        dir.resolve("client.py").toString(), "loop", ip, Integer.toString(port), Double.toString(seconds),
        Integer.toString(intervalMs)).ok().out()));
  }

  static Seen parse(String out) {
    JsonObject j = new JsonObject(out.strip());
    Map<String, Integer> ok = new TreeMap<>();
    j.getJsonObject("ok").forEach(e -> ok.put(e.getKey(), ((Number) e.getValue()).intValue()));
    Map<String, Integer> err = new TreeMap<>();
    j.getJsonObject("err").forEach(e -> err.put(e.getKey(), ((Number) e.getValue()).intValue()));
    return new Seen(ok, err, j.getDouble("worstMs"));
  }

  List<Process> servers() {
    return List.copyOf(servers);
  }

  /** Stops every task this fixture started (by its own process handle) and waits for it. */
  @Override
  public void close() {
    for (Process p : servers) {
      p.destroy();
    }
    for (Process p : servers) {
      try {
        if (!p.waitFor(5, TimeUnit.SECONDS)) {
          p.destroyForcibly();
          p.waitFor(5, TimeUnit.SECONDS);
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
  }
}
