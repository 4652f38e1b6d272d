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

  /**
   * A lease that runs out while etcd was away (or just after) takes a node's records with it
   * although the node is fine: held back, the record that its node writes again never goes
   * away for the planes; one that does not come back goes after the hold. Outside the recovery
   * window an expiry is delivered at once.
   */
  @Test
  void recordsWhoseLeaseRanOutRightAfterAnEtcdOutageAreHeldBackUntilTheirNodeWritesThemAgain() throws Exception {
    Vertx vertx = Vertx.vertx();
    EtcdStore store = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(3));
    EtcdSchema schema = new EtcdSchema("/fnp-hold-test");
    List<io.flannelnp.etcd.EtcdMessage.KeyChanges> seen = new CopyOnWriteArrayList<>();
    String back = schema.dockerContainer("node-a", "c1");
    String gone = schema.dockerContainer("node-b", "c2");
    String plain = schema.dockerService("s1");
    try {
      Codecs.registerAll(vertx.eventBus());
      vertx.eventBus().<io.flannelnp.etcd.EtcdMessage.KeyChanges>consumer(Addresses.ETCD_CHANGES, m -> seen.add(m.body()));
      vertx.deployVerticle(new EtcdWatchVerticle(store, schema)).await(5, TimeUnit.SECONDS);
      await(() -> snapshot(vertx).synced());
      long la = store.grantLease(3).await(5, TimeUnit.SECONDS);
      long lb = store.grantLease(3).await(5, TimeUnit.SECONDS);
      store.put(back, "{\"State\":\"running\"}", la).await(5, TimeUnit.SECONDS);
      store.put(gone, "{\"State\":\"running\"}", lb).await(5, TimeUnit.SECONDS);
      store.put(plain, "{}").await(5, TimeUnit.SECONDS);

      etcd.kill(); // the outage, long enough for a writer's renewals to miss a lease's TTL
      Thread.sleep(5000);
      etcd.launch();
      long t0 = System.nanoTime();
      // both leases run out a TTL after etcd's restart; node-a writes its record again a little later
      await(() -> {
        try {
          return store.get(back).await(2, TimeUnit.SECONDS).isEmpty();
        } catch (Exception e) {
          return false;
        }
      });
      store.put(back, "{\"State\":\"running\"}").await(5, TimeUnit.SECONDS);
      store.delete(plain).await(5, TimeUnit.SECONDS); // not on a lease: delivered at once
      await(() -> !snapshot(vertx).kvs().containsKey(plain));
      assertThat(snapshot(vertx).kvs()).containsKeys(back, gone);
      await(() -> !snapshot(vertx).kvs().containsKey(gone)); // delivered after the hold
      double heldFor = (System.nanoTime() - t0) / 1e9;
      assertThat(heldFor).as("seconds until the expired record that did not come back was delivered")
          .isGreaterThan(EtcdWatchVerticle.HOLD_MS / 1000.0 - 1);
      assertThat(seen).flatExtracting(io.flannelnp.etcd.EtcdMessage.KeyChanges::events)
          .filteredOn(e -> e.key().equals(back) && e.type() == WatchEvent.Type.DELETE)
          .as("the record its node wrote again was never seen deleted").isEmpty();
      assertThat(snapshot(vertx).kvs()).containsKey(back);
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
    long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
    while (!c.getAsBoolean()) {
      assertThat(System.nanoTime()).as("condition within 30 s").isLessThan(deadline);
      Thread.sleep(20);
    }
  }
}
