package io.flannelnp.api;

/** An error answered to Docker: the message is what `docker` prints after "remote: ". */
public final class PluginError extends RuntimeException {
  private final int httpStatus;

  /** An application-level error: HTTP 200 with the error field, as libnetwork's remote drivers expect. */
  public PluginError(String message) {
    this(200, message);
  }

  /** A protocol-level error (bad JSON, wrong method, too large): a non-200 status. */
  public PluginError(int httpStatus, String message) {
    super(message);
    this.httpStatus = httpStatus;
  }

  public int httpStatus() {
    return httpStatus;
  }
}
