package io.flannelnp.ipam;

/** A refused IPAM request; the message tells the user what is wrong and what to change. */
public class IpamException extends RuntimeException {
  /** MALFORMED: a record in etcd that this request needs does not parse; the message names its key. */
  public enum Reason { BAD_REQUEST, NOT_FOUND, IN_USE, EXHAUSTED, CONFLICT, MALFORMED }

  private final Reason reason;

  public IpamException(Reason reason, String message) {
    super(message);
    this.reason = reason;
  }

  public Reason reason() {
    return reason;
  }
}
