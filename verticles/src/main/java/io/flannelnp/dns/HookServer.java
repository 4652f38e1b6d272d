package io.flannelnp.dns;

import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.DecodeException;
import io.vertx.core.json.JsonObject;
import io.vertx.core.net.NetServer;
import io.vertx.core.net.NetServerOptions;
import io.vertx.core.net.NetSocket;
import io.vertx.core.parsetools.RecordParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Function;
import java.util.logging.Logger;

/**
 * The daemon's end of the OCI createContainer hook (hook/flannel-np-hook.c). Every container that
 * runc creates on a host with the hook connects here from inside its new network namespace, sends
 * one line {@code {"id":"<container id>","netns":{"dev":D,"ino":I}}} (the stat of its
 * /proc/self/ns/net) and waits for one line back, {@code {"ok":bool,"status":"...","detail":"..."}},
 * before runc lets it start. The DNS plane answers once its listener serves that namespace, or at
 * once when the namespace is not one of ours.
 *
 * <p>The hook has its own deadline and always lets the container start; this side only bounds
 * how long a connection may stay silent and how many may be open, so a stuck or hostile client
 * cannot hold resources.
 */
final class HookServer {
  private static final Logger LOG = Logger.getLogger(HookServer.class.getName());
  /**
   * The socket's name, next to the plugin socket: in a managed plugin that directory is the
   * plugin's own runtime directory, host /run/docker/plugins/&lt;plugin id&gt;/ (Docker mounts it at
   * /run/docker/plugins in every managed plugin), so no extra mount or host directory is needed
   * and the hook finds it with the pattern /run/docker/plugins/&#42;/flannel-np-hook.sock. Docker's
   * own plugin scan looks there only for &lt;id&gt;/&lt;id&gt;.sock, so it never mistakes it for a plugin.
   * (Run outside a managed plugin with PLUGIN_SOCKET directly in /run/docker/plugins, the scan
   * would see it: give such a daemon a PLUGIN_SOCKET in a directory of its own.)
   */
  static final String SOCKET_NAME = "flannel-np-hook.sock";
  /** One request line is under 200 bytes; anything longer is not the hook. */
  static final int MAX_LINE = 4096;
  /** Concurrent container creations beyond this are answered "busy" at once (they start anyway). */
  static final int MAX_CONNECTIONS = 512;
  /** A client that sends no full line within this is dropped. */
  static final long REQUEST_TIMEOUT_MS = 5_000;

  /**
   * What the hook reports: its container's id (may be empty) and its network namespace;
   * {@code gone} completes when the hook's connection closes (it gave up waiting, or runc went on).
   */
  record Request(String containerId, long dev, long ino, Future<Void> gone) {
    Request(String containerId, long dev, long ino) {
      this(containerId, dev, ino, Promise.<Void>promise().future());
    }

    Request withGone(Future<Void> g) {
      return new Request(containerId, dev, ino, g);
    }
  }

  /** The single line sent back. {@code ok=false} only tells the hook to log why. */
  record Reply(boolean ok, String status, String detail) {
    String line() {
      return new JsonObject().put("ok", ok).put("status", status).put("detail", detail).encode() + "\n";
    }
  }

  private final Vertx vertx;
  private final Path socket;
  private final Function<Request, Future<Reply>> handler;
  private NetServer server;
  private int open;

  HookServer(Vertx vertx, String socket, Function<Request, Future<Reply>> handler) {
    this.vertx = vertx;
    this.socket = Path.of(socket);
    this.handler = handler;
  }

  /** Listens on the socket, replacing a stale one a killed daemon left behind. */
  Future<Void> start() {
    server = vertx.createNetServer(new NetServerOptions()).connectHandler(this::serve);
    // mode 0600: the hook runs as root (runc runs it before the container's own process exists)
    return io.flannelnp.api.PrivateSocket.listen(socket, server::listen)
        .onSuccess(s -> LOG.info("OCI hook handshake listening on " + socket));
  }

  /** Stops listening and removes the socket, so hooks return at once while the daemon is away. */
  Future<Void> stop() {
    Future<Void> closed = server == null ? Future.succeededFuture() : server.close();
    return closed.eventually(() -> {
      try {
        Files.deleteIfExists(socket);
      } catch (IOException e) {
        LOG.warning("cannot remove hook socket " + socket + ": " + e.getMessage());
      }
      return Future.succeededFuture();
    });
  }

  private void serve(NetSocket so) {
    if (open >= MAX_CONNECTIONS) {
      so.end(Buffer.buffer(new Reply(false, "busy", MAX_CONNECTIONS + " containers are already waiting").line()));
      return;
    }
    open++;
    boolean[] done = {false};
    Promise<Void> gone = Promise.promise();
    long timer = vertx.setTimer(REQUEST_TIMEOUT_MS, t -> {
      if (!done[0]) {
        done[0] = true;
        so.close();
      }
    });
    so.closeHandler(v -> {
      open--;
      vertx.cancelTimer(timer);
      gone.tryComplete();
    });
    so.exceptionHandler(err -> {
      if (!done[0]) {
        done[0] = true;
        so.close(); // a line over MAX_LINE ends up here
      }
    });
    RecordParser lines = RecordParser.newDelimited("\n").maxRecordSize(MAX_LINE);
    lines.handler(line -> {
      if (done[0]) {
        return;
      }
      done[0] = true;
      vertx.cancelTimer(timer);
      // keep reading, discarding: a paused socket would not notice the hook closing it
      so.handler(ignored -> { });
      Request r;
      try {
        r = parse(line.toString()).withGone(gone.future());
      } catch (IllegalArgumentException e) {
        so.end(Buffer.buffer(new Reply(false, "bad-request", e.getMessage()).line()));
        return;
      }
      Future<Reply> reply;
      try {
        reply = handler.apply(r);
      } catch (RuntimeException e) {
        reply = Future.failedFuture(e);
      }
      reply.onComplete(ar -> so.end(Buffer.buffer((ar.succeeded() ? ar.result()
          : new Reply(false, "error", String.valueOf(ar.cause().getMessage()))).line())));
    });
    lines.exceptionHandler(err -> {
      if (!done[0]) {
        done[0] = true;
        so.end(Buffer.buffer(new Reply(false, "bad-request", "request line longer than " + MAX_LINE + " bytes").line()));
      }
    });
    so.handler(lines);
  }

  /** Parses the hook's line; the message names what is wrong. */
  static Request parse(String line) {
    JsonObject j;
    try {
      j = new JsonObject(line);
    } catch (DecodeException | ClassCastException e) {
      throw new IllegalArgumentException("request is not a JSON object: '" + DnsNat.clip(line) + "'");
    }
    Object id = j.getValue("id", "");
    if (!(id instanceof String s) || !s.matches("[A-Za-z0-9_.-]{0,128}")) {
      throw new IllegalArgumentException("\"id\" must be a container id of letters, digits, '_', '.', '-', got "
          + DnsNat.clip(String.valueOf(id)));
    }
    Object ns = j.getValue("netns");
    if (!(ns instanceof JsonObject n) || !(n.getValue("dev") instanceof Number dev)
        || !(n.getValue("ino") instanceof Number ino) || ino.longValue() <= 0) {
      throw new IllegalArgumentException("\"netns\" must be {\"dev\":<number>,\"ino\":<positive number>}, got "
          + DnsNat.clip(String.valueOf(ns)));
    }
    return new Request(s, dev.longValue(), ino.longValue());
  }
}
