package io.flannelnp.etcd;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.ClientBuilder;
import io.etcd.jetcd.kv.GetResponse;
import io.etcd.jetcd.kv.TxnResponse;
import io.etcd.jetcd.lease.LeaseKeepAliveResponse;
import io.etcd.jetcd.op.Cmp;
import io.etcd.jetcd.op.Op;
import io.etcd.jetcd.options.CompactOption;
import io.etcd.jetcd.options.DeleteOption;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.PutOption;
import io.etcd.jetcd.support.CloseableClient;
import io.flannelnp.config.Config.EtcdTls;
import io.grpc.stub.StreamObserver;
import io.vertx.core.Context;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.VertxOptions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The process's one etcd client (never one per operation). Every operation returns a Vert.x
 * {@link Future} completed on the caller's context and bounded by a deadline, so a Docker call
 * never hangs on a slow or dead etcd: it fails with {@link EtcdUnavailableException}, which names
 * the endpoints tried.
 *
 * <p>jetcd runs on its own Vert.x instance: its {@code close()} closes the Vertx it was given
 * (anchors.md §E.4), and the daemon's Vertx must outlive it during an orderly stop.
 */
public final class EtcdStore implements AutoCloseable {
  private static final Logger LOG = Logger.getLogger(EtcdStore.class.getName());

  /** Reachability probes answer fast or count as down. */
  private static final Duration PROBE_TIMEOUT = Duration.ofMillis(1500);

  private final Vertx vertx;
  private final List<String> endpoints;
  private final Client client;
  private final Vertx jetcdVertx;
  private final Duration opTimeout;
  /** null until the first probe: unknown is not "down", so early calls still try. */
  private volatile Boolean reachable;
  private volatile String lastError = "";
  private volatile long lastRevision;
  private volatile long probeTimer = -1;
  private volatile java.util.function.Consumer<Boolean> onReachability;
  private final AtomicBoolean closed = new AtomicBoolean();

  public EtcdStore(Vertx vertx, List<String> endpoints, Optional<EtcdTls> tls, Duration opTimeout) {
    this(vertx, endpoints, tls, Optional.empty(), opTimeout);
  }

  public EtcdStore(Vertx vertx, List<String> endpoints, Optional<EtcdTls> tls, Optional<io.flannelnp.config.Config.EtcdAuth> auth,
      Duration opTimeout) {
    this.vertx = vertx;
    this.endpoints = List.copyOf(endpoints);
    this.opTimeout = opTimeout;
    // jetcd gets a small Vert.x of its own, built here (not lazily on one of our event loops),
    // because closing the client closes the Vertx it runs on.
    this.jetcdVertx = Vertx.vertx(new VertxOptions().setEventLoopPoolSize(1).setWorkerPoolSize(2)
        .setInternalBlockingPoolSize(2));
    ClientBuilder b = Client.builder()
        .vertx(jetcdVertx)
        .endpoints(endpoints.toArray(String[]::new))
        .connectTimeout(Duration.ofSeconds(2))
        // Fail fast while the channel is down instead of queueing behind our deadline.
        .waitForReady(false)
        .retryMaxDuration(opTimeout)
        .keepaliveTime(Duration.ofSeconds(10))
        .keepaliveTimeout(Duration.ofSeconds(5));
    this.client = EtcdClients.secure(b, tls, auth).build();
  }

  public List<String> endpoints() {
    return endpoints;
  }

  /** The Vert.x the callers' futures complete on (for their own timers and retries). */
  public Vertx vertx() {
    return vertx;
  }

  /** false only when the last probe failed; true or unknown otherwise. */
  public boolean isReachable() {
    return !Boolean.FALSE.equals(reachable);
  }

  public Optional<Boolean> reachability() {
    return Optional.ofNullable(reachable);
  }

  public String lastError() {
    return lastError;
  }

  /** Highest revision seen in any response header. */
  public long lastRevision() {
    return lastRevision;
  }

