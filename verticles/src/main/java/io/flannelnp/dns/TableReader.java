package io.flannelnp.dns;

import com.sun.jna.Native;
import com.sun.jna.Pointer;
import io.flannelnp.flannel.LibNftables;
import java.io.IOException;

/**
 * Reads our table back inside a container's network namespace with libnftables through JNA, so
 * the periodic check costs no process per container. Call {@link #list} on a thread that entered
 * the namespace (a {@link Namespaces.Switcher} action): {@code nft_ctx_new} opens its netlink
 * socket in the calling thread's namespace, and the context is freed before the thread goes back.
 */
final class TableReader {
  private TableReader() {}

  /** What nft says when the table does not exist (ENOENT). */
  static final String NO_SUCH = "No such file or directory";

  private static final Object LOCK = new Object();
  private static LibNftables lib;
  private static String loadError;

  /** Whether libnftables could be loaded; without it the plane reads tables with {@code nsenter nft}. */
  static boolean available() {
    synchronized (LOCK) {
      if (lib == null && loadError == null) {
        try {
          lib = Native.load("nftables", LibNftables.class);
        } catch (UnsatisfiedLinkError e) {
          loadError = String.valueOf(e.getMessage());
        }
      }
      return lib != null;
    }
  }

  static String loadError() {
    synchronized (LOCK) {
      return loadError;
    }
  }

  /**
   * Our table in the calling thread's network namespace as {@code nft -s list table} prints it,
   * or "" when there is none.
   */
  static String list() throws IOException {
    if (!available()) {
      throw new IOException("libnftables cannot be loaded: " + loadError());
    }
    LibNftables n = lib;
    Pointer ctx = n.nft_ctx_new(0);
    if (ctx == null) {
      throw new IOException("nft_ctx_new failed");
    }
    try {
      n.nft_ctx_buffer_output(ctx);
      n.nft_ctx_buffer_error(ctx);
      n.nft_ctx_output_set_flags(ctx, LibNftables.OUTPUT_STATELESS);
      int rc = n.nft_run_cmd_from_buffer(ctx, DnsNat.listCommand());
      String out = n.nft_ctx_get_output_buffer(ctx);
      String err = n.nft_ctx_get_error_buffer(ctx);
      if (rc == 0) {
        return out == null ? "" : out;
      }
      if (err != null && err.contains(NO_SUCH)) {
        return "";
      }
      throw new IOException("libnftables: " + (err == null || err.isBlank() ? "failed" : err.strip()));
    } finally {
      n.nft_ctx_free(ctx);
    }
  }
}
