package io.flannelnp.dns;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;

/**
 * DNS messages on the wire (RFC 1035, EDNS0 from RFC 6891), read and written directly on Netty
 * buffers: the hot path of every query, so nothing is decoded that is not needed and every read
 * is bounds-checked against the datagram (a malformed packet can only ever produce FORMERR or
 * be dropped). Answers owned by flannel-np are built here; forwarded queries and answers are
 * passed through as bytes.
 */
final class DnsWire {
  private DnsWire() {}

  static final int HEADER = 12;
  static final int TYPE_A = 1;
  static final int TYPE_PTR = 12;
  static final int TYPE_MX = 15;
  static final int TYPE_AAAA = 28;
  static final int TYPE_OPT = 41;
  static final int CLASS_IN = 1;

  static final int NOERROR = 0;
  static final int FORMERR = 1;
  static final int SERVFAIL = 2;
  static final int NXDOMAIN = 3;
  static final int NOTIMP = 4;
  static final int REFUSED = 5;
  /** Extended RCODE 16 (upper 8 bits 1 in the OPT record, lower 4 bits 0 in the header). */
  static final int BADVERS = 16;

  /** Result of {@link #parse}: a query to answer or forward. */
  static final int OK = 0;
  /** Result of {@link #parse}: not worth an answer (too short to hold an ID, or a response). */
  static final int DROP = -1;

  /** The UDP payload size flannel-np announces in its OPT records. */
  static final int OUR_UDP_SIZE = 4096;
  /** Largest DNS message over TCP (two-byte length prefix). */
  static final int TCP_MAX = 65535;
  /** Classic UDP limit without EDNS. */
  static final int UDP_MIN = 512;

  private static final int MAX_NAME = 255;

  /** One query's header fields and where its parts are; reused per event-loop thread. */
  static final class Query {
    int id;
    int flags;
    /** Lower-case name without the trailing dot; null when a label holds a byte no Docker name can. */
    String name;
    int qtype;
    int qclass;
    /** Offset (from the message start) of the byte after the question. */
    int questionEnd;
    /** The client's EDNS UDP size; 0 without an OPT record. */
    int udpSize;
    /** Offset of the OPT record's CLASS field (its UDP size); -1 without an OPT record. */
    int optSizeAt;
    int ednsVersion;
    boolean dnssecOk;

    void reset() {
      id = 0;
      flags = 0;
      name = null;
      qtype = 0;
      qclass = 0;
      questionEnd = 0;
      udpSize = 0;
      optSizeAt = -1;
      ednsVersion = 0;
      dnssecOk = false;
    }

    boolean edns() {
      return optSizeAt >= 0;
    }

    /** Largest answer the client takes over UDP: 512, or its EDNS size if larger. */
    int udpLimit() {
      return Math.max(UDP_MIN, Math.min(udpSize, TCP_MAX));
    }
  }

