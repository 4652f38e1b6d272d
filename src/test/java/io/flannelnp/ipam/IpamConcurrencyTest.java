package io.flannelnp.ipam;

import static io.flannelnp.testing.Futures.await;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.PrefixWatch;
import io.flannelnp.etcd.WatchBatch;
import io.flannelnp.etcd.WatchEvent;
import io.flannelnp.ipam.IpamException.Reason;
import io.flannelnp.ipam.Owner.Kind;
import io.flannelnp.ipam.Owner.Space;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Predicate;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The invariant "no IP is ever held by two live owners, and nobody frees another's address",
 * under concurrency, against a real etcd.
 *
 * <p>Eight simulated node daemons and two simulated Swarm leaders (a leader change overlapping:
 * both allocate in the cluster range at once) each have their own Vertx, their own etcd client and
 * their own {@link Ipam}, so their caches are as independent as separate daemons'. One worker per
 * daemon performs a random mix of 10,000 operations in all: allocations in its own range, claims
 * of addresses in other nodes' blocks and in the cluster range (which must be refused as IN_USE
 * unless the address is really free), releases of its own addresses, and releases of addresses
 * other daemons hold (which must be no-ops).
 *
 * <p>Every successful grant and release is logged with its owner (every owner is unique: nodes use
 * a fresh MAC per container, leaders a fresh requestedBy). Afterwards etcd's own history of the
 * allocations prefix is read back (one watch from the start revision), every create and delete is
 * matched to exactly one logged grant or release, and the log is replayed in etcd revision order.
 */
@Timeout(value = 110, unit = TimeUnit.SECONDS)
class IpamConcurrencyTest {
  static final int TOTAL_OPS = 10_000;
  static final int NODES = 8;
  static final int LEADERS = 2;
  /** Addresses one worker holds at most; keeps every range far from exhaustion. */
  static final int MAX_HELD = 10;
  static final String FID = "conc-net";
  static final Duration RUN_LIMIT = Duration.ofSeconds(75);

  record Grant(String worker, long address, Owner owner, boolean specific, long startNs, long endNs) {}

  record Release(String worker, long address, Owner owner, long startNs, long endNs) {}

  /** An IN_USE refusal of allocateSpecific, with the holder its message named. */
  record Refusal(String worker, long address, Owner requested, String holder, long startNs, long endNs) {}

  /** An address and one of its (unique) owners: how log entries and etcd events are matched. */
  record Holding(long address, Owner owner) {}

  EtcdServer etcd;
  String prefix;
  EtcdSchema schema;
  final List<Vertx> vertxes = new ArrayList<>();
  final List<EtcdStore> stores = new ArrayList<>();
  final List<Ipam> ipams = new ArrayList<>();

  final ConcurrentLinkedQueue<Grant> grants = new ConcurrentLinkedQueue<>();
  final ConcurrentLinkedQueue<Release> releases = new ConcurrentLinkedQueue<>();
  final ConcurrentLinkedQueue<Refusal> refusals = new ConcurrentLinkedQueue<>();
  final ConcurrentLinkedQueue<String> violations = new ConcurrentLinkedQueue<>();
  final AtomicInteger ops = new AtomicInteger();
  final AtomicInteger done = new AtomicInteger();
  final AtomicBoolean stop = new AtomicBoolean();
  final Map<String, AtomicLong> counters = new ConcurrentHashMap<>();
  final List<Worker> workers = new CopyOnWriteArrayList<>();

  @BeforeEach
  void startEtcd() {
    etcd = EtcdServer.start();
    prefix = "/fnp-test/IpamConcurrencyTest";
    schema = new EtcdSchema(prefix);
  }

  @AfterEach
  void cleanup() throws Exception {
    stop.set(true);
    try {
      if (!stores.isEmpty()) {
        EtcdStore s = stores.get(0);
        await(s.deletePrefix(schema.root()));
        assertThat(await(s.list(schema.root())).kvs()).isEmpty();
      }
    } finally {
      ipams.forEach(Ipam::detach);
      stores.forEach(EtcdStore::close);
      for (Vertx v : vertxes) {
        v.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
      }
      etcd.close();
    }
  }

