package io.flannelnp.lb;

import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.vertx.core.Future;
import java.util.EnumSet;
import java.util.Set;

/**
 * Swarm VIPs on every node: one nftables table of our own, maps from VIP to backends, one atomic
 * transaction per sync. This build reads services and containers; programming nftables is the
 * LoadBalancerVerticle issue's work.
 */
public final class LoadBalancerVerticle extends ReconcilerVerticle {
  private final EtcdSchema schema;

  public LoadBalancerVerticle(EtcdSchema schema) {
    this.schema = schema;
  }

  @Override
  protected String plane() {
    return "lb";
  }

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.DOCKER_SERVICES, Family.DOCKER_CONTAINERS, Family.DOCKER_NETWORKS);
  }

  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    long services = state.kvs().keySet().stream().filter(k -> schema.family(k) == Family.DOCKER_SERVICES).count();
    return Future.succeededFuture(services + " services in etcd; no kernel changes");
  }
}
