package io.flannelnp.lb;

import com.sun.jna.LastErrorException;
import com.sun.jna.Library;
import com.sun.jna.Native;
import io.flannelnp.dns.Namespaces;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.ipam.Ipv4;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.logging.Logger;

/**
 * Ends the UDP flows that still point at a task that left a VIP, as kube-proxy does: conntrack
 * keeps a UDP "connection" alive as long as its client keeps sending (a DNS or statsd client with
 * one long-lived socket), so without this such a client would keep talking to a stopped task
 * forever. TCP is left alone: an established connection may finish, and one to a dead task ends
 * by itself.
 *
 * <p>Talks ctnetlink itself (what {@code conntrack -D -p udp --orig-dst VIP --reply-src TASK}
 * does, without a process per task: those cost milliseconds of CPU each and competed with the
 * next update): a dump filtered by the kernel to UDP flows whose original destination is the
 * VIP, then a delete, by original tuple and conntrack id, of each whose reply comes from the task.
 * The netlink socket is opened once, in the target namespace, on the caller's thread (a socket
 * keeps the namespace it was made in); the caller is the plane's own conntrack thread. Not
 * thread-safe.
 */
final class Conntrack implements AutoCloseable {
  private static final Logger LOG = Logger.getLogger(Conntrack.class.getName());

  /** One task that left one VIP. */
  record Gone(String vip, String task) {}

  // linux/netlink.h, linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h
  private static final int AF_NETLINK = 16;
  private static final int AF_INET = 2;
  private static final int SOCK_RAW = 3;
  private static final int SOCK_CLOEXEC = 0x80000;
  private static final int NETLINK_NETFILTER = 12;
  private static final int SOL_SOCKET = 1;
  private static final int SO_RCVTIMEO = 20;
  private static final short NLM_F_REQUEST = 1;
  private static final short NLM_F_ACK = 4;
  private static final short NLM_F_DUMP = 0x300;
  private static final int NLMSG_ERROR = 2;
  private static final int NLMSG_DONE = 3;
  private static final int NFNL_SUBSYS_CTNETLINK = 1;
  private static final int IPCTNL_MSG_CT_NEW = 0;
  private static final int IPCTNL_MSG_CT_GET = 1;
  private static final int IPCTNL_MSG_CT_DELETE = 2;
  private static final int NLA_F_NESTED = 0x8000;
  private static final int NLA_TYPE_MASK = 0x3fff;
  static final int CTA_TUPLE_ORIG = 1;
  static final int CTA_TUPLE_REPLY = 2;
  static final int CTA_ID = 12;
  static final int CTA_ZONE = 18;
  static final int CTA_FILTER = 25;
  static final int CTA_TUPLE_IP = 1;
  static final int CTA_TUPLE_PROTO = 2;
  static final int CTA_IP_V4_SRC = 1;
  static final int CTA_IP_V4_DST = 2;
  static final int CTA_PROTO_NUM = 1;
  private static final int CTA_FILTER_ORIG_FLAGS = 1;
  private static final int CTA_FILTER_FLAG_CTA_IP_DST = 1 << 1;
  private static final int CTA_FILTER_FLAG_CTA_PROTO_NUM = 1 << 3;
  private static final int IPPROTO_UDP = 17;
  private static final int ENOENT = 2;

  interface LibC extends Library {
    int socket(int domain, int type, int protocol) throws LastErrorException;

    int setsockopt(int fd, int level, int name, byte[] value, int len) throws LastErrorException;

    long send(int fd, byte[] buf, long len, int flags) throws LastErrorException;

    long recv(int fd, byte[] buf, long len, int flags) throws LastErrorException;

    int close(int fd) throws LastErrorException;
  }

  private static volatile LibC libc;

  private static LibC libc() {
    LibC l = libc;
    if (l == null) {
      l = Native.load("c", LibC.class);
      libc = l;
    }
    return l;
  }

  private final Optional<String> netns;
  private final byte[] buf = new byte[128 * 1024];
  private int fd = -1;
  private int seq;
  private boolean told;

  Conntrack(Kernel kernel) {
    this.netns = kernel.netns();
  }