  /**
   * Reads a query from the readable bytes of {@code m} (not moving its reader index): {@link #OK},
   * {@link #DROP}, or the RCODE to answer with (FORMERR, NOTIMP), in which case {@code q.id} and
   * {@code q.flags} are set.
   */
  static int parse(ByteBuf m, Query q) {
    q.reset();
    int base = m.readerIndex();
    int len = m.readableBytes();
    if (len < HEADER) {
      return DROP;
    }
    q.id = m.getUnsignedShort(base);
    q.flags = m.getUnsignedShort(base + 2);
    if ((q.flags & 0x8000) != 0) {
      return DROP; // a response: never answer one (no reflection loops)
    }
    if (((q.flags >>> 11) & 0xf) != 0) {
      return NOTIMP; // only QUERY
    }
    int qd = m.getUnsignedShort(base + 4);
    int an = m.getUnsignedShort(base + 6);
    int ns = m.getUnsignedShort(base + 8);
    int ar = m.getUnsignedShort(base + 10);
    if (qd != 1) {
      return FORMERR;
    }
    int pos = HEADER;
    StringBuilder name = new StringBuilder(32);
    boolean representable = true;
    int wire = 0;
    while (true) {
      if (pos >= len) {
        return FORMERR;
      }
      int l = m.getUnsignedByte(base + pos);
      pos++;
      wire++;
      if (l == 0) {
        break;
      }
      if ((l & 0xc0) != 0) {
        return FORMERR; // no compression (nothing to point back to) and no extended label types
      }
      wire += l;
      if (wire > MAX_NAME || pos + l > len) {
        return FORMERR;
      }
      if (name.length() > 0) {
        name.append('.');
      }
      for (int i = 0; i < l; i++) {
        int c = m.getUnsignedByte(base + pos + i);
        if (c >= 'A' && c <= 'Z') {
          c += 32;
        } else if (c <= 0x20 || c >= 0x7f || c == '.') {
          representable = false;
        }
        name.append((char) c);
      }
      pos += l;
    }
    if (pos + 4 > len) {
      return FORMERR;
    }
    q.name = representable ? name.toString() : null;
    q.qtype = m.getUnsignedShort(base + pos);
    q.qclass = m.getUnsignedShort(base + pos + 2);
    pos += 4;
    q.questionEnd = pos;
    // answer and authority records do not belong in a query, but are skipped if present
    for (int i = 0; i < an + ns; i++) {
      pos = skipRecord(m, base, len, pos);
      if (pos < 0) {
        return FORMERR;
      }
    }
    for (int i = 0; i < ar; i++) {
      int start = pos;
      int rootName = pos < len && m.getUnsignedByte(base + pos) == 0 ? 1 : 0;
      pos = skipRecord(m, base, len, pos);
      if (pos < 0) {
        return FORMERR;
      }
      if (rootName == 1 && m.getUnsignedShort(base + start + 1) == TYPE_OPT) {
        if (q.optSizeAt >= 0) {
          return FORMERR; // RFC 6891 §6.1.1: more than one OPT
        }
        q.optSizeAt = start + 3;
        q.udpSize = m.getUnsignedShort(base + start + 3);
        q.ednsVersion = m.getUnsignedByte(base + start + 6);
        q.dnssecOk = (m.getUnsignedByte(base + start + 7) & 0x80) != 0;
      }
    }
    return OK;
  }

  /** Offset after the resource record at {@code pos}, or -1 if it runs past the message. */
  private static int skipRecord(ByteBuf m, int base, int len, int pos) {
    int guard = 0;
    while (true) {
      if (pos >= len || ++guard > 128) {
        return -1;
      }
      int l = m.getUnsignedByte(base + pos);
      if (l == 0) {
        pos++;
        break;
      }
      if ((l & 0xc0) == 0xc0) {
        pos += 2; // a pointer ends the name; where it points does not matter for skipping
        break;
      }
      if ((l & 0xc0) != 0) {
        return -1;
      }
      pos += 1 + l;
    }
    if (pos + 10 > len) {
      return -1;
    }
    int rdlen = m.getUnsignedShort(base + pos + 8);
    pos += 10 + rdlen;
    return pos > len ? -1 : pos;
  }

  // ---- answers ----------------------------------------------------------------------------------

  /**
   * Writes an answer to the query {@code m} (already parsed into {@code q}) into {@code out}:
   * the question as asked (so the owner name keeps the client's case), A records for
   * {@code ips} (shuffled) or PTR records for {@code ptrNames}, an OPT record when the query had
   * one, and TC with as many records as fit when the whole answer is larger than {@code limit}.
   * Flags as Docker's resolver: QR, RD copied, RA, CD copied, AA clear.
   */
  static void answer(ByteBuf out, ByteBuf m, Query q, int rcode, int[] ips, List<byte[]> ptrNames, long ttl,
      int limit) {
    int base = m.readerIndex();
    int qlen = q.questionEnd - HEADER;
    int opt = q.edns() ? 11 : 0;
    int room = limit - HEADER - qlen - opt;
    int count = 0;
    boolean tc = false;
    if (ips != null && ips.length > 0) {
      count = Math.min(ips.length, Math.max(0, room / 16));
      tc = count < ips.length;
    } else if (ptrNames != null) {
      int used = 0;
      for (byte[] n : ptrNames) {
        if (used + 12 + n.length > room) {
          tc = true;
          break;
        }
        used += 12 + n.length;
        count++;
      }
    }
    int start = out.writerIndex();
    out.writeShort(q.id);
    int flags = 0x8000 | (q.flags & 0x0100) | 0x0080 | (q.flags & 0x0010) | (rcode & 0xf);
    if (tc) {
      flags |= 0x0200;
    }
    out.writeShort(flags);
    out.writeShort(1);
    out.writeShort(count);
    out.writeShort(0);
    out.writeShort(opt > 0 ? 1 : 0);
    out.writeBytes(m, base + HEADER, qlen);
    int t = (int) Math.min(ttl, 0x7fffffffL);
    if (ips != null && ips.length > 0) {
      int[] order = ips;
      if (ips.length > 1) {
        order = ips.clone();
        ThreadLocalRandom r = ThreadLocalRandom.current();
        for (int i = order.length - 1; i > 0; i--) {
          int j = r.nextInt(i + 1);
          int x = order[i];
          order[i] = order[j];
          order[j] = x;
        }
      }
      for (int i = 0; i < count; i++) {
        out.writeShort(0xc00c); // owner: the question's name
        out.writeShort(TYPE_A);
        out.writeShort(CLASS_IN);
        out.writeInt(t);
        out.writeShort(4);
        out.writeInt(order[i]);
      }
    } else if (ptrNames != null) {
      for (int i = 0; i < count; i++) {
        byte[] n = ptrNames.get(i);
        out.writeShort(0xc00c);
        out.writeShort(TYPE_PTR);
        out.writeShort(CLASS_IN);
        out.writeInt(t);
        out.writeShort(n.length);
        out.writeBytes(n);
      }
    }
    if (opt > 0) {
      writeOpt(out, rcode);
    }
    assert out.writerIndex() - start <= Math.max(limit, HEADER + qlen + opt);
  }

