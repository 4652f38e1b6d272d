package io.flannelnp.dns;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoop;
import io.netty.channel.FixedRecvByteBufAllocator;
import io.netty.channel.socket.DatagramPacket;
import io.netty.channel.socket.nio.NioDatagramChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.netty.handler.codec.LengthFieldBasedFrameDecoder;
import io.netty.handler.timeout.IdleStateEvent;
import io.netty.handler.timeout.IdleStateHandler;
import io.netty.util.concurrent.FastThreadLocal;
import io.netty.util.concurrent.ScheduledFuture;
import io.netty.util.collection.IntObjectHashMap;
import java.io.IOException;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.net.UnknownHostException;
import java.nio.channels.DatagramChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The resolver of one container: a UDP and a TCP socket on 127.0.0.11 inside the container's
 * network namespace (opened there by {@link #openSockets}), served by Netty on one Vert.x event
 * loop. Everything of a listener runs on that loop; only {@link #view} is written from outside.
 *
 * <p>A query is answered from the {@link Responder.View} when flannel-np owns the answer, else
 * forwarded to Docker's resolver in the same namespace (127.0.0.11 at the port Docker's DNAT
 * rule names), over the same transport: UDP through the listener's own socket, TCP through a
 * connection opened in the namespace. The upstream's answer goes back as it came (its RCODE
 * included), with the client's ID. No answer within the timeout gives SERVFAIL, no upstream at
 * all gives SERVFAIL at once, more than {@link Options#maxPending()} forwarded queries in flight
 * gives REFUSED; a client never waits for nothing.
 */
final class DnsListener {
  private static final Logger LOG = Logger.getLogger(DnsListener.class.getName());
  static final InetAddress DOCKER_DNS;

  static {
    try {
      DOCKER_DNS = InetAddress.getByAddress(new byte[] {127, 0, 0, 11});
    } catch (UnknownHostException e) {
      throw new ExceptionInInitializerError(e);
    }
  }

  /**
   * Limits and timeouts of every listener, and the plane's timing: how long a sandbox's namespace
   * is waited for, and how often the periodic pass re-checks our table in every served sandbox.
   */
  record Options(Duration upstreamTimeout, int maxPending, int maxTcpClients, Duration tcpIdle, int udpReceive,
      Duration netnsWait, Duration netnsPoll, Duration rediscoverAfter, Duration resync, int queryRate,
      java.util.regex.Pattern sandboxes) {
    /**
     * Where Docker puts a container's namespace (SandboxKey): its exec root's netns directory,
     * named by the first 12 hex digits of the sandbox ID. Nothing else there is a container's
     * (ingress_sbox, lb_…, the overlay namespaces, "default" of host networking), and nothing
     * elsewhere is Docker's.
     */
    static final java.util.regex.Pattern DOCKER_SANDBOXES =
        java.util.regex.Pattern.compile("(/var)?/run/docker/netns/[0-9a-f]{12}");
    static final Options DEFAULTS = new Options(Duration.ofMillis(4500), 1024, 256, Duration.ofSeconds(10), 4096,
        Duration.ofSeconds(30), Duration.ofMillis(20), Duration.ofSeconds(10), Duration.ofSeconds(30), 2000,
        DOCKER_SANDBOXES);

    Options withUpstreamTimeout(Duration d) {
      return new Options(d, maxPending, maxTcpClients, tcpIdle, udpReceive, netnsWait, netnsPoll, rediscoverAfter,
          resync, queryRate, sandboxes);
    }

    Options withNetnsWait(Duration d) {
      return new Options(upstreamTimeout, maxPending, maxTcpClients, tcpIdle, udpReceive, d, netnsPoll, rediscoverAfter,
          resync, queryRate, sandboxes);
    }

    Options withNetnsPoll(Duration d) {
      return new Options(upstreamTimeout, maxPending, maxTcpClients, tcpIdle, udpReceive, netnsWait, d, rediscoverAfter,
          resync, queryRate, sandboxes);
    }

    Options withResync(Duration d) {
      return new Options(upstreamTimeout, maxPending, maxTcpClients, tcpIdle, udpReceive, netnsWait, netnsPoll,
          rediscoverAfter, d, queryRate, sandboxes);
    }

    /** DNS_QUERY_RATE: client queries per second per container; 0: no limit. */
    Options withQueryRate(int perSecond) {
      return new Options(upstreamTimeout, maxPending, maxTcpClients, tcpIdle, udpReceive, netnsWait, netnsPoll,
          rediscoverAfter, resync, perSecond, sandboxes);
    }

    /** Tests: namespaces the test made ({@code ip netns add}) count as sandboxes too. */
    Options withSandboxes(java.util.regex.Pattern p) {
      return new Options(upstreamTimeout, maxPending, maxTcpClients, tcpIdle, udpReceive, netnsWait, netnsPoll,
          rediscoverAfter, resync, queryRate, p);
    }
  }

  /** The two sockets opened inside the namespace. */
  record Sockets(DatagramChannel udp, ServerSocketChannel tcp, int udpPort, int tcpPort) {
    void closeQuietly() {
      try {
        udp.close();
      } catch (IOException ignored) {
        // closing
      }
      try {
        tcp.close();
      } catch (IOException ignored) {
        // closing
      }
    }
  }

  /** Counters, written on the listener's loop only. */
  static final class Stats {
    /** Datagrams and TCP frames read, upstream answers included. */
    volatile long received;
    /** Of those, answers from Docker's resolver. */
    volatile long fromUpstream;
    volatile long answered;
    volatile long forwarded;
    volatile long relayed;
    volatile long servfail;
    volatile long refused;
    volatile long malformed;
    volatile long dropped;
    volatile long tcpQueries;
    /** Client queries over the container's DNS_QUERY_RATE budget (not answered), and how often reading paused. */
    volatile long limited;
    volatile long pauses;

    @Override
    public String toString() {
      return "received=" + received + " fromUpstream=" + fromUpstream + " answered=" + answered + " forwarded=" + forwarded + " relayed=" + relayed
          + " servfail=" + servfail + " refused=" + refused + " malformed=" + malformed + " dropped=" + dropped
          + " tcp=" + tcpQueries + " limited=" + limited + " pauses=" + pauses;
    }
  }

  /**
   * Opens the sockets; call it on a thread inside the container's namespace. Prefers port 53 on
   * 127.0.0.11 (Docker's resolver never takes it: it listens on a random port behind its DNAT),
   * so a restarted daemon gets the same port and connections the kernel already tracks keep
   * working; any free port otherwise.
   */
  static Sockets openSockets() throws IOException {
    loopbackReady();
    DatagramChannel u = DatagramChannel.open(StandardProtocolFamily.INET);
    ServerSocketChannel t = null;
    try {
      // room for bursts (a client's retries, many answers of Docker's at once); the kernel caps it
      // at net.core.rmem_max and charges only what is queued
      u.setOption(StandardSocketOptions.SO_RCVBUF, 1 << 20);
      bindPreferring53(p -> {
        u.bind(new InetSocketAddress(DOCKER_DNS, p));
        return null;
      });
      t = ServerSocketChannel.open(StandardProtocolFamily.INET);
      t.setOption(StandardSocketOptions.SO_REUSEADDR, true);
      ServerSocketChannel tt = t;
      bindPreferring53(p -> {
        tt.bind(new InetSocketAddress(DOCKER_DNS, p), 128);
        return null;
      });
      int up = ((InetSocketAddress) u.getLocalAddress()).getPort();
      int tp = ((InetSocketAddress) t.getLocalAddress()).getPort();
      return new Sockets(u, t, up, tp);
    } catch (IOException | RuntimeException e) {
      u.close();
      if (t != null) {
        t.close();
      }
      throw e;
    }
  }

  /** The namespace is not ready for a resolver yet; try again shortly. */
  static final class NotReadyException extends IOException {
    NotReadyException(String message) {
      super(message);
    }
  }

  /**
   * A UDP socket bound to 127.0.0.11 before the namespace's loopback is up and holds 127.0.0.1
   * gets no local route at bind time: its answers then leave from 127.0.0.1, and every client
   * with a connected socket (glibc, dig) drops them. Docker 20.10 mounts the namespace a moment
   * before it brings the loopback up, so this is checked, on the calling thread (inside the
   * namespace), before binding.
   */
  static void loopbackReady() throws IOException {
    java.net.NetworkInterface lo = java.net.NetworkInterface.getByName("lo");
    boolean has127 = lo != null && lo.inetAddresses().anyMatch(a -> a instanceof java.net.Inet4Address
        && a.isLoopbackAddress());
    if (lo == null || !lo.isUp() || !has127) {
      throw new NotReadyException("the loopback interface of the namespace is not up with 127.0.0.1 yet");
    }
  }

  private interface Bind {
    Void bind(int port) throws IOException;
  }

  private static void bindPreferring53(Bind b) throws IOException {
    try {
      b.bind(53);
    } catch (BindException e) {
      b.bind(0);
    }
  }

  /** Per-thread scratch query (every listener of a loop shares its thread's). */
  private static final FastThreadLocal<DnsWire.Query> QUERY = new FastThreadLocal<>() {
    @Override
    protected DnsWire.Query initialValue() {
      return new DnsWire.Query();
    }
  };

  private final String key;
  private final Path path;
  private final long inode;
  private final EventLoop loop;
  private final Options options;
  private final Namespaces.Switcher switcher;
  private final Function<String, CompletableFuture<DnsNat.DockerPorts>> discover;
  private final NioDatagramChannel udp;
  private final NioServerSocketChannel tcp;
  private final int udpPort;
  private final int tcpPort;
  final Stats stats = new Stats();
  volatile Responder.View view = Responder.View.EMPTY;

  // loop-confined state
  private IntObjectHashMap<Pending> pending;
  private ArrayDeque<Pending> unsent;
  private Set<Channel> tcpChannels;
  private DnsNat.DockerPorts ports;
  private long discoveredAt;
  private boolean discovering;
  private boolean closed;
  private boolean flushNeeded;
  /** The container's query budget (DNS_QUERY_RATE): tokens, refilled continuously, one per query. */
  private double tokens;
  private long refilledAt;
  private boolean udpPaused;
  /** Datagrams read per read loop: fewer than {@link #READ_BATCH} while the budget is short. */
  private int readBatch = READ_BATCH;
  private static final int READ_BATCH = 64;
  private final FixedRecvByteBufAllocator recv;

  DnsListener(String key, long inode, Sockets s, EventLoop loop, Options options, Namespaces.Switcher switcher,
      Function<String, CompletableFuture<DnsNat.DockerPorts>> discover) {
    this.key = key;
    this.path = Path.of(key);
    this.inode = inode;
    this.loop = loop;
    this.options = options;
    this.switcher = switcher;
    this.discover = discover;
    this.udp = new NioDatagramChannel(s.udp());
    this.tcp = new NioServerSocketChannel(s.tcp());
    this.udpPort = s.udpPort();
    this.tcpPort = s.tcpPort();
    recv = new FixedRecvByteBufAllocator(options.udpReceive());
    recv.maxMessagesPerRead(READ_BATCH);
    recv.respectMaybeMoreData(false); // a datagram shorter than the buffer does not mean the queue is empty
    udp.config().setRecvByteBufAllocator(recv);
    udp.pipeline().addLast(new UdpHandler());
    tcp.pipeline().addLast(new Acceptor());
    tokens = options.queryRate();
    refilledAt = System.nanoTime();
  }

  // ---- the container's query budget ----------------------------------------------------------------

  /**
   * Takes one query from the budget: DNS_QUERY_RATE per second, at most one second's worth saved
   * up. A container over it is not served at the expense of the others on its event loop (and of
   * the plugin API, which shares the loops): see {@link #pauseUdp}.
   */
  private boolean admit() {
    if (options.queryRate() <= 0) {
      return true;
    }
    refill();
    if (tokens >= 1) {
      tokens -= 1;
      return true;
    }
    stats.limited++;
    io.flannelnp.admin.Metrics.dnsRateLimited();
    return false;
  }

  private void refill() {
    int rate = options.queryRate();
    long now = System.nanoTime();
    tokens = Math.min(rate, tokens + (now - refilledAt) * (rate / 1e9));
    refilledAt = now;
    if (readBatch < READ_BATCH && tokens >= READ_BATCH) {
      readBatch = READ_BATCH;
      recv.maxMessagesPerRead(READ_BATCH);
    }
  }

  /** How long until 1/200 s of budget is back: what a pause lasts (short pauses, short bursts after). */
  private long refillMillis() {
    int rate = options.queryRate();
    double want = Math.max(1, rate / 200.0) - tokens;
    return Math.max(1, (long) Math.ceil(want * 1000 / rate));
  }

  /**
   * Stops reading the container's UDP socket until its budget refills: what it sends meanwhile
   * waits in, and overflows, its own socket buffer in the kernel, costing this loop nothing. On
   * resuming, a read loop takes no more datagrams than the budget answers, so the container's
   * backlog is never read just to be dropped. Docker's answers to our forwards share that socket
   * and wait too: they are the same container's.
   */
  private void pauseUdp() {
    if (udpPaused || closed) {
      return;
    }
    udpPaused = true;
    stats.pauses++;
    udp.config().setAutoRead(false);
    loop.schedule(() -> {
      udpPaused = false;
      if (!closed) {
        refill();
        readBatch = (int) Math.max(1, Math.min(READ_BATCH, tokens));
        recv.maxMessagesPerRead(readBatch);
        udp.config().setAutoRead(true);
      }
    }, refillMillis(), TimeUnit.MILLISECONDS);
  }

  /** The same for one TCP connection of the container. */
  private void pauseTcp(Channel c) {
    if (!c.config().isAutoRead()) {
      return;
    }
    stats.pauses++;
    c.config().setAutoRead(false);
    loop.schedule(() -> {
      if (c.isActive()) {
        c.config().setAutoRead(true);
      }
    }, refillMillis(), TimeUnit.MILLISECONDS);
  }

  int udpPort() {
    return udpPort;
  }

  int tcpPort() {
    return tcpPort;
  }

  String key() {
    return key;
  }

  long inode() {
    return inode;
  }

  /** Registers both channels on the loop; they serve from then on. */
  CompletableFuture<Void> start() {
    CompletableFuture<Void> done = new CompletableFuture<>();
    ChannelFuture a = loop.register(udp);
    ChannelFuture b = loop.register(tcp);
    a.addListener(x -> b.addListener(y -> {
      if (a.isSuccess() && b.isSuccess()) {
        done.complete(null);
      } else {
        Throwable t = a.isSuccess() ? b.cause() : a.cause();
        udp.close();
        tcp.close();
        done.completeExceptionally(t);
      }
    }));
    return done;
  }

  /**
   * Closes both sockets and every connection; queries in flight get SERVFAIL. Completes when
   * everything is closed.
   */
  CompletableFuture<Void> close() {
    CompletableFuture<Void> done = new CompletableFuture<>();
    if (loop.isShuttingDown()) {
      // Vert.x is closing under us: nobody is served any more, just release the sockets
      udp.unsafe().closeForcibly();
      tcp.unsafe().closeForcibly();
      done.complete(null);
      return done;
    }
    loop.execute(() -> {
      if (!closed) {
        if (pending != null) {
          for (Pending p : List.copyOf(pending.values())) {
            fail(p, DnsWire.SERVFAIL);
          }
        }
        if (unsent != null) {
          for (Pending p : List.copyOf(unsent)) {
            fail(p, DnsWire.SERVFAIL);
          }
        }
        udp.flush();
        closed = true;
        if (tcpChannels != null) {
          for (Channel c : List.copyOf(tcpChannels)) {
            c.close();
          }
        }
      }
      ChannelFuture a = udp.close();
      ChannelFuture b = tcp.close();
      a.addListener(x -> b.addListener(y -> done.complete(null)));
    });
    return done;
  }

  // ---- UDP ----------------------------------------------------------------------------------------

  private final class UdpHandler extends ChannelInboundHandlerAdapter {
    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
      DatagramPacket p = (DatagramPacket) msg;
      try {
        onDatagram(ctx.alloc(), p.content(), p.sender());
      } catch (RuntimeException e) {
        stats.dropped++;
        LOG.log(Level.FINE, "query on " + key + " failed", e);
      } finally {
        p.release();
      }
    }

    @Override
    public void channelReadComplete(ChannelHandlerContext ctx) {
      if (flushNeeded) {
        flushNeeded = false;
        ctx.flush();
      }
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      // a datagram socket has no connection to lose: log and go on serving
      LOG.log(Level.FINE, "UDP listener in " + key + ": " + cause);
    }
  }

  private void onDatagram(ByteBufAllocator alloc, ByteBuf m, InetSocketAddress from) {
    long t0 = System.nanoTime();
    stats.received++;
    if (ports != null && ports.udp() > 0 && from.getPort() == ports.udp() && DOCKER_DNS.equals(from.getAddress())) {
      stats.fromUpstream++;
      onUpstreamUdp(m);
      return;
    }
    if (!admit()) {
      pauseUdp();
      return;
    }
    DnsWire.Query q = QUERY.get();
    int rc = DnsWire.parse(m, q);
    if (rc == DnsWire.DROP) {
      stats.dropped++;
      return;
    }
    if (rc != DnsWire.OK) {
      stats.malformed++;
      ByteBuf out = alloc.ioBuffer(DnsWire.HEADER);
      DnsWire.bare(out, q.id, q.flags, rc);
      sendUdp(out, from, false);
      return;
    }
    ByteBuf out = Responder.answer(alloc, m, q, view, q.udpLimit());
    if (out != null) {
      stats.answered++;
      io.flannelnp.admin.Metrics.dnsQuery(out.getByte(3) & 0x0f, System.nanoTime() - t0);
      sendUdp(out, from, false);
      return;
    }
    forward(alloc, m, q, from, null);
  }

  private void sendUdp(ByteBuf out, InetSocketAddress to, boolean flushNow) {
    if (closed || !udp.isActive() || !udp.isWritable()) {
      stats.dropped++;
      out.release();
      return;
    }
    if (flushNow) {
      udp.writeAndFlush(new DatagramPacket(out, to), udp.voidPromise());
    } else {
      udp.write(new DatagramPacket(out, to), udp.voidPromise());
      flushNeeded = true;
    }
  }

  // ---- TCP ----------------------------------------------------------------------------------------

  private final class Acceptor extends ChannelInboundHandlerAdapter {
    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
      Channel child = (Channel) msg;
      if (closed || (tcpChannels != null && tcpChannels.size() >= options.maxTcpClients())) {
        child.unsafe().closeForcibly();
        stats.refused++;
        return;
      }
      if (tcpChannels == null) {
        tcpChannels = new HashSet<>();
      }
      tcpChannels.add(child);
      child.closeFuture().addListener(f -> tcpChannels.remove(child));
      child.config().setOption(ChannelOption.TCP_NODELAY, true);
      child.pipeline().addLast(new IdleStateHandler(0, 0, options.tcpIdle().toMillis(), TimeUnit.MILLISECONDS),
          new LengthFieldBasedFrameDecoder(DnsWire.TCP_MAX + 2, 0, 2, 0, 2), new TcpClientHandler());
      loop.register(child).addListener(f -> {
        if (!f.isSuccess()) {
          child.unsafe().closeForcibly();
        }
      });
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      LOG.log(Level.FINE, "TCP listener in " + key + ": " + cause);
    }
  }

  private final class TcpClientHandler extends ChannelInboundHandlerAdapter {
    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
      ByteBuf m = (ByteBuf) msg;
      try {
        onTcpQuery(ctx.channel(), ctx.alloc(), m);
      } catch (RuntimeException e) {
        stats.dropped++;
        ctx.close();
      } finally {
        m.release();
      }
    }

    @Override
    public void userEventTriggered(ChannelHandlerContext ctx, Object evt) {
      if (evt instanceof IdleStateEvent) {
        ctx.close();
      }
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      ctx.close(); // e.g. a frame longer than 65,535 bytes, or a reset
    }
  }

  private void onTcpQuery(Channel client, ByteBufAllocator alloc, ByteBuf m) {
    stats.received++;
    stats.tcpQueries++;
    DnsWire.Query q = QUERY.get();
    if (!admit()) {
      // over budget: a short REFUSED (the client moves on at once, a TCP client is not dropped
      // silently) and no more reading from this connection until the budget refills
      pauseTcp(client);
      if (DnsWire.parse(m, q) != DnsWire.DROP) {
        ByteBuf out = alloc.ioBuffer(DnsWire.HEADER);
        DnsWire.bare(out, q.id, q.flags, DnsWire.REFUSED);
        sendTcp(client, out);
      }
      return;
    }
    int rc = DnsWire.parse(m, q);
    if (rc == DnsWire.DROP) {
      stats.dropped++;
      client.close();
      return;
    }
    if (rc != DnsWire.OK) {
      stats.malformed++;
      ByteBuf out = alloc.ioBuffer(DnsWire.HEADER);
      DnsWire.bare(out, q.id, q.flags, rc);
      sendTcp(client, out);
      return;
    }
    ByteBuf out = Responder.answer(alloc, m, q, view, DnsWire.TCP_MAX);
    if (out != null) {
      stats.answered++;
      io.flannelnp.admin.Metrics.dnsQuery(out.getByte(3) & 0x0f, -1); // TCP: no per-query start time
      sendTcp(client, out);
      return;
    }
    forward(alloc, m, q, null, client);
  }

  private static void sendTcp(Channel c, ByteBuf msg) {
    if (!c.isActive()) {
      msg.release();
      return;
    }
    ByteBuf framed = c.alloc().ioBuffer(msg.readableBytes() + 2);
    framed.writeShort(msg.readableBytes());
    framed.writeBytes(msg);
    msg.release();
    c.writeAndFlush(framed, c.voidPromise());
  }

  // ---- forwarding ---------------------------------------------------------------------------------

  /** One forwarded query: who asked, what, and the upstream ID it travels under. */
  private final class Pending {
    final int upstreamId;
    final int clientId;
    final int flags;
    final byte[] question;
    final boolean edns;
    final InetSocketAddress udpClient;
    final Channel tcpClient;
    ByteBuf message; // the query to send (until sent)
    ScheduledFuture<?> timer;
    Channel upstream; // TCP only
    boolean done;

    Pending(int upstreamId, int clientId, int flags, byte[] question, boolean edns, InetSocketAddress udpClient,
        Channel tcpClient, ByteBuf message) {
      this.upstreamId = upstreamId;
      this.clientId = clientId;
      this.flags = flags;
      this.question = question;
      this.edns = edns;
      this.udpClient = udpClient;
      this.tcpClient = tcpClient;
      this.message = message;
    }
  }

  private int inFlight() {
    return (pending == null ? 0 : pending.size()) + (unsent == null ? 0 : unsent.size());
  }

  private void forward(ByteBufAllocator alloc, ByteBuf m, DnsWire.Query q, InetSocketAddress udpClient,
      Channel tcpClient) {
    int base = m.readerIndex();
    if (inFlight() >= options.maxPending()) {
      stats.refused++;
      reply(alloc, q, questionOf(m, q), udpClient, tcpClient, DnsWire.REFUSED);
      return;
    }
    if (pending == null) {
      pending = new IntObjectHashMap<>(16);
    }
    int id = -1;
    ThreadLocalRandom r = ThreadLocalRandom.current();
    for (int i = 0; i < 16 && id < 0; i++) {
      int c = r.nextInt(0x10000);
      if (!pending.containsKey(c)) {
        id = c;
      }
    }
    if (id < 0) {
      stats.refused++;
      reply(alloc, q, questionOf(m, q), udpClient, tcpClient, DnsWire.REFUSED);
      return;
    }
    int len = m.readableBytes();
    ByteBuf fwd = alloc.ioBuffer(len);
    fwd.writeBytes(m, base, len);
    fwd.setShort(0, id);
    if (q.optSizeAt >= 0 && q.udpSize > options.udpReceive() && udpClient != null) {
      // Docker's answer must fit our receive buffer; a larger one comes back with TC and the
      // client asks again over TCP
      fwd.setShort(q.optSizeAt, options.udpReceive());
    }
    Pending p = new Pending(id, q.id, q.flags, questionOf(m, q), q.edns(), udpClient, tcpClient, fwd);
    p.timer = loop.schedule(() -> onTimeout(p), options.upstreamTimeout().toMillis(), TimeUnit.MILLISECONDS);
    stats.forwarded++;
    io.flannelnp.admin.Metrics.dnsForwarded();
    if (ports == null || (!ports.any() && System.nanoTime() - discoveredAt > TimeUnit.SECONDS.toNanos(2))) {
      // not looked yet, or Docker had no rule a while ago: look (again) and send when we know
      if (unsent == null) {
        unsent = new ArrayDeque<>();
      }
      unsent.add(p);
      rediscover();
      return;
    }
    send(p);
  }

  private static byte[] questionOf(ByteBuf m, DnsWire.Query q) {
    byte[] b = new byte[q.questionEnd - DnsWire.HEADER];
    m.getBytes(m.readerIndex() + DnsWire.HEADER, b);
    return b;
  }

  private void send(Pending p) {
    if (p.done) {
      return;
    }
    if (p.udpClient != null) {
      if (ports.udp() <= 0) {
        fail(p, DnsWire.SERVFAIL);
        return;
      }
      pending.put(p.upstreamId, p);
      ByteBuf msg = p.message;
      p.message = null;
      sendUdp(msg, new InetSocketAddress(DOCKER_DNS, ports.udp()), true);
      return;
    }
    if (ports.tcp() <= 0) {
      fail(p, DnsWire.SERVFAIL);
      return;
    }
    pending.put(p.upstreamId, p);
    int port = ports.tcp();
    switcher.submit(path, inode, () -> SocketChannel.open(StandardProtocolFamily.INET)).whenComplete((sc, e) ->
        loop.execute(() -> connectUpstream(p, sc, e, port)));
  }

  private void connectUpstream(Pending p, SocketChannel sc, Throwable e, int port) {
    if (e != null || p.done || closed) {
      if (sc != null) {
        try {
          sc.close();
        } catch (IOException ignored) {
          // closing
        }
      }
      if (!p.done) {
        fail(p, DnsWire.SERVFAIL);
      }
      return;
    }
    NioSocketChannel up = new NioSocketChannel(sc);
    p.upstream = up;
    up.pipeline().addLast(new LengthFieldBasedFrameDecoder(DnsWire.TCP_MAX + 2, 0, 2, 0, 2), new UpstreamTcp(p));
    loop.register(up).addListener(reg -> {
      if (!reg.isSuccess()) {
        fail(p, DnsWire.SERVFAIL);
        return;
      }
      up.connect(new InetSocketAddress(DOCKER_DNS, port)).addListener(c -> {
        if (!c.isSuccess()) {
          fail(p, DnsWire.SERVFAIL);
          return;
        }
        ByteBuf msg = p.message;
        p.message = null;
        if (msg == null) {
          return;
        }
        ByteBuf framed = up.alloc().ioBuffer(msg.readableBytes() + 2);
        framed.writeShort(msg.readableBytes());
        framed.writeBytes(msg);
        msg.release();
        up.writeAndFlush(framed, up.voidPromise());
      });
    });
  }

  private final class UpstreamTcp extends ChannelInboundHandlerAdapter {
    private final Pending p;

    UpstreamTcp(Pending p) {
      this.p = p;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
      ByteBuf m = (ByteBuf) msg;
      try {
        if (!p.done && matches(m, p)) {
          finish(p);
          stats.relayed++;
          ByteBuf out = m.retainedDuplicate();
          out.setShort(out.readerIndex(), p.clientId);
          sendTcp(p.tcpClient, out);
        }
      } finally {
        m.release();
        ctx.close();
      }
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
      if (!p.done) {
        fail(p, DnsWire.SERVFAIL);
      }
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      ctx.close();
    }
  }

  /** An upstream answer over UDP: relayed to the client that asked, with the client's ID. */
  private void onUpstreamUdp(ByteBuf m) {
    if (m.readableBytes() < DnsWire.HEADER || pending == null) {
      stats.dropped++;
      return;
    }
    int id = m.getUnsignedShort(m.readerIndex());
    Pending p = pending.get(id);
    if (p == null || p.udpClient == null || !matches(m, p)) {
      stats.dropped++; // late (after SERVFAIL) or not an answer to what we asked
      return;
    }
    finish(p);
    stats.relayed++;
    ByteBuf out = m.retainedDuplicate();
    out.setShort(out.readerIndex(), p.clientId);
    sendUdp(out, p.udpClient, false);
  }

  /** A response to our question: QR set, one question, the same bytes as ours. */
  private static boolean matches(ByteBuf m, Pending p) {
    int b = m.readerIndex();
    if (m.readableBytes() < DnsWire.HEADER + p.question.length
        || m.getUnsignedShort(b) != p.upstreamId
        || (m.getUnsignedShort(b + 2) & 0x8000) == 0
        || m.getUnsignedShort(b + 4) != 1) {
      return false;
    }
    for (int i = 0; i < p.question.length; i++) {
      if (m.getByte(b + DnsWire.HEADER + i) != p.question[i]) {
        return false;
      }
    }
    return true;
  }

  private void finish(Pending p) {
    p.done = true;
    if (pending != null) {
      pending.remove(p.upstreamId, p);
    }
    if (unsent != null) {
      unsent.remove(p);
    }
    if (p.timer != null) {
      p.timer.cancel(false);
    }
    if (p.message != null) {
      p.message.release();
      p.message = null;
    }
    if (p.upstream != null) {
      p.upstream.close();
    }
  }

  private void onTimeout(Pending p) {
    if (p.done) {
      return;
    }
    fail(p, DnsWire.SERVFAIL);
    io.flannelnp.admin.Metrics.dnsForwardTimeout();
    if (System.nanoTime() - discoveredAt > options.rediscoverAfter().toNanos()) {
      rediscover(); // Docker may have restarted its resolver on another port
    }
  }

  private void fail(Pending p, int rcode) {
    if (p.done) {
      return;
    }
    finish(p);
    if (rcode == DnsWire.SERVFAIL) {
      stats.servfail++;
    }
    ByteBufAllocator alloc = udp.alloc();
    ByteBuf out = alloc.ioBuffer(DnsWire.HEADER + p.question.length + 11);
    DnsWire.failure(out, p.clientId, p.flags, p.question, p.edns, rcode);
    if (p.udpClient != null) {
      sendUdp(out, p.udpClient, true);
    } else {
      sendTcp(p.tcpClient, out);
    }
  }

  private void reply(ByteBufAllocator alloc, DnsWire.Query q, byte[] question, InetSocketAddress udpClient,
      Channel tcpClient, int rcode) {
    ByteBuf out = alloc.ioBuffer(DnsWire.HEADER + question.length + 11);
    DnsWire.failure(out, q.id, q.flags, question, q.edns(), rcode);
    if (udpClient != null) {
      sendUdp(out, udpClient, false);
    } else {
      sendTcp(tcpClient, out);
    }
  }

  /** Looks up Docker's ports again (off the loop); queued queries go out when it is known. */
  private void rediscover() {
    if (discovering || closed) {
      return;
    }
    discovering = true;
    discover.apply(key).whenComplete((d, e) -> loop.execute(() -> {
      discovering = false;
      discoveredAt = System.nanoTime();
      if (d != null && d.any()) {
        if (ports == null || !ports.equals(d)) {
          LOG.fine("Docker's resolver in " + key + ": udp " + d.udp() + ", tcp " + d.tcp() + " (" + d.source() + ")");
        }
        ports = d;
      } else if (ports == null || !ports.any()) {
        ports = DnsNat.DockerPorts.NONE;
      }
      if (unsent != null) {
        List<Pending> queued = new ArrayList<>(unsent);
        unsent.clear();
        for (Pending p : queued) {
          if (closed) {
            fail(p, DnsWire.SERVFAIL);
          } else {
            send(p);
          }
        }
      }
    }));
  }

  /** Docker's ports as last seen (null before the first forward). */
  DnsNat.DockerPorts dockerPorts() {
    return ports;
  }
}
