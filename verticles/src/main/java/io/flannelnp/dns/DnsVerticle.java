package io.flannelnp.dns;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Failure;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.vertx.core.Future;
import java.util.EnumSet;
import java.util.Set;

/**
 * The resolver inside every container on our networks. This build reads the records; injecting
 * listeners into containers is the DnsVerticle issue's work.
 */
public final class DnsVerticle extends ReconcilerVerticle {
  private final EtcdSchema schema;

  public DnsVerticle(EtcdSchema schema) {
    this.schema = schema;
  }

  @Override
  protected String plane() {
    return "dns";
  }

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.DOCKER_SERVICES, Family.DOCKER_CONTAINERS, Family.DOCKER_NETWORKS);
  }

  @Override
  protected Future<?> startPlane() {
    String why = "DNS injection is not part of this build";
    vertx.eventBus().consumer(Addresses.DNS_INJECT, m -> m.fail(Failure.NOT_IMPLEMENTED, why));
    vertx.eventBus().consumer(Addresses.DNS_EJECT, m -> m.fail(Failure.NOT_IMPLEMENTED, why));
    return Future.succeededFuture();
  }

  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    long containers = state.kvs().keySet().stream().filter(k -> schema.family(k) == Family.DOCKER_CONTAINERS).count();
    return Future.succeededFuture(containers + " container records in etcd; no listeners injected");
  }
}