  /**
   * Succeeds when etcd is believed reachable: at once if the last probe succeeded, fails at once
   * (naming the endpoints) if it failed, and asks etcd within the deadline if nothing is known.
   */
  public Future<Void> ping() {
    if (Boolean.TRUE.equals(reachable)) {
      return Future.succeededFuture();
    }
    if (Boolean.FALSE.equals(reachable)) {
      return Future.failedFuture(unavailable());
    }
    return count("/", PROBE_TIMEOUT).mapEmpty();
  }

  /** The error a caller gets when etcd is known to be down, without waiting for a deadline. */
  public EtcdUnavailableException unavailable() {
    return new EtcdUnavailableException(endpoints, lastError.isEmpty() ? "not reachable" : lastError);
  }

  /**
   * Probes etcd periodically (every second while up, backing off to 8 s while down) and logs
   * transitions. jetcd's gRPC channel reconnects by itself; the probe tells callers when it has.
   */
  public void startProbing(java.util.function.Consumer<Boolean> onChange) {
    this.onReachability = onChange;
    probe(500, onChange);
  }

  /** Any answer from etcd proves it is back, without waiting for the next probe. */
  private void markReachable() {
    if (!Boolean.TRUE.equals(reachable)) {
      boolean known = reachable != null;
      reachable = true;
      if (known) {
        LOG.info("etcd reachable again at " + String.join(",", endpoints) + " (revision " + lastRevision + ")");
        java.util.function.Consumer<Boolean> c = onReachability;
        if (c != null) {
          c.accept(true);
        }
      }
    }
  }

  private void probe(long backoffMs, java.util.function.Consumer<Boolean> onChange) {
    if (closed.get()) {
      return;
    }
    // A success has already been recorded by markReachable (which reports false → true);
    // the probe reports the first answer and every loss.
    Boolean before = reachable;
    count("/", PROBE_TIMEOUT).onComplete(ar -> {
      boolean ok = ar.succeeded();
      if (ok && before == null) {
        LOG.info("etcd reachable at " + String.join(",", endpoints) + " (revision " + lastRevision + ")");
        onChange.accept(true);
      } else if (!ok) {
        lastError = rootMessage(ar.cause());
        boolean wasDown = Boolean.FALSE.equals(reachable);
        reachable = false;
        if (!wasDown) {
          LOG.warning("etcd unreachable at " + String.join(",", endpoints) + ": " + lastError + "; retrying with backoff");
          onChange.accept(false);
        }
      }
      long next = ok ? 1000 : Math.min(8000, Math.max(500, backoffMs * 2));
      if (!closed.get()) {
        probeTimer = vertx.setTimer(next, t -> probe(ok ? 500 : next, onChange));
      }
    });
  }

  // ---- KV -----------------------------------------------------------------------------

  public Future<Optional<KeyValue>> get(String key) {
    return call(() -> client.getKVClient().get(Txn.bs(key))).map(r -> {
      header(r.getHeader().getRevision());
      return r.getKvs().isEmpty() ? Optional.<KeyValue>empty() : Optional.of(KeyValue.of(r.getKvs().get(0)));
    });
  }

  public Future<Listing> list(String prefix) {
    return call(() -> client.getKVClient().get(Txn.bs(prefix), GetOption.builder().isPrefix(true).build()))
        .map(this::listing);
  }

  /** Keys under a prefix as they were at {@code revision} (fails if that revision is compacted). */
  public Future<Listing> listAt(String prefix, long revision) {
    return call(() -> client.getKVClient().get(Txn.bs(prefix),
        GetOption.builder().isPrefix(true).withRevision(revision).build())).map(this::listing);
  }

  private Listing listing(GetResponse r) {
    header(r.getHeader().getRevision());
    List<KeyValue> out = new ArrayList<>(r.getKvs().size());
    r.getKvs().forEach(kv -> out.add(KeyValue.of(kv)));
    return new Listing(r.getHeader().getRevision(), List.copyOf(out));
  }

  private Future<Long> count(String prefix, Duration timeout) {
    return call(() -> client.getKVClient().get(Txn.bs(prefix),
        GetOption.builder().isPrefix(true).withCountOnly(true).withLimit(1).build()), timeout).map(r -> {
          header(r.getHeader().getRevision());
          return r.getCount();
        });
  }