  // ---- set-up -----------------------------------------------------------------------------

  Config config(String node) {
    return Config.fromEnv(Map.of(
        "ETCD_ENDPOINTS", etcd.endpoint(),
        "ETCD_PREFIX", prefix,
        "AVAILABLE_SUBNETS", "10.60.0.0/16",
        "NETWORK_SUBNET_SIZE", "20",
        "DEFAULT_HOST_SUBNET_SIZE", "25",
        "NODE_NAME", node));
  }

  /** A simulated daemon: its own Vertx, its own etcd client, its own Ipam. */
  Ipam daemon(String node) {
    Vertx v = Vertx.vertx();
    vertxes.add(v);
    EtcdStore s = new EtcdStore(v, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(10));
    stores.add(s);
    Ipam ipam = new Ipam(s, schema, config(node));
    ipams.add(ipam);
    return ipam;
  }


  void count(String what) {
    counters.computeIfAbsent(what, k -> new AtomicLong()).incrementAndGet();
  }

  long counter(String what) {
    AtomicLong c = counters.get(what);
    return c == null ? 0 : c.get();
  }

  void violation(String what) {
    violations.add(what);
  }

  // ---- workers ----------------------------------------------------------------------------

  /** One daemon's requester: a node (its own block) or a leader (the cluster range). */
  final class Worker implements Runnable {
    final String name;
    final Ipam ipam;
    final boolean leader;
    final long first;
    final long last;
    final Random rnd;
    /** What this worker holds: added after etcd granted it, removed before it asks etcd to free it. */
    final Map<Long, Owner> held = new ConcurrentHashMap<>();
    final List<Long> heldList = new ArrayList<>();
    int seq;
    volatile Throwable died;

    Worker(String name, Ipam ipam, boolean leader, long first, long last, long seed) {
      this.name = name;
      this.ipam = ipam;
      this.leader = leader;
      this.first = first;
      this.last = last;
      this.rnd = new Random(seed);
    }

    Predicate<Owner> mine() {
      return leader ? o -> o.space() == Space.GLOBAL : o -> o.node().equals(name);
    }

