package io.flannelnp.etcd;

import io.etcd.jetcd.Watch;
import io.etcd.jetcd.common.exception.CompactedException;
import io.etcd.jetcd.options.WatchOption;
import io.etcd.jetcd.watch.WatchResponse;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A watch on a key prefix that never loses or repeats an event:
 * <ul>
 *   <li>it starts at a known revision (the initial listing's + 1, or one the caller gives);</li>
 *   <li>after any interruption it resumes from the last delivered revision + 1, and drops
 *       anything at or below that revision that a resumed stream sends again;</li>
 *   <li>if that history was compacted, it re-lists the prefix and delivers the difference to its
 *       own mirror of the prefix as one {@code resync} batch, then watches on from there.</li>
 * </ul>
 * Batches are delivered in order on the context that created the watch.
 */
public final class PrefixWatch implements AutoCloseable {
  private static final Logger LOG = Logger.getLogger(PrefixWatch.class.getName());

  /** Receives batches; {@link #onInterrupted} is informational (the watch resumes by itself). */
  public interface Listener {
    void onBatch(WatchBatch batch);

    default void onInterrupted(Throwable cause) {}
  }

  private final EtcdStore store;
  private final Watch watchClient;
  private final Vertx vertx;
  private final Context ctx;
  private final String prefix;
  private final Listener listener;
  private final Map<String, KeyValue> mirror = new TreeMap<>();
  private long delivered;
  private Watch.Watcher current;
  private int generation;
  private long backoffMs = 250;
  private long compactions;
  private long resumes;
  private volatile boolean closed;

  PrefixWatch(EtcdStore store, Watch watchClient, Vertx vertx, String prefix, Listener listener) {
    this.store = store;
    this.watchClient = watchClient;
    this.vertx = vertx;
    this.ctx = vertx.getOrCreateContext();
    this.prefix = prefix;
    this.listener = listener;
  }

  /** Last revision whose events have been delivered. */
  public long deliveredRevision() {
    return delivered;
  }

  /** How many times the watched history was compacted away and the prefix re-listed. */
  public long compactions() {
    return compactions;
  }

  /** How many times the stream was interrupted and resumed. */
  public long resumes() {
    return resumes;
  }

  void startWithList() {
    ctx.runOnContext(v -> relist());
  }

  void startAt(long fromRevision, List<KeyValue> known) {
    ctx.runOnContext(v -> {
      known.forEach(kv -> mirror.put(kv.key(), kv));
      delivered = fromRevision - 1;
      watchFrom(fromRevision);
    });
  }

  private void relist() {
    if (closed) {
      return;
    }
    store.list(prefix).onComplete(ar -> {
      if (closed) {
        return;
      }
      if (ar.failed()) {
        retry(ar.cause(), this::relist);
        return;
      }
      backoffMs = 250;
      Listing l = ar.result();
      List<WatchEvent> diff = new ArrayList<>();
      Map<String, KeyValue> now = new TreeMap<>();
      for (KeyValue kv : l.kvs()) {
        now.put(kv.key(), kv);
        KeyValue old = mirror.get(kv.key());
        if (old == null || old.modRevision() != kv.modRevision()) {
          diff.add(new WatchEvent(WatchEvent.Type.PUT, kv.key(), kv, old));
        }
      }
      for (KeyValue old : mirror.values()) {
        if (!now.containsKey(old.key())) {
          KeyValue tomb = new KeyValue(old.key(), "", 0, l.revision(), 0, 0);
          diff.add(new WatchEvent(WatchEvent.Type.DELETE, old.key(), tomb, old));
        }
      }
      mirror.clear();
      mirror.putAll(now);
      delivered = l.revision();
      deliver(new WatchBatch(l.revision(), List.copyOf(diff), true));
      watchFrom(l.revision() + 1);
    });
  }

  private void watchFrom(long revision) {
    if (closed) {
      return;
    }
    int gen = ++generation;
    WatchOption opt = WatchOption.builder()
        .isPrefix(true)
        .withRevision(revision)
        .withPrevKV(true)
        .withProgressNotify(true)
        .withRequireLeader(true)
        .build();
    current = watchClient.watch(Txn.bs(prefix), opt, new Watch.Listener() {
      @Override
      public void onNext(WatchResponse r) {
        ctx.runOnContext(v -> onResponse(gen, r));
      }

      @Override
      public void onError(Throwable t) {
        ctx.runOnContext(v -> onFailure(gen, t));
      }

      @Override
      public void onCompleted() {
        ctx.runOnContext(v -> onFailure(gen, new IllegalStateException("watch closed by server")));
      }
    });
  }

  private void onResponse(int gen, WatchResponse r) {
    if (closed || gen != generation) {
      return;
    }
    backoffMs = 250;
    long rev = r.getHeader().getRevision();
    store.header(rev);
    if (r.getEvents().isEmpty()) {
      // A progress notification: everything up to rev has been sent.
      if (r.isProgressNotify() && rev > delivered) {
        delivered = rev;
      }
      return;
    }
    List<WatchEvent> out = new ArrayList<>();
    long max = delivered;
    for (io.etcd.jetcd.watch.WatchEvent e : r.getEvents()) {
      KeyValue kv = KeyValue.of(e.getKeyValue());
      if (kv.modRevision() <= delivered) {
        continue; // a resumed stream repeating what we already delivered
      }
      KeyValue prev = e.getPrevKV() == null || e.getPrevKV().getKey().isEmpty() ? mirror.get(kv.key())
          : KeyValue.of(e.getPrevKV());
      if (e.getEventType() == io.etcd.jetcd.watch.WatchEvent.EventType.DELETE) {
        mirror.remove(kv.key());
        out.add(new WatchEvent(WatchEvent.Type.DELETE, kv.key(), kv, prev));
      } else if (e.getEventType() == io.etcd.jetcd.watch.WatchEvent.EventType.PUT) {
        mirror.put(kv.key(), kv);
        out.add(new WatchEvent(WatchEvent.Type.PUT, kv.key(), kv, prev));
      }
      max = Math.max(max, kv.modRevision());
    }
    if (out.isEmpty()) {
      return;
    }
    delivered = max;
    deliver(new WatchBatch(max, List.copyOf(out), false));
  }

  private void onFailure(int gen, Throwable t) {
    if (closed || gen != generation) {
      return;
    }
    closeCurrent();
    generation++;
    if (t instanceof CompactedException ce) {
      compactions++;
      LOG.info("watch on " + prefix + " lost history (compacted at " + ce.getCompactedRevision()
          + "); re-listing and delivering the difference");
      relist();
      return;
    }
    resumes++;
    safe(() -> listener.onInterrupted(t));
    retry(t, () -> watchFrom(delivered + 1));
  }

  private void retry(Throwable cause, Runnable action) {
    long delay = backoffMs;
    backoffMs = Math.min(5000, backoffMs * 2);
    LOG.log(Level.FINE, "watch on " + prefix + " interrupted (" + cause + "); retrying in " + delay + " ms");
    vertx.setTimer(delay, t -> ctx.runOnContext(v -> action.run()));
  }

  private void deliver(WatchBatch b) {
    safe(() -> listener.onBatch(b));
  }

  private void safe(Runnable r) {
    try {
      r.run();
    } catch (RuntimeException e) {
      LOG.log(Level.WARNING, "watch listener on " + prefix + " failed", e);
    }
  }

  private void closeCurrent() {
    Watch.Watcher w = current;
    current = null;
    if (w != null) {
      try {
        w.close();
      } catch (RuntimeException ignored) {
        // already closed by jetcd
      }
    }
  }

  @Override
  public void close() {
    closed = true;
    ctx.runOnContext(v -> closeCurrent());
  }
}
