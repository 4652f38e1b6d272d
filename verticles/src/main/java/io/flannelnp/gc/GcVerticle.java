package io.flannelnp.gc;

import io.flannelnp.admin.Metrics;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.docker.DockerMessage.DockerView;
import io.flannelnp.docker.DockerMessage.ViewRequest;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.Txn;
import io.flannelnp.flannel.FlannelMessage.DetachEndpoint;
import io.flannelnp.ipam.Ipam;
import io.flannelnp.ipam.IpamException;
import io.vertx.core.Future;
import io.vertx.core.eventbus.DeliveryOptions;
import io.vertx.core.json.JsonObject;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;
import java.util.logging.Logger;

/**
 * Keeps IPAM in step with Docker (Docker > etcd): frees what Docker no longer holds, writes back
 * what Docker holds but etcd lost, finishes network removals Docker asked for, settles
 * allocations whose write timed out, and reports every record it cannot read. Also keeps this
 * node's record ({@code <P>/nodes/<NODE_NAME>}, on a lease of NODE_RECORDS_TTL) so the others can
 * tell it is alive.
 *
 * <p>Nothing is freed on one look: a record must be garbage on every pass for {@code grace},
 * unchanged (same mod revision), and is then deleted by a transaction on that revision, so a
 * live owner that touched it keeps it. Decisions come from {@link Garbage}; when Docker does not
 * answer, nothing is judged against it.
 */
public final class GcVerticle extends ReconcilerVerticle {
  private static final Logger LOG = Logger.getLogger(GcVerticle.class.getName());
  /** At most this many deletions per pass: a mass reclaim is spread over passes. */
  private static final int MAX_ACTIONS = 200;

  private final EtcdStore etcd;
  private final EtcdSchema schema;
  private final Ipam ipam;
  private final String me;
  private final Duration grace;
  private final long recordsTtl;
  private final Supplier<Future<String>> publicIp;
  private final String version;

  /** key → (mod revision, first seen as garbage, System.nanoTime()). */
  private final Map<String, long[]> pending = new HashMap<>();
  /** Restores seen on the previous pass: a restore is done when two passes in a row want it. */
  private Set<String> restoreSeen = Set.of();
  private Set<String> knownProblems = Set.of();

  private long nodeLease;
  private EtcdStore.KeepAlive nodeKeepAlive;
  private String nodeRecord = "";

  public GcVerticle(EtcdStore etcd, EtcdSchema schema, Ipam ipam, String nodeName, Duration grace, long recordsTtl,
      Supplier<Future<String>> publicIp, String version) {
    this.etcd = etcd;
    this.schema = schema;
    this.ipam = ipam;
    this.me = nodeName;
    this.grace = grace;
    this.recordsTtl = recordsTtl;
    this.publicIp = publicIp;
    this.version = version;
  }