    Owner freshOwner() {
      int n = ++seq;
      if (leader) {
        return Owner.leader(Kind.PLACEHOLDER, name + "#" + n);
      }
      int idx = Integer.parseInt(name.substring(name.lastIndexOf('-') + 1));
      return Owner.container(name, String.format("02:%02x:%02x:%02x:%02x:%02x", idx, (n >> 24) & 0xff,
          (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff), "");
    }

    @Override
    public void run() {
      try {
        while (!stop.get() && ops.getAndIncrement() < TOTAL_OPS) {
          step();
          done.incrementAndGet();
        }
      } catch (Throwable t) {
        died = t;
        violation(name + " died: " + t);
        stop.set(true);
      }
    }

    /** One Ipam call: a release of its own, a foreign release, a claim elsewhere, or an allocation. */
    void step() throws Exception {
      double r = rnd.nextDouble();
      if (heldList.size() >= MAX_HELD || (!heldList.isEmpty() && r < 0.40)) {
        releaseOwn();
      } else if (r < 0.50) {
        if (!releaseForeign()) {
          allocateNextOwn();
        }
      } else if (!leader && r < 0.65) {
        if (!claimSpecific()) {
          allocateNextOwn();
        }
      } else {
        allocateNextOwn();
      }
    }

    void allocateNextOwn() throws Exception {
      Owner o = freshOwner();
      long t0 = System.nanoTime();
      try {
        Ipam.Allocation a = await(ipam.allocateNext(FID, first, last, o, name + " range", "test"));
        granted(a, o, false, t0);
        count(leader ? "leader allocateNext" : "node allocateNext");
      } catch (IpamException e) {
        violation(name + ": allocateNext refused in a range far from full: " + e.reason() + " " + e.getMessage());
      }
    }

    /** Claims an address of another node's block or of the cluster range; must be IN_USE or genuinely free. */
    boolean claimSpecific() throws Exception {
      long target = pickTarget();
      if (held.containsKey(target)) {
        return false;
      }
      Owner o = freshOwner();
      long t0 = System.nanoTime();
      try {
        Ipam.Allocation a = await(ipam.allocateSpecific(FID, target, o));
        granted(a, o, true, t0);
        count("claim granted");
      } catch (IpamException e) {
        long t1 = System.nanoTime();
        String marker = "is already in use by ";
        if (e.reason() != Reason.IN_USE || !e.getMessage().contains(marker)) {
          violation(name + ": allocateSpecific of " + Ipv4.format(target) + " failed with " + e.reason() + ": "
              + e.getMessage());
          return true;
        }
        String holder = e.getMessage().substring(e.getMessage().indexOf(marker) + marker.length());
        refusals.add(new Refusal(name, target, o, holder, t0, t1));
        count("claim refused IN_USE");
      }
      return true;
    }

    long pickTarget() {
      if (rnd.nextBoolean()) {
        // an address somebody else holds right now (very likely refused)
        List<Worker> others = workers.stream().filter(w -> w != this && !w.held.isEmpty()).toList();
        if (!others.isEmpty()) {
          List<Long> theirs = new ArrayList<>(others.get(rnd.nextInt(others.size())).held.keySet());
          if (!theirs.isEmpty()) {
            return theirs.get(rnd.nextInt(theirs.size()));
          }
        }
      }
      // a random address of the cluster range (30%) or of another node's block
      boolean cluster = rnd.nextDouble() < 0.3;
      List<Worker> ranges = workers.stream().filter(w -> w != this && w.leader == cluster).toList();
      Worker w = ranges.get(rnd.nextInt(ranges.size()));
      return w.first + rnd.nextInt((int) (w.last - w.first + 1));
    }

    void releaseOwn() throws Exception {
      int i = rnd.nextInt(heldList.size());
      long address = heldList.remove(i);
      Owner o = held.remove(address);
      long t0 = System.nanoTime();
      boolean freed = await(ipam.release(FID, address, mine()));
      long t1 = System.nanoTime();
      if (!freed) {
        violation(name + ": release of its own " + Ipv4.format(address) + " (" + o.describe() + ") returned false");
        return;
      }
      releases.add(new Release(name, address, o, t0, t1));
      count("own release");
    }

    /**
     * Releases an address another daemon holds, with this daemon's predicate: must be a no-op.
     * A leader only targets addresses of node blocks, which no leader can hold (in the cluster
     * range another leader could legitimately take the address over in the meantime, and any
     * leader may free any leader's address).
     */
    boolean releaseForeign() throws Exception {
      List<Worker> others = workers.stream()
          .filter(w -> w != this && !w.held.isEmpty() && (!w.leader || !leader)).toList();
      if (others.isEmpty()) {
        return false;
      }
      List<Long> theirs = new ArrayList<>(others.get(rnd.nextInt(others.size())).held.keySet());
      if (leader) {
        theirs.removeIf(a -> a >= first && a <= last);
      }
      theirs.removeIf(held::containsKey);
      if (theirs.isEmpty()) {
        return false;
      }
      long address = theirs.get(rnd.nextInt(theirs.size()));
      boolean freed = await(ipam.release(FID, address, mine()));
      if (freed) {
        violation(name + ": release of " + Ipv4.format(address) + ", held by another daemon, returned true");
      }
      count("foreign release");
      return true;
    }

    void granted(Ipam.Allocation a, Owner requested, boolean specific, long t0) {
      long t1 = System.nanoTime();
      if (a.existing() || !a.owner().equals(requested)) {
        violation(name + ": " + Ipv4.format(a.address()) + " came back as already held (" + a.owner().describe()
            + ") for a fresh owner " + requested.describe());
        return;
      }
      if (!specific && (a.address() < first || a.address() > last)) {
        violation(name + ": allocateNext gave " + a.ip() + " outside its range");
      }
      grants.add(new Grant(name, a.address(), requested, specific, t0, t1));
      held.put(a.address(), requested);
      heldList.add(a.address());
    }
  }