  /** Unconditional put; returns the new revision. Prefer {@link #txn()} where an owner matters. */
  public Future<Long> put(String key, String value) {
    return put(key, value, 0);
  }

  public Future<Long> put(String key, String value, long leaseId) {
    PutOption.Builder b = PutOption.builder();
    if (leaseId != 0) {
      b.withLeaseId(leaseId);
    }
    return call(() -> client.getKVClient().put(Txn.bs(key), Txn.bs(value), b.build()))
        .map(r -> header(r.getHeader().getRevision()));
  }

  /** Create-once: true if this call created the key, false if it already existed. */
  public Future<Boolean> putIfAbsent(String key, String value, long leaseId) {
    return txn().ifAbsent(key).thenPut(key, value, leaseId).commit().map(Txn.Result::succeeded);
  }

  public Future<Long> delete(String key) {
    return call(() -> client.getKVClient().delete(Txn.bs(key))).map(r -> header(r.getHeader().getRevision()));
  }

  public Future<Long> deletePrefix(String prefix) {
    return call(() -> client.getKVClient().delete(Txn.bs(prefix), DeleteOption.builder().isPrefix(true).build()))
        .map(r -> header(r.getHeader().getRevision()));
  }

  public Txn txn() {
    return new Txn(this);
  }

  Future<Txn.Result> commit(Cmp[] cmps, Op[] thens, Op[] elses) {
    return call(() -> client.getKVClient().txn().If(cmps).Then(thens).Else(elses).commit()).map(this::txnResult);
  }

  private Txn.Result txnResult(TxnResponse r) {
    header(r.getHeader().getRevision());
    List<KeyValue> reads = new ArrayList<>();
    for (GetResponse g : r.getGetResponses()) {
      g.getKvs().forEach(kv -> reads.add(KeyValue.of(kv)));
    }
    return new Txn.Result(r.isSucceeded(), r.getHeader().getRevision(), List.copyOf(reads));
  }

  /** Compacts history up to {@code revision} (used by tests and by operators' tooling). */
  public Future<Void> compact(long revision) {
    return call(() -> client.getKVClient().compact(revision, CompactOption.builder().withCompactPhysical(true).build()))
        .mapEmpty();
  }

  // ---- leases -------------------------------------------------------------------------

  public Future<Long> grantLease(long ttlSeconds) {
    return call(() -> client.getLeaseClient().grant(ttlSeconds)).map(r -> {
      header(r.getHeader().getRevision());
      return r.getID();
    });
  }

  public Future<Void> revokeLease(long leaseId) {
    return call(() -> client.getLeaseClient().revoke(leaseId)).mapEmpty();
  }

  /** Renews a lease once (besides the stream of {@link #keepAlive}). */
  public Future<Void> renewLease(long leaseId) {
    return call(() -> client.getLeaseClient().keepAliveOnce(leaseId)).mapEmpty();
  }

  /** Remaining TTL in seconds, or -1 if the lease no longer exists. */
  public Future<Long> leaseTtl(long leaseId) {
    return call(() -> client.getLeaseClient().timeToLive(leaseId, io.etcd.jetcd.options.LeaseOption.DEFAULT))
        .map(r -> r.getTTL());
  }

  /**
   * Keeps a lease alive (jetcd renews at a third of the TTL). {@code onLost} runs on the caller's
   * context once etcd says the lease is gone (expired or revoked), so the owner can re-create its
   * keys; nothing else counts as a loss. A stream error is not: jetcd reports it to every
   * observer and restarts the stream itself. When jetcd stops renewing because no answer came
   * within the TTL, the lease may still be alive in etcd (a leader change extends every lease):
   * its TTL is asked, with backoff until etcd answers, and renewal resumes if it lives.
   */
  public KeepAlive keepAlive(long leaseId, Runnable onLost) {
    LeaseKeeper k = new LeaseKeeper(leaseId, vertx.getOrCreateContext(), onLost);
    k.register();
    return k;
  }

