package io.flannelnp.testing;

import io.vertx.core.Vertx;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * A test class's real etcd and the Vert.x its clients run on: started once before the class's
 * tests, closed after them (the etcd process and its data directory with it).
 */
public abstract class EtcdFixture {
  protected static EtcdServer etcd;
  protected static Vertx vertx;

  @BeforeAll
  static void startEtcd() {
    etcd = EtcdServer.start();
    vertx = Vertx.vertx();
  }

  @AfterAll
  static void stopEtcd() {
    vertx.close().toCompletionStage().toCompletableFuture().join();
    etcd.close();
  }
}
