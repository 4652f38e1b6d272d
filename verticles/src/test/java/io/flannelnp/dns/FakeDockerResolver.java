package io.flannelnp.dns;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.DatagramChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A stand-in for Docker's embedded resolver inside a test namespace: UDP and TCP on 127.0.0.11
 * at random ports (as Docker's {@code SetupFunc(0)}), opened inside the namespace. It answers
 * {@code outside.example} with A 203.0.113.7 (TTL 42), never answers {@code slow.example}, and
 * says NXDOMAIN to everything else (it knows none of flannel-np's names).
 */
final class FakeDockerResolver implements AutoCloseable {
  static final String OUTSIDE = "203.0.113.7";

  final int udpPort;
  final int tcpPort;
  final AtomicInteger queries = new AtomicInteger();
  private final DatagramChannel udp;
  private final ServerSocketChannel tcp;
  private final List<Thread> threads = new ArrayList<>();

  private FakeDockerResolver(DatagramChannel udp, ServerSocketChannel tcp) throws IOException {
    this.udp = udp;
    this.tcp = tcp;
    this.udpPort = ((InetSocketAddress) udp.getLocalAddress()).getPort();
    this.tcpPort = ((InetSocketAddress) tcp.getLocalAddress()).getPort();
  }

  static FakeDockerResolver start(Namespaces.Switcher switcher, String netnsPath) throws Exception {
    DatagramChannel[] u = new DatagramChannel[1];
    ServerSocketChannel[] t = new ServerSocketChannel[1];
    switcher.submit(Path.of(netnsPath), -1, () -> {
      u[0] = DatagramChannel.open(StandardProtocolFamily.INET);
      u[0].bind(new InetSocketAddress(DnsListener.DOCKER_DNS, 0));
      t[0] = ServerSocketChannel.open(StandardProtocolFamily.INET);
      t[0].setOption(StandardSocketOptions.SO_REUSEADDR, true);
      t[0].bind(new InetSocketAddress(DnsListener.DOCKER_DNS, 0));
      return null;
    }).get();
    FakeDockerResolver r = new FakeDockerResolver(u[0], t[0]);
    r.spawn("fake-docker-udp", r::serveUdp);
    r.spawn("fake-docker-tcp", r::serveTcp);
    return r;
  }

  private void spawn(String name, Runnable body) {
    Thread th = new Thread(body, name);
    th.setDaemon(true);
    th.start();
    threads.add(th);
  }

  private void serveUdp() {
    ByteBuffer in = ByteBuffer.allocate(65535);
    while (udp.isOpen()) {
      try {
        in.clear();
        InetSocketAddress from = (InetSocketAddress) udp.receive(in);
        in.flip();
        byte[] q = new byte[in.remaining()];
        in.get(q);
        byte[] a = answer(q);
        if (a != null) {
          udp.send(ByteBuffer.wrap(a), from);
        }
      } catch (IOException e) {
        return; // closed
      }
    }
  }

  private void serveTcp() {
    while (tcp.isOpen()) {
      try (SocketChannel c = tcp.accept()) {
        DataInputStream in = new DataInputStream(Channels.newInputStream(c));
        DataOutputStream out = new DataOutputStream(Channels.newOutputStream(c));
        int len = in.readUnsignedShort();
        byte[] q = in.readNBytes(len);
        byte[] a = answer(q);
        if (a != null) {
          out.writeShort(a.length);
          out.write(a);
          out.flush();
        }
      } catch (IOException e) {
        if (!tcp.isOpen()) {
          return;
        }
      }
    }
  }

  private byte[] answer(byte[] query) {
    queries.incrementAndGet();
    ByteBuf m = Unpooled.wrappedBuffer(query);
    DnsWire.Query q = new DnsWire.Query();
    if (DnsWire.parse(m, q) != DnsWire.OK) {
      return null;
    }
    if ("slow.example".equals(q.name)) {
      return null;
    }
    ByteBuf out = Unpooled.buffer();
    if ("outside.example".equals(q.name) && q.qtype == DnsWire.TYPE_A) {
      DnsWire.answer(out, m, q, DnsWire.NOERROR, new int[] {DnsNames.Ipv4.parse(OUTSIDE)}, null, 42, 4096);
    } else {
      DnsWire.answer(out, m, q, DnsWire.NXDOMAIN, null, null, 42, 4096);
    }
    byte[] b = new byte[out.readableBytes()];
    out.readBytes(b);
    return b;
  }

  @Override
  public void close() throws Exception {
    udp.close();
    tcp.close();
    for (Thread t : threads) {
      t.join(5000);
      if (t.isAlive()) {
        throw new AssertionError(t.getName() + " did not end");
      }
    }
  }
}
