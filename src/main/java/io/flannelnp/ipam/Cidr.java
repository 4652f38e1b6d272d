package io.flannelnp.ipam;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * An IPv4 block in canonical form (host bits zero), with the arithmetic the address plan needs:
 * splitting into sub-blocks, containment, nth address. Addresses are held as unsigned 32-bit
 * values in a {@code long} so that 255.255.255.255 and /0 need no special cases.
 */
public record Cidr(long base, int prefix) implements Comparable<Cidr> {

  public Cidr {
    if (prefix < 0 || prefix > 32) {
      throw new IllegalArgumentException("prefix length " + prefix + " is not between 0 and 32");
    }
    if (base < 0 || base > 0xFFFF_FFFFL) {
      throw new IllegalArgumentException("address out of IPv4 range");
    }
    if ((base & ~mask(prefix)) != 0) {
      throw new IllegalArgumentException(
          Ipv4.format(base) + "/" + prefix + " has host bits set; the block is "
              + Ipv4.format(base & mask(prefix)) + "/" + prefix);
    }
  }

  /** Parses "a.b.c.d/len" strictly: canonical form only, so "10.0.0.1/8" is an error, not a guess. */
  public static Cidr parse(String text) {
    Objects.requireNonNull(text, "cidr");
    String t = text.trim();
    int slash = t.indexOf('/');
    if (slash < 0) {
      throw new IllegalArgumentException("'" + text + "' is not an IPv4 CIDR (expected a.b.c.d/len)");
    }
    long addr = Ipv4.parse(t.substring(0, slash));
    String len = t.substring(slash + 1);
    if (len.isEmpty() || len.length() > 2 || !len.chars().allMatch(c -> c >= '0' && c <= '9')
        || (len.length() == 2 && len.charAt(0) == '0')) {
      throw new IllegalArgumentException("'" + text + "' has no valid prefix length (0-32)");
    }
    return new Cidr(addr, Integer.parseInt(len));
  }

  /** The block of the given prefix length that contains {@code address}. */
  public static Cidr containing(long address, int prefix) {
    return new Cidr(address & mask(prefix), prefix);
  }

  public static long mask(int prefix) {
    return prefix == 0 ? 0 : (0xFFFF_FFFFL << (32 - prefix)) & 0xFFFF_FFFFL;
  }

  public long size() {
    return 1L << (32 - prefix);
  }

  public long last() {
    return base + size() - 1;
  }

  public boolean contains(long address) {
    return address >= base && address <= last();
  }

  public boolean contains(Cidr other) {
    return other.prefix >= prefix && contains(other.base);
  }

  public boolean overlaps(Cidr other) {
    return contains(other.base) || other.contains(base);
  }

  /** The i-th address of the block (0 = the block's own address). */
  public long address(long i) {
    if (i < 0 || i >= size()) {
      throw new IndexOutOfBoundsException("index " + i + " outside " + this);
    }
    return base + i;
  }

  /** Number of sub-blocks of length {@code subPrefix}. */
  public long count(int subPrefix) {
    if (subPrefix < prefix) {
      throw new IllegalArgumentException("/" + subPrefix + " is larger than " + this);
    }
    return 1L << (subPrefix - prefix);
  }

  /** The i-th sub-block of length {@code subPrefix}. */
  public Cidr subnet(int subPrefix, long i) {
    if (i < 0 || i >= count(subPrefix)) {
      throw new IndexOutOfBoundsException("sub-block " + i + " of /" + subPrefix + " outside " + this);
    }
    return new Cidr(base + i * (1L << (32 - subPrefix)), subPrefix);
  }

  /** All sub-blocks of length {@code subPrefix}, in address order (use only for small counts). */
  public List<Cidr> split(int subPrefix) {
    long n = count(subPrefix);
    if (n > 1_000_000) {
      throw new IllegalArgumentException("splitting " + this + " into /" + subPrefix + " gives " + n + " blocks");
    }
    List<Cidr> out = new ArrayList<>((int) n);
    for (long i = 0; i < n; i++) {
      out.add(subnet(subPrefix, i));
    }
    return out;
  }

  /** Flannel's etcd key form: "10.1.2.0-24". */
  public String toKey() {
    return Ipv4.format(base) + "-" + prefix;
  }

  /** Parses Flannel's key form "10.1.2.0-24". */
  public static Cidr fromKey(String key) {
    int dash = key.lastIndexOf('-');
    if (dash < 0) {
      throw new IllegalArgumentException("'" + key + "' is not a subnet key (expected a.b.c.d-len)");
    }
    return parse(key.substring(0, dash) + "/" + key.substring(dash + 1));
  }

  public String baseAddress() {
    return Ipv4.format(base);
  }

  @Override
  public int compareTo(Cidr o) {
    int c = Long.compare(base, o.base);
    return c != 0 ? c : Integer.compare(prefix, o.prefix);
  }

  @Override
  public String toString() {
    return Ipv4.format(base) + "/" + prefix;
  }
}
