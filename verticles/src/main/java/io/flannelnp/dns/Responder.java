package io.flannelnp.dns;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import java.util.ArrayList;
import java.util.List;

/**
 * Decides, for one parsed query, whether flannel-np answers it and builds that answer. Pure: the
 * same bytes, view and limit always give the same answer up to the order of the addresses.
 *
 * <ul>
 *   <li>A for a name known in the asking container's scope → the addresses;</li>
 *   <li>AAAA or MX for a known name → NOERROR without records (Swarm names are IPv4-only; Docker's
 *       "implicit MX");</li>
 *   <li>PTR of an address known in the scope → its name(s);</li>
 *   <li>anything else (other names, types, classes, names with bytes no Docker name has) →
 *       {@code null}: forward it to Docker's resolver.</li>
 * </ul>
 */
final class Responder {
  private Responder() {}

  /** What one container sees: the names, its scope and the settings. */
  record View(DnsNames names, DnsNames.Scope scope, boolean compat, long ttl) {
    static final View EMPTY = new View(DnsNames.EMPTY, DnsNames.Scope.NONE, true, 600);
  }

  /**
   * The answer to the query {@code m} parsed as {@code q} with {@link DnsWire#OK}, or null when
   * it must be forwarded. {@code limit} is the largest message the transport takes.
   */
  static ByteBuf answer(ByteBufAllocator alloc, ByteBuf m, DnsWire.Query q, View v, int limit) {
    if (q.ednsVersion != 0) {
      ByteBuf out = alloc.ioBuffer(q.questionEnd + 11);
      DnsWire.answer(out, m, q, DnsWire.BADVERS, null, null, 0, limit);
      return out;
    }
    if (q.qclass != DnsWire.CLASS_IN || q.name == null) {
      return null;
    }
    switch (q.qtype) {
      case DnsWire.TYPE_A -> {
        int[] ips = v.names().resolve(q.name, v.scope(), v.compat());
        if (ips.length == 0) {
          return null;
        }
        ByteBuf out = alloc.ioBuffer(Math.min(limit, q.questionEnd + 11 + 16 * ips.length));
        DnsWire.answer(out, m, q, DnsWire.NOERROR, ips, null, v.ttl(), limit);
        return out;
      }
      case DnsWire.TYPE_AAAA, DnsWire.TYPE_MX -> {
        if (v.names().resolve(q.name, v.scope(), v.compat()).length == 0) {
          return null;
        }
        ByteBuf out = alloc.ioBuffer(q.questionEnd + 11);
        DnsWire.answer(out, m, q, DnsWire.NOERROR, null, null, v.ttl(), limit);
        return out;
      }
      case DnsWire.TYPE_PTR -> {
        int ip = DnsWire.reverseAddress(q.name);
        if (ip == DnsNames.Ipv4.INVALID) {
          return null;
        }
        List<String> names = v.names().reverse(ip, v.scope(), v.compat());
        List<byte[]> wire = new ArrayList<>(names.size());
        for (String n : names) {
          byte[] w = DnsWire.encodeName(n);
          if (w != null) {
            wire.add(w);
          }
        }
        if (wire.isEmpty()) {
          return null;
        }
        ByteBuf out = alloc.ioBuffer(q.questionEnd + 11 + 300 * wire.size());
        DnsWire.answer(out, m, q, DnsWire.NOERROR, null, wire, v.ttl(), limit);
        return out;
      }
      default -> {
        return null;
      }
    }
  }
}
