package io.flannelnp.etcd;

import io.flannelnp.bus.Addresses;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdMessage.EtcdStatus;
import io.flannelnp.etcd.EtcdMessage.KeyChanges;
import io.flannelnp.etcd.EtcdMessage.SnapshotRequest;
import io.flannelnp.etcd.EtcdMessage.StateChanged;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.Map;
import java.util.logging.Logger;

/**
 * The daemon's one view of etcd: lists and watches ETCD_PREFIX (resuming without gaps, re-listing
 * after compaction), keeps the mirror, publishes what changed, and answers snapshot requests with
 * an immutable {@link ClusterState}. Also publishes etcd reachability.
 *
 * <p>Records that live on their writer's etcd lease (a node's containers, a node's Flannel lease)
 * vanish when the lease expires. While etcd was away and just after, that says nothing about
 * the writer: its renewals could not reach etcd either, and it writes the records again as soon
 * as it can. So a deletion of such a record during an outage and for {@link #RECOVERY} after is
 * held back for up to {@link #HOLD}: if the record comes back meanwhile, nobody sees it go (no
 * DNS name, VIP backend or route flaps); if not, the deletion is delivered then. Outside that
 * window a lease expiry is delivered at once (a node that died is gone within its TTL).
 */
public final class EtcdWatchVerticle extends VerticleBase {
  private static final Logger LOG = Logger.getLogger(EtcdWatchVerticle.class.getName());

  private final EtcdStore store;
  private final EtcdSchema schema;
  private final Map<String, KeyValue> mirror = new HashMap<>();
  private long revision;
  private boolean synced;
  private ClusterState cached = ClusterState.EMPTY;
  private PrefixWatch watch;
  /** After etcd is reachable again, lease expiries are held for this long. */
  static final long RECOVERY_NANOS = java.time.Duration.ofSeconds(30).toNanos();
  /** How long a held deletion waits for its record to be written again. */
  static final long HOLD_MS = 15_000;
  private boolean etcdDown;
  private long reachableSince = System.nanoTime() - RECOVERY_NANOS;
  /** Deletions held back: key → the event, delivered when its timer fires unless the key came back. */
  private final Map<String, WatchEvent> held = new HashMap<>();
  private int heldBack;
  private int cameBack;

  public EtcdWatchVerticle(EtcdStore store, EtcdSchema schema) {
    this.store = store;
    this.schema = schema;
  }

  @Override
  public Future<?> start() {
    vertx.eventBus().<SnapshotRequest>consumer(Addresses.STATE_SNAPSHOT, m -> m.reply(snapshot()));
    store.startProbing(ok -> {
      if (!ok) {
        etcdDown = true;
      } else if (etcdDown) {
        etcdDown = false;
        reachableSince = System.nanoTime();
      }
      vertx.eventBus().publish(Addresses.ETCD_STATUS,
          new EtcdStatus(ok, store.endpoints(), store.lastRevision(), ok ? "" : store.lastError()));
    });
    // Never block deployment on etcd: the listing retries with backoff until etcd answers.
    watch = store.listAndWatch(schema.root(), new PrefixWatch.Listener() {
      @Override
      public void onBatch(WatchBatch b) {
        apply(b);
      }

      @Override
      public void onInterrupted(Throwable cause) {
        LOG.fine("etcd watch interrupted, resuming: " + cause);
      }
    });
    return Future.succeededFuture();
  }

  private void apply(WatchBatch b) {
    EnumSet<Family> families = EnumSet.noneOf(Family.class);
    java.util.List<WatchEvent> delivered = new java.util.ArrayList<>(b.events().size());
    for (WatchEvent e : b.events()) {
      if (e.type() == WatchEvent.Type.PUT) {
        if (held.remove(e.key()) != null) {
          cameBack++;
          if (held.isEmpty()) {
            LOG.info("after the etcd outage: " + heldBack + " record(s) whose lease expired were held back; all came back");
            heldBack = 0;
            cameBack = 0;
          }
        }
      } else if (holdBack(e)) {
        held.put(e.key(), e);
        heldBack++;
        vertx.setTimer(HOLD_MS, t -> release(e));
        continue;
      }
      delivered.add(e);
      families.add(schema.family(e.key()));
      if (e.type() == WatchEvent.Type.PUT) {
        mirror.put(e.key(), e.kv());
      } else {
        mirror.remove(e.key());
      }
    }
    revision = Math.max(revision, b.revision());
    if (delivered.size() != b.events().size()) {
      b = new WatchBatch(b.revision(), java.util.List.copyOf(delivered), b.resync());
    }
    boolean first = !synced;
    synced = true;
    cached = null;
    if (first) {
      LOG.info("etcd state loaded: " + mirror.size() + " keys under " + schema.root() + " at revision " + revision);
    }
    vertx.eventBus().publish(Addresses.ETCD_CHANGES, new KeyChanges(b.revision(), b.events(), b.resync()));
    vertx.eventBus().publish(Addresses.STATE_CHANGED, new StateChanged(revision, families, b.resync()));
  }

  /** A lease-bound record deleted while etcd is away or just back: maybe only its lease ran out. */
  private boolean holdBack(WatchEvent e) {
    if (!synced || e.prev() == null || e.prev().lease() == 0) {
      return false;
    }
    Family f = schema.family(e.key());
    if (f != Family.DOCKER_CONTAINERS && f != Family.SUBNET_LEASES) {
      return false;
    }
    return etcdDown || System.nanoTime() - reachableSince < RECOVERY_NANOS;
  }

  /** A held deletion whose record did not come back: delivered now. */
  private void release(WatchEvent e) {
    if (held.get(e.key()) != e) {
      return; // written again meanwhile
    }
    held.remove(e.key());
    LOG.info("record " + e.key() + " (its lease expired while etcd was away) did not come back within "
        + HOLD_MS / 1000 + " s: deleted now");
    mirror.remove(e.key());
    cached = null;
    vertx.eventBus().publish(Addresses.ETCD_CHANGES, new KeyChanges(revision, java.util.List.of(e), false));
    vertx.eventBus().publish(Addresses.STATE_CHANGED,
        new StateChanged(revision, EnumSet.of(schema.family(e.key())), false));
    if (held.isEmpty()) {
      LOG.info("after the etcd outage: " + heldBack + " record(s) whose lease expired were held back, " + cameBack
          + " came back");
      heldBack = 0;
      cameBack = 0;
    }
  }

  private ClusterState snapshot() {
    if (cached == null) {
      cached = new ClusterState(revision, synced, Map.copyOf(mirror));
    }
    return cached;
  }

  @Override
  public Future<?> stop() {
    if (watch != null) {
      watch.close();
    }
    return Future.succeededFuture();
  }
}
