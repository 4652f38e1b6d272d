package io.flannelnp.bus;

/**
 * Failure codes of event-bus replies ({@code message.fail(code, text)}); the text is what a user
 * sees, so it says what is wrong.
 */
public final class Failure {
  private Failure() {}

  /** The request is malformed or names something invalid. */
  public static final int BAD_REQUEST = 400;
  /** The request names something that does not exist. */
  public static final int NOT_FOUND = 404;
  /** The request conflicts with state someone else owns. */
  public static final int CONFLICT = 409;
  /** A range is exhausted. */
  public static final int EXHAUSTED = 507;
  /** A dependency (etcd, Docker, the kernel tools) is unavailable. */
  public static final int UNAVAILABLE = 503;
  /** The plane does not implement this yet. */
  public static final int NOT_IMPLEMENTED = 501;
  /** Anything else. */
  public static final int INTERNAL = 500;
}
