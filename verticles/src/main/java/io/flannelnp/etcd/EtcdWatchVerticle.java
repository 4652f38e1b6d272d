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
 * vanish when the lease expires. After an etcd outage long enough for a live writer's renewals to
 * have missed its TTL, that says nothing about the writer: etcd expires the leases it could not
 * renew the moment it serves again, and the writer writes its records again as soon as it can.
 * So a deletion of such a record in the {@link #RECOVERY_NANOS} after such an outage is held back
 * for up to {@link #HOLD_MS}: if the record comes back meanwhile, nobody sees it go (no DNS name,
 * VIP backend or route flaps); if not, the deletion is delivered then. Any other lease expiry is
 * delivered at once (a node that died is gone within its TTL).
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
  /** After etcd is reachable again, lease expiries are held for this long (etcd expires at once). */
  static final long RECOVERY_NANOS = java.time.Duration.ofSeconds(10).toNanos();
  /** How long a held deletion waits for its record to be written again (writers need a second or two). */
  static final long HOLD_MS = 6_000;
  /** An outage shorter than this cannot have made a live writer miss its lease's TTL. */
  private final long minOutageNanos;
  private boolean etcdDown;
  private long downSince;
  /** While etcd is away, and until RECOVERY_NANOS after an outage of at least minOutageNanos. */
  private boolean recovering;
  private long reachableSince;
  /** Deletions held back: key → the event, delivered when its timer fires unless the key came back. */
  private final Map<String, WatchEvent> held = new HashMap<>();
  private int heldBack;
  private int cameBack;

  public EtcdWatchVerticle(EtcdStore store, EtcdSchema schema) {
    this(store, schema, java.time.Duration.ofSeconds(5));
  }

  /** {@code shortestTtl}: the shortest TTL a writer's lease has (NODE_RECORDS_TTL, SUBNET_LEASE_TTL). */
  public EtcdWatchVerticle(EtcdStore store, EtcdSchema schema, java.time.Duration shortestTtl) {
    this.store = store;
    this.schema = schema;
    // a writer renews at a third of its TTL: it misses the TTL only in an outage of two thirds of it
    // (the probe notices an outage about 1.5 s after it began)
    this.minOutageNanos = Math.max(0, shortestTtl.toNanos() * 2 / 3 - java.time.Duration.ofMillis(1500).toNanos());
  }

  @Override
  public Future<?> start() {
    vertx.eventBus().<SnapshotRequest>consumer(Addresses.STATE_SNAPSHOT, m -> m.reply(snapshot()));
    store.startProbing(ok -> {
      long now = System.nanoTime();
      if (!ok) {
        etcdDown = true;
        downSince = now;
      } else if (etcdDown) {
        etcdDown = false;
        reachableSince = now;
        recovering = now - downSince >= minOutageNanos;
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
    long now = System.nanoTime();
    return etcdDown ? now - downSince >= minOutageNanos : recovering && now - reachableSince < RECOVERY_NANOS;
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