  private final class LeaseKeeper implements KeepAlive {
    private final long leaseId;
    private final Context ctx;
    private final Runnable onLost;
    private final AtomicBoolean stopped = new AtomicBoolean();
    private final AtomicBoolean gone = new AtomicBoolean();
    private volatile CloseableClient stream;
    private volatile long checkBackoffMs = 500;

    LeaseKeeper(long leaseId, Context ctx, Runnable onLost) {
      this.leaseId = leaseId;
      this.ctx = ctx;
      this.onLost = onLost;
    }

    void register() {
      if (stopped.get() || closed.get()) {
        return;
      }
      CloseableClient old = stream;
      stream = client.getLeaseClient().keepAlive(leaseId, new StreamObserver<>() {
        @Override
        public void onNext(LeaseKeepAliveResponse r) {
          if (r.getTTL() <= 0) {
            gone("etcd says it has expired");
          } else {
            checkBackoffMs = 500;
          }
        }

        @Override
        public void onError(Throwable t) {
          if (notFound(t)) {
            gone("etcd says it does not exist");
          } else {
            LOG.log(Level.FINE, "keep-alive stream of lease " + Long.toHexString(leaseId) + " failed (" + t
                + "); jetcd restarts it");
          }
        }

        @Override
        public void onCompleted() {
          // jetcd's own deadline passed without an answer: it stopped renewing; ask etcd.
          if (!stopped.get()) {
            LOG.fine("keep-alive of lease " + Long.toHexString(leaseId) + " got no answer within its TTL; asking etcd");
            check();
          }
        }
      });
      if (old != null) {
        old.close();
      }
    }

    /** Asks etcd for the lease's TTL until it answers: alive → renew again, gone → lost. */
    private void check() {
      if (stopped.get() || closed.get()) {
        return;
      }
      ctx.runOnContext(v -> leaseTtl(leaseId).onComplete(ar -> {
        if (stopped.get()) {
          return;
        }
        if (ar.succeeded()) {
          if (ar.result() > 0) {
            LOG.info("lease " + Long.toHexString(leaseId) + " is still alive in etcd (TTL " + ar.result()
                + " s); renewing it again");
            checkBackoffMs = 500;
            register();
          } else {
            gone("etcd says it has expired");
          }
          return;
        }
        long delay = checkBackoffMs;
        checkBackoffMs = Math.min(8000, checkBackoffMs * 2);
        vertx.setTimer(delay, t -> check());
      }));
    }

    private void gone(String why) {
      if (stopped.get() || !gone.compareAndSet(false, true)) {
        return;
      }
      LOG.fine("lease " + Long.toHexString(leaseId) + " lost: " + why);
      lost(ctx, onLost);
    }

    @Override
    public void close() {
      stopped.set(true);
      CloseableClient c = stream;
      if (c != null) {
        c.close();
      }
    }
  }

