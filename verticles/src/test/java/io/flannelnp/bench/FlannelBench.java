package io.flannelnp.bench;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.bus.Observed.ReconcileReport;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.EtcdWatchVerticle;
import io.flannelnp.flannel.FlannelVerticle;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.FlannelJson;
import io.flannelnp.ipam.Ipv4;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Netns;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonArray;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The VXLAN data plane's programming speed on one real host (a network namespace), measured in one
 * run against one private etcd (scripts/bench/flannel-bench.sh runs it):
 *
 * <ol>
 *   <li>1,000 remote leases written to etcd at once, in transactions of 100: time from the first
 *       write until all are programmed (route, neighbour and FDB entry each; the FlannelVerticle's
 *       report for a revision at or after the last write, then checked in the kernel). Then all
 *       deleted at once (time until all are removed), then written again with one put each, as
 *       1,000 nodes would (there etcd's own write rate shows).</li>
 *   <li>One new lease at a time, on top of those 1,000: latency from the put until its route is
 *       programmed (p50, p99), each checked in the kernel afterwards.</li>
 *   <li>The same 1,000 entries programmed in a second namespace with one {@code ip}/{@code bridge}
 *       command per entry (3,000 processes), and with the three batches the daemon uses, without
 *       the daemon; and one entry's three commands, for the per-lease comparison.</li>
 * </ol>
 *
 * The daemon's part is exactly what runs in production: EtcdWatchVerticle and FlannelVerticle on
 * the event bus; only the plugin API, IPAM, LB and DNS verticles are left out (they play no part).
 */
public final class FlannelBench {
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final String PREFIX = "/fnp-flannel-bench";
  private static final EtcdSchema SCHEMA = new EtcdSchema(PREFIX);
  private static final String FID = "bench";
  private static final int VNI = 4242;
  private static final String DEV = "flannel." + VNI;
  private static final String ME = "198.18.0.11";
  private static final Cidr NETWORK = Cidr.parse("10.96.0.0/13");
  private static final int SUBNET_LEN = 24;

  public static void main(String[] args) throws Exception {
    Logger.getLogger("").setLevel(Level.WARNING);
    for (var h : Logger.getLogger("").getHandlers()) {
      h.setLevel(Level.WARNING);
    }
    int leases = Integer.getInteger("bench.leases", 1000);
    int samples = Integer.getInteger("bench.samples", 200);
    if ((long) leases + samples + 1 > NETWORK.count(SUBNET_LEN)) {
      throw new IllegalArgumentException("at most " + (NETWORK.count(SUBNET_LEN) - 1) + " leases and samples in all");
    }
    System.out.printf("flannel-np VXLAN data plane benchmark: %d leases, %d single-lease samples, %d cores, Java %s,"
        + " load average %s%n", leases, samples, Runtime.getRuntime().availableProcessors(),
        System.getProperty("java.version"), load());
    String stem = "fnpbench-" + HexFormat.of().formatHex(bytes(3));
    String host = stem + "-h";
    String cmp = stem + "-cmp";
    EtcdServer etcd = EtcdServer.start();
    Vertx vertx = Vertx.vertx();
    EtcdStore store = null;
    int rc = 0;
    try {
      record(etcd, stem);
      for (String ns : List.of(host, cmp)) {
        Netns.run("ip", "netns", "add", ns).ok();
        run(List.of("ip", "-n", ns, "-batch", "-"), "link set dev lo up\nlink add name eth0 type veth peer name eth1\n"
            + "addr add " + ME + "/24 dev eth0\nlink set dev eth0 up\nlink set dev eth1 up\n");
      }
      Codecs.registerAll(vertx.eventBus());
      store = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(10));
      rc = new FlannelBench(vertx, store, etcd, host, cmp, leases, samples).run();
    } finally {
      if (store != null) {
        store.close();
      }
      vertx.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
      for (String ns : List.of(host, cmp)) {
        Netns.run("ip", "netns", "del", ns);
      }
      etcd.close();
      boolean left = Netns.list().stream().anyMatch(n -> n.startsWith(stem));
      System.out.println(left ? "cleanup: namespaces of " + stem + " LEFT BEHIND" : "cleanup: namespaces, etcd removed");
    }
    System.exit(rc);
  }

  private final Vertx vertx;
  private final EtcdStore store;
  private final EtcdServer etcd;
  private final String host;
  private final String cmp;
  private final int leases;
  private final int samples;
  private final List<ReconcileReport> reports = new CopyOnWriteArrayList<>();
  private final AtomicLong kernelLines = new AtomicLong();
  private final AtomicLong kernelMicros = new AtomicLong();
  private final AtomicLong batches = new AtomicLong();

  private FlannelBench(Vertx vertx, EtcdStore store, EtcdServer etcd, String host, String cmp, int leases, int samples) {
    this.vertx = vertx;
    this.store = store;
    this.etcd = etcd;
    this.host = host;
    this.cmp = cmp;
    this.leases = leases;
    this.samples = samples;
  }

  private int run() throws Exception {
    vertx.eventBus().<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, m -> reports.add(m.body()));
    vertx.eventBus().<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> {
      batches.incrementAndGet();
      kernelLines.addAndGet(m.body().text().lines().count());
      kernelMicros.addAndGet(m.body().micros());
    });
    Config config = Config.fromEnv(Map.of("ETCD_ENDPOINTS", etcd.endpoint(), "ETCD_PREFIX", PREFIX,
        "AVAILABLE_SUBNETS", "10.96.0.0/13", "NODE_NAME", "bench", "DEFAULT_FLANNEL_OPTIONS",
        "-public-ip=" + ME + ",-iface=eth0"), () -> "bench");
    vertx.deployVerticle(new EtcdWatchVerticle(store, SCHEMA)).await(20, TimeUnit.SECONDS);
    vertx.deployVerticle(new FlannelVerticle(config, SCHEMA, Kernel.inNetns(host))).await(20, TimeUnit.SECONDS);

    // this node's network and lease
    store.put(SCHEMA.networkConfig(FID), FlannelJson.networkConfig(NETWORK, SUBNET_LEN, block(1), block(2047), VNI))
        .await(10, TimeUnit.SECONDS);
    long rev = store.put(SCHEMA.subnet(FID, block(0)), FlannelJson.lease(ME, VNI, FlannelJson.vtepMac("bench", VNI)))
        .await(10, TimeUnit.SECONDS);
    awaitReport(rev, Duration.ofSeconds(20));
    check(count("route") == 0 && exists(), "the VXLAN device was not created");

    // 1. a thousand leases at once: in transactions of 100 (what the plane does with a burst), then
    //    all removed, then again with one put each (as 1,000 nodes would write them)
    System.out.printf("%n1a. %d remote leases written at once (transactions of 100 puts)%n", leases);
    double allMs = burst(true, true);
    System.out.printf("%n1b. the %d leases deleted at once (transactions of 100 deletes)%n", leases);
    burst(true, false);
    System.out.printf("%n1c. %d remote leases written at once, one put each%n", leases);
    double perPutMs = burst(false, true);

    // 2. one lease at a time, on top of them
    System.out.printf("%n2. one new lease at a time (%d samples, %d peers already programmed)%n", samples, leases);
    double[] lat = new double[samples];
    for (int s = 0; s < samples; s++) {
      int i = leases + 1 + s;
      Thread.sleep(5 + RANDOM.nextInt(20)); // not in lockstep with the tools of the previous pass
      long t = System.nanoTime();
      long r = store.put(SCHEMA.subnet(FID, block(i)), lease(i)).await(10, TimeUnit.SECONDS);
      awaitReport(r, Duration.ofSeconds(10));
      lat[s] = ms(System.nanoTime() - t);
      String route = Netns.run("ip", "-n", host, "-j", "route", "show", block(i).toString()).ok().out();
      check(route.contains("\"gateway\":\"" + Ipv4.format(block(i).base()) + "\""), "route of sample " + s + " missing");
    }
    Arrays.sort(lat);
    double p50 = pct(lat, 50);
    double p99 = pct(lat, 99);
    System.out.printf("   put → route programmed:  p50 %6.1f ms   p90 %6.1f ms   p99 %6.1f ms   max %6.1f ms%n",
        p50, pct(lat, 90), p99, lat[lat.length - 1]);

    // 3. the same entries, one command each, and in three batches, in a namespace of their own
    System.out.printf("%n3. the same %d entries without the daemon, in a second namespace%n", leases);
    List<String> neigh = new ArrayList<>();
    List<String> fdb = new ArrayList<>();
    List<String> route = new ArrayList<>();
    for (int i = 1; i <= leases; i++) {
      String gw = Ipv4.format(block(i).base());
      neigh.add("neigh replace " + gw + " lladdr " + mac(i) + " dev " + DEV + " nud permanent");
      fdb.add("fdb replace " + mac(i) + " dev " + DEV + " dst " + publicIp(i) + " self permanent");
      route.add("route replace " + block(i) + " via " + gw + " dev " + DEV + " onlink");
    }
    makeDevice(cmp);
    long p0 = System.nanoTime();
    for (int i = 0; i < leases; i++) {
      one("ip", neigh.get(i));
      one("bridge", fdb.get(i));
      one("ip", route.get(i));
    }
    double perEntryMs = ms(System.nanoTime() - p0);
    check(countIn(cmp, "route") == leases, "per-entry programming incomplete");
    makeDevice(cmp); // a fresh device: no entries
    long b0 = System.nanoTime();
    run(List.of("ip", "-n", cmp, "-batch", "-"), String.join("\n", neigh) + "\n");
    run(List.of("bridge", "-netns", cmp, "-batch", "-"), String.join("\n", fdb) + "\n");
    run(List.of("ip", "-n", cmp, "-batch", "-"), String.join("\n", route) + "\n");
    double batchMs = ms(System.nanoTime() - b0);
    check(countIn(cmp, "route") == leases, "batch programming incomplete");
    double[] single = new double[Math.min(samples, 100)];
    for (int s = 0; s < single.length; s++) {
      long t = System.nanoTime();
      one("ip", neigh.get(s));
      one("bridge", fdb.get(s));
      one("ip", route.get(s));
      single[s] = ms(System.nanoTime() - t);
    }
    Arrays.sort(single);
    System.out.printf("   one command per entry (%d processes): %8.1f ms%n", 3 * leases, perEntryMs);
    System.out.printf("   three batches (ip, bridge, ip):        %8.1f ms%n", batchMs);
    System.out.printf("   one lease's three commands:  p50 %6.1f ms   p99 %6.1f ms%n", pct(single, 50), pct(single, 99));

    System.out.printf("%nratios%n");
    System.out.printf("   one command per entry / daemon, all %d leases:   %6.1fx  (%.1fx with one put each)%n", leases,
        perEntryMs / allMs, perEntryMs / perPutMs);
    System.out.printf("   one command per entry / three batches:          %6.1fx%n", perEntryMs / batchMs);
    System.out.printf("   daemon end to end / three batches:              %6.1fx%n", allMs / batchMs);
    System.out.printf("   daemon one lease p50 / three commands p50:      %6.1fx%n", p50 / pct(single, 50));

    System.out.printf("%nload average (1, 5, 15 min) at the end: %s on %d cores%n", load(),
        Runtime.getRuntime().availableProcessors());
    boolean goal1 = allMs < 1000;
    boolean goal2 = p99 < 50;
    System.out.printf("%ngoals%n   %d leases programmed in under 1 s:  %s (%.0f ms in transactions; %.0f ms with one"
        + " put each)%n", leases, goal1 ? "MET" : "NOT MET", allMs, perPutMs);
    System.out.printf("   one lease in under 50 ms p99:       %s (p99 %.1f ms)%n", goal2 ? "MET" : "NOT MET", p99);
    store.deletePrefix(PREFIX + "/").await(10, TimeUnit.SECONDS);
    return 0;
  }

  /**
   * Writes (or deletes) leases 1..{@code leases} at once and waits until the plane has programmed
   * (or removed) all of them; prints the timings and returns the time from the first write until
   * done, in ms.
   */
  private double burst(boolean txns, boolean put) throws Exception {
    long batches0 = batches.get();
    long lines0 = kernelLines.get();
    long micros0 = kernelMicros.get();
    int reports0 = reports.size();
    long t0 = System.nanoTime();
    List<Future<Long>> writes = new ArrayList<>();
    if (txns) {
      for (int from = 1; from <= leases; from += 100) {
        io.flannelnp.etcd.Txn t = store.txn();
        for (int i = from; i < from + 100 && i <= leases; i++) {
          if (put) {
            t.thenPut(SCHEMA.subnet(FID, block(i)), lease(i));
          } else {
            t.thenDelete(SCHEMA.subnet(FID, block(i)));
          }
        }
        writes.add(t.commit().map(r -> r.revision()));
      }
    } else {
      for (int i = 1; i <= leases; i++) {
        writes.add(put ? store.put(SCHEMA.subnet(FID, block(i)), lease(i)) : store.delete(SCHEMA.subnet(FID, block(i))));
      }
    }
    long last = 0;
    for (Future<Long> f : writes) {
      last = Math.max(last, f.await(60, TimeUnit.SECONDS));
    }
    long tWritten = System.nanoTime();
    awaitReport(last, Duration.ofSeconds(60));
    long tDone = System.nanoTime();
    int want = put ? leases : 0;
    check(count("route") == want && count("neigh") == want && count("fdb") == want,
        "not every lease is " + (put ? "programmed" : "removed") + ": routes " + count("route") + ", neighbours "
            + count("neigh") + ", fdb " + count("fdb"));
    double allMs = ms(tDone - t0);
    System.out.printf("   etcd acknowledged the writes:    %8.1f ms after the first%n", ms(tWritten - t0));
    System.out.printf("   all %d %s:            %8.1f ms after the first write (%.1f ms after the last)%n", leases,
        put ? "programmed" : "removed   ", allMs, ms(tDone - tWritten));
    System.out.printf("   work: %d passes, %d kernel batches, %d lines, %.1f ms inside ip/bridge%n",
        reports.size() - reports0, batches.get() - batches0, kernelLines.get() - lines0,
        (kernelMicros.get() - micros0) / 1000.0);
    System.out.printf("   checked in the kernel: %d routes, %d neighbours, %d FDB entries on %s%n",
        count("route"), count("neigh"), count("fdb"), DEV);
    return allMs;
  }

  private static String load() {
    try {
      String[] f = Files.readString(Path.of("/proc/loadavg")).split(" ");
      return f[0] + " " + f[1] + " " + f[2];
    } catch (Exception e) {
      return "?";
    }
  }

  // ---- helpers -------------------------------------------------------------------------------

  private static Cidr block(int i) {
    return NETWORK.subnet(SUBNET_LEN, i);
  }

  private static String publicIp(int i) {
    return "198.19." + (i / 250) + "." + (i % 250 + 1);
  }

  private static String mac(int i) {
    return String.format("0e:bb:00:%02x:%02x:%02x", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
  }

  private static String lease(int i) {
    return FlannelJson.lease(publicIp(i), VNI, mac(i));
  }

  /** Waits for a successful pass of the Flannel plane computed at or after {@code revision}. */
  private void awaitReport(long revision, Duration max) throws InterruptedException {
    long deadline = System.nanoTime() + max.toNanos();
    while (System.nanoTime() < deadline) {
      for (int i = reports.size() - 1; i >= 0; i--) {
        ReconcileReport r = reports.get(i);
        if (r.plane().equals("flannel") && r.ok() && r.revision() >= revision) {
          return;
        }
      }
      Thread.onSpinWait();
      Thread.sleep(0, 200_000);
    }
    throw new IllegalStateException("no successful flannel pass at revision " + revision + " within " + max
        + "; last reports " + reports.subList(Math.max(0, reports.size() - 3), reports.size()));
  }

  private boolean exists() {
    return Netns.run("ip", "-n", host, "link", "show", "dev", DEV).exit() == 0;
  }

  private int count(String what) {
    return countIn(host, what);
  }

  private static int countIn(String ns, String what) {
    String json = switch (what) {
      case "route" -> Netns.run("ip", "-n", ns, "-j", "route", "show", "dev", DEV).ok().out();
      case "neigh" -> Netns.run("ip", "-n", ns, "-j", "neigh", "show", "dev", DEV, "nud", "permanent").ok().out();
      default -> Netns.run("bridge", "-netns", ns, "-j", "fdb", "show", "dev", DEV).ok().out();
    };
    return json.isBlank() ? 0 : new JsonArray(json).size();
  }

  private static void makeDevice(String ns) {
    Netns.run("ip", "-n", ns, "link", "del", "dev", DEV);
    run(List.of("ip", "-n", ns, "-batch", "-"), "link add name " + DEV + " mtu 1450 type vxlan id " + VNI + " local "
        + ME + " dev eth0 dstport 8472 nolearning\nlink set dev " + DEV + " up\n");
  }

  private void one(String tool, String line) {
    List<String> argv = new ArrayList<>(tool.equals("ip") ? List.of("ip", "-n", cmp) : List.of("bridge", "-netns", cmp));
    argv.addAll(List.of(line.split(" ")));
    Netns.run(argv).ok();
  }

  private static void run(List<String> argv, String stdin) {
    Netns.run(argv, stdin).ok();
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new IllegalStateException(what);
    }
  }

  private static double pct(double[] sorted, int p) {
    int i = (int) Math.ceil(p / 100.0 * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
  }

  private static double ms(long nanos) {
    return nanos / 1e6;
  }

  private static byte[] bytes(int n) {
    byte[] b = new byte[n];
    RANDOM.nextBytes(b);
    return b;
  }

  /** Tells the script which etcd process, directory and namespaces are ours, for cleanup after a hard kill. */
  private static void record(EtcdServer etcd, String stem) throws Exception {
    String stateFile = System.getProperty("bench.stateFile", "");
    if (stateFile.isEmpty()) {
      return;
    }
    String port = "127.0.0.1:" + etcd.clientPort();
    StringBuilder b = new StringBuilder("netns " + stem + "\n");
    for (ProcessHandle p : ProcessHandle.current().children().toList()) {
      String[] argv = p.info().arguments().orElse(new String[0]);
      if (Arrays.stream(argv).anyMatch(a -> a.contains(port))) {
        for (int i = 0; i + 1 < argv.length; i++) {
          if (argv[i].equals("--data-dir")) {
            b.append("etcd ").append(p.pid()).append(' ').append(Path.of(argv[i + 1]).getParent()).append('\n');
          }
        }
      }
    }
    Files.writeString(Path.of(stateFile), b.toString());
  }
}
