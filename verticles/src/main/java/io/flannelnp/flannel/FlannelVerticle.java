package io.flannelnp.flannel;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Failure;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.vertx.core.Future;
import java.util.EnumSet;
import java.util.Set;

/**
 * The data plane between hosts: Flannel leases, the flannel.&lt;VNI&gt; devices, bridges and veths,
 * and per remote lease one neighbour, one FDB entry and one route. This build reads the leases
 * and networks; programming the kernel is the FlannelVerticle issue's work.
 */
public final class FlannelVerticle extends ReconcilerVerticle {
  private final Config config;
  private final EtcdSchema schema;

  public FlannelVerticle(Config config, EtcdSchema schema) {
    this.config = config;
    this.schema = schema;
  }

  @Override
  protected String plane() {
    return "flannel";
  }

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.NETWORK_CONFIG, Family.SUBNET_LEASES);
  }

  @Override
  protected Future<?> startPlane() {
    String why = "the VXLAN data plane is not part of this build";
    vertx.eventBus().consumer(Addresses.FLANNEL_NETWORK_ENSURE, m -> m.fail(Failure.NOT_IMPLEMENTED, why));
    vertx.eventBus().consumer(Addresses.FLANNEL_ENDPOINT_ATTACH, m -> m.fail(Failure.NOT_IMPLEMENTED, why));
    vertx.eventBus().consumer(Addresses.FLANNEL_ENDPOINT_DETACH, m -> m.fail(Failure.NOT_IMPLEMENTED, why));
    return Future.succeededFuture();
  }

  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    long networks = state.kvs().keySet().stream().filter(k -> schema.family(k) == Family.NETWORK_CONFIG).count();
    long leases = state.kvs().keySet().stream().filter(k -> schema.family(k) == Family.SUBNET_LEASES).count();
    return Future.succeededFuture(networks + " networks, " + leases + " subnet leases in etcd (node "
        + config.nodeName() + "); no kernel changes");
  }
}