  /** Whether a keep-alive error is etcd saying the lease does not exist (not a stream failure). */
  static boolean notFound(Throwable t) {
    for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
      if (c instanceof io.etcd.jetcd.common.exception.EtcdException e
          && e.getErrorCode() == io.etcd.jetcd.common.exception.ErrorCode.NOT_FOUND) {
        return true;
      }
      String m = c.getMessage();
      if (m != null && m.contains("requested lease not found")) {
        return true;
      }
    }
    return false;
  }

  private static void lost(Context ctx, Runnable onLost) {
    try {
      ctx.runOnContext(v -> onLost.run());
    } catch (java.util.concurrent.RejectedExecutionException closing) {
      // the daemon's Vert.x is already closed: nobody is left to re-acquire anything
    }
  }

  /** Stops a keep-alive; the lease then expires after its TTL unless revoked. */
  @FunctionalInterface
  public interface KeepAlive extends AutoCloseable {
    @Override
    void close();
  }

  // ---- watch --------------------------------------------------------------------------

  /**
   * Lists {@code prefix}, delivers it as one resync batch, then watches from the listing's
   * revision + 1. Recovers by itself from reconnects (resume from the last delivered revision)
   * and from compaction (re-list and deliver the difference).
   */
  public PrefixWatch listAndWatch(String prefix, PrefixWatch.Listener listener) {
    PrefixWatch w = new PrefixWatch(this, client.getWatchClient(), vertx, prefix, listener);
    w.startWithList();
    return w;
  }

  /**
   * Watches {@code prefix} from {@code fromRevision}, delivering etcd's history from there on.
   * {@code known} is the caller's view of the prefix at {@code fromRevision - 1}; it is the base
   * of the difference delivered if that history has been compacted.
   */
  public PrefixWatch watchFrom(String prefix, long fromRevision, List<KeyValue> known, PrefixWatch.Listener listener) {
    PrefixWatch w = new PrefixWatch(this, client.getWatchClient(), vertx, prefix, listener);
    w.startAt(fromRevision, known);
    return w;
  }

  // ---- plumbing -----------------------------------------------------------------------

  long header(long revision) {
    if (revision > lastRevision) {
      lastRevision = revision;
    }
    return revision;
  }

  Duration opTimeout() {
    return opTimeout;
  }

  /** Runs a jetcd call, brings its result to the caller's context, and bounds it by the deadline. */
  <T> Future<T> call(Supplier<CompletableFuture<T>> op) {
    return call(op, opTimeout);
  }

  <T> Future<T> call(Supplier<CompletableFuture<T>> op, Duration timeout) {
    Context ctx = vertx.getOrCreateContext();
    if (closed.get()) {
      return Future.failedFuture(new EtcdUnavailableException(endpoints, "client closed"));
    }
    Promise<T> p = Promise.promise();
    CompletableFuture<T> cf;
    try {
      cf = op.get();
    } catch (RuntimeException e) {
      return Future.failedFuture(translate(e));
    }
    long timer = vertx.setTimer(timeout.toMillis(), t -> {
      // Fail first: cancelling completes cf, whose own (cancellation) result must lose the race.
      p.tryFail(new EtcdUnavailableException(endpoints, "no answer within " + timeout.toMillis() + " ms"));
      cf.cancel(true);
    });
    cf.whenComplete((r, err) -> {
      vertx.cancelTimer(timer);
      ctx.runOnContext(v -> {
        if (err != null) {
          p.tryFail(translate(err));
        } else {
          markReachable();
          p.tryComplete(r);
        }
      });
    });
    return p.future();
  }

  private Throwable translate(Throwable err) {
    Throwable root = err;
    while ((root instanceof java.util.concurrent.CompletionException
        || root instanceof java.util.concurrent.ExecutionException) && root.getCause() != null) {
      root = root.getCause();
    }
    if (root instanceof io.etcd.jetcd.common.exception.CompactedException) {
      return root;
    }
    String msg = rootMessage(root);
    if (root instanceof TimeoutException || root instanceof java.util.concurrent.CancellationException
        || msg.contains("UNAVAILABLE") || msg.contains("DEADLINE_EXCEEDED") || msg.contains("Connection refused")
        || msg.contains("io exception") || msg.contains("channel closed") || msg.contains("Connection reset")) {
      return new EtcdUnavailableException(endpoints, msg);
    }
    return root;
  }

  static String rootMessage(Throwable t) {
    Throwable r = t;
    while (r.getCause() != null && r.getCause() != r) {
      r = r.getCause();
    }
    String m = r.getMessage();
    String top = t.getMessage();
    if (t instanceof EtcdUnavailableException u) {
      return u.reason();
    }
    return (m == null ? r.getClass().getSimpleName() : m) + (top != null && !top.equals(m) && top.length() < 200 ? " (" + top + ")" : "");
  }

  /** Closes the client. Only at process end: it also closes jetcd's own Vert.x instance. */
  @Override
  public void close() {
    if (closed.compareAndSet(false, true)) {
      if (probeTimer >= 0) {
        vertx.cancelTimer(probeTimer);
      }
      client.close();
    }
  }
}