  /**
   * Deletes the UDP conntrack entries from each VIP to its gone task; returns how many flows it
   * ended. A failure is logged (once while it lasts) and ends nothing: flows then last until
   * their client pauses for the UDP conntrack timeout.
   */
  int flush(List<Gone> gone) {
    if (gone.isEmpty()) {
      return 0;
    }
    int n = 0;
    try {
      open();
      for (Gone g : gone) {
        n += end(g);
      }
      told = false;
    } catch (IOException | RuntimeException e) {
      if (!told) {
        told = true;
        LOG.warning("cannot end the UDP flows to tasks that left a VIP (ctnetlink in "
            + netns.map(x -> "network namespace " + x).orElse("this network namespace") + "): " + e.getMessage()
            + "; they last until their client pauses for the UDP conntrack timeout");
      }
      close(); // a fresh socket next time: no reply of this exchange can be mistaken for the next
    }
    return n;
  }

  /** The UDP flows VIP → task, ended; how many. */
  private int end(Gone g) throws IOException {
    byte[] vip = ipv4(g.vip());
    byte[] task = ipv4(g.task());
    List<Flow> flows = new ArrayList<>();
    int s = ++seq;
    send(dumpRequest(s, vip));
    boolean done = false;
    while (!done) {
      int len = receive();
      for (ByteBuffer m : messages(buf, len)) {
        int type = m.getShort(4) & 0xffff;
        if (m.getInt(8) != s) {
          continue; // not ours (cannot happen on a fresh exchange; never trusted)
        }
        if (type == NLMSG_DONE) {
          done = true;
        } else if (type == NLMSG_ERROR) {
          int err = -m.getInt(16);
          if (err != 0) {
            throw new IOException("conntrack dump failed: errno " + err);
          }
          done = true;
        } else if (type == ((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW)) {
          Flow f = Flow.parse(m);
          if (f != null && f.matches(vip, task)) {
            flows.add(f);
          }
        }
      }
    }
    int ended = 0;
    for (Flow f : flows) {
      int d = ++seq;
      send(deleteRequest(d, f));
      int err = ack(d);
      if (err == 0) {
        ended++;
      } else if (err != ENOENT) { // ENOENT: it ended by itself, or its id changed (a new flow)
        throw new IOException("conntrack delete failed: errno " + err);
      }
    }
    return ended;
  }

  /** The errno of the acknowledgement of request {@code s} (0: done). */
  private int ack(int s) throws IOException {
    while (true) {
      int len = receive();
      for (ByteBuffer m : messages(buf, len)) {
        if ((m.getShort(4) & 0xffff) == NLMSG_ERROR && m.getInt(8) == s) {
          return -m.getInt(16);
        }
      }
    }
  }

  /** One conntrack entry as the dump shows it: the attributes a delete needs, verbatim. */
  record Flow(byte[] origAttr, byte[] zoneAttr, byte[] idAttr, int proto, byte[] origDst, byte[] replySrc) {
    boolean matches(byte[] vip, byte[] task) {
      return proto == IPPROTO_UDP && Arrays.equals(origDst, vip) && Arrays.equals(replySrc, task);
    }

    /** From an IPCTNL_MSG_CT_NEW message (nlmsghdr at 0); null if it lacks a tuple. */
    static Flow parse(ByteBuffer m) {
      byte[] orig = null;
      byte[] zone = null;
      byte[] id = null;
      int proto = -1;
      byte[] dst = null;
      byte[] src = null;
      int end = Math.min(m.getInt(0), m.limit());
      for (int at = 16 + 4; at + 4 <= end; ) {
        int len = m.getShort(at) & 0xffff;
        int type = m.getShort(at + 2) & NLA_TYPE_MASK;
        if (len < 4 || at + len > end) {
          return null;
        }
        if (type == CTA_TUPLE_ORIG) {
          orig = slice(m, at, len);
          for (int[] ip : children(m, at + 4, at + len)) {
            if (ip[0] == CTA_TUPLE_IP) {
              dst = child(m, ip[1], ip[1] + ip[2], CTA_IP_V4_DST);
            } else if (ip[0] == CTA_TUPLE_PROTO) {
              byte[] p = child(m, ip[1], ip[1] + ip[2], CTA_PROTO_NUM);
              proto = p == null || p.length < 1 ? -1 : p[0] & 0xff;
            }
          }
        } else if (type == CTA_TUPLE_REPLY) {
          for (int[] ip : children(m, at + 4, at + len)) {
            if (ip[0] == CTA_TUPLE_IP) {
              src = child(m, ip[1], ip[1] + ip[2], CTA_IP_V4_SRC);
            }
          }
        } else if (type == CTA_ZONE) {
          zone = slice(m, at, len);
        } else if (type == CTA_ID) {
          id = slice(m, at, len);
        }
        at += align(len);
      }
      return orig == null ? null : new Flow(orig, zone, id, proto, dst, src);
    }
  }

  // ---- messages ----------------------------------------------------------------------------------

  /** A dump of the IPv4 UDP flows whose original destination is {@code vip} (filtered by the kernel). */
  static byte[] dumpRequest(int seq, byte[] vip) {
    Msg m = new Msg((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq);
    int orig = m.nest(CTA_TUPLE_ORIG);
    int ip = m.nest(CTA_TUPLE_IP);
    m.attr(CTA_IP_V4_DST, vip);
    m.end(ip);
    int proto = m.nest(CTA_TUPLE_PROTO);
    m.attr(CTA_PROTO_NUM, new byte[] {(byte) IPPROTO_UDP});
    m.end(proto);
    m.end(orig);
    int filter = m.nest(CTA_FILTER);
    m.attr(CTA_FILTER_ORIG_FLAGS, u32(CTA_FILTER_FLAG_CTA_IP_DST | CTA_FILTER_FLAG_CTA_PROTO_NUM));
    m.end(filter);
    return m.bytes();
  }

  /** The deletion of exactly {@code f} (its tuple, zone and id as the dump gave them). */
  static byte[] deleteRequest(int seq, Flow f) {
    Msg m = new Msg((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.raw(f.origAttr());
    if (f.zoneAttr() != null) {
      m.raw(f.zoneAttr());
    }
    if (f.idAttr() != null) {
      m.raw(f.idAttr());
    }
    return m.bytes();
  }

  /** A netlink message under construction: nlmsghdr, nfgenmsg (AF_INET, v0), attributes. */
  private static final class Msg {
    private byte[] b = new byte[256];
    private int len;

    Msg(int type, int flags, int seq) {
      ByteBuffer h = ByteBuffer.allocate(20).order(ByteOrder.nativeOrder());
      h.putInt(0).putShort((short) type).putShort((short) flags).putInt(seq).putInt(0);
      h.put((byte) AF_INET).put((byte) 0).putShort((short) 0);
      put(h.array());
    }

    private void put(byte[] x) {
      if (len + x.length > b.length) {
        b = Arrays.copyOf(b, Math.max(b.length * 2, len + x.length));
      }
      System.arraycopy(x, 0, b, len, x.length);
      len += x.length;
    }

    private void pad() {
      while (len % 4 != 0) {
        put(new byte[1]);
      }
    }

    void attr(int type, byte[] value) {
      put(header(4 + value.length, type));
      put(value);
      pad();
    }

    void raw(byte[] attr) {
      put(attr);
      pad();
    }

    int nest(int type) {
      int at = len;
      put(header(4, type | NLA_F_NESTED));
      return at;
    }

    void end(int at) {
      ByteBuffer.wrap(b, at, 2).order(ByteOrder.nativeOrder()).putShort((short) (len - at));
    }

    byte[] bytes() {
      ByteBuffer.wrap(b, 0, 4).order(ByteOrder.nativeOrder()).putInt(len);
      return Arrays.copyOf(b, len);
    }

    private static byte[] header(int len, int type) {
      return ByteBuffer.allocate(4).order(ByteOrder.nativeOrder()).putShort((short) len).putShort((short) type).array();
    }
  }

  /** The netlink messages in {@code b[0..len)}, each a native-order buffer starting at its header. */
  static List<ByteBuffer> messages(byte[] b, int len) {
    List<ByteBuffer> out = new ArrayList<>();
    for (int at = 0; at + 16 <= len; ) {
      int l = ByteBuffer.wrap(b, at, 4).order(ByteOrder.nativeOrder()).getInt();
      if (l < 16 || at + l > len) {
        break;
      }
      out.add(ByteBuffer.wrap(Arrays.copyOfRange(b, at, at + l)).order(ByteOrder.nativeOrder()));
      at += align(l);
    }
    return out;
  }

  /** The attributes between {@code from} and {@code to}: {type, payload offset, payload length}. */
  private static List<int[]> children(ByteBuffer m, int from, int to) {
    List<int[]> out = new ArrayList<>();
    for (int at = from; at + 4 <= to; ) {
      int len = m.getShort(at) & 0xffff;
      if (len < 4 || at + len > to) {
        break;
      }
      out.add(new int[] {m.getShort(at + 2) & NLA_TYPE_MASK, at + 4, len - 4});
      at += align(len);
    }
    return out;
  }

  private static byte[] child(ByteBuffer m, int from, int to, int type) {
    for (int[] c : children(m, from, to)) {
      if (c[0] == type) {
        return slice(m, c[1], c[2]);
      }
    }
    return null;
  }

  private static byte[] slice(ByteBuffer m, int at, int len) {
    byte[] x = new byte[len];
    m.get(at, x);
    return x;
  }

  private static int align(int len) {
    return (len + 3) & ~3;
  }

  private static byte[] u32(int v) {
    return ByteBuffer.allocate(4).order(ByteOrder.nativeOrder()).putInt(v).array(); // NLA_U32: host order
  }

  /** The four bytes (network order) of a dotted quad; strict, as everywhere else (Ipv4.parse). */
  static byte[] ipv4(String dotted) {
    return ByteBuffer.allocate(4).putInt((int) Ipv4.parse(dotted)).array();
  }

  // ---- the socket ----------------------------------------------------------------------------------

  private void open() throws IOException {
    if (fd >= 0) {
      return;
    }
    LibC c = libc();
    int s;
    try {
      if (netns.isPresent()) {
        s = Namespaces.callIn(Kernel.netnsPath(netns.get()), -1, () -> c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
      } else {
        s = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
      }
    } catch (IOException e) {
      throw e;
    } catch (Exception e) {
      throw new IOException("netlink socket: " + e.getMessage(), e);
    }
    try {
      // a kernel that does not answer must not hold the plane's conntrack thread: 2 s per receive
      byte[] tv = ByteBuffer.allocate(16).order(ByteOrder.nativeOrder()).putLong(2).putLong(0).array();
      c.setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, tv, tv.length);
    } catch (LastErrorException e) {
      c.close(s);
      throw new IOException("netlink socket: setsockopt(SO_RCVTIMEO): " + e.getMessage());
    }
    fd = s;
  }

  private void send(byte[] msg) throws IOException {
    try {
      long n = libc().send(fd, msg, msg.length, 0);
      if (n != msg.length) {
        throw new IOException("netlink send: " + n + " of " + msg.length + " bytes");
      }
    } catch (LastErrorException e) {
      throw new IOException("netlink send: " + e.getMessage());
    }
  }

  private int receive() throws IOException {
    try {
      long n = libc().recv(fd, buf, buf.length, 0);
      if (n <= 0) {
        throw new IOException("netlink receive: end of stream");
      }
      return (int) n;
    } catch (LastErrorException e) {
      throw new IOException("netlink receive: " + e.getMessage() + (e.getErrorCode() == 11 ? " (timed out)" : ""));
    }
  }

  @Override
  public void close() {
    if (fd >= 0) {
      try {
        libc().close(fd);
      } catch (LastErrorException e) {
        // closed either way
      }
      fd = -1;
    }
  }

  /** The tasks that left each VIP between {@code before} and {@code after} (both VIP → tasks). */
  static List<Gone> gone(Map<String, List<String>> before, Map<String, List<String>> after) {
    List<Gone> out = new ArrayList<>();
    before.forEach((vip, tasks) -> {
      List<String> now = after.getOrDefault(vip, List.of());
      for (String t : tasks) {
        if (!now.contains(t)) {
          out.add(new Gone(vip, t));
        }
      }
    });
    return out;
  }
}
