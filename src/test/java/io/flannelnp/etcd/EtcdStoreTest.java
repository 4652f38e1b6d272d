package io.flannelnp.etcd;

import static io.flannelnp.testing.Futures.await;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.testing.EtcdFixture;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Future;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

/** EtcdStore and PrefixWatch against a real etcd process. */
class EtcdStoreTest extends EtcdFixture {
  EtcdStore store;
  String prefix;

  @BeforeEach
  void open(TestInfo info) {
    if (!etcd.isRunning()) {
      etcd.launch();
    }
    store = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(3));
    prefix = "/fnp-test/" + info.getTestMethod().orElseThrow().getName() + "/";
  }

  @AfterEach
  void cleanup() throws Exception {
    if (etcd.isRunning()) {
      await(store.deletePrefix(prefix));
      assertThat(await(store.list(prefix)).kvs()).isEmpty();
    }
    store.close();
  }


  static void eventually(Duration max, BooleanSupplier cond, String what) throws InterruptedException {
    long deadline = System.nanoTime() + max.toNanos();
    while (!cond.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("not within " + max + ": " + what);
      }
      Thread.sleep(20);
    }
  }

  /** Events as "TYPE key@rev" strings, in delivery order. */
  static final class Recorder implements PrefixWatch.Listener {
    final List<String> events = new CopyOnWriteArrayList<>();
    final List<WatchBatch> batches = new CopyOnWriteArrayList<>();

    @Override
    public void onBatch(WatchBatch b) {
      batches.add(b);
      for (WatchEvent e : b.events()) {
        events.add(e.type() + " " + e.key().substring(e.key().lastIndexOf('/') + 1)
            + (e.type() == WatchEvent.Type.PUT ? "=" + e.kv().value() : ""));
      }
    }
  }

  @Test
  void createOnceTransactionHasExactlyOneWinnerAndTellsTheLoserWhoHoldsTheKey() throws Exception {
    String key = prefix + "k";
    assertThat(await(store.putIfAbsent(key, "first", 0))).isTrue();
    assertThat(await(store.putIfAbsent(key, "second", 0))).isFalse();
    Txn.Result r = await(store.txn().ifAbsent(key).thenPut(key, "third").elseGet(key).commit());
    assertThat(r.succeeded()).isFalse();
    assertThat(r.elseReads()).extracting(KeyValue::value).containsExactly("first");
    KeyValue kv = await(store.get(key)).orElseThrow();
    assertThat(kv.value()).isEqualTo("first");
    // compare-and-set on the mod revision: a stale revision loses, the current one wins
    assertThat(await(store.txn().ifModRevision(key, kv.modRevision() - 1).thenPut(key, "x").commit()).succeeded()).isFalse();
    assertThat(await(store.txn().ifModRevision(key, kv.modRevision()).thenPut(key, "y").commit()).succeeded()).isTrue();
    assertThat(await(store.get(key)).orElseThrow().value()).isEqualTo("y");
  }

  @Test
  void txnRaceBetweenTwoClientsHasExactlyOneWinnerPerKey() throws Exception {
    try (EtcdStore other = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(5))) {
      int keys = 200;
      List<Future<Boolean>> a = new ArrayList<>();
      List<Future<Boolean>> b = new ArrayList<>();
      for (int i = 0; i < keys; i++) {
        // both clients fire before either answer arrives
        a.add(store.putIfAbsent(prefix + i, "a", 0));
        b.add(other.putIfAbsent(prefix + i, "b", 0));
      }
      await(Future.join(a).mapEmpty());
      await(Future.join(b).mapEmpty());
      int winsA = 0;
      int winsB = 0;
      for (int i = 0; i < keys; i++) {
        boolean wa = a.get(i).result();
        boolean wb = b.get(i).result();
        assertThat(wa ^ wb).as("exactly one winner for key %d", i).isTrue();
        String stored = await(store.get(prefix + i)).orElseThrow().value();
        assertThat(stored).isEqualTo(wa ? "a" : "b");
        winsA += wa ? 1 : 0;
        winsB += wb ? 1 : 0;
      }
      assertThat(winsA + winsB).isEqualTo(keys);
    }
  }

  @Test
  void watchResumedFromARevisionNeitherLosesNorRepeatsEvents() throws Exception {
    Recorder first = new Recorder();
    PrefixWatch w1 = store.listAndWatch(prefix, first);
    eventually(Duration.ofSeconds(5), () -> first.batches.size() == 1, "initial listing");
    for (int i = 1; i <= 5; i++) {
      await(store.put(prefix + "k" + i, "v" + i));
    }
    eventually(Duration.ofSeconds(5), () -> first.events.size() == 5, "5 events");
    long resumeAfter = w1.deliveredRevision();
    w1.close();

    // history the first watcher never saw: puts, an overwrite, a delete, a multi-key txn
    await(store.put(prefix + "k6", "v6"));
    await(store.put(prefix + "k1", "v1b"));
    await(store.delete(prefix + "k2"));
    await(store.txn().thenPut(prefix + "k7", "v7").thenPut(prefix + "k8", "v8").commit());

    Recorder second = new Recorder();
    PrefixWatch w2 = store.watchFrom(prefix, resumeAfter + 1, List.of(), second);
    eventually(Duration.ofSeconds(5), () -> second.events.size() >= 5, "resumed events");
    await(store.put(prefix + "k9", "v9"));
    eventually(Duration.ofSeconds(5), () -> second.events.size() >= 6, "live event after resume");
    Thread.sleep(300); // a repeat would show up here
    w2.close();

    assertThat(first.events).containsExactly("PUT k1=v1", "PUT k2=v2", "PUT k3=v3", "PUT k4=v4", "PUT k5=v5");
    assertThat(second.events).containsExactly("PUT k6=v6", "PUT k1=v1b", "DELETE k2", "PUT k7=v7", "PUT k8=v8", "PUT k9=v9");
    // the txn's two keys arrive in one batch, at one revision
    WatchBatch txnBatch = second.batches.stream()
        .filter(b -> b.events().stream().anyMatch(e -> e.key().endsWith("/k7"))).findFirst().orElseThrow();
    List<Long> txnRevs = txnBatch.events().stream()
        .filter(e -> e.key().endsWith("/k7") || e.key().endsWith("/k8")).map(WatchEvent::modRevision).toList();
    assertThat(txnRevs).hasSize(2);
    assertThat(txnRevs.get(0)).isEqualTo(txnRevs.get(1));
    // a DELETE carries the value that went away
    WatchEvent del = second.batches.stream().flatMap(b -> b.events().stream())
        .filter(e -> e.type() == WatchEvent.Type.DELETE).findFirst().orElseThrow();
    assertThat(del.prev()).isNotNull();
    assertThat(del.prev().value()).isEqualTo("v2");
  }

  @Test
  void afterCompactionTheWatchReListsAndDeliversExactlyTheDifference() throws Exception {
    Recorder first = new Recorder();
    PrefixWatch w1 = store.listAndWatch(prefix, first);
    eventually(Duration.ofSeconds(5), () -> first.batches.size() == 1, "initial listing");
    await(store.put(prefix + "keep", "1"));
    await(store.put(prefix + "change", "1"));
    await(store.put(prefix + "gone", "1"));
    eventually(Duration.ofSeconds(5), () -> first.events.size() == 3, "3 events");
    long resumeAfter = w1.deliveredRevision();
    w1.close();
    List<KeyValue> known = await(store.listAt(prefix, resumeAfter)).kvs();

    // while nobody watches: change, delete, add, then compact that history away
    await(store.put(prefix + "change", "2"));
    await(store.delete(prefix + "gone"));
    await(store.put(prefix + "new", "1"));
    await(store.put(prefix + "new", "2"));
    long now = await(store.put(prefix + "new", "3"));
    await(store.compact(now));

    Recorder second = new Recorder();
    PrefixWatch w2 = store.watchFrom(prefix, resumeAfter + 1, known, second);
    eventually(Duration.ofSeconds(10), () -> !second.batches.isEmpty(), "resync batch");
    await(store.put(prefix + "after", "1"));
    eventually(Duration.ofSeconds(5), () -> second.events.contains("PUT after=1"), "live event after resync");
    w2.close();

    assertThat(w2.compactions()).isEqualTo(1);
    WatchBatch resync = second.batches.get(0);
    assertThat(resync.resync()).isTrue();
    assertThat(resync.revision()).isGreaterThanOrEqualTo(now);
    // only the final state of what changed: no intermediate "new=1", nothing for "keep"
    List<String> diff = new ArrayList<>(second.events.subList(0, resync.events().size()));
    Collections.sort(diff);
    assertThat(diff).containsExactly("DELETE gone", "PUT change=2", "PUT new=3");
    assertThat(second.events).hasSize(4).endsWith("PUT after=1");
  }

  @Test
  void watchSurvivesEtcdBeingKilledAndRestartedWithoutLosingOrRepeating() throws Exception {
    Recorder rec = new Recorder();
    PrefixWatch w = store.listAndWatch(prefix, rec);
    eventually(Duration.ofSeconds(5), () -> rec.batches.size() == 1, "initial listing");
    await(store.put(prefix + "a", "1"));
    eventually(Duration.ofSeconds(5), () -> rec.events.size() == 1, "first event");

    etcd.kill();
    long t0 = System.nanoTime();
    assertThatThrownBy(() -> await(store.put(prefix + "b", "lost")))
        .isInstanceOf(EtcdUnavailableException.class)
        .hasMessageContaining(etcd.endpoint());
    assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(5));
    Thread.sleep(1500);
    etcd.launch();

    // the client reconnects by itself; writes succeed again once the channel is back
    long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
    while (true) {
      try {
        await(store.put(prefix + "b", "2"));
        break;
      } catch (EtcdUnavailableException e) {
        if (System.nanoTime() > deadline) {
          throw e;
        }
        Thread.sleep(200);
      }
    }
    await(store.put(prefix + "c", "3"));
    eventually(Duration.ofSeconds(15), () -> rec.events.size() >= 3, "events after restart");
    Thread.sleep(500);
    w.close();
    assertThat(rec.events).containsExactly("PUT a=1", "PUT b=2", "PUT c=3");
  }

  @Test
  void operationsAgainstAnUnreachableEtcdFailWithinTheDeadlineNamingTheEndpoints() throws Exception {
    String dead = "http://127.0.0.1:" + EtcdServer.freePort();
    try (EtcdStore down = new EtcdStore(vertx, List.of(dead), Optional.empty(), Duration.ofSeconds(2))) {
      long t0 = System.nanoTime();
      assertThatThrownBy(() -> await(down.putIfAbsent("/x", "y", 0)))
          .isInstanceOf(EtcdUnavailableException.class)
          .hasMessageContaining(dead);
      assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(4));
    }
  }

  @Test
  void keysOnAKeptAliveLeaseOutliveTheTtlAndVanishAfterTheKeepAliveStops() throws Exception {
    long lease = await(store.grantLease(2));
    await(store.put(prefix + "leased", "v", lease));
    EtcdStore.KeepAlive ka = store.keepAlive(lease, () -> { });
    Thread.sleep(4500);
    assertThat(await(store.get(prefix + "leased"))).as("alive past 2x TTL").isPresent();
    ka.close();
    eventually(Duration.ofSeconds(6), () -> {
      try {
        return await(store.get(prefix + "leased")).isEmpty();
      } catch (Exception e) {
        return false;
      }
    }, "key removed after the lease expired");
  }
}
