package io.flannelnp.flannel;

import com.sun.jna.Library;
import com.sun.jna.Pointer;

/**
 * The part of libnftables (Debian's libnftables1) the planes call through JNA: the load
 * balancer's runner and the DNS plane's table check. A context opens its netlink socket in the
 * network namespace of the thread that calls {@code nft_ctx_new}.
 */
public interface LibNftables extends Library {
  /** NFT_CTX_OUTPUT_STATELESS: rules without their counters' values. */
  int OUTPUT_STATELESS = 1 << 2;
  /** NFT_CTX_OUTPUT_JSON. */
  int OUTPUT_JSON = 1 << 4;

  Pointer nft_ctx_new(int flags);

  void nft_ctx_free(Pointer ctx);

  int nft_ctx_buffer_output(Pointer ctx);

  int nft_ctx_buffer_error(Pointer ctx);

  String nft_ctx_get_output_buffer(Pointer ctx);

  String nft_ctx_get_error_buffer(Pointer ctx);

  int nft_ctx_output_get_flags(Pointer ctx);

  void nft_ctx_output_set_flags(Pointer ctx, int flags);

  int nft_run_cmd_from_buffer(Pointer ctx, String buf);
}
