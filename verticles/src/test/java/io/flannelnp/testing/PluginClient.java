package io.flannelnp.testing;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.json.JsonObject;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * Calls the plugin socket the way dockerd does: POST, Accept header, Content-Length, no
 * Content-Type. Plain blocking sockets so the test does not share the daemon's machinery.
 */
public final class PluginClient {
  public record Response(int status, String body) {}

  private final Path socket;

  public PluginClient(Path socket) {
    this.socket = socket;
  }

  public Response post(String path, String body) throws IOException {
    return raw("POST", path, body.getBytes(StandardCharsets.UTF_8));
  }

  /**
   * A call that must succeed: HTTP 200 and no Err (network driver) or Error (IPAM driver) in the
   * answer; the failure names the socket's node ({@code <node>.sock}), the call and the answer.
   */
  public JsonObject ok(String path, JsonObject body) throws IOException {
    Response r = post(path, body.encode());
    String what = socket.getFileName().toString().replaceFirst("\\.sock$", "") + " " + path + " → " + r.body();
    assertThat(r.status()).as(what).isEqualTo(200);
    JsonObject j = new JsonObject(r.body());
    assertThat(j.containsKey("Err") || j.containsKey("Error")).as(what).isFalse();
    return j;
  }

  /** A request body from key/value pairs: {@code j("PoolID", id, "Options", j())}. */
  public static JsonObject j(Object... kv) {
    JsonObject o = new JsonObject();
    for (int i = 0; i < kv.length; i += 2) {
      o.put((String) kv[i], kv[i + 1]);
    }
    return o;
  }

  public Response raw(String method, String path, byte[] body) throws IOException {
    try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
      ch.connect(UnixDomainSocketAddress.of(socket));
      String head = method + " " + path + " HTTP/1.1\r\nHost: plugin.moby.localhost\r\n"
          + "Accept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: " + body.length
          + "\r\nConnection: close\r\n\r\n";
      write(ch, head.getBytes(StandardCharsets.US_ASCII));
      write(ch, body);
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      ByteBuffer buf = ByteBuffer.allocate(8192);
      try {
        while (ch.read(buf) >= 0) {
          out.write(buf.array(), 0, buf.position());
          buf.clear();
        }
      } catch (IOException e) {
        if (out.size() == 0) {
          throw e; // reset before any answer
        }
      }
      String text = out.toString(StandardCharsets.UTF_8);
      int sp = text.indexOf(' ');
      if (sp < 0) {
        throw new IOException("no HTTP response: '" + text + "'");
      }
      int status = Integer.parseInt(text.substring(sp + 1, sp + 4));
      int bodyAt = text.indexOf("\r\n\r\n");
      return new Response(status, bodyAt < 0 ? "" : text.substring(bodyAt + 4));
    }
  }

  private static void write(SocketChannel ch, byte[] b) throws IOException {
    ByteBuffer bb = ByteBuffer.wrap(b);
    while (bb.hasRemaining()) {
      ch.write(bb);
    }
  }
}
