package io.flannelnp.bus;

/** A request's positive answer when there is nothing more to say than what was done. */
public record Ack(String detail) {
  public static final Ack OK = new Ack("ok");
}