  // ---- the test ---------------------------------------------------------------------------

  @Test
  void noAddressIsEverHeldByTwoLiveOwnersAndNobodyFreesAnothersAddress() throws Exception {
    long t0 = System.nanoTime();
    Ipam leader1 = daemon("leader-1");
    NetworkRecord rec = await(leader1.createNetwork(FID, Optional.empty(), Map.of()));
    assertThat(rec.subnet()).isEqualTo(Cidr.parse("10.60.0.0/20"));
    AddressPlan plan = leader1.plan();
    Ipam leader2 = daemon("leader-2");

    long seed = Long.getLong("ipam.seed", System.currentTimeMillis());
    List<Worker> nodeWorkers = new ArrayList<>();
    Map<String, Ipam.NodeLease> nodeLeases = new TreeMap<>();
    for (int i = 1; i <= NODES; i++) {
      String node = "node-" + i;
      Ipam ipam = daemon(node);
      Ipam.NodeLease lease = await(ipam.ensureNodeLease(FID, node, "198.18.0." + (10 + i)));
      nodeLeases.put(node, lease);
      nodeWorkers.add(new Worker(node, ipam, false, AddressPlan.nodeFirst(lease.block()),
          AddressPlan.nodeLast(lease.block()), seed + i));
    }
    assertThat(nodeLeases.values().stream().map(Ipam.NodeLease::block).distinct()).hasSize(NODES);
    workers.addAll(nodeWorkers);
    workers.add(new Worker("leader-1", leader1, true, plan.clusterFirst(rec.subnet()), plan.clusterLast(rec.subnet()),
        seed + 101));
    workers.add(new Worker("leader-2", leader2, true, plan.clusterFirst(rec.subnet()), plan.clusterLast(rec.subnet()),
        seed + 102));

    EtcdStore check = stores.get(0);
    String allocations = schema.allocations(FID);
    long startRevision = await(check.list(allocations)).revision();
    assertThat(await(check.list(allocations)).kvs()).isEmpty();

    // ---- run ----
    List<Thread> threads = new ArrayList<>();
    for (Worker w : workers) {
      Thread t = new Thread(w, "ipam-" + w.name);
      t.setDaemon(true);
      threads.add(t);
    }
    long runStart = System.nanoTime();
    threads.forEach(Thread::start);
    long deadline = runStart + RUN_LIMIT.toNanos();
    for (Thread t : threads) {
      t.join(Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())));
    }
    stop.set(true);
    boolean allDone = threads.stream().noneMatch(Thread::isAlive);
    for (Thread t : threads) {
      t.join(TimeUnit.SECONDS.toMillis(35)); // an in-flight call ends within its own deadline
    }
    long runMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - runStart);
    assertThat(allDone).as("10,000 operations within %s (seed %d)", RUN_LIMIT, seed).isTrue();
    assertThat(done.get()).as("Ipam calls made").isEqualTo(TOTAL_OPS);

    // ---- etcd's own history of the allocations, from the start revision to a sentinel ----
    List<WatchEvent> history = readHistory(check, startRevision);

    // ---- match every etcd create/delete to exactly one logged grant/release ----
    Map<Holding, Grant> grantBy = new HashMap<>();
    for (Grant g : grants) {
      if (grantBy.put(new Holding(g.address(), g.owner()), g) != null) {
        violation("owner " + g.owner() + " logged twice");
      }
    }
    Map<Holding, Release> releaseBy = new HashMap<>();
    for (Release r : releases) {
      if (releaseBy.put(new Holding(r.address(), r.owner()), r) != null) {
        violation("release of " + Ipv4.format(r.address()) + " by " + r.owner() + " logged twice");
      }
    }
    Map<Holding, Long> grantRevision = new HashMap<>();
    Map<Holding, Long> releaseRevision = new HashMap<>();
    // replay in etcd revision order (the watch delivers history in that order)
    Map<Long, Owner> live = new HashMap<>();
    long lastRev = 0;
    for (WatchEvent e : history) {
      long rev = e.modRevision();
      if (rev < lastRev) {
        violation("history out of order at revision " + rev);
      }
      lastRev = rev;
      long address = Ipv4.parse(e.key().substring(allocations.length()));
      if (e.type() == WatchEvent.Type.PUT) {
        Owner o = Owner.fromJson(e.kv().value());
        Owner before = live.put(address, o);
        if (before != null || e.kv().version() != 1) {
          violation("revision " + rev + ": " + Ipv4.format(address) + " granted to " + o.describe()
              + " while " + (before == null ? "its key existed" : before.describe() + " still held it"));
        }
        Holding h = new Holding(address, o);
        if (!grantBy.containsKey(h)) {
          violation("revision " + rev + ": " + Ipv4.format(address) + " written for " + o + " but no caller was granted it");
        }
        if (grantRevision.put(h, rev) != null) {
          violation("revision " + rev + ": " + Ipv4.format(address) + " granted twice to " + o);
        }
      } else {
        Owner o = e.prev() == null ? null : Owner.fromJson(e.prev().value());
        Owner holder = live.remove(address);
        if (o == null || !o.equals(holder)) {
          violation("revision " + rev + ": delete of " + Ipv4.format(address) + " whose holder per the log is "
              + holder + " but etcd had " + o);
          continue;
        }
        Holding h = new Holding(address, o);
        Release r = releaseBy.get(h);
        if (r == null) {
          violation("revision " + rev + ": " + Ipv4.format(address) + " of " + o.describe()
              + " was freed, but its holder never released it (another's release freed it)");
        } else if (!grantBy.containsKey(h) || !grantBy.get(h).worker().equals(r.worker())) {
          violation("revision " + rev + ": " + Ipv4.format(address) + " freed by " + r.worker() + " who was not its holder");
        }
        releaseRevision.put(h, rev);
      }
    }
    for (Grant g : grants) {
      if (!grantRevision.containsKey(new Holding(g.address(), g.owner()))) {
        violation(g.worker() + " was granted " + Ipv4.format(g.address()) + " but etcd never wrote it");
      }
    }
    for (Release r : releases) {
      if (!releaseRevision.containsKey(new Holding(r.address(), r.owner()))) {
        violation(r.worker() + " released " + Ipv4.format(r.address()) + " but etcd never deleted it");
      }
    }

    // ---- every IN_USE refusal named a holder that really held the address around that time ----
    for (Refusal f : refusals) {
      if (f.holder().equals(f.requested().describe())) {
        violation(f.worker() + ": refused " + Ipv4.format(f.address()) + " naming itself as the holder");
        continue;
      }
      boolean plausible = grants.stream().anyMatch(g -> {
        if (g.address() != f.address() || !g.owner().describe().equals(f.holder())) {
          return false;
        }
        Release r = releaseBy.get(new Holding(g.address(), g.owner()));
        return g.startNs() < f.endNs() && (r == null || r.endNs() > f.startNs());
      });
      if (!plausible) {
        violation(f.worker() + ": " + Ipv4.format(f.address()) + " refused as held by " + f.holder()
            + " but no such holder held it during the call");
      }
    }

    // ---- what etcd holds now is exactly what the log says is held, and what workers think they hold ----
    Map<Long, Owner> inEtcd = new HashMap<>();
    for (KeyValue kv : await(check.list(allocations)).kvs()) {
      inEtcd.put(Ipv4.parse(kv.key().substring(allocations.length())), Owner.fromJson(kv.value()));
    }
    Map<Long, Owner> byWorkers = new HashMap<>();
    for (Worker w : workers) {
      w.held.forEach((a, o) -> {
        if (byWorkers.put(a, o) != null) {
          violation(Ipv4.format(a) + " is in two workers' held sets");
        }
      });
    }
    Map<Long, Owner> byLog = new HashMap<>();
    for (Grant g : grants) {
      if (!releaseBy.containsKey(new Holding(g.address(), g.owner()))) {
        if (byLog.put(g.address(), g.owner()) != null) {
          violation(Ipv4.format(g.address()) + " is held twice according to the log");
        }
      }
    }

    String summary = String.format("seed %d, %d ms for %d ops: %d grants (%d claims granted, %d refused IN_USE), "
            + "%d own releases, %d foreign releases, %d held at the end; counters %s",
        seed, runMs, TOTAL_OPS, grants.size(), counter("claim granted"), counter("claim refused IN_USE"),
        releases.size(), counter("foreign release"), inEtcd.size(), new TreeMap<>(counters));
    System.out.println("IpamConcurrencyTest: " + summary);
    assertThat(new ArrayList<>(violations)).as(summary).isEmpty();
    assertThat(inEtcd).as("etcd vs the log's replay").isEqualTo(live).isEqualTo(byLog);
    assertThat(inEtcd).as("etcd vs the workers' held sets").isEqualTo(byWorkers);
    // the run exercised what it claims to
    assertThat(counter("node allocateNext")).isGreaterThan(1000);
    assertThat(counter("leader allocateNext")).isGreaterThan(200);
    assertThat(counter("foreign release")).isGreaterThan(300);
    assertThat(counter("claim refused IN_USE")).isGreaterThan(100);
    assertThat(counter("claim granted")).isGreaterThan(100);
    assertThat(grants.stream().filter(g -> g.specific() && plan.clusterRange(rec.subnet()).contains(g.address())))
        .as("node claims granted in the cluster range").isNotEmpty();

    // ---- release everything held: every range is empty ----
    for (Worker w : workers) {
      for (Map.Entry<Long, Owner> e : new ArrayList<>(w.held.entrySet())) {
        assertThat(await(w.ipam.release(FID, e.getKey(), w.mine())))
            .as("%s releases %s", w.name, Ipv4.format(e.getKey())).isTrue();
        w.held.remove(e.getKey());
      }
    }
    assertThat(await(check.list(allocations)).kvs()).as("keys left under allocations/").isEmpty();
    for (Worker w : workers) {
      assertThat(await(w.ipam.find(FID, o -> true))).as("%s sees an empty network", w.name).isEmpty();
    }
    for (Ipam ipam : ipams) {
      await(ipam.releaseNodeLease(FID));
    }
    assertThat(await(check.list(schema.subnets(FID))).kvs()).isEmpty();
    await(leader2.removeNetwork(FID));
    assertThat(await(check.list(schema.root())).kvs()).isEmpty();
    assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(100));
  }

  /**
   * Every event under allocations/ after {@code startRevision}, in revision order: a watch from
   * there on (etcd keeps the history; nothing compacts it here), read until a sentinel written
   * after the run shows up.
   */
  List<WatchEvent> readHistory(EtcdStore s, long startRevision) throws Exception {
    String networkPrefix = schema.network(FID);
    String sentinel = networkPrefix + "zz-history-sentinel";
    List<WatchEvent> events = Collections.synchronizedList(new ArrayList<>());
    AtomicBoolean seen = new AtomicBoolean();
    PrefixWatch w = s.watchFrom(networkPrefix, startRevision + 1, List.of(), new PrefixWatch.Listener() {
      @Override
      public void onBatch(WatchBatch b) {
        if (b.resync()) {
          violation("history was compacted; the check cannot see every event");
        }
        for (WatchEvent e : b.events()) {
          if (e.key().equals(sentinel)) {
            seen.set(true);
          } else if (e.key().startsWith(schema.allocations(FID))) {
            events.add(e);
          }
        }
      }
    });
    try {
      await(s.put(sentinel, "end"));
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
      while (!seen.get()) {
        assertThat(System.nanoTime()).as("history read within 20 s").isLessThan(deadline);
        Thread.sleep(20);
      }
    } finally {
      w.close();
      await(s.delete(sentinel));
    }
    synchronized (events) {
      return new ArrayList<>(events);
    }
  }
}
