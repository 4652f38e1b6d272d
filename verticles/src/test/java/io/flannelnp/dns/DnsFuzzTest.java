package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.dns.DnsMessage.EjectDns;
import io.flannelnp.dns.DnsMessage.InjectDns;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ContainerRecord.Attachment;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import io.flannelnp.testing.Netns;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufAllocatorMetricProvider;
import io.vertx.core.Vertx;
import io.vertx.core.eventbus.DeliveryOptions;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.nio.ByteBuffer;
import java.nio.channels.DatagramChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * One listener takes more than a million malformed or random packets: truncated and bit-flipped
 * queries, random bytes, bad label lengths, compression loops, broken EDNS, responses, other
 * opcodes, queries for names it owns and names it forwards (to a stand-in of Docker's resolver
 * behind Docker's rules). Two sender threads use UDP sockets opened inside the namespace; after
 * every 64 packets each sends a probe for a name the listener owns and waits for its answer, so
 * a stuck event loop shows at once and the kernel never has to drop. It must not crash or stop
 * answering, its heap and pooled direct memory must stay flat, and it must answer correctly
 * (checked with {@code dig}, UDP and TCP) before and after. Some TCP garbage too.
 */
@Timeout(value = 150, unit = TimeUnit.SECONDS)
class DnsFuzzTest {
  static final int PACKETS = 1_000_000;
  static final int THREADS = 2;
  static final int WINDOW = 64;
  static final String NODE = "node-fuzz";

  @Test
  void aMillionBadPacketsNeitherCrashNorStallNorLeak() throws Exception {
    Vertx vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    EtcdSchema schema = new EtcdSchema("/fuzz");
    vertx.eventBus().consumer(Addresses.STATE_SNAPSHOT, m -> m.reply(state(schema)));
    // the parser is fuzzed here, not the per-container budget (DNS_QUERY_RATE)
    DnsListener.Options o = TestSandboxes.options().withUpstreamTimeout(Duration.ofMillis(800)).withQueryRate(0);
    DnsVerticle dns = new DnsVerticle(NODE, true, 600, schema, o);
    Namespaces.Switcher switcher = new Namespaces.Switcher("fuzz-netns");
    List<DatagramChannel> senders = new ArrayList<>();
    try (Netns ns = new Netns()) {
      String c = ns.add("fuzz");
      String key = "/var/run/netns/" + c;
      try (FakeDockerResolver docker = FakeDockerResolver.start(switcher, key)) {
        dockerRules(c, docker);
        vertx.deployVerticle(dns).await(20, TimeUnit.SECONDS);
        Ack ack = (Ack) vertx.eventBus().request(Addresses.DNS_INJECT, new InjectDns("c-fuzz", key, "ep-fuzz"),
            new DeliveryOptions().setSendTimeout(20_000)).await(25, TimeUnit.SECONDS).body();
        assertThat(ack.detail()).startsWith("injected");
        DnsListener l = dns.listener(key);
        DnsNamespaceTest.await(() -> l.view.names().resolve("my-name", l.view.scope(), true).length == 1, "names");
        answersCorrectly(ns, c);

        for (int i = 0; i < THREADS; i++) {
          senders.add(switcher.submit(Path.of(key), -1, () -> {
            DatagramChannel ch = DatagramChannel.open(StandardProtocolFamily.INET);
            ch.bind(new InetSocketAddress("127.0.0.1", 0));
            ch.connect(new InetSocketAddress(DnsListener.DOCKER_DNS, 53));
            return ch;
          }).get());
        }
        run(senders, 20_000, 1); // warm-up
        long heap0 = heapAfterGc();
        long direct0 = directMemory();
        long rx0 = l.stats.received - l.stats.fromUpstream;
        long t0 = System.nanoTime();
        Result first = run(senders, PACKETS / 2, 2);
        long heapMid = heapAfterGc();
        Result second = run(senders, PACKETS - PACKETS / 2, 3);
        long seconds = (System.nanoTime() - t0) / 1_000_000_000L;
        long heap1 = heapAfterGc();
        long direct1 = directMemory();
        long received = l.stats.received - l.stats.fromUpstream - rx0;
        System.out.printf("fuzz: %d packets + %d probes in %d s; listener: %s; probes lost %d; heap %d -> %d -> %d KB;"
                + " direct (%s) %d -> %d KB%n", first.sent + second.sent, first.probes + second.probes, seconds,
            l.stats, first.lost + second.lost, heap0 / 1024, heapMid / 1024, heap1 / 1024, ByteBufAllocator.DEFAULT.getClass().getSimpleName(), direct0 / 1024,
            direct1 / 1024);

        assertThat(first.sent + second.sent).isGreaterThanOrEqualTo(PACKETS);
        assertThat(received).as("client packets the listener read").isGreaterThanOrEqualTo((long) (PACKETS * 0.99));
        // the kernel may drop a probe when a burst of Docker's answers fills the socket buffer;
        // a stuck event loop would lose every probe from then on
        assertThat(first.lost + second.lost).as("probes without an answer")
            .isLessThan((first.probes + second.probes) / 200);
        assertThat(Math.max(first.maxLostInARow, second.maxLostInARow)).as("probes lost in a row").isLessThanOrEqualTo(2);
        assertThat(heap1 - heap0).as("heap growth over a million packets").isLessThan(16L << 20);
        assertThat(heap1 - heapMid).as("heap growth over the second half").isLessThan(8L << 20);
        assertThat(direct1 - direct0).as("pooled direct memory growth").isLessThanOrEqualTo(8L << 20);

        tcpGarbage(switcher, key, new Random(4));
        answersCorrectly(ns, c);
        assertThat(l.stats.tcpQueries).isGreaterThan(0);
        vertx.eventBus().request(Addresses.DNS_EJECT, new EjectDns(key, "ep-fuzz")).await(20, TimeUnit.SECONDS);
      } finally {
        for (DatagramChannel s : senders) {
          s.close();
        }
        vertx.close().await(20, TimeUnit.SECONDS);
        switcher.close();
      }
    }
  }

  static void answersCorrectly(Netns ns, String c) {
    for (String transport : List.of("+notcp", "+tcp")) {
      String a = ns.exec(c, "dig", "@127.0.0.11", "+short", "+time=3", "+tries=1", transport, "my-name").ok().out();
      assertThat(a.strip()).isEqualTo("10.9.0.2");
      String f = ns.exec(c, "dig", "@127.0.0.11", "+short", "+time=3", "+tries=1", transport, "outside.example").ok()
          .out();
      assertThat(f.strip()).isEqualTo(FakeDockerResolver.OUTSIDE);
    }
  }

  record Result(long sent, long probes, long lost, long maxLostInARow) {}

  static long directMemory() {
    return ((ByteBufAllocatorMetricProvider) ByteBufAllocator.DEFAULT).metric().usedDirectMemory();
  }

  /** Sends {@code total} fuzz packets over the senders in parallel, each window closed by a probe. */
  static Result run(List<DatagramChannel> senders, int total, long seed) throws Exception {
    AtomicLong sent = new AtomicLong();
    AtomicLong probes = new AtomicLong();
    AtomicLong lost = new AtomicLong();
    AtomicLong maxRow = new AtomicLong();
    List<Thread> threads = new ArrayList<>();
    List<Throwable> errors = new java.util.concurrent.CopyOnWriteArrayList<>();
    for (int t = 0; t < senders.size(); t++) {
      DatagramChannel ch = senders.get(t);
      int share = total / senders.size();
      Random rnd = new Random(seed * 31 + t);
      Thread th = new Thread(() -> {
        try {
          Fuzzer f = new Fuzzer(rnd);
          ByteBuffer in = ByteBuffer.allocateDirect(65536);
          ByteBuffer out = ByteBuffer.allocateDirect(65536);
          int probeId = 0;
          int row = 0;
          for (int n = 0; n < share; ) {
            for (int w = 0; w < WINDOW && n < share; w++, n++) {
              out.clear();
              out.put(f.next());
              out.flip();
              ch.write(out);
              sent.incrementAndGet();
            }
            probeId = (probeId + 1) & 0xffff;
            out.clear();
            out.put(DnsWireTest.query(probeId, "my-name", DnsWire.TYPE_A, 0, true));
            out.flip();
            ch.write(out);
            probes.incrementAndGet();
            if (!awaitProbe(ch, in, probeId)) {
              lost.incrementAndGet();
              row++;
              maxRow.accumulateAndGet(row, Math::max);
            } else {
              row = 0;
            }
          }
        } catch (Throwable e) {
          errors.add(e);
        }
      }, "fuzz-sender-" + t);
      threads.add(th);
      th.start();
    }
    for (Thread th : threads) {
      th.join();
    }
    if (!errors.isEmpty()) {
      throw new AssertionError("sender failed", errors.get(0));
    }
    return new Result(sent.get(), probes.get(), lost.get(), maxRow.get());
  }

  /** Reads replies (junk answers included) until the probe's answer; false after 2 s without it. */
  static boolean awaitProbe(DatagramChannel ch, ByteBuffer in, int id) throws IOException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
    ch.configureBlocking(false);
    try {
      while (System.nanoTime() < deadline) {
        in.clear();
        int n = ch.read(in);
        if (n <= 0) {
          Thread.onSpinWait();
          if (n == 0) {
            java.util.concurrent.locks.LockSupport.parkNanos(20_000);
          }
          continue;
        }
        if (n >= 12 && ((in.get(0) & 0xff) << 8 | (in.get(1) & 0xff)) == id && (in.get(2) & 0x80) != 0
            && in.get(7) == 1) {
          return true;
        }
      }
      return false;
    } catch (java.net.PortUnreachableException e) {
      return false;
    } finally {
      ch.configureBlocking(true);
    }
  }

  /** Packets a hostile or broken client might send. */
  static final class Fuzzer {
    final Random r;
    final byte[][] seeds;

    Fuzzer(Random r) {
      this.r = r;
      this.seeds = new byte[][] {
          DnsWireTest.query(1, "my-name", DnsWire.TYPE_A, 0, true),
          DnsWireTest.query(2, "tasks.my-name.web", DnsWire.TYPE_A, 1232, true),
          DnsWireTest.query(3, "2.0.9.10.in-addr.arpa", DnsWire.TYPE_PTR, 4096, true),
          DnsWireTest.query(4, "outside.example", DnsWire.TYPE_A, 1232, true),
          DnsWireTest.query(5, "my-name", DnsWire.TYPE_AAAA, 0, false),
          DnsWireTest.query(6, "unknown-name-for-docker", 16, 65535, true),
      };
    }

    byte[] next() {
      int kind = r.nextInt(10);
      switch (kind) {
        case 0, 1 -> {
          byte[] b = new byte[r.nextInt(600)];
          r.nextBytes(b);
          return b;
        }
        case 2 -> { // truncated
          byte[] s = seed();
          return java.util.Arrays.copyOf(s, r.nextInt(s.length + 1));
        }
        case 3, 4 -> { // bit flips
          byte[] s = seed().clone();
          int flips = 1 + r.nextInt(8);
          for (int i = 0; i < flips; i++) {
            s[r.nextInt(s.length)] ^= (byte) (1 << r.nextInt(8));
          }
          return s;
        }
        case 5 -> { // random counts, opcodes, QR
          byte[] s = seed().clone();
          for (int i = 2; i < 12; i++) {
            if (r.nextInt(3) == 0) {
              s[i] = (byte) r.nextInt(256);
            }
          }
          return s;
        }
        case 6 -> { // label lengths and compression pointers in the question, loops included
          byte[] s = seed().clone();
          int at = 12 + r.nextInt(Math.max(1, s.length - 16));
          int v = r.nextInt(4);
          s[at] = (byte) (v == 0 ? 0xc0 : v == 1 ? 0x3f : v == 2 ? 0x80 : 0x40);
          if (at + 1 < s.length) {
            s[at + 1] = (byte) (v == 0 ? 12 : r.nextInt(256));
          }
          return s;
        }
        case 7 -> { // garbage or huge records after the question
          byte[] s = seed();
          byte[] tail = new byte[r.nextInt(64)];
          r.nextBytes(tail);
          byte[] b = java.util.Arrays.copyOf(s, s.length + tail.length);
          System.arraycopy(tail, 0, b, s.length, tail.length);
          b[7] = (byte) r.nextInt(4);
          b[9] = (byte) r.nextInt(4);
          b[11] = (byte) r.nextInt(4);
          return b;
        }
        case 8 -> { // a valid query for a random name (forwarded) or a long name
          StringBuilder n = new StringBuilder();
          int labels = 1 + r.nextInt(6);
          for (int i = 0; i < labels; i++) {
            if (i > 0) {
              n.append('.');
            }
            int len = 1 + r.nextInt(20);
            for (int j = 0; j < len; j++) {
              n.append((char) ('a' + r.nextInt(26)));
            }
          }
          return DnsWireTest.query(r.nextInt(65536), n.toString(), r.nextBoolean() ? 1 : 28, r.nextInt(2) * 1232, true);
        }
        default -> { // valid seeds as they are
          byte[] s = seed().clone();
          s[0] = (byte) r.nextInt(256);
          s[1] = (byte) r.nextInt(256);
          return s;
        }
      }
    }

    byte[] seed() {
      return seeds[r.nextInt(seeds.length)];
    }
  }

  /** Frames of garbage over TCP, oversized length prefixes, half frames, then the listener still serves TCP. */
  static void tcpGarbage(Namespaces.Switcher switcher, String key, Random r) throws Exception {
    Fuzzer f = new Fuzzer(r);
    for (int conn = 0; conn < 200; conn++) {
      SocketChannel s = switcher.submit(Path.of(key), -1, () -> SocketChannel.open(StandardProtocolFamily.INET)).get();
      try (s) {
        s.connect(new InetSocketAddress(DnsListener.DOCKER_DNS, 53));
        for (int i = 0; i < 50; i++) {
          byte[] p = f.next();
          ByteBuffer b = ByteBuffer.allocate(p.length + 2);
          int len = r.nextInt(20) == 0 ? r.nextInt(65536) : p.length;
          b.putShort((short) len);
          b.put(p);
          b.flip();
          try {
            s.write(b);
          } catch (IOException e) {
            break; // the listener closed this connection (e.g. it sent a response as a query)
          }
        }
      }
    }
  }

  static long heapAfterGc() throws InterruptedException {
    long best = Long.MAX_VALUE;
    for (int i = 0; i < 3; i++) {
      System.gc();
      Thread.sleep(100);
      best = Math.min(best, ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed());
    }
    return best;
  }

  static void dockerRules(String c, FakeDockerResolver d) {
    String u = String.valueOf(d.udpPort);
    String t = String.valueOf(d.tcpPort);
    for (List<String> r : List.of(
        List.of("-t", "nat", "-N", "DOCKER_OUTPUT"),
        List.of("-t", "nat", "-I", "OUTPUT", "-d", "127.0.0.11", "-j", "DOCKER_OUTPUT"),
        List.of("-t", "nat", "-I", "DOCKER_OUTPUT", "-d", "127.0.0.11", "-p", "udp", "--dport", "53", "-j", "DNAT",
            "--to-destination", "127.0.0.11:" + u),
        List.of("-t", "nat", "-I", "DOCKER_OUTPUT", "-d", "127.0.0.11", "-p", "tcp", "--dport", "53", "-j", "DNAT",
            "--to-destination", "127.0.0.11:" + t))) {
      List<String> argv = new ArrayList<>(List.of("ip", "netns", "exec", c, "iptables"));
      argv.addAll(r);
      Netns.run(argv).ok();
    }
  }

  /** A synced snapshot with a network, a VIP service and the asking container. */
  static ClusterState state(EtcdSchema schema) {
    Map<String, KeyValue> kvs = new HashMap<>();
    String net = "fuzznet0000000000000000001";
    put(kvs, schema.dockerNetwork(net), new DockerNetwork(net, "fuzz", "flannel-np:latest", "fl-fuzz", "10.9.0.0/24")
        .toJson());
    put(kvs, schema.dockerService("svc"), new ServiceRecord("svc", "my-name", EndpointMode.VIP, Map.of(net, "10.9.0.2"),
        Map.of()).toJson());
    put(kvs, schema.dockerContainer(NODE, "c-fuzz"), new ContainerRecord("c-fuzz", "client", "client", NODE, "", "", "",
        "", "running", "", Map.of(net, new Attachment("10.9.0.100", "ep-fuzz", List.of(), ""))).toJson());
    return new ClusterState(1, true, Map.copyOf(kvs));
  }

  static void put(Map<String, KeyValue> kvs, String key, String value) {
    kvs.put(key, new KeyValue(key, value, 1, 1, 1, 0));
  }
}
