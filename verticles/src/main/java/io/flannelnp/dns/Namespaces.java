package io.flannelnp.dns;

import com.sun.jna.LastErrorException;
import com.sun.jna.Library;
import com.sun.jna.Native;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.OptionalLong;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Network namespaces from Java (anchors.md §G.2): a socket belongs to the namespace of the
 * thread that created it, so sockets for a container are created on a dedicated platform thread
 * that entered the container's namespace with {@code setns(2)} (JNA) and returns to its own right
 * after. A thread that cannot return is never reused: it fails with {@link StrandedThreadError}
 * and dies.
 */
public final class Namespaces {
  private static final Logger LOG = Logger.getLogger(Namespaces.class.getName());
  private static final int O_RDONLY = 0;
  private static final int O_CLOEXEC = 0x80000;
  private static final int CLONE_NEWNET = 0x40000000;

  interface LibC extends Library {
    int open(String path, int flags) throws LastErrorException;

    int setns(int fd, int nstype) throws LastErrorException;

    int close(int fd) throws LastErrorException;
  }

  private static volatile LibC libc;

  private static LibC libc() {
    LibC l = libc;
    if (l == null) {
      synchronized (Namespaces.class) {
        l = libc;
        if (l == null) {
          l = Native.load("c", LibC.class);
          libc = l;
        }
      }
    }
    return l;
  }

  /** The calling thread could not go back to its own namespace; it must not run anything else. */
  public static final class StrandedThreadError extends Error {
    StrandedThreadError(String message) {
      super(message);
    }
  }

  private Namespaces() {}

  /**
   * The inode of the network namespace mounted at {@code path}, if the path is one (a bind mount
   * of nsfs, as Docker's SandboxKey and {@code ip netns add} make); empty for a missing file, a
   * plain file (Docker 20.10 creates the file before {@code runc create} mounts it), or anything
   * else. Compares the device with the caller's own namespace file: every nsfs inode lives on the
   * same device.
   */
  public static OptionalLong netnsInode(Path path) {
    try {
      Map<String, Object> self = Files.readAttributes(Path.of("/proc/thread-self/ns/net"), "unix:dev,ino");
      Map<String, Object> it = Files.readAttributes(path, "unix:dev,ino");
      if (!self.get("dev").equals(it.get("dev"))) {
        return OptionalLong.empty();
      }
      return OptionalLong.of((Long) it.get("ino"));
    } catch (IOException | RuntimeException e) {
      return OptionalLong.empty();
    }
  }

  /** The inode of the calling thread's own network namespace. */
  public static long ownNetnsInode() {
    try {
      return (Long) Files.getAttribute(Path.of("/proc/thread-self/ns/net"), "unix:ino");
    } catch (IOException e) {
      throw new IllegalStateException("cannot read /proc/thread-self/ns/net: " + e.getMessage(), e);
    }
  }

  /**
   * Moves the calling thread into the network namespace at {@code path} for good: for a thread
   * that does nothing else afterwards (lb's libnftables runner, whose library may reopen its
   * socket on that thread at any time). Never for a pooled, event-loop or virtual thread.
   */
  public static void enter(Path path) throws IOException {
    LibC c = libc();
    int fd;
    try {
      fd = c.open(path.toString(), O_RDONLY | O_CLOEXEC);
    } catch (LastErrorException e) {
      throw new IOException("cannot open " + path + ": " + e.getMessage());
    }
    try {
      c.setns(fd, CLONE_NEWNET);
    } catch (LastErrorException e) {
      throw new IOException("setns(" + path + ", CLONE_NEWNET) failed: " + e.getMessage());
    } finally {
      c.close(fd);
    }
  }

  /**
   * Runs {@code action} on the calling thread inside the network namespace at {@code path} and
   * returns to the thread's own namespace. {@code expectedInode} (or -1 for any) guards against a
   * path that was replaced in the meantime. The caller must be a platform thread it owns (never an
   * event loop, a pooled worker or a virtual thread); if going back fails, a
   * {@link StrandedThreadError} is thrown and the thread must end.
   */
  public static <T> T callIn(Path path, long expectedInode, Callable<T> action) throws Exception {
    LibC c = libc();
    int self = c.open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    try {
      int target;
      try {
        target = c.open(path.toString(), O_RDONLY | O_CLOEXEC);
      } catch (LastErrorException e) {
        throw new IOException("cannot open " + path + ": " + Native.getLastError() + " " + e.getMessage());
      }
      try {
        if (expectedInode >= 0) {
          Object ino = Files.getAttribute(Path.of("/proc/thread-self/fd/" + target), "unix:ino");
          if (((Long) ino) != expectedInode) {
            throw new IOException(path + " is no longer the network namespace " + expectedInode + " (now " + ino + ")");
          }
        }
        try {
          c.setns(target, CLONE_NEWNET);
        } catch (LastErrorException e) {
          throw new IOException("setns(" + path + ", CLONE_NEWNET) failed: " + e.getMessage());
        }
        try {
          return action.call();
        } finally {
          try {
            c.setns(self, CLONE_NEWNET);
          } catch (LastErrorException e) {
            throw new StrandedThreadError("thread " + Thread.currentThread().getName()
                + " cannot return to its network namespace: " + e.getMessage());
          }
        }
      } finally {
        c.close(target);
      }
    } finally {
      c.close(self);
    }
  }

  /**
   * A dedicated platform thread (replaced if it ever gets stranded) that runs actions inside
   * network namespaces. Actions should be short: opening sockets, not serving them.
   */
  public static final class Switcher implements AutoCloseable {
    private final ThreadPoolExecutor exec;

    public Switcher(String name) {
      AtomicInteger n = new AtomicInteger();
      exec = new ThreadPoolExecutor(1, 1, 0, TimeUnit.MILLISECONDS, new LinkedBlockingQueue<>(), r -> {
        Thread t = new Thread(r, name + "-" + n.incrementAndGet());
        t.setDaemon(true);
        return t;
      });
    }

    /** Runs {@code action} inside the namespace at {@code path} on the dedicated thread. */
    public <T> CompletableFuture<T> submit(Path path, long expectedInode, Callable<T> action) {
      CompletableFuture<T> f = new CompletableFuture<>();
      try {
        exec.execute(() -> {
          try {
            f.complete(callIn(path, expectedInode, action));
          } catch (StrandedThreadError e) {
            f.completeExceptionally(e);
            LOG.log(Level.SEVERE, e.getMessage() + "; replacing the thread");
            throw e; // ends this thread; the executor starts a fresh one for the next action
          } catch (Throwable e) {
            f.completeExceptionally(e);
          }
        });
      } catch (RuntimeException e) {
        f.completeExceptionally(e);
      }
      return f;
    }

    @Override
    public void close() {
      exec.shutdown();
    }
  }
}
