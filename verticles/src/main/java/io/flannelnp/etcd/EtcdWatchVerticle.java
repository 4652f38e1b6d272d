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

  public EtcdWatchVerticle(EtcdStore store, EtcdSchema schema) {
    this.store = store;
    this.schema = schema;
  }

  @Override
  public Future<?> start() {
    vertx.eventBus().<SnapshotRequest>consumer(Addresses.STATE_SNAPSHOT, m -> m.reply(snapshot()));
    store.startProbing(ok -> vertx.eventBus().publish(Addresses.ETCD_STATUS,
        new EtcdStatus(ok, store.endpoints(), store.lastRevision(), ok ? "" : store.lastError())));
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
    for (WatchEvent e : b.events()) {
      families.add(schema.family(e.key()));
      if (e.type() == WatchEvent.Type.PUT) {
        mirror.put(e.key(), e.kv());
      } else {
        mirror.remove(e.key());
      }
    }
    revision = Math.max(revision, b.revision());
    boolean first = !synced;
    synced = true;
    cached = null;
    if (first) {
      LOG.info("etcd state loaded: " + mirror.size() + " keys under " + schema.root() + " at revision " + revision);
    }
    vertx.eventBus().publish(Addresses.ETCD_CHANGES, new KeyChanges(b.revision(), b.events(), b.resync()));
    vertx.eventBus().publish(Addresses.STATE_CHANGED, new StateChanged(revision, families, b.resync()));
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
