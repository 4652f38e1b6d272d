package io.flannelnp.etcd;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdMessage.SnapshotRequest;
import io.flannelnp.etcd.EtcdMessage.StateChanged;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The watch verticle against a real etcd: wake-ups by family, snapshots, no stale state. */
class EtcdWatchVerticleTest {
  static EtcdServer etcd;

  @BeforeAll
  static void up() {
    etcd = EtcdServer.start();
  }

  @AfterAll
  static void down() {
    etcd.close();
  }

  @Test
  void publishesWhichFamiliesChangedAndAnswersSnapshotsOfTheWholePrefix() throws Exception {
    Vertx vertx = Vertx.vertx();
    EtcdStore store = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(3));
    EtcdSchema schema = new EtcdSchema("/fnp-watch-test");
    try {
      Codecs.registerAll(vertx.eventBus());
      store.put(schema.networkConfig("net1"), "{\"Network\":\"10.50.0.0/20\"}").await(5, TimeUnit.SECONDS);
      List<StateChanged> changes = new CopyOnWriteArrayList<>();
      vertx.eventBus().<StateChanged>consumer(Addresses.STATE_CHANGED, m -> changes.add(m.body()));
      vertx.deployVerticle(new EtcdWatchVerticle(store, schema)).await(5, TimeUnit.SECONDS);

      await(() -> !changes.isEmpty());
      assertThat(changes.get(0).resync()).as("the first batch is the initial listing").isTrue();
      ClusterState s0 = snapshot(vertx);
      assertThat(s0.synced()).isTrue();
      assertThat(s0.kvs()).containsKey(schema.networkConfig("net1"));

      String lease = schema.subnet("net1", Cidr.parse("10.50.0.128/25"));
      store.put(lease, "{\"PublicIP\":\"192.0.2.1\"}").await(5, TimeUnit.SECONDS);
      await(() -> changes.stream().anyMatch(c -> c.families().contains(Family.SUBNET_LEASES)));
      StateChanged sc = changes.get(changes.size() - 1);
      assertThat(sc.families()).containsExactly(Family.SUBNET_LEASES);
      assertThat(sc.resync()).isFalse();
      ClusterState s1 = snapshot(vertx);
      assertThat(s1.revision()).isGreaterThan(s0.revision());
      assertThat(s1.kvs().get(lease).value()).contains("192.0.2.1");
      assertThat(s1.under(schema.subnets("net1"))).hasSize(1);

      store.delete(lease).await(5, TimeUnit.SECONDS);
      await(() -> !snapshot(vertx).kvs().containsKey(lease));
      // an earlier snapshot is immutable: readers never see it change under them
      assertThat(s1.kvs()).containsKey(lease);
    } finally {
      store.deletePrefix(schema.root()).await(5, TimeUnit.SECONDS);
      store.close();
      vertx.close().await(5, TimeUnit.SECONDS);
    }
  }

  static ClusterState snapshot(Vertx vertx) {
    try {
      return vertx.eventBus().<ClusterState>request(Addresses.STATE_SNAPSHOT, new SnapshotRequest())
          .await(5, TimeUnit.SECONDS).body();
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }

  static void await(java.util.function.BooleanSupplier c) throws InterruptedException {
    long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
    while (!c.getAsBoolean()) {
      assertThat(System.nanoTime()).as("condition within 10 s").isLessThan(deadline);
      Thread.sleep(20);
    }
  }
}
