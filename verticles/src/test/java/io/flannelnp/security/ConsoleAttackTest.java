package io.flannelnp.security;

import static org.assertj.core.api.Assertions.assertThat;

import com.sun.net.httpserver.HttpServer;
import io.flannelnp.testing.Lab;
import io.flannelnp.testing.Poll;
import io.vertx.core.json.JsonObject;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * Attacks on the admin server and its console (review M1, L4, L5): two real daemons, one with
 * ADMIN_TOKEN and one on loopback without (ADMIN_INSECURE_LOOPBACK), and an etcd write every
 * 100 ms so the console always has something to leak.
 *
 * <ul>
 *   <li>In headless Chromium, the operator has the console open (its cookie in the browser);
 *       a page of another origin on the same host, and a page of a DNS name rebound to 127.0.0.1,
 *       try to read the bus over the websocket, SockJS's info and streaming transports, /health and
 *       /metrics. They get nothing; the same code from the console's own origin gets the bus.</li>
 *   <li>Host and Origin checked without a browser too; the token cookie is Secure behind a TLS
 *       proxy on loopback, and the token leaves the console's address bar.</li>
 *   <li>A console that stops reading is closed instead of buffered for; at most 16 consoles; no
 *       bus message is converted to JSON while no console listens.</li>
 * </ul>
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class ConsoleAttackTest {
  static final String TOKEN = "fns-token-" + Long.toHexString(new SecureRandom().nextLong()) + "-0123456789";
  static SecurityLab withToken;
  static SecurityLab open;
  static HttpServer evil;
  static long tickToken = -1;
  static long tickOpen = -1;
  static final HttpClient http = HttpClient.newHttpClient();

  @BeforeAll
  static void up() throws Exception {
    withToken = new SecurityLab("fns-tok");
    withToken.env.put("ADMIN_TOKEN", TOKEN);
    withToken.start();
    open = new SecurityLab("fns-open");
    open.env.put("ADMIN_INSECURE_LOOPBACK", "true");
    open.start();
    // the bus always carries something: an etcd write on each daemon every 100 ms
    AtomicInteger n = new AtomicInteger();
    tickToken = withToken.vertx.setPeriodic(100, t -> withToken.etcd.put(withToken.prefix + "/fns-tick/"
        + n.incrementAndGet() % 50, "secret-value"));
    tickOpen = open.vertx.setPeriodic(100, t -> open.etcd.put(open.prefix + "/fns-tick/" + n.incrementAndGet() % 50,
        "secret-value"));
    evil = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
    evil.createContext("/", x -> {
      byte[] page = "<!doctype html><title>elsewhere</title><p>another service on this host</p>"
          .getBytes(StandardCharsets.UTF_8);
      x.getResponseHeaders().add("Content-Type", "text/html");
      x.sendResponseHeaders(200, page.length);
      x.getResponseBody().write(page);
      x.close();
    });
    evil.start();
  }

  @AfterAll
  static void down() throws Exception {
    if (evil != null) {
      evil.stop(0);
    }
    try {
      if (withToken != null) {
        withToken.vertx.cancelTimer(tickToken);
        withToken.close();
      }
    } finally {
      if (open != null) {
        open.vertx.cancelTimer(tickOpen);
        open.close();
      }
    }
  }

  @Test
  @Order(1)
  void aPageOfAnotherOriginOrARebindingNameReadsNothingInChromium() throws Exception {
    Path console = Path.of("src/test/console").toAbsolutePath();
    assertThat(console.resolve("node_modules/playwright-core")).as("run `npm ci` in " + console + " (.ci/run does)")
        .isDirectory();
    double refusedBefore = withToken.metric("fnp_admin_refused_total", TOKEN);
    String tokenTarget = "127.0.0.1:" + withToken.adminPort;
    String openTarget = "127.0.0.1:" + open.adminPort;
    Path profile = Files.createDirectory(withToken.dir.resolve("chromium-profile"));
    java.util.Set<String> tmpBefore = Lab.tmpEntries("org.chromium.");
    ProcessBuilder pb = new ProcessBuilder("node", console.resolve("attack-test.mjs").toString(),
        "http://" + tokenTarget + "/console/?token=" + TOKEN,
        "http://127.0.0.1:" + evil.getAddress().getPort() + "/evil.html?targets=" + tokenTarget + "," + openTarget,
        "rebind.test:" + open.adminPort, profile.toString())
        .redirectError(ProcessBuilder.Redirect.INHERIT);
    pb.environment().put("TMPDIR", Files.createDirectory(withToken.dir.resolve("chromium-tmp")).toString());
    Process node = pb.start();
    String line;
    try (BufferedReader from = new BufferedReader(new InputStreamReader(node.getInputStream(), StandardCharsets.UTF_8))) {
      line = from.readLine();
    } finally {
      if (!node.waitFor(30, TimeUnit.SECONDS)) {
        node.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
      }
    }
    assertThat(line).as("attack-test.mjs").isNotNull().startsWith("RESULT ");
    JsonObject r = new JsonObject(line.substring(7));
    System.out.println("console attack: " + r.encodePrettily());

    // the control: the operator's console streams the bus, and the same attack from its origin reads it
    JsonObject c = r.getJsonObject("console");
    assertThat(c.getInteger("etcdChanges")).isPositive();
    assertThat(c.getString("url")).as("the token left the address bar and the history entry").doesNotContain("token");
    assertThat(c.getJsonArray("cookies").encode()).contains("\"httpOnly\":true", "\"sameSite\":\"Strict\"");
    assertThat(r.getJsonObject("ownOrigin").getJsonObject("ws").getInteger("recs")).as("same origin, same code")
        .isPositive();

    for (String target : List.of(tokenTarget, openTarget)) {
      JsonObject a = r.getJsonObject("evil").getJsonObject(target);
      assertThat(a.getJsonObject("ws").getBoolean("opened")).as(target + ": websocket from another origin").isFalse();
      assertThat(a.getJsonObject("ws").getInteger("recs")).as(target + ": bus messages read").isZero();
      for (String path : List.of("health", "metrics", "info", "xhr")) {
        assertThat(a.getJsonObject(path).getBoolean("read")).as(target + " " + path + " read cross-origin: " + a)
            .isFalse();
      }
    }
    // DNS rebinding: same-origin for the page, so the daemon itself must refuse the foreign Host
    JsonObject rb = r.getJsonObject("rebind");
    for (String path : List.of("/health", "/metrics")) {
      assertThat(rb.getJsonObject(path).getInteger("status")).as("rebound " + path).isEqualTo(403);
      assertThat(rb.getJsonObject(path).getString("body")).as("rebound " + path)
          .doesNotContain("\"live\"").doesNotContain("fnp_").contains("is not a name of this admin server");
    }
    assertThat(rb.getJsonObject("attack").getJsonObject("ws").getInteger("recs")).as("rebound websocket").isZero();
    assertThat(withToken.metric("fnp_admin_refused_total", TOKEN) - refusedBefore).as("requests refused for Host/Origin")
        .isPositive();
    assertThat(Lab.tmpEntries("org.chromium.")).as("the browser left nothing in /tmp").isEqualTo(tmpBefore);
  }

  @Test
  @Order(2)
  void hostAndOriginAreCheckedOnEveryPathWithoutABrowserToo() throws Exception {
    int port = open.adminPort;
    // what a rebinding page's requests carry: a name the attacker owns
    for (String path : List.of("/health", "/health/ready", "/metrics", "/console/")) {
      SecurityLab.HttpAnswer a = open.admin(path, Map.of("Host", "rebind.test:" + port));
      assertThat(a.status()).as(path + " with a foreign Host").isEqualTo(403);
      assertThat(a.body()).doesNotContain("\"live\"").doesNotContain("fnp_");
    }
    // what a cross-origin page's requests carry
    SecurityLab.HttpAnswer upgrade = open.admin("/console/eventbus/websocket", Map.of("Origin", "http://127.0.0.1:1",
        "Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Version", "13",
        "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="));
    assertThat(upgrade.status()).as("websocket upgrade from another origin").isEqualTo(403);
    assertThat(open.admin("/health", Map.of("Origin", "null")).status()).as("a sandboxed page").isEqualTo(403);
    // SockJS's other endpoints are gone (they answered any Origin with credentials)
    for (String path : List.of("/console/eventbus/info", "/console/eventbus/iframe.html",
        "/console/eventbus/000/abc/xhr_streaming", "/console/eventbus/000/abc/websocket")) {
      SecurityLab.HttpAnswer a = open.admin(path, Map.of("Origin", "http://127.0.0.1:" + port));
      assertThat(a.status()).as(path).isEqualTo(404);
      assertThat(a.head().toLowerCase()).as(path).doesNotContain("access-control-allow");
    }
    // what stays allowed: no Origin (curl, Prometheus), its own origin, address literals and localhost
    assertThat(open.admin("/health", Map.of()).status()).isEqualTo(200);
    assertThat(open.admin("/health", Map.of("Origin", "http://127.0.0.1:" + port)).status()).isEqualTo(200);
    assertThat(open.admin("/health", Map.of("Host", "localhost:" + port, "Origin", "http://localhost:" + port))
        .status()).isEqualTo(200);
    assertThat(open.admin("/metrics", Map.of("Host", "[::1]:" + port)).status()).isEqualTo(200);
    // with a token, the token guards against rebinding: a scraper may use the node's name
    assertThat(withToken.admin("/metrics", Map.of("Host", "node1.example:" + withToken.adminPort,
        "Authorization", "Bearer " + TOKEN)).status()).isEqualTo(200);
    assertThat(withToken.admin("/metrics", Map.of("Host", "rebind.test:" + withToken.adminPort)).status())
        .as("and without the token, nothing").isEqualTo(401);
  }

  @Test
  @Order(2)
  void theTokenCookieIsSecureOnlyBehindATlsProxyOnLoopback() throws Exception {
    SecurityLab.HttpAnswer plain = withToken.admin("/console/?token=" + TOKEN, Map.of());
    assertThat(plain.status()).isEqualTo(200);
    assertThat(cookie(plain)).containsIgnoringCase("HttpOnly").contains("SameSite=Strict").doesNotContain("Secure");
    SecurityLab.HttpAnswer proxied = withToken.admin("/console/?token=" + TOKEN, Map.of("X-Forwarded-Proto", "https"));
    assertThat(cookie(proxied)).containsIgnoringCase("HttpOnly").contains("SameSite=Strict", "Secure");
    assertThat(withToken.admin("/console/", Map.of()).status()).as("without the token").isEqualTo(401);
  }

  static String cookie(SecurityLab.HttpAnswer a) {
    return a.head().lines().filter(l -> l.toLowerCase().startsWith("set-cookie:")).findFirst().orElse("");
  }

  @Test
  @Order(3)
  void nothingIsConvertedForTheConsoleWhileNoConsoleListens() throws Exception {
    Thread.sleep(1000); // the consoles of the tests before have closed
    // no console is connected to this daemon: the etcd ticks reach the bus, none is converted
    double before = open.metric("fnp_console_messages_total", null);
    long rev = open.put(open.prefix + "/fns-quiet", "x");
    Poll.await("the watch delivered revision " + rev, Duration.ofSeconds(10),
        () -> watched(open, null) >= rev);
    Thread.sleep(500);
    double idle = open.metric("fnp_console_messages_total", null);
    // both daemons share this JVM's registry: the other one may convert for its own consoles, but
    // nobody listens on either now
    assertThat(idle - before).as("conversions while no console listens").isZero();
    List<String> frames = new CopyOnWriteArrayList<>();
    WebSocket ws = console(open.adminPort, null, frames, "console.etcd.changes");
    try {
      Poll.await("a console receives the etcd changes", Duration.ofSeconds(10), () -> frames.size() >= 3);
      assertThat(open.metric("fnp_console_messages_total", null)).isGreaterThan(idle);
    } finally {
      ws.abort();
    }
    open.etcd.delete(open.prefix + "/fns-quiet").await(5, TimeUnit.SECONDS);
  }

  static long watched(SecurityLab lab, String token) {
    try {
      return lab.health(token).getJsonObject("etcd").getLong("watchRevision", 0L);
    } catch (IOException e) {
      return 0;
    }
  }

  @Test
  @Order(4)
  void atMostSixteenConsolesAreOpenAtOnce() throws Exception {
    List<WebSocket> socks = new ArrayList<>();
    List<AtomicBoolean> closed = new ArrayList<>();
    try {
      for (int i = 0; i < 17; i++) {
        AtomicBoolean c = new AtomicBoolean();
        closed.add(c);
        socks.add(http.newWebSocketBuilder().buildAsync(
            URI.create("ws://127.0.0.1:" + withToken.adminPort + "/console/eventbus/websocket?token=" + TOKEN),
            new WebSocket.Listener() {
              @Override
              public CompletionStage<?> onClose(WebSocket w, int status, String reason) {
                c.set(true);
                return null;
              }

              @Override
              public void onError(WebSocket w, Throwable error) {
                c.set(true);
              }
            }).get(10, TimeUnit.SECONDS));
      }
      Poll.await("the 17th console closed by the server", Duration.ofSeconds(10), () -> closed.get(16).get());
      Thread.sleep(500);
      for (int i = 0; i < 16; i++) {
        assertThat(closed.get(i).get()).as("console " + i + " stays open").isFalse();
      }
    } finally {
      socks.forEach(WebSocket::abort);
    }
  }

  /**
   * A client that registers and then stops reading (its TCP window closes): the daemon queues at
   * most {@code WRITE_QUEUE_BYTES} for it and then closes it, while 30 MB of bus messages pass.
   */
  @Test
  @Order(5)
  void aConsoleThatStopsReadingIsClosedInsteadOfBufferedFor() throws Exception {
    double closedBefore = withToken.metric("fnp_console_closed_total{reason=\"not-reading\"}", TOKEN);
    try (Socket s = new Socket()) {
      s.setReceiveBufferSize(4096); // before connect: the window stays small
      s.connect(new InetSocketAddress("127.0.0.1", withToken.adminPort));
      OutputStream out = s.getOutputStream();
      out.write(("GET /console/eventbus/websocket?token=" + TOKEN + " HTTP/1.1\r\nHost: 127.0.0.1:" + withToken.adminPort
          + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
          + Base64.getEncoder().encodeToString(new byte[16]) + "\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1));
      InputStream in = s.getInputStream();
      String head = readHead(in);
      assertThat(head).startsWith("HTTP/1.1 101");
      out.write(maskedText("{\"type\":\"register\",\"address\":\"console.etcd.changes\"}"));
      out.flush();
      // it keeps pinging (the bridge closes a silent client after 10 s): it only stops reading
      AtomicBoolean stop = new AtomicBoolean();
      Thread pinger = new Thread(() -> {
        while (!stop.get()) {
          try {
            out.write(maskedText("{\"type\":\"ping\"}"));
            Thread.sleep(2000);
          } catch (IOException | InterruptedException e) {
            return;
          }
        }
      });
      pinger.setDaemon(true);
      pinger.start();
      Thread.sleep(300); // registered
      // 60 changes of 512 KB each while this client reads nothing
      String big = "x".repeat(512 * 1024);
      for (int i = 0; i < 60; i++) {
        withToken.etcd.put(withToken.prefix + "/fns-big/" + (i % 4), big).await(10, TimeUnit.SECONDS);
      }
      Poll.await("the daemon closed the console that stopped reading", Duration.ofSeconds(30),
          () -> metric(withToken, "fnp_console_closed_total{reason=\"not-reading\"}") > closedBefore);
      // reading again: what was in flight, then the end, far less than what passed on the bus
      stop.set(true);
      s.setSoTimeout(20_000);
      long got = 0;
      byte[] buf = new byte[1 << 16];
      try {
        int n;
        while ((n = in.read(buf)) >= 0) {
          got += n;
        }
      } catch (java.net.SocketException e) {
        // reset: the daemon dropped the connection and what it still had queued
      }
      System.out.println("stalled console: read " + got + " bytes after resuming; 31 MB passed on the bus");
      assertThat(got).as("bytes queued for the stalled client").isLessThan(24L << 20);
    } finally {
      withToken.etcd.deletePrefix(withToken.prefix + "/fns-big/").await(10, TimeUnit.SECONDS);
    }
    // the others are served as before
    List<String> frames = new CopyOnWriteArrayList<>();
    WebSocket ws = console(withToken.adminPort, TOKEN, frames, "console.etcd.changes");
    try {
      Poll.await("a new console is served", Duration.ofSeconds(10), () -> frames.size() >= 3);
    } finally {
      ws.abort();
    }
  }

  static double metric(SecurityLab lab, String sample) {
    try {
      return lab.metric(sample, lab == withToken ? TOKEN : null);
    } catch (IOException e) {
      return -1;
    }
  }

  static String readHead(InputStream in) throws IOException {
    StringBuilder b = new StringBuilder();
    while (!b.toString().endsWith("\r\n\r\n")) {
      int c = in.read();
      if (c < 0) {
        break;
      }
      b.append((char) c);
    }
    return b.toString();
  }

  /** A client's text frame (clients must mask). */
  static byte[] maskedText(String text) {
    byte[] p = text.getBytes(StandardCharsets.UTF_8);
    byte[] mask = {1, 2, 3, 4};
    ByteBuffer b = ByteBuffer.allocate(2 + 2 + 4 + p.length);
    b.put((byte) 0x81);
    if (p.length < 126) {
      b.put((byte) (0x80 | p.length));
    } else {
      b.put((byte) (0x80 | 126)).putShort((short) p.length);
    }
    b.put(mask);
    for (int i = 0; i < p.length; i++) {
      b.put((byte) (p[i] ^ mask[i % 4]));
    }
    return java.util.Arrays.copyOf(b.array(), b.position());
  }

  /** A console client: registers for the addresses and collects the frames it receives. */
  static WebSocket console(int port, String token, List<String> frames, String... addresses) throws Exception {
    WebSocket w = http.newWebSocketBuilder().buildAsync(URI.create("ws://127.0.0.1:" + port
        + "/console/eventbus/websocket" + (token == null ? "" : "?token=" + token)), new WebSocket.Listener() {
          @Override
          public CompletionStage<?> onBinary(WebSocket ws, ByteBuffer data, boolean last) {
            frames.add(StandardCharsets.UTF_8.decode(data).toString());
            ws.request(1);
            return null;
          }

          @Override
          public CompletionStage<?> onText(WebSocket ws, CharSequence data, boolean last) {
            frames.add(data.toString());
            ws.request(1);
            return null;
          }
        }).get(10, TimeUnit.SECONDS);
    for (String a : addresses) {
      w.sendText(new JsonObject().put("type", "register").put("address", a).encode(), true).get(5, TimeUnit.SECONDS);
    }
    // the bridge closes a client that has not pinged for 10 s
    Thread pinger = new Thread(() -> {
      while (!w.isOutputClosed()) {
        try {
          Thread.sleep(4000);
          w.sendText("{\"type\":\"ping\"}", true);
        } catch (InterruptedException | RuntimeException e) {
          return;
        }
      }
    });
    pinger.setDaemon(true);
    pinger.start();
    return w;
  }
}
