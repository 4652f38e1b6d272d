package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * hook/flannel-np-hook on its own, against stand-ins of the daemon's socket: what it sends, that
 * it waits for the answer, and that it lets the container start (exit 0) whatever the daemon does.
 */
class HookProgramTest {
  static final String ID = "86b74768eb9049719363dec1cc9b05faf339bd7e966c742ea003d3200a9f292e";
  static final String STATE = "{\"ociVersion\":\"1.0.2-dev\",\"id\":\"" + ID + "\",\"status\":\"creating\",\"pid\":1,"
      + "\"bundle\":\"/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/" + ID + "\","
      + "\"annotations\":{\"id\":\"not-this-one\"}}";
  Path dir;
  Path socket;

  @BeforeEach
  void setUp() throws IOException {
    dir = Files.createTempDirectory("fnh-hook");
    socket = dir.resolve("hook.sock");
  }

  @AfterEach
  void tearDown() throws IOException {
    Files.deleteIfExists(socket);
    Files.delete(dir);
  }

  HookBinaries.Result hook(int timeoutMs, String state) {
    return HookBinaries.run(List.of(HookBinaries.hook().toString(), "--socket", socket.toString(), "--timeout-ms",
        String.valueOf(timeoutMs)), state, 10_000);
  }

  /** A daemon stand-in: accepts one connection, reads one line, waits, answers (or not). */
  CompletableFuture<String> serveOnce(ServerSocketChannel server, long delayMs, String reply) {
    return CompletableFuture.supplyAsync(() -> {
      try (SocketChannel c = server.accept()) {
        ByteBuffer b = ByteBuffer.allocate(4096);
        while (b.position() == 0 || b.get(b.position() - 1) != '\n') {
          if (c.read(b) < 0) {
            break;
          }
        }
        Thread.sleep(delayMs);
        if (reply != null) {
          c.write(ByteBuffer.wrap(reply.getBytes(StandardCharsets.UTF_8)));
        } else {
          Thread.sleep(3000);
        }
        return new String(b.array(), 0, b.position(), StandardCharsets.UTF_8);
      } catch (IOException | InterruptedException e) {
        throw new IllegalStateException(e);
      }
    });
  }

  ServerSocketChannel listen() throws IOException {
    ServerSocketChannel s = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
    s.bind(UnixDomainSocketAddress.of(socket));
    return s;
  }

  @Test
  void sendsItsContainerAndNetworkNamespaceAndWaitsForTheAnswer() throws Exception {
    try (ServerSocketChannel server = listen()) {
      CompletableFuture<String> got = serveOnce(server, 400, "{\"ok\":true,\"status\":\"injected\",\"detail\":\"x\"}\n");
      HookBinaries.Result r = hook(3000, STATE);
      assertThat(r.exit()).isZero();
      assertThat(r.millis()).as("held until the answer").isGreaterThanOrEqualTo(400).isLessThan(2500);
      assertThat(r.err()).isEmpty();
      JsonObject req = new JsonObject(got.get(5, TimeUnit.SECONDS).strip());
      assertThat(req.getString("id")).isEqualTo(ID);
      // the hook runs in this test's namespace here: its identity is ours
      assertThat(req.getJsonObject("netns").getLong("ino"))
          .isEqualTo(Files.getAttribute(Path.of("/proc/self/ns/net"), "unix:ino"));
      assertThat(req.getJsonObject("netns").getLong("dev"))
          .isEqualTo(Files.getAttribute(Path.of("/proc/self/ns/net"), "unix:dev"));
    }
  }

  @Test
  void aRefusalIsLoggedButTheContainerStarts() throws Exception {
    try (ServerSocketChannel server = listen()) {
      serveOnce(server, 0, "{\"ok\":false,\"status\":\"failed\",\"detail\":\"nft said no\"}\n");
      HookBinaries.Result r = hook(3000, "not json at all");
      assertThat(r.exit()).isZero();
      assertThat(r.err()).contains("flannel-np did not inject its resolver").contains("nft said no")
          .contains("the container starts anyway");
    }
  }

  @Test
  void aSilentDaemonIsGivenUpAfterTheTimeout() throws Exception {
    try (ServerSocketChannel server = listen()) {
      serveOnce(server, 0, null);
      HookBinaries.Result r = hook(700, STATE);
      assertThat(r.exit()).isZero();
      assertThat(r.millis()).isGreaterThanOrEqualTo(700).isLessThan(2000);
      assertThat(r.err()).contains("no answer from flannel-np in time");
    }
  }

  @Test
  void noDaemonMeansNoWait() throws Exception {
    HookBinaries.Result r = hook(5000, STATE);
    assertThat(r.exit()).isZero();
    assertThat(r.millis()).isLessThan(1000);
    assertThat(r.err()).as("not installed or not running: nothing to say").isEmpty();

    // a socket left behind by a killed daemon: refused at once
    try (ServerSocketChannel server = listen()) {
      server.close();
      assertThat(socket).exists();
      r = hook(5000, STATE);
      assertThat(r.exit()).isZero();
      assertThat(r.millis()).isLessThan(1000);
      assertThat(r.err()).contains("Connection refused");
    }
  }

  @Test
  void triesEveryMatchOfItsPatternUntilOneAccepts() throws Exception {
    // as on a host: /run/docker/plugins/<id>/ of an old plugin with a stale socket, and the live one
    Path stale = Files.createDirectories(dir.resolve("aaa")).resolve(HookServer.SOCKET_NAME);
    Path live = Files.createDirectories(dir.resolve("bbb")).resolve(HookServer.SOCKET_NAME);
    try (ServerSocketChannel old = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
      old.bind(UnixDomainSocketAddress.of(stale));
      old.close();
      server.bind(UnixDomainSocketAddress.of(live));
      CompletableFuture<String> got = serveOnce(server, 0, "{\"ok\":true,\"status\":\"injected\",\"detail\":\"\"}\n");
      HookBinaries.Result r = HookBinaries.run(List.of(HookBinaries.hook().toString(), "--socket",
          dir + "/*/" + HookServer.SOCKET_NAME), STATE, 10_000);
      assertThat(r.exit()).isZero();
      assertThat(r.err()).isEmpty();
      assertThat(got.get(5, TimeUnit.SECONDS)).contains(ID);
    } finally {
      Files.deleteIfExists(stale);
      Files.deleteIfExists(live);
      Files.deleteIfExists(stale.getParent());
      Files.deleteIfExists(live.getParent());
    }
  }

  @Test
  void badArgumentsAreNamedAndStillExitZero() {
    HookBinaries.Result r = HookBinaries.run(List.of(HookBinaries.hook().toString(), "--socket", socket.toString(),
        "--timeout-ms", "soon", "--colour"), STATE, 10_000);
    assertThat(r.exit()).isZero();
    assertThat(r.err()).contains("--timeout-ms must be 0..600000, got 'soon'").contains("unknown argument '--colour'");
  }
}
