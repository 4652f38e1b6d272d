package io.flannelnp.lb;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
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
 * <p>A level-triggered reconciler: every pass computes the wanted VIP → tasks map from the whole
 * etcd snapshot ({@link LbDesired}) and converges the kernel to it.
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
  /** Namespaces a started plane of this process programs ("" = the process's own). */
  private static final Set<String> ACTIVE = java.util.concurrent.ConcurrentHashMap.newKeySet();
  private String active;

  // runner-thread confined
  private Map<String, List<String>> actual = new java.util.HashMap<>();
  private Set<Integer> chains = Set.of();
  private boolean needFull = true;
  private long lastFull;
  private boolean retryPending;

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

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.DOCKER_SERVICES, Family.DOCKER_CONTAINERS, Family.DOCKER_NETWORKS);
  }

  @Override
  protected Future<?> startPlane() {
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
      return Future.succeededFuture();
    }
    if (active != null) {
      ACTIVE.remove(active);
    }
    return vertx.executeBlocking(() -> {
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
        .compose(p -> {
          if (p.batch() != null) {
            vertx.eventBus().publish(Addresses.KERNEL_BATCH, p.batch());
          }
          if (!p.gone().isEmpty()) {
            // after the map update is out: end UDP flows to tasks that left (runner thread, so
            // the next pass waits for it)
            runner.submit(() -> conntrack.flush(p.gone()));
          }
          if (p.error() != null) {
            retrySoon();
            return Future.failedFuture(p.error());
          }
          return Future.succeededFuture(p.summary());
        });
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
    LbDesired.Result want = desired.compute(state.kvs().values());
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
          state.revision()), error, List.of());
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
    return new Pass(summary, new Observed.KernelBatch(plane(), "nft", script, true, "", micros, state.revision()), null,
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
