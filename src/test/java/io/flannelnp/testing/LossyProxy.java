package io.flannelnp.testing;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A TCP proxy on loopback in front of a real server that can lose the server's answers: requests
 * still arrive (and etcd commits them), replies are dropped, exactly the fault that makes a client
 * time out on a write that happened. {@link #heal()} cuts every connection, so the client
 * reconnects on a clean stream.
 */
public final class LossyProxy implements AutoCloseable {
  private final ServerSocket listener;
  private final int targetPort;
  private final AtomicBoolean dropReplies = new AtomicBoolean();
  private final List<Socket> open = new CopyOnWriteArrayList<>();
  private volatile boolean closed;

  public LossyProxy(int targetPort) throws IOException {
    this.targetPort = targetPort;
    this.listener = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
    Thread t = new Thread(this::accept, "lossy-proxy");
    t.setDaemon(true);
    t.start();
  }

  public String endpoint() {
    return "http://127.0.0.1:" + listener.getLocalPort();
  }

  /** From now on, what the server sends is thrown away. */
  public void loseReplies() {
    dropReplies.set(true);
  }

  /** Replies flow again; every connection is cut so the client starts over. */
  public void heal() {
    dropReplies.set(false);
    for (Socket s : open) {
      try {
        s.close();
      } catch (IOException ignored) {
        // closing anyway
      }
    }
    open.clear();
  }

  private void accept() {
    while (!closed) {
      try {
        Socket client = listener.accept();
        Socket server = new Socket();
        server.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), targetPort), 2000);
        open.add(client);
        open.add(server);
        pump(client, server, false);
        pump(server, client, true);
      } catch (IOException e) {
        if (closed) {
          return;
        }
      }
    }
  }

  private void pump(Socket from, Socket to, boolean replies) {
    Thread t = new Thread(() -> {
      byte[] buf = new byte[16384];
      try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
        int n;
        while ((n = in.read(buf)) >= 0) {
          if (!(replies && dropReplies.get())) {
            out.write(buf, 0, n);
            out.flush();
          }
        }
      } catch (IOException ignored) {
        // the other side went away
      } finally {
        try {
          from.close();
          to.close();
        } catch (IOException ignored) {
          // done
        }
      }
    }, "lossy-proxy-pump");
    t.setDaemon(true);
    t.start();
  }

  @Override
  public void close() {
    closed = true;
    heal();
    try {
      listener.close();
    } catch (IOException ignored) {
      // done
    }
  }
}
