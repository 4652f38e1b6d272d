package io.flannelnp.ipam;

/** Dotted-quad IPv4 parsing and formatting on unsigned 32-bit values held in a long. */
public final class Ipv4 {
  private Ipv4() {}

  /** Strict parse: four decimal octets 0-255, no leading '+', no leading zeros beyond "0". */
  public static long parse(String text) {
    String[] parts = text.split("\\.", -1);
    if (parts.length != 4) {
      throw new IllegalArgumentException("'" + text + "' is not an IPv4 address");
    }
    long v = 0;
    for (String p : parts) {
      if (p.isEmpty() || p.length() > 3 || !p.chars().allMatch(c -> c >= '0' && c <= '9')
          || (p.length() > 1 && p.charAt(0) == '0')) {
        throw new IllegalArgumentException("'" + text + "' is not an IPv4 address");
      }
      int o = Integer.parseInt(p);
      if (o > 255) {
        throw new IllegalArgumentException("'" + text + "' is not an IPv4 address (octet " + o + " > 255)");
      }
      v = (v << 8) | o;
    }
    return v;
  }

  public static boolean isValid(String text) {
    try {
      parse(text);
      return true;
    } catch (IllegalArgumentException e) {
      return false;
    }
  }

  public static String format(long v) {
    return ((v >>> 24) & 0xFF) + "." + ((v >>> 16) & 0xFF) + "." + ((v >>> 8) & 0xFF) + "." + (v & 0xFF);
  }
}
