package io.flannelnp.lb;

import com.sun.jna.Native;
import com.sun.jna.Pointer;
import io.flannelnp.dns.Namespaces;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.flannel.LibNftables;
import java.util.Optional;

/**
 * libnftables through JNA, with its netlink socket in the target network namespace: the runner's
 * thread enters the namespace with {@code setns(2)} once, before {@code nft_ctx_new} opens the
 * socket, and stays there (it is our own thread and runs nothing but nft). A socket keeps the
 * namespace it was created in, and libnftables only reopens it on that same thread.
 *
 * <p>Scripts are validated like {@link Kernel#nftBatch} does (printable ASCII, tabs, line
 * breaks); a failing script is one failed transaction, nothing of it applied.
 */
final class LibNft extends NftRunner {
  private final Optional<String> netns;
  private LibNftables nft;
  private Pointer ctx;

  LibNft(String name, Optional<String> netns) {
    super(name);
    this.netns = netns;
  }

  /** Loads the library, enters the namespace, opens the context. Runner thread only. */
  void open() {
    LibNftables lib = Native.load("nftables", LibNftables.class);
    if (netns.isPresent()) {
      try {
        Namespaces.enter(Kernel.netnsPath(netns.get()));
      } catch (java.io.IOException e) {
        throw new java.io.UncheckedIOException(e);
      }
    }
    Pointer p = lib.nft_ctx_new(0);
    if (p == null) {
      throw new IllegalStateException("nft_ctx_new failed");
    }
    lib.nft_ctx_buffer_output(p);
    lib.nft_ctx_buffer_error(p);
    nft = lib;
    ctx = p;
  }

  @Override
  public String run(String script) throws NftException {
    return run(script, false);
  }

  @Override
  public String list(String... args) throws NftException {
    return run("list " + String.join(" ", args), false);
  }

  private String run(String script, boolean json) throws NftException {
    if (ctx == null) {
      throw new NftException("libnftables context is closed");
    }
    for (int i = 0; i < script.length(); i++) {
      char c = script.charAt(i);
      if (!(c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f))) {
        throw new IllegalArgumentException("nft script holds a forbidden character 0x" + Integer.toHexString(c)
            + " at offset " + i);
      }
    }
    int flags = nft.nft_ctx_output_get_flags(ctx);
    nft.nft_ctx_output_set_flags(ctx, json ? flags | LibNftables.OUTPUT_JSON : flags & ~LibNftables.OUTPUT_JSON);
    int rc = nft.nft_run_cmd_from_buffer(ctx, script);
    String out = nft.nft_ctx_get_output_buffer(ctx);
    String err = nft.nft_ctx_get_error_buffer(ctx);
    if (rc != 0) {
      throw new NftException("nft (libnftables) in " + netns.map(n -> "network namespace " + n)
          .orElse("the current network namespace") + ": " + (err == null || err.isBlank() ? "failed" : err.strip()));
    }
    return out == null ? "" : out;
  }

  @Override
  public String how() {
    return "libnftables";
  }

  @Override
  void closeOnThread() {
    if (ctx != null) {
      nft.nft_ctx_free(ctx);
      ctx = null;
    }
  }
}
