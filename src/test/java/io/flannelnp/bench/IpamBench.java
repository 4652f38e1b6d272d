package io.flannelnp.bench;

import static io.flannelnp.testing.Futures.await;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.ipam.AddressPlan;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.Ipam;
import io.flannelnp.ipam.NetworkRecord;
import io.flannelnp.ipam.Owner;
import io.flannelnp.ipam.Owner.Kind;
import io.flannelnp.ipam.Owner.Space;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Predicate;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Latency of the IPAM paths against the cost of the one etcd round trip they cannot avoid, all in
 * one run against one private etcd (run by scripts/bench/ipam-bench.sh):
 *
 * <ol>
 *   <li>(a) the bare create-once transaction an allocation is made of (If version==0 Then put
 *       Else get), sequentially; and, for context, the same with 8 concurrent callers;</li>
 *   <li>(b) {@link Ipam#allocateNext} and {@link Ipam#release} in a node block, sequentially and
 *       with 8 concurrent requesters on one node daemon;</li>
 *   <li>(c) the node-side placeholder path of RequestAddress (find by MAC and placeholder in the
 *       cache, then allocateNext), sequentially and with 8 concurrent requesters.</li>
 * </ol>
 * Every p99 is printed as a ratio to the sequential bare transaction's p99 (goal: below 3).
 *
 * <p>RequestAddress and Join over the plugin socket (HTTP on a unix socket, and for Join the
 * kernel's bridge and veth work) are measured by a later benchmark; Join needs the kernel.
 *
 * <p>System properties: {@code bench.ops} (operations per case, default 2000), {@code
 * bench.stateFile} (where to write "etcd-pid etcd-dir" so the script can clean up if the JVM is
 * killed hard).
 */
public final class IpamBench {
  private static final String FID = "bench-net";
  private static final int CONCURRENCY = 8;
  private static final int HELD_SEQUENTIAL = 32;
  private static final int HELD_PER_REQUESTER = 8;
  /** Kept so the level set below is not garbage-collected with the logger. */
  private static final Logger QUIET = Logger.getLogger("io.flannelnp");

  private record Row(String name, int n, double p50, double p99, double opsPerSec, String unit, double txnsPerOp) {}

  private final List<Row> rows = new ArrayList<>();
  private final int ops;
  private final String metricsUrl;
  private final java.net.http.HttpClient http = java.net.http.HttpClient.newHttpClient();

  private IpamBench(int ops, String endpoint) {
    this.ops = ops;
    this.metricsUrl = endpoint + "/metrics";
  }

  /** Transactions etcd has answered so far (its gRPC counter), to count txns per allocation. */
  private long etcdTxns() throws Exception {
    String body = http.send(java.net.http.HttpRequest.newBuilder(java.net.URI.create(metricsUrl)).build(),
        java.net.http.HttpResponse.BodyHandlers.ofString()).body();
    long sum = 0;
    for (String line : body.split("\n")) {
      if (line.startsWith("grpc_server_handled_total{") && line.contains("grpc_method=\"Txn\"")) {
        sum += (long) Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
      }
    }
    return sum;
  }

  public static void main(String[] args) throws Exception {
    QUIET.setLevel(Level.WARNING);
    int ops = Integer.getInteger("bench.ops", 2000);
    System.out.printf("flannel-np IPAM benchmark: %d operations per case, %d cores, Java %s%n", ops,
        Runtime.getRuntime().availableProcessors(), System.getProperty("java.version"));
    EtcdServer etcd = EtcdServer.start();
    Vertx vertx = Vertx.vertx();
    List<EtcdStore> stores = new ArrayList<>();
    try {
      recordEtcd(etcd);
      new IpamBench(ops, etcd.endpoint()).run(etcd, vertx, stores);
    } finally {
      for (EtcdStore s : stores) {
        s.close();
      }
      vertx.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
      etcd.close();
    }
    System.exit(0);
  }

  /** Tells the script which etcd process and directory are ours, for cleanup after a hard kill. */
  private static void recordEtcd(EtcdServer etcd) throws Exception {
    String stateFile = System.getProperty("bench.stateFile", "");
    if (stateFile.isEmpty()) {
      return;
    }
    String port = "127.0.0.1:" + etcd.clientPort();
    for (ProcessHandle p : ProcessHandle.current().children().toList()) {
      String[] argv = p.info().arguments().orElse(new String[0]);
      if (Arrays.stream(argv).anyMatch(a -> a.contains(port))) {
        for (int i = 0; i + 1 < argv.length; i++) {
          if (argv[i].equals("--data-dir")) {
            Path dir = Path.of(argv[i + 1]).getParent();
            Files.writeString(Path.of(stateFile), p.pid() + " " + dir + "\n");
            return;
          }
        }
      }
    }
  }

  private void run(EtcdServer etcd, Vertx vertx, List<EtcdStore> stores) throws Exception {
    String prefix = "/fnp-bench";
    EtcdSchema schema = new EtcdSchema(prefix);
    Config config = Config.fromEnv(Map.of(
        "ETCD_ENDPOINTS", etcd.endpoint(),
        "ETCD_PREFIX", prefix,
        "AVAILABLE_SUBNETS", "10.60.0.0/16",
        "NETWORK_SUBNET_SIZE", "20",
        "DEFAULT_HOST_SUBNET_SIZE", "25",
        "NODE_NAME", "bench-node"));
    EtcdStore leaderStore = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(10));
    EtcdStore nodeStore = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(10));
    stores.add(leaderStore);
    stores.add(nodeStore);

    // ---- (a) the bare create-once transaction ----
    AtomicInteger keySeq = new AtomicInteger();
    Op bareTxn = () -> {
      String k = prefix + "/bare/" + keySeq.incrementAndGet();
      return nodeStore.txn().ifAbsent(k).thenPut(k, "{\"Kind\":\"container\"}").elseGet(k).commit();
    };
    measure("warm-up", Math.max(1000, ops / 2), 1, bareTxn, false);
    Row bare = measure("(a) bare etcd create-once txn", ops, 1, bareTxn, true);
    measure("(a) bare etcd create-once txn, 8 concurrent", ops, CONCURRENCY, bareTxn, true);
    await(nodeStore.deletePrefix(prefix + "/bare/"));

    // ---- a network and this node's block ----
    Ipam leader = new Ipam(leaderStore, schema, config);
    NetworkRecord rec = await(leader.createNetwork(FID, Optional.empty(), Map.of()));
    Ipam node = new Ipam(nodeStore, schema, config);
    Cidr block = await(node.ensureNodeLease(FID, "bench-node", "198.18.0.11")).block();
    long first = AddressPlan.nodeFirst(block);
    long last = AddressPlan.nodeLast(block);
    Predicate<Owner> mine = o -> o.space() == Space.LOCAL && o.node().equals("bench-node");
    AtomicInteger macSeq = new AtomicInteger();

    // ---- (b) allocateNext + release in the node block ----
    AllocLoop plain = (held) -> {
      int n = macSeq.incrementAndGet();
      return node.allocateNext(FID, first, last, Owner.container("bench-node", mac(n), ""), "block " + block, "bench")
          .map(Ipam.Allocation::address);
    };
    allocReleaseCase("warm-up", Math.max(1000, ops / 2), 1, HELD_SEQUENTIAL, plain, node, mine, false);
    allocReleaseCase("(b) allocateNext", ops, 1, HELD_SEQUENTIAL, plain, node, mine, true);
    allocReleaseCase("(b) allocateNext, 8 concurrent", ops, CONCURRENCY, HELD_PER_REQUESTER, plain, node, mine, true);

    // ---- (c) the placeholder path: a task address the leader chose, a fresh one of this node ----
    long clusterFirst = leader.plan().clusterFirst(rec.subnet());
    AllocLoop placeholder = (held) -> {
      int n = macSeq.incrementAndGet();
      String mac = mac(n);
      String ph = io.flannelnp.ipam.Ipv4.format(clusterFirst + (n % 100));
      Owner owner = Owner.container("bench-node", mac, ph);
      return node.find(FID, o -> o.kind() == Kind.CONTAINER && o.space() == Space.LOCAL
              && o.node().equals("bench-node") && o.mac().equals(mac) && o.placeholder().equals(ph), false)
          .compose(found -> found.isPresent() ? Future.succeededFuture(found.get())
              : node.allocateNext(FID, first, last, owner, "block " + block, "bench"))
          .map(Ipam.Allocation::address);
    };
    allocReleaseCase("(c) placeholder: find + allocateNext", ops, 1, HELD_SEQUENTIAL, placeholder, node, mine, true);
    allocReleaseCase("(c) placeholder, 8 concurrent", ops, CONCURRENCY, HELD_PER_REQUESTER, placeholder, node, mine,
        true);

    // the same bare txn again: how much the machine drifted during the run
    measure("(a) bare etcd create-once txn, again at end", ops, 1, bareTxn, true);

    await(node.releaseNodeLease(FID));
    await(leader.removeNetwork(FID));
    await(leaderStore.deletePrefix(schema.root()));
    print(bare);
  }

  private static String mac(int n) {
    return String.format("02:42:%02x:%02x:%02x:%02x", (n >> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  }

  // ---- measuring -----------------------------------------------------------------------------

  @FunctionalInterface
  private interface Op {
    Future<?> call();
  }

  @FunctionalInterface
  private interface AllocLoop {
    Future<Long> allocate(ArrayDeque<Long> held);
  }

  /** {@code n} calls of {@code op} spread over {@code threads} callers, each waiting for its answer. */
  private Row measure(String name, int n, int threads, Op op, boolean keep) throws Exception {
    long[] lat = new long[n];
    AtomicInteger next = new AtomicInteger();
    long t0 = System.nanoTime();
    runThreads(threads, () -> {
      for (int i = next.getAndIncrement(); i < n; i = next.getAndIncrement()) {
        long s = System.nanoTime();
        await(op.call());
        lat[i] = System.nanoTime() - s;
      }
    });
    long wall = System.nanoTime() - t0;
    Row r = row(name, lat, n * 1e9 / wall, "txn/s", Double.NaN);
    if (keep) {
      rows.add(r);
    }
    return r;
  }

  /**
   * {@code n} allocations over {@code threads} requesters; each requester holds at most {@code
   * maxHeld} addresses and releases its oldest when it has more, so the block never fills and
   * every allocation is paired with a release in steady state. Reports the allocations' latency
   * and rate (over the whole phase, releases included), and the releases' latency.
   */
  private void allocReleaseCase(String name, int n, int threads, int maxHeld, AllocLoop alloc, Ipam node,
      Predicate<Owner> mine, boolean keep) throws Exception {
    long[] allocLat = new long[n];
    long[] relLat = new long[n];
    AtomicInteger next = new AtomicInteger();
    AtomicInteger releases = new AtomicInteger();
    AtomicInteger drained = new AtomicInteger();
    long txns0 = etcdTxns();
    long t0 = System.nanoTime();
    runThreads(threads, () -> {
      ArrayDeque<Long> held = new ArrayDeque<>();
      for (int i = next.getAndIncrement(); i < n; i = next.getAndIncrement()) {
        long s = System.nanoTime();
        long a = await(alloc.allocate(held));
        allocLat[i] = System.nanoTime() - s;
        held.addLast(a);
        if (held.size() > maxHeld) {
          long r = held.removeFirst();
          long s2 = System.nanoTime();
          if (!await(node.release(FID, r, mine))) {
            throw new IllegalStateException("release of a held address returned false");
          }
          relLat[releases.getAndIncrement()] = System.nanoTime() - s2;
        }
      }
      while (!held.isEmpty()) {
        await(node.release(FID, held.removeFirst(), mine));
        drained.incrementAndGet();
      }
    });
    long wall = System.nanoTime() - t0;
    // every release is one compare-and-delete txn (a release never races here: nobody else frees)
    double txnsPerAlloc = (etcdTxns() - txns0 - releases.get() - drained.get()) / (double) n;
    if (keep) {
      rows.add(row(name, allocLat, n * 1e9 / wall, "alloc/s", txnsPerAlloc));
      rows.add(row("    then release" + (threads > 1 ? ", " + threads + " concurrent" : ""),
          Arrays.copyOf(relLat, releases.get()), 0, "", Double.NaN));
    }
  }

  @FunctionalInterface
  private interface Body {
    void run() throws Exception;
  }

  private static void runThreads(int threads, Body body) throws Exception {
    List<Thread> ts = new ArrayList<>();
    List<Throwable> errors = new java.util.concurrent.CopyOnWriteArrayList<>();
    for (int t = 0; t < threads; t++) {
      Thread th = new Thread(() -> {
        try {
          body.run();
        } catch (Throwable e) {
          errors.add(e);
        }
      }, "bench-" + t);
      ts.add(th);
      th.start();
    }
    for (Thread th : ts) {
      th.join();
    }
    if (!errors.isEmpty()) {
      throw new IllegalStateException("a requester failed: " + errors.get(0), errors.get(0));
    }
  }

  private static Row row(String name, long[] lat, double rate, String unit, double txnsPerOp) {
    long[] s = lat.clone();
    Arrays.sort(s);
    return new Row(name, s.length, pct(s, 0.50) / 1e6, pct(s, 0.99) / 1e6, rate, unit, txnsPerOp);
  }

  private static double pct(long[] sorted, double q) {
    if (sorted.length == 0) {
      return Double.NaN;
    }
    int i = (int) Math.ceil(q * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
  }

  private void print(Row bare) {
    String line = "-".repeat(116);
    System.out.println();
    System.out.println(line);
    System.out.printf(Locale.ROOT, "%-46s %6s %9s %9s %14s %11s %14s%n", "case", "n", "p50 ms", "p99 ms", "rate",
        "txns/alloc", "p99 / txn p99");
    System.out.println(line);
    for (Row r : rows) {
      double ratio = r.p99() / bare.p99();
      String rate = r.opsPerSec() > 0 ? String.format(Locale.ROOT, "%.0f %s", r.opsPerSec(), r.unit()) : "";
      String verdict = r == bare ? "" : ratio < 3 ? "  ok" : "  ABOVE 3";
      String txns = Double.isNaN(r.txnsPerOp()) ? "" : String.format(Locale.ROOT, "%.2f", r.txnsPerOp());
      System.out.printf(Locale.ROOT, "%-46s %6d %9.3f %9.3f %14s %11s %8.2f%s%n", r.name(), r.n(), r.p50(), r.p99(),
          rate, txns, ratio, verdict);
    }
    System.out.println(line);
    System.out.println("Ratios are to the sequential bare txn p99 (goal: below 3). allocateNext is one create-once txn"
        + " when the cache guesses right;");
    System.out.println("release is one compare-and-delete txn when the cache knows the holder (else a read first). Concurrent requesters share one"
        + " node daemon (one Ipam, one etcd client)");
    System.out.println("and race for the same next address: txns/alloc (from etcd's own Txn counter) above 1 is the cost"
        + " of those collisions.");
    System.out.println("RequestAddress and Join over the plugin socket are measured by a later benchmark (Join needs the"
        + " kernel).");
  }

}