  @Override
  protected String plane() {
    return "gc";
  }

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.POOLS, Family.NODES);
  }

  @Override
  protected Duration resyncPeriod() {
    long ms = Math.max(2000, Math.min(15_000, grace.toMillis() / 4));
    return Duration.ofMillis(ms);
  }

  @Override
  protected Future<?> stopPlane() {
    // An orderly stop takes the node record away at once; that alone never makes the node look
    // dead (its Flannel leases stay), and a restart writes it again.
    if (nodeKeepAlive != null) {
      nodeKeepAlive.close();
    }
    return nodeLease == 0 ? Future.succeededFuture() : etcd.revokeLease(nodeLease).recover(e -> Future.succeededFuture());
  }

  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    Future<Integer> settled = ipam.uncertainCount() == 0 ? Future.succeededFuture(0)
        : ipam.settleUncertain().recover(e -> Future.succeededFuture(0));
    Future<DockerView> view = vertx.eventBus().<DockerView>request(Addresses.DOCKER_VIEW, new ViewRequest(),
        new DeliveryOptions().setSendTimeout(15_000)).map(m -> m.body());
    return Future.join(settled, view).transform(x -> {
      DockerView v = view.succeeded() ? view.result() : null;
      Garbage g = Garbage.compute(schema, state.kvs().values(), me, v);
      List<String> problems = new ArrayList<>(g.problems());
      if (v == null) {
        problems.add("Docker did not answer (" + view.cause().getMessage() + "): addresses are not checked against it");
      }
      return writeNodeRecord(v).recover(e -> Future.succeededFuture())
          .compose(n -> act(g, problems))
          .map(summary -> {
            publishProblems(problems);
            return (settled.result() > 0 ? settled.result() + " timed-out allocation(s) freed; " : "") + summary
                + (problems.isEmpty() ? "" : "; " + problems.size() + " problem(s)");
          });
    });
  }

  private Future<String> act(Garbage g, List<String> problems) {
    long now = System.nanoTime();
    Set<String> current = new HashSet<>();
    List<Garbage.Reclaim> due = new ArrayList<>();
    int waiting = 0;
    for (Garbage.Reclaim r : g.reclaims()) {
      current.add(r.key());
      long[] seen = pending.get(r.key());
      if (seen == null || seen[0] != r.modRevision()) {
        pending.put(r.key(), new long[] {r.modRevision(), now});
        waiting++;
      } else if (now - seen[1] >= grace.toNanos()) {
        due.add(r);
      } else {
        waiting++;
      }
    }
    pending.keySet().retainAll(current);
    List<Garbage.Reclaim> batch = due.subList(0, Math.min(MAX_ACTIONS, due.size()));
    List<Future<Boolean>> done = new ArrayList<>();
    for (Garbage.Reclaim r : batch) {
      done.add(reclaim(r));
    }
    Set<String> wanted = new LinkedHashSet<>();
    List<Future<Boolean>> restored = new ArrayList<>();
    for (Garbage.Restore r : g.restores()) {
      wanted.add(r.key());
      if (restoreSeen.contains(r.key())) {
        restored.add(restore(r, problems));
      }
    }
    restoreSeen = wanted;
    List<Future<Boolean>> removed = new ArrayList<>();
    for (Garbage.Removal r : g.removals()) {
      // a freed network too waits its grace: Docker's own ReleasePool normally finishes it first
      String key = "network:" + r.flannelId();
      current.add(key);
      long[] seen = pending.computeIfAbsent(key, k -> new long[] {0, now});
      if (now - seen[1] >= grace.toNanos()) {
        removed.add(remove(r));
      } else {
        waiting++;
      }
    }
    pending.keySet().retainAll(current);
    int waitingFinal = waiting;
    return Future.join(Future.join(done), Future.join(restored), Future.join(removed)).transform(x -> {
      int freed = count(done);
      int wrote = count(restored);
      int gone = count(removed);
      StringBuilder s = new StringBuilder();
      s.append(freed).append(" record(s) freed, ").append(wrote).append(" restored, ").append(gone)
          .append(" network(s) removed");
      if (waitingFinal > 0) {
        s.append("; ").append(waitingFinal).append(" waiting for the grace period (").append(grace.toSeconds())
            .append(" s)");
      }
      return Future.succeededFuture(s.toString());
    });
  }

  private static int count(List<Future<Boolean>> fs) {
    return (int) fs.stream().filter(f -> f.succeeded() && Boolean.TRUE.equals(f.result())).count();
  }

  private Future<Boolean> reclaim(Garbage.Reclaim r) {
    Txn t = etcd.txn().ifModRevision(r.key(), r.modRevision());
    if (r.guardAbsent() != null) {
      t.ifAbsent(r.guardAbsent());
    }
    return t.thenDelete(r.key()).commit().map(res -> {
      if (res.succeeded()) {
        LOG.warning("freed " + Garbage.printable(r.key()) + ": " + r.why());
        Metrics.gcReclaimed(kind(r.key()));
        ipam.forgetCached(r.key());
        if (!r.endpointId().isEmpty()) {
          // a veth a missed DeleteEndpoint left on this node goes too (missing is fine)
          vertx.eventBus().request(Addresses.FLANNEL_ENDPOINT_DETACH, new DetachEndpoint(r.flannelId(), r.endpointId()),
              new DeliveryOptions().setSendTimeout(20_000)).onFailure(e -> LOG.fine("detach of "
                  + r.endpointId() + ": " + e.getMessage()));
        }
      }
      return res.succeeded();
    });
  }

  private Future<Boolean> restore(Garbage.Restore r, List<String> problems) {
    if (r.owner() != null) {
      return ipam.restore(r.flannelId(), r.address(), r.owner()).map(a -> {
        if (!a.existing()) {
          LOG.warning("restored " + r.key() + ": " + r.why());
          Metrics.gcRestored("allocation");
        }
        return !a.existing();
      }).recover(e -> {
        if (e instanceof IpamException ie && ie.reason() == IpamException.Reason.IN_USE) {
          problems.add(r.why() + ", and " + ie.getMessage());
          return Future.succeededFuture(false);
        }
        return Future.failedFuture(e);
      });
    }
    return etcd.txn().ifAbsent(r.key()).thenPut(r.key(), r.json()).commit().map(res -> {
      if (res.succeeded()) {
        LOG.warning("restored " + r.key() + ": " + r.why());
        Metrics.gcRestored("endpoint");
      }
      return res.succeeded();
    });
  }

  private Future<Boolean> remove(Garbage.Removal r) {
    // counted again right before: an endpoint created since the snapshot keeps the network
    return ipam.endpointsLeft(r.flannelId()).compose(left -> {
      if (left > 0) {
        return Future.succeededFuture(false);
      }
      LOG.warning("removing network " + r.flannelId() + " from etcd: " + r.why());
      Metrics.gcReclaimed("network");
      return ipam.removeNetwork(r.flannelId()).map(v -> true);
    });
  }

  private String kind(String key) {
    return switch (schema.family(key)) {
      case ALLOCATIONS -> "allocation";
      case ENDPOINTS -> "endpoint";
      case POOLS -> "pool-ref";
      default -> "other";
    };
  }

  private void publishProblems(List<String> problems) {
    Set<String> now = new LinkedHashSet<>(problems);
    for (String p : now) {
      if (!knownProblems.contains(p)) {
        LOG.warning("problem: " + p);
      }
    }
    for (String p : knownProblems) {
      if (!now.contains(p)) {
        LOG.info("solved: " + p);
      }
    }
    knownProblems = now;
    vertx.eventBus().publish(Addresses.PROBLEMS, new Observed.Problems("ipam", List.copyOf(now)));
  }

  /**
   * {@code <P>/nodes/<NODE_NAME>}: who this node is (its Swarm node ID, public IP, role, version),
   * on its own lease, so a node that is gone loses it after NODE_RECORDS_TTL.
   */
  private Future<Void> writeNodeRecord(DockerView v) {
    if (v == null && nodeLease == 0) {
      return Future.succeededFuture(); // not a Docker host (yet): nothing to say who this node is
    }
    return publicIp.get().recover(e -> Future.succeededFuture("")).compose(ip -> {
      JsonObject rec = new JsonObject().put("Node", me).put("SwarmNodeID", v == null ? "" : v.nodeId())
          .put("PublicIP", ip).put("Manager", v != null && v.manager()).put("Version", version);
      String body = rec.encode();
      if (body.equals(nodeRecord) && nodeLease != 0) {
        return Future.succeededFuture();
      }
      Future<Long> lease = nodeLease != 0 ? Future.succeededFuture(nodeLease)
          : etcd.grantLease(recordsTtl).onSuccess(id -> {
            nodeLease = id;
            nodeKeepAlive = etcd.keepAlive(id, () -> {
              if (nodeLease == id) {
                LOG.warning("etcd lease of the node record of " + me + " lost; writing it again");
                nodeLease = 0;
                nodeRecord = "";
                wake(false);
              }
            });
          });
      return lease.compose(id -> etcd.put(schema.node(me), rec.copy().put("Since", Instant.now().toString()).encode(), id))
          .map(rev -> {
            nodeRecord = body;
            return (Void) null;
          });
    });
  }
}
