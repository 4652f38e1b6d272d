package io.flannelnp.bus;

/**
 * What planes report about themselves: the console, the logs, /health and replay read these.
 */
public sealed interface Observed {

  /**
   * One batch a plane applied to the kernel (or, in replay, would apply): the exact text given to
   * {@code tool} ("nft", "ip"), whether it succeeded, and the etcd revision it was computed from.
   */
  record KernelBatch(String plane, String tool, String text, boolean ok, String error, long micros, long revision)
      implements Observed {}

  /**
   * Everything {@code source} finds wrong now (malformed records, an address with two owners, a
   * setting that disagrees), one line each; published whole after every pass, so an empty list
   * means its problems are solved.
   */
  record Problems(String source, java.util.List<String> problems) implements Observed {}

  /** The end of one reconcile pass of a plane. */
  record ReconcileReport(String plane, long revision, boolean ok, String summary, long micros, boolean periodic)
      implements Observed {}
}
