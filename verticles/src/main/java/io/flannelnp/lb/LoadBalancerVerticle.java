package io.flannelnp.lb;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdMessage.KeyChanges;
import io.flannelnp.etcd.WatchEvent;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.lb.NftRunner.NftException;
import io.vertx.core.Future;
import java.time.Duration;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.logging.Logger;

/**
 * Swarm VIPs on every node: one nftables table of our own in the host network namespace
 * ({@link LbRules} has the layout), maps from VIP to the service's running tasks, one atomic
 * transaction per change.
 *
 * <p>A level-triggered reconciler with incremental input. A <i>snapshot pass</i> computes the
 * wanted VIP → tasks map from the whole etcd snapshot ({@link LbDesired#compute}) and converges
 * the kernel to it: at start, after any failure, on every periodic resync and after a watch
 * resync. In between, each watch batch ({@link KeyChanges} on {@link Addresses#ETCD_CHANGES})
 * touching services, containers or networks is applied to the last result
 * ({@link LbDesired#update}) and only the affected VIPs' elements are written: no walk over the
 * snapshot (100,000 keys at 20,000 services), so a single-service update costs about one nft
 * transaction. Batches up to the revision of the last snapshot pass are already in it and are
 * skipped; a stale snapshot (older than a batch applied since) is not converged to, another pass
 * follows. Every pass and update publishes a ReconcileReport.
 * <ul>
 *   <li><b>Full sync</b> (the whole table replaced in one transaction) at start, after any failed
 *       transaction (retried after 1 s; a change to a table someone deleted or altered fails), and
 *       every {@link #FULL_RESYNC} on a periodic pass. Stale elements and chains go with it.
 *       With nothing wanted there is no table at all.</li>
 *   <li><b>Partial sync</b> otherwise: the element changes between what the last successful
 *       transaction left (kept in memory, as kube-proxy does; reading 100,000 elements back takes
 *       longer than writing them) and what is wanted.</li>
 * </ul>
 * All of it runs on the runner's own thread ({@link NftRunner}), one pass at a time; every applied
 * (or failed) script is published as {@link Observed.KernelBatch} on {@link Addresses#KERNEL_BATCH}.
 * Stopping the verticle leaves the kernel state alone: connections through VIPs keep working while
 * the daemon restarts, and the full sync of the next start replaces the table with an equal one.
 */
public final class LoadBalancerVerticle extends ReconcilerVerticle {
  private static final Logger LOG = Logger.getLogger(LoadBalancerVerticle.class.getName());

  /** How often a periodic pass rebuilds the whole table even when nothing seems to differ. */
  public static final Duration FULL_RESYNC = Duration.ofMinutes(5);
  /** How often a periodic pass runs (a full sync when {@link #FULL_RESYNC} has passed since the last). */
  public static final Duration RESYNC = Duration.ofSeconds(30);
  /** The delay before the full sync that follows a failed transaction. */
  static final long RETRY_MS = 1000;

  private final EtcdSchema schema;
  private final Optional<Kernel> kernel;
  private final NftRunner.Mode mode;
  private final Duration fullResync;
  private final Duration resync;
  private final LbDesired desired;
  private NftRunner runner;
  private Conntrack conntrack;
  private final java.util.concurrent.ExecutorService flusher = java.util.concurrent.Executors.newSingleThreadExecutor(r -> {
    Thread t = new Thread(r, "lb-conntrack");
    t.setDaemon(true);
    return t;
  });
  /** Namespaces a started plane of this process programs ("" = the process's own). */
  private static final Set<String> ACTIVE = java.util.concurrent.ConcurrentHashMap.newKeySet();
  private String active;

  // runner-thread confined
  private Map<String, List<String>> actual = new java.util.HashMap<>();
  private Set<Integer> chains = Set.of();
  private boolean needFull = true;
  private long lastFull;
  /** The etcd revision the desired state was last brought to (snapshot pass or key changes). */
  private long known;
  private boolean retryPending;
  /** What LbDesired reads: Docker's records, and the reservations and configs that scope their addresses. */
  private static final Set<Family> FAMILIES = EnumSet.of(Family.DOCKER_SERVICES, Family.DOCKER_CONTAINERS,
      Family.DOCKER_NETWORKS, Family.ADDRESS_SPACE, Family.NETWORK_CONFIG);

