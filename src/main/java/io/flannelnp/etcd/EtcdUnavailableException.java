package io.flannelnp.etcd;

import java.util.List;

/** etcd could not be reached; the message names the endpoints that were tried. */
public final class EtcdUnavailableException extends RuntimeException {
  private final String reason;

  public EtcdUnavailableException(List<String> endpoints, String reason) {
    super("etcd unreachable (tried " + String.join(", ", endpoints) + "): " + reason);
    this.reason = reason;
  }

  /** Why, without the endpoints. */
  public String reason() {
    return reason;
  }
}
