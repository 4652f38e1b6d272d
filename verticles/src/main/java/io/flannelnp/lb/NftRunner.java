package io.flannelnp.lb;

import io.flannelnp.flannel.Kernel;
import io.flannelnp.flannel.Kernel.KernelException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import java.util.logging.Logger;

/**
 * Runs nft scripts (each one transaction) against one network namespace, one at a time, on a
 * dedicated platform thread of its own (the load balancer's work is serialised there: compute,
 * diff and apply never interleave).
 *
 * <p>Two ways to reach nftables:
 * <ul>
 *   <li>{@link LibNft}: libnftables (the library behind the nft tool, Debian's libnftables1,
 *       which nftables depends on) in this process through JNA, with one long-lived netlink
 *       socket opened inside the target namespace. A small update then costs ~1 ms instead of
 *       ~15-20 ms: no fork/exec of {@code ip netns exec nft}, no cache rebuild per process, and no
 *       wait at socket close (the kernel flushes the deferred destruction of deleted elements,
 *       one RCU grace period ≈ 10 ms here, when the socket that deleted them closes).</li>
 *   <li>{@link Kernel#nftBatch}: the nft tool per script, as every other plane does. Used when
 *       libnftables cannot be loaded or the namespace cannot be entered.</li>
 * </ul>
 */
public abstract class NftRunner implements AutoCloseable {
  private static final Logger LOG = Logger.getLogger(NftRunner.class.getName());

  /** A failed script: nft's own error text. */
  public static final class NftException extends Exception {
    NftException(String message) {
      super(message);
    }
  }

  public enum Mode {
    /** libnftables if it loads, else the nft tool. */
    AUTO,
    /** libnftables only (fails to start if it cannot). */
    LIBRARY,
    /** the nft tool only. */
    PROCESS
  }

  private final ExecutorService thread;

  NftRunner(String name) {
    this.thread = Executors.newSingleThreadExecutor(r -> {
      Thread t = new Thread(r, "lb-nft-" + name);
      t.setDaemon(true);
      return t;
    });
  }

  /** Runs on the runner's thread. */
  public final <T> CompletableFuture<T> submit(Supplier<T> work) {
    return CompletableFuture.supplyAsync(work, thread);
  }

  /** Applies one script (one transaction); returns what nft printed. Runner thread only. */
  public abstract String run(String script) throws NftException;

  /** The output of {@code nft list ARGS} (text or JSON, as the runner prints). Runner thread only. */
  public abstract String list(String... args) throws NftException;

  /** "libnftables" or "nft tool". */
  public abstract String how();

  void closeOnThread() {}

  @Override
  public void close() {
    try {
      thread.submit(this::closeOnThread).get(10, TimeUnit.SECONDS);
    } catch (Exception e) {
      LOG.fine("closing the nft runner: " + e);
    }
    thread.shutdownNow();
  }

  /** A runner for {@code kernel}'s namespace; started (the library loaded, the namespace entered). */
  public static NftRunner start(Kernel kernel, Mode mode) {
    String name = kernel.netns().orElse("self");
    if (mode != Mode.PROCESS) {
      LibNft lib = new LibNft(name, kernel.netns());
      try {
        lib.submit(() -> {
          lib.open();
          return null;
        }).join();
        return lib;
      } catch (RuntimeException e) {
        lib.close();
        if (mode == Mode.LIBRARY) {
          throw new IllegalStateException("libnftables unavailable: " + e.getMessage(), e);
        }
        LOG.info("libnftables unavailable (" + (e.getCause() != null ? e.getCause() : e)
            + "); the load balancer runs the nft tool per transaction");
      }
    }
    return new ProcessNft(name, kernel);
  }

  /** The nft tool, through {@link Kernel#nftBatch}. */
  static final class ProcessNft extends NftRunner {
    private final Kernel kernel;

    ProcessNft(String name, Kernel kernel) {
      super(name);
      this.kernel = kernel;
    }

    @Override
    public String run(String script) throws NftException {
      try {
        kernel.nftBatch(script);
        return "";
      } catch (KernelException e) {
        throw new NftException(e.getMessage());
      }
    }

    @Override
    public String list(String... args) throws NftException {
      String[] a = new String[args.length + 1];
      a[0] = "list";
      System.arraycopy(args, 0, a, 1, args.length);
      try {
        return kernel.nftJson(a);
      } catch (KernelException e) {
        throw new NftException(e.getMessage());
      }
    }

    @Override
    public String how() {
      return "nft tool";
    }
  }
}