  /**
   * Reads services and containers and programs nothing (the daemon before it hands the plane its
   * kernel). Use {@link #LoadBalancerVerticle(EtcdSchema, Kernel)}.
   */
  @Deprecated
  public LoadBalancerVerticle(EtcdSchema schema) {
    this(schema, Optional.empty(), NftRunner.Mode.AUTO, FULL_RESYNC, RESYNC);
  }

  /** Programs the VIPs in {@code kernel}'s network namespace (the host namespace of this node). */
  public LoadBalancerVerticle(EtcdSchema schema, Kernel kernel) {
    this(schema, Optional.of(kernel), NftRunner.Mode.AUTO, FULL_RESYNC, RESYNC);
  }

  /** Tests: the nft path, how often a periodic pass runs and how often it rebuilds the table. */
  LoadBalancerVerticle(EtcdSchema schema, Optional<Kernel> kernel, NftRunner.Mode mode, Duration fullResync,
      Duration resync) {
    this.schema = schema;
    this.kernel = kernel;
    this.mode = mode;
    this.fullResync = fullResync;
    this.resync = resync;
    this.desired = new LbDesired(schema);
  }

  @Override
  protected String plane() {
    return "lb";
  }

  @Override
  protected Duration resyncPeriod() {
    return resync;
  }

  /**
   * None: a change in these families arrives as {@link KeyChanges} and is applied incrementally,
   * so a StateChanged must not also start a snapshot pass (a watch resync still does).
   */
  @Override
  protected Set<Family> families() {
    return EnumSet.noneOf(Family.class);
  }

  @Override
  protected Future<?> startPlane() {
    vertx.eventBus().<KeyChanges>consumer(Addresses.ETCD_CHANGES, m -> onChanges(m.body()));
    if (kernel.isEmpty()) {
      return Future.succeededFuture();
    }
    return vertx.executeBlocking(() -> {
      runner = NftRunner.start(kernel.get(), mode);
      conntrack = new Conntrack(kernel.get());
      active = kernel.get().netns().orElse("");
      if (!ACTIVE.add(active)) {
        LOG.warning("another load balancer plane of this process already programs " + kernel.get().where()
            + "; both now write table ip " + LbRules.TABLE);
        active = null;
      }
      LOG.fine("lb programs " + kernel.get().where() + " through " + runner.how());
      return null;
    });
  }

  @Override
  protected Future<?> stopPlane() {
    NftRunner r = runner;
    if (r == null) {
      flusher.shutdown();
      return Future.succeededFuture();
    }
    if (active != null) {
      ACTIVE.remove(active);
    }
    return vertx.executeBlocking(() -> {
      flusher.shutdown();
      if (flusher.awaitTermination(10, java.util.concurrent.TimeUnit.SECONDS)) {
        conntrack.close();
      }
      r.close();
      return null;
    });
  }

  /** Whether a started plane of this process programs network namespace {@code netns} (tests). */
  static boolean programs(String netns) {
    return ACTIVE.contains(netns);
  }

  /** "libnftables" or "nft tool" (tests, diagnostics); empty when the plane programs nothing. */
  String how() {
    return runner == null ? "" : runner.how();
  }

