package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Codecs;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.EtcdWatchVerticle;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * What the plane's tests against real etcd share: one etcd per test class, and per test a Vert.x
 * with the codecs, a store and the etcd watch on the test's own prefix.
 */
abstract class EtcdBusTestBase {
  static EtcdServer etcd;
  Vertx vertx;
  EtcdStore store;
  EtcdSchema schema;

  @BeforeAll
  static void etcdUp() {
    etcd = EtcdServer.start();
  }

  @AfterAll
  static void etcdDown() {
    etcd.close();
  }

  /** Vert.x with the codecs, a store, and the watch of everything under {@code /root}. */
  void startBus(String root) throws Exception {
    vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    store = new EtcdStore(vertx, etcd.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    schema = new EtcdSchema("/" + root);
    vertx.deployVerticle(new EtcdWatchVerticle(store, schema)).await(10, TimeUnit.SECONDS);
  }

  /** Deletes the test's keys, asserts none is left, closes the store and Vert.x. */
  void stopBus() throws Exception {
    store.deletePrefix(schema.root()).await(5, TimeUnit.SECONDS);
    assertThat(store.list(schema.root()).await(5, TimeUnit.SECONDS).kvs()).as("etcd keys left").isEmpty();
    store.close();
    vertx.close().await(20, TimeUnit.SECONDS);
  }
}
