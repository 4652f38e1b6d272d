package io.flannelnp.testing;

import com.sun.jna.Library;
import com.sun.jna.Native;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * Sockets inside a named network namespace, from this JVM: a fresh thread enters the namespace
 * with {@code setns(2)} (only that thread moves; the process stays where it is), creates the
 * socket and ends. A socket belongs to the namespace it was created in for its whole life, so it
 * can be used from any thread afterwards. Needs root (CAP_SYS_ADMIN).
 */
public final class InNetns {
  private InNetns() {}

  private interface LibC extends Library {
    LibC C = Native.load("c", LibC.class);

    int open(String path, int flags);

    int setns(int fd, int nstype);

    int close(int fd);
  }

  private static final int O_RDONLY = 0;
  private static final int O_CLOEXEC = 0x80000;
  private static final int CLONE_NEWNET = 0x40000000;

  /** Runs {@code task} on a new thread that is in network namespace {@code ns} (/run/netns/ns). */
  public static <T> T call(String ns, Callable<T> task) throws Exception {
    CompletableFuture<T> f = new CompletableFuture<>();
    Thread t = new Thread(() -> {
      int fd = LibC.C.open("/run/netns/" + ns, O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        f.completeExceptionally(new IOException("cannot open /run/netns/" + ns + " (errno " + Native.getLastError() + ")"));
        return;
      }
      try {
        if (LibC.C.setns(fd, CLONE_NEWNET) != 0) {
          f.completeExceptionally(new IOException("setns into " + ns + " failed (errno " + Native.getLastError() + ")"));
          return;
        }
      } finally {
        LibC.C.close(fd);
      }
      try {
        f.complete(task.call());
      } catch (Throwable e) {
        f.completeExceptionally(e);
      }
      // the thread ends here, and with it its membership of the namespace
    }, "in-netns-" + ns);
    t.setDaemon(true);
    t.start();
    try {
      return f.get(60, TimeUnit.SECONDS);
    } catch (ExecutionException e) {
      if (e.getCause() instanceof Exception x) {
        throw x;
      }
      throw e;
    }
  }

  /** A TCP echo server on 0.0.0.0:port inside a namespace: every line comes back, until the client closes. */
  public static final class EchoServer implements AutoCloseable {
    private final ServerSocket server;
    private final Thread acceptor;

    private EchoServer(ServerSocket server) {
      this.server = server;
      this.acceptor = new Thread(this::serve, "echo-" + server.getLocalPort());
      acceptor.setDaemon(true);
      acceptor.start();
    }

    public static EchoServer start(String ns, int port) throws Exception {
      return new EchoServer(call(ns, () -> {
        ServerSocket s = new ServerSocket();
        s.setReuseAddress(true);
        s.bind(new InetSocketAddress("0.0.0.0", port));
        return s;
      }));
    }

    private void serve() {
      while (!server.isClosed()) {
        try {
          Socket c = server.accept();
          Thread h = new Thread(() -> {
            try (c; InputStream in = c.getInputStream(); OutputStream out = c.getOutputStream()) {
              StringBuilder line = new StringBuilder();
              int b;
              while ((b = in.read()) >= 0) {
                if (b != '\n') {
                  line.append((char) b);
                  continue;
                }
                out.write((line + "\n").getBytes(StandardCharsets.UTF_8));
                out.flush();
                line.setLength(0);
              }
            } catch (IOException ignored) {
              // the client went away
            }
          });
          h.setDaemon(true);
          h.start();
        } catch (IOException e) {
          return; // closed
        }
      }
    }

    @Override
    public void close() throws IOException {
      server.close();
      try {
        acceptor.join(5000);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
  }

  /**
   * From inside {@code ns}: connects to {@code ip:port} (bounded by {@code timeoutMs}), sends a
   * line and returns what came back; {@code null} when the connection could not be made in time
   * or was refused.
   */
  public static String echo(String ns, String ip, int port, String text, int timeoutMs) throws Exception {
    return call(ns, () -> {
      try (Socket s = new Socket()) {
        s.connect(new InetSocketAddress(ip, port), timeoutMs);
        s.setSoTimeout(timeoutMs);
        s.getOutputStream().write((text + "\n").getBytes(StandardCharsets.UTF_8));
        s.getOutputStream().flush();
        InputStream in = s.getInputStream();
        StringBuilder line = new StringBuilder();
        int b;
        while ((b = in.read()) >= 0 && b != '\n') {
          line.append((char) b);
        }
        return line.toString();
      } catch (SocketTimeoutException | java.net.ConnectException | java.net.NoRouteToHostException e) {
        return null;
      }
    });
  }
}
