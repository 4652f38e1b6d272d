package io.flannelnp.ipam;

/** A refused IPAM request; the message tells the user what is wrong and what to change. */
public final class IpamException extends RuntimeException {
  public enum Reason { BAD_REQUEST, NOT_FOUND, IN_USE, EXHAUSTED, CONFLICT }

  private final Reason reason;

  public IpamException(Reason reason, String message) {
    super(message);
    this.reason = reason;
  }

  public Reason reason() {
    return reason;
  }
}
