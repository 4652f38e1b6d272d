package io.flannelnp.bus;

import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdMessage.SnapshotRequest;
import io.flannelnp.etcd.EtcdMessage.StateChanged;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import io.vertx.core.eventbus.DeliveryOptions;
import java.time.Duration;
import java.util.Collections;
import java.util.Set;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A level-triggered reconciler on the event bus. Events only wake it: a {@link StateChanged} in a
 * family it cares about, or the periodic resync. A pass reads the whole {@link ClusterState},
 * computes what it wants, and converges to it. Wake-ups during a pass coalesce into one more
 * pass, so a burst of etcd changes costs at most two passes. A failed pass is retried by the next
 * periodic resync (or sooner, by the next wake-up).
 */
public abstract class ReconcilerVerticle extends VerticleBase {
  private final Logger log = Logger.getLogger(getClass().getName());
  private boolean running;
  private boolean dirty;
  private boolean dirtyPeriodic;
  private boolean stopped;
  private long timer = -1;
  private long lastRevision;

  /** Short name of the plane: "flannel", "lb", "dns". */
  protected abstract String plane();

  /** The families whose changes wake this reconciler. */
  protected abstract Set<Family> families();

  /** One pass; the result is a one-line summary of what it did. */
  protected abstract Future<String> reconcile(ClusterState state, boolean periodic);

  protected Duration resyncPeriod() {
    return Duration.ofSeconds(30);
  }

  /** Hook for subclasses: start extra consumers before the first pass. */
  protected Future<?> startPlane() {
    return Future.succeededFuture();
  }

  /** Hook for subclasses: an orderly stop of the plane (kernel state normally stays). */
  protected Future<?> stopPlane() {
    return Future.succeededFuture();
  }

  @Override
  public final Future<?> start() {
    vertx.eventBus().<StateChanged>consumer(Addresses.STATE_CHANGED, m -> {
      StateChanged sc = m.body();
      if (sc.resync() || !Collections.disjoint(sc.families(), families())) {
        wake(false);
      }
    });
    timer = vertx.setPeriodic(resyncPeriod().toMillis(), t -> wake(true));
    return startPlane().onSuccess(v -> wake(false));
  }

  @Override
  public final Future<?> stop() {
    stopped = true;
    if (timer >= 0) {
      vertx.cancelTimer(timer);
    }
    return stopPlane();
  }

  /** Asks for a pass now (coalesced with one in progress). */
  protected final void wake(boolean periodic) {
    if (stopped) {
      return;
    }
    if (running) {
      dirty = true;
      dirtyPeriodic |= periodic;
      return;
    }
    running = true;
    long t0 = System.nanoTime();
    vertx.eventBus().<ClusterState>request(Addresses.STATE_SNAPSHOT, new SnapshotRequest(),
            new DeliveryOptions().setSendTimeout(10_000))
        .map(m -> m.body())
        .compose(state -> {
          lastRevision = state.revision();
          // Never converge to an empty state that only means "not loaded yet": that would tear
          // down kernel state other nodes depend on.
          return state.synced() ? reconcile(state, periodic)
              : Future.succeededFuture("waiting for the first etcd listing");
        })
        .onComplete(ar -> {
          long micros = (System.nanoTime() - t0) / 1000;
          if (ar.succeeded()) {
            log.log(periodic ? Level.FINE : Level.INFO, plane() + " reconciled at revision " + lastRevision + ": " + ar.result());
          } else {
            log.log(Level.WARNING, plane() + " reconcile failed at revision " + lastRevision + ": " + ar.cause().getMessage());
          }
          vertx.eventBus().publish(Addresses.RECONCILE_REPORT, new Observed.ReconcileReport(plane(), lastRevision,
              ar.succeeded(), ar.succeeded() ? ar.result() : String.valueOf(ar.cause().getMessage()), micros, periodic));
          running = false;
          if (dirty) {
            boolean p = dirtyPeriodic;
            dirty = false;
            dirtyPeriodic = false;
            wake(p);
          }
        });
  }
}
