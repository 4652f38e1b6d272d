package io.flannelnp.docker;

import io.vertx.core.Vertx;
import io.vertx.core.net.NetClient;
import io.vertx.core.net.NetServer;
import io.vertx.core.net.NetSocket;
import io.vertx.core.net.SocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * A unix-socket relay in front of dockerd's API socket that a test can cut (every connection
 * closed, new ones refused) and restore: a Docker API outage as the DockerVerticle sees it,
 * without restarting the daemon (whose Swarm state lives on a tmpfs of its mount namespace).
 */
final class SocketProxy implements AutoCloseable {
  private final Vertx vertx;
  private final Path listen;
  private final SocketAddress target;
  private final NetClient client;
  private final Set<NetSocket> open = ConcurrentHashMap.newKeySet();
  private NetServer server;

  SocketProxy(Vertx vertx, Path listen, Path target) {
    this.vertx = vertx;
    this.listen = listen;
    this.target = SocketAddress.domainSocketAddress(target.toString());
    this.client = vertx.createNetClient();
    restore();
  }

  Path path() {
    return listen;
  }

  /** Starts relaying (again). */
  synchronized void restore() {
    if (server != null) {
      return;
    }
    try {
      Files.deleteIfExists(listen);
    } catch (java.io.IOException e) {
      throw new AssertionError(e);
    }
    NetServer s = vertx.createNetServer();
    s.connectHandler(in -> {
      in.pause();
      open.add(in);
      client.connect(target).onComplete(ar -> {
        if (ar.failed()) {
          in.close();
          return;
        }
        NetSocket out = ar.result();
        open.add(out);
        in.closeHandler(v -> out.close());
        out.closeHandler(v -> in.close());
        in.pipeTo(out);
        out.pipeTo(in);
        in.resume();
      });
    });
    try {
      s.listen(SocketAddress.domainSocketAddress(listen.toString())).await(5, TimeUnit.SECONDS);
    } catch (Exception e) {
      throw new AssertionError("proxy cannot listen on " + listen + ": " + e, e);
    }
    server = s;
  }

  /** Closes every relayed connection and stops accepting new ones. */
  synchronized void cut() {
    if (server != null) {
      try {
        server.close().await(5, TimeUnit.SECONDS);
      } catch (Exception e) {
        throw new AssertionError(e);
      }
      server = null;
    }
    for (NetSocket s : open) {
      s.close();
    }
    open.clear();
  }

  @Override
  public synchronized void close() {
    cut();
    client.close();
    try {
      Files.deleteIfExists(listen);
    } catch (java.io.IOException e) {
      throw new AssertionError(e);
    }
  }
}