  /** The result of one pass, made on the runner thread. */
  private record Pass(String summary, Observed.KernelBatch batch, String error, List<Conntrack.Gone> gone) {}

  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    if (runner == null) {
      return vertx.executeBlocking(() -> {
        LbDesired.Result r = desired.compute(state.kvs().values());
        return r.vips().size() + " VIPs of " + r.services() + " services, " + r.backends()
            + " backends wanted; no kernel to program";
      }, true);
    }
    return Future.fromCompletionStage(runner.submit(() -> safePass(state, periodic)), vertx.getOrCreateContext())
        .compose(this::finishPass)
        .onSuccess(x -> reconciled = true);
  }

  /** Event loop: a snapshot pass has succeeded (until then, key changes only wake one). */
  private boolean reconciled;

  /** Event loop: publishes a pass's batch, flushes conntrack for tasks that left, schedules a retry. */
  private Future<String> finishPass(Pass p) {
    if (p.batch() != null) {
      vertx.eventBus().publish(Addresses.KERNEL_BATCH, p.batch());
    }
    if (!p.gone().isEmpty()) {
      // after the map update is out: end UDP flows to tasks that left, on a thread of their own
      // (a dump and a delete over netlink per task; the next update must not wait for them)
      flusher.execute(() -> conntrack.flush(p.gone()));
    }
    if (p.error() != null) {
      retrySoon();
      return Future.failedFuture(p.error());
    }
    if (p.summary() != null && p.summary().startsWith(STALE)) {
      wake(false);
    }
    return Future.succeededFuture(p.summary());
  }

  private static final String STALE = "stale snapshot";

  /** Event loop: one watch batch. Ours go to the runner in arrival order (watch order). */
  private void onChanges(KeyChanges kc) {
    if (kc.resync()) {
      return; // its StateChanged(resync) wakes a snapshot pass
    }
    if (!reconciled) {
      wake(false); // the first listing arrived (whatever it holds): the first snapshot pass
      return;
    }
    List<WatchEvent> mine = kc.events().stream().filter(e -> FAMILIES.contains(schema.family(e.key()))).toList();
    if (mine.isEmpty()) {
      return;
    }
    if (runner == null) {
      wake(false); // nothing to program: the snapshot pass reports what is wanted
      return;
    }
    long t0 = System.nanoTime();
    Future.fromCompletionStage(runner.submit(() -> safeUpdate(kc.revision(), mine)), vertx.getOrCreateContext())
        .onComplete(ar -> {
          Pass p = ar.succeeded() ? ar.result() : new Pass(null, null, "lb update failed: " + ar.cause(), List.of());
          if (p == null) {
            wake(false); // no baseline yet, or a full sync is due: a snapshot pass does it
            return;
          }
          if (p.summary() != null && p.summary().isEmpty()) {
            return; // already in the last snapshot pass
          }
          Future<String> done = finishPass(p);
          LOG.log(done.succeeded() ? java.util.logging.Level.FINE : java.util.logging.Level.WARNING,
              () -> "lb update at revision " + kc.revision() + ": "
                  + (done.succeeded() ? done.result() : done.cause().getMessage()));
          vertx.eventBus().publish(Addresses.RECONCILE_REPORT, new Observed.ReconcileReport(plane(), kc.revision(),
              done.succeeded(), done.succeeded() ? done.result() : String.valueOf(done.cause().getMessage()),
              (System.nanoTime() - t0) / 1000, false));
        });
  }

  /** Runner thread: null when a snapshot pass must do it; summary "" when already applied. */
  private Pass safeUpdate(long revision, List<WatchEvent> events) {
    if (needFull || known == 0) {
      return null;
    }
    if (revision <= known) {
      return new Pass("", null, null, List.of());
    }
    known = revision;
    try {
      return apply(desired.update(events), revision, false);
    } catch (RuntimeException e) {
      needFull = true;
      LOG.log(java.util.logging.Level.WARNING, "lb update at revision " + revision + " failed unexpectedly", e);
      return new Pass(null, null, "lb update failed: " + e, List.of());
    }
  }

  private void retrySoon() {
    if (!retryPending) {
      retryPending = true;
      vertx.setTimer(RETRY_MS, t -> {
        retryPending = false;
        wake(false);
      });
    }
  }

  /** Runner thread. Anything unexpected: the next pass is a full sync (nothing half-known is trusted). */
  private Pass safePass(ClusterState state, boolean periodic) {
    try {
      return pass(state, periodic);
    } catch (RuntimeException e) {
      needFull = true;
      LOG.log(java.util.logging.Level.WARNING, "lb pass at revision " + state.revision() + " failed unexpectedly", e);
      return new Pass(null, null, "lb pass failed: " + e, List.of());
    }
  }

  /** Runner thread. */
  private Pass pass(ClusterState state, boolean periodic) {
    if (state.revision() < known) {
      // key changes after this snapshot were applied already; converging to it would undo them
      return new Pass(STALE + " at revision " + state.revision() + " (applied up to " + known
          + "); another pass follows", null, null, List.of());
    }
    known = state.revision();
    return apply(desired.compute(state.kvs().values()), state.revision(), periodic);
  }

  /** Runner thread: converges the kernel to {@code want}. */
  private Pass apply(LbDesired.Result want, long revision, boolean periodic) {
    long now = System.nanoTime();
    boolean full = needFull || (periodic && now - lastFull >= fullResync.toNanos());
    String why = needFull ? "full sync" : "periodic full sync";
    String script;
    String what;
    LbRules.Delta delta = null;
    Set<String> changedKeys = Set.of();
    boolean none = want.vips().isEmpty();
    if (none && (full || !actual.isEmpty())) {
      // nothing wanted: no table at all (a node without services keeps its ruleset untouched)
      if (actual.isEmpty() && !tableExists()) {
        needFull = true; // the first VIP creates the table
        return new Pass("in sync: no VIP, no table", null, null, List.of());
      }
      full = true;
      script = LbRules.absent();
      what = "table removed (no VIP)";
    } else if (full) {
      script = LbRules.full(want.vips());
      what = why;
    } else {
      // only the VIPs the computation says may have changed (all of them after a network change)
      Set<String> keys = want.changed();
      if (keys == null) {
        keys = new java.util.HashSet<>(actual.keySet());
        keys.addAll(want.vips().keySet());
      }
      Map<String, List<String>> a = new java.util.HashMap<>();
      Map<String, List<String>> d = new java.util.HashMap<>();
      for (String k : keys) {
        List<String> x = actual.get(k);
        if (x != null) {
          a.put(k, x);
        }
        List<String> y = want.vips().get(k);
        if (y != null) {
          d.put(k, y);
        }
      }
      changedKeys = keys;
      // (the maps and chains of counts stay exactly what a full sync makes, so a restart finds
      // equal rules)
      delta = LbRules.delta(a, chains, d, want.chains());
      if (delta.isEmpty()) {
        return new Pass("in sync: " + want.vips().size() + " VIPs of " + want.services() + " services, "
            + want.backends() + " backends", null, null, List.of());
      }
      script = delta.script();
      what = "partial sync " + delta.summary();
    }
    long t0 = System.nanoTime();
    try {
      runner.run(script);
    } catch (NftException | RuntimeException e) {
      long micros = (System.nanoTime() - t0) / 1000;
      needFull = true;
      String error = what + " failed: " + e.getMessage();
      return new Pass(null, new Observed.KernelBatch(plane(), "nft", script, false, e.getMessage(), micros,
          revision), error, List.of());
    }
    long micros = (System.nanoTime() - t0) / 1000;
    List<Conntrack.Gone> gone;
    if (full) {
      gone = Conntrack.gone(actual, want.vips());
      actual = new java.util.HashMap<>(want.vips());
    } else {
      Map<String, List<String>> before = new java.util.HashMap<>();
      for (String k : changedKeys) {
        if (actual.containsKey(k)) {
          before.put(k, actual.get(k));
        }
      }
      gone = Conntrack.gone(before, want.vips());
      for (String k : changedKeys) {
        List<String> y = want.vips().get(k);
        if (y == null) {
          actual.remove(k);
        } else {
          actual.put(k, y);
        }
      }
    }
    if (full) {
      chains = new TreeSet<>(want.chains());
      lastFull = System.nanoTime();
      needFull = none; // no table now: the first VIP creates it
    } else if (!delta.newChains().isEmpty() || !delta.deleteChains().isEmpty()) {
      Set<Integer> c = new TreeSet<>(chains);
      c.addAll(delta.newChains());
      delta.deleteChains().forEach(c::remove);
      chains = c;
    }
    String summary = what + ": " + want.vips().size() + " VIPs of " + want.services() + " services, "
        + want.backends() + " backends in " + micros + " µs (" + runner.how() + ")";
    return new Pass(summary, new Observed.KernelBatch(plane(), "nft", script, true, "", micros, revision), null,
        gone);
  }

  /**
   * Whether our table exists. Only asked while nothing is wanted: listing anything with nft 1.0.6
   * loads the whole ruleset, elements included (about 1 s at 20,000 services), so the table's
   * integrity is not polled; a change that finds it altered fails and is followed by a full sync,
   * and the periodic full sync repairs the rest.
   */
  private boolean tableExists() {
    try {
      String out = runner.list("tables"); // text (libnftables) or JSON (nft tool)
      return out.contains("table " + LbRules.FAMILY + " " + LbRules.TABLE + "\n")
          || out.matches("(?s).*\\{\"family\": \"" + LbRules.FAMILY + "\", \"name\": \"" + LbRules.TABLE + "\".*");
    } catch (NftException | RuntimeException e) {
      return true; // unknown: let the caller rebuild
    }
  }
}