  /**
   * An answer without the question: FORMERR, NOTIMP (what was asked cannot be trusted), with
   * the ID and the RD and CD flags of the query.
   */
  static void bare(ByteBuf out, int id, int queryFlags, int rcode) {
    out.writeShort(id);
    out.writeShort(0x8000 | (queryFlags & 0x0100) | 0x0080 | (queryFlags & 0x0010) | (rcode & 0xf));
    out.writeShort(0);
    out.writeShort(0);
    out.writeShort(0);
    out.writeShort(0);
  }

  /** An answer carrying only the question, e.g. SERVFAIL when the upstream did not answer. */
  static void failure(ByteBuf out, int id, int queryFlags, byte[] question, boolean edns, int rcode) {
    out.writeShort(id);
    out.writeShort(0x8000 | (queryFlags & 0x0100) | 0x0080 | (queryFlags & 0x0010) | (rcode & 0xf));
    out.writeShort(1);
    out.writeShort(0);
    out.writeShort(0);
    out.writeShort(edns ? 1 : 0);
    out.writeBytes(question);
    if (edns) {
      writeOpt(out, rcode);
    }
  }

  private static void writeOpt(ByteBuf out, int rcode) {
    out.writeByte(0); // root
    out.writeShort(TYPE_OPT);
    out.writeShort(OUR_UDP_SIZE);
    out.writeByte((rcode >>> 4) & 0xff); // extended RCODE
    out.writeByte(0); // version
    out.writeShort(0); // flags
    out.writeShort(0); // no options
  }

  /** {@code name} as wire labels with the root label; null if it cannot be encoded. */
  static byte[] encodeName(String name) {
    String n = name.endsWith(".") ? name.substring(0, name.length() - 1) : name;
    byte[] ascii = n.getBytes(StandardCharsets.US_ASCII);
    if (ascii.length + 2 > MAX_NAME) {
      return null;
    }
    byte[] out = new byte[ascii.length + 2];
    int o = 0;
    int labelStart = 0;
    for (int i = 0; i <= ascii.length; i++) {
      if (i == ascii.length || ascii[i] == '.') {
        int l = i - labelStart;
        if (l == 0 && ascii.length > 0) {
          return null;
        }
        if (l > 63) {
          return null;
        }
        if (l == 0) {
          break;
        }
        out[o++] = (byte) l;
        System.arraycopy(ascii, labelStart, out, o, l);
        o += l;
        labelStart = i + 1;
      }
    }
    out[o++] = 0;
    return o == out.length ? out : java.util.Arrays.copyOf(out, o);
  }

  /**
   * The address of a reverse name {@code d.c.b.a.in-addr.arpa} (lower case, no trailing dot),
   * or {@link DnsNames.Ipv4#INVALID}.
   */
  static int reverseAddress(String name) {
    String suffix = ".in-addr.arpa";
    if (name == null || !name.endsWith(suffix)) {
      return DnsNames.Ipv4.INVALID;
    }
    String[] p = name.substring(0, name.length() - suffix.length()).split("\\.", -1);
    if (p.length != 4) {
      return DnsNames.Ipv4.INVALID;
    }
    return DnsNames.Ipv4.parse(p[3] + "." + p[2] + "." + p[1] + "." + p[0]);
  }

  static ByteBuf buffer(ByteBufAllocator alloc, int hint) {
    return alloc.ioBuffer(hint);
  }
}
