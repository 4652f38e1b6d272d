package io.flannelnp.docker;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The write side of the mirror against a real etcd: several managers converging the same records
 * cause one write per change, and a writer that raced another does not overwrite it blindly.
 */
class RecordSyncTest {
  private static final String P = "/fnd-recordsync/";
  private static EtcdServer server;
  private Vertx vertx;
  private EtcdStore etcd;

  @BeforeAll
  static void up() {
    server = EtcdServer.start();
  }

  @AfterAll
  static void down() {
    server.close();
  }

  @BeforeEach
  void client() {
    vertx = Vertx.vertx();
    etcd = new EtcdStore(vertx, server.endpoints(), Optional.empty(), Duration.ofSeconds(5));
  }

  @AfterEach
  void close() {
    try {
      await(etcd.deletePrefix(P));
    } finally {
      etcd.close();
      await(vertx.close());
    }
  }

  private List<KeyValue> now() {
    return await(etcd.list(P)).kvs();
  }

  private int converge(Map<String, String> desired, long lease) {
    int[] conflicts = {0};
    await(RecordSync.apply(etcd, RecordSync.diff(desired, now(), lease), lease, conflicts));
    return conflicts[0];
  }

  @Test
  void aSecondManagerWithTheSameViewWritesNothing() {
    Map<String, String> want = new TreeMap<>(Map.of(P + "a", "1", P + "b", "2"));
    await(etcd.put(P + "stale", "x"));
    assertThat(converge(want, 0)).isZero();
    long rev = await(etcd.list(P)).revision();
    assertThat(RecordSync.diff(want, now(), 0)).as("what a second manager would do").isEmpty();
    assertThat(converge(want, 0)).isZero();
    assertThat(await(etcd.list(P)).revision()).as("no write, no watch event").isEqualTo(rev);
    assertThat(now()).extracting(KeyValue::key).containsExactly(P + "a", P + "b");
  }

  @Test
  void aRecordOnAnotherLeaseIsRewrittenOnOurs() {
    long lease = await(etcd.grantLease(30));
    try {
      await(etcd.put(P + "c", "same"));
      assertThat(converge(Map.of(P + "c", "same"), lease)).isZero();
      assertThat(now()).singleElement().satisfies(kv -> assertThat(kv.lease()).isEqualTo(lease));
    } finally {
      await(etcd.revokeLease(lease));
    }
  }

  @Test
  void aRacingWriterMakesTheTransactionFailInsteadOfBeingOverwritten() {
    await(etcd.put(P + "s", "old"));
    List<RecordSync.Change> plan = RecordSync.diff(Map.of(P + "s", "mine"), now(), 0);
    await(etcd.put(P + "s", "theirs")); // another manager, between our read and our write
    int[] conflicts = {0};
    assertThat(await(RecordSync.apply(etcd, plan, 0, conflicts))).isZero();
    assertThat(conflicts[0]).isEqualTo(1);
    assertThat(now()).singleElement().satisfies(kv -> assertThat(kv.value()).isEqualTo("theirs"));
  }

  @Test
  void manyChangesAreSplitIntoTransactionsEtcdAccepts() {
    Map<String, String> want = new TreeMap<>();
    for (int i = 0; i < 300; i++) {
      want.put(P + "k" + i, "v" + i);
    }
    assertThat(converge(want, 0)).isZero();
    assertThat(now()).hasSize(300);
    assertThat(converge(Map.of(), 0)).isZero();
    assertThat(now()).isEmpty();
  }

  private static <T> T await(Future<T> f) {
    try {
      return f.await(20, TimeUnit.SECONDS);
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }
}
