package io.flannelnp.ipam;

import io.flannelnp.config.Config;
import io.flannelnp.config.Setting;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.vertx.core.Future;
import io.vertx.core.json.JsonObject;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.logging.Logger;
import java.util.stream.Collectors;

/**
 * The address settings every node must share, kept in etcd at {@code <P>/settings}: the first node
 * that starts writes its own (create-once); every other node compares. Nodes that carve networks
 * or lease blocks with different sizes would hand out overlapping subnets, so a node whose
 * settings disagree must not serve.
 */
public final class ClusterSettings {
  private static final Logger LOG = Logger.getLogger(ClusterSettings.class.getName());

  /** The settings that must agree, in the order they are checked. */
  public static final Setting[] SHARED = {Setting.AVAILABLE_SUBNETS, Setting.NETWORK_SUBNET_SIZE,
      Setting.DEFAULT_HOST_SUBNET_SIZE, Setting.CLUSTER_SUBNET_SIZE, Setting.VNI_START};

  /** A local setting that differs from the cluster's. */
  public static final class Disagreement extends RuntimeException {
    public Disagreement(String message) {
      super(message);
    }
  }

  private final EtcdStore etcd;
  private final EtcdSchema schema;
  private final Config config;
  private volatile Future<Void> verified;

  public ClusterSettings(EtcdStore etcd, EtcdSchema schema, Config config) {
    this.etcd = etcd;
    this.schema = schema;
    this.config = config;
  }

  /** This node's values of the shared settings, as stored. */
  public static Map<String, String> values(Config c) {
    Map<String, String> m = new LinkedHashMap<>();
    m.put(Setting.AVAILABLE_SUBNETS.name(), c.availableSubnets().stream().map(Cidr::toString)
        .collect(Collectors.joining(",")));
    m.put(Setting.NETWORK_SUBNET_SIZE.name(), Integer.toString(c.networkSubnetSize()));
    m.put(Setting.DEFAULT_HOST_SUBNET_SIZE.name(), Integer.toString(c.hostSubnetSize()));
    m.put(Setting.CLUSTER_SUBNET_SIZE.name(), Integer.toString(c.clusterSubnetSize()));
    m.put(Setting.VNI_START.name(), Integer.toString(c.vniStart()));
    return m;
  }

  /**
   * Succeeds once this node's settings are the cluster's (writing them if it is the first node);
   * fails with {@link Disagreement} naming the first setting that differs. An etcd failure fails
   * this call only: the next call asks again. A stored record that does not parse is reported and
   * not overwritten; the node then serves with its own settings.
   */
  public Future<Void> verify() {
    Future<Void> v = verified;
    if (v != null && (v.succeeded() || (v.failed() && v.cause() instanceof Disagreement))) {
      return v;
    }
    Future<Void> next = check();
    verified = next;
    return next;
  }

  /** The stored record, if any (for status views and the audit). */
  public Future<Optional<KeyValue>> stored() {
    return etcd.get(schema.settings());
  }

  private Future<Void> check() {
    Map<String, String> mine = values(config);
    JsonObject record = new JsonObject();
    mine.forEach(record::put);
    record.put("WrittenBy", config.nodeName()).put("At", Instant.now().toString());
    String key = schema.settings();
    return etcd.txn().ifAbsent(key).thenPut(key, record.encode()).elseGet(key).commit().compose(r -> {
      if (r.succeeded()) {
        LOG.info("cluster settings written to " + key + " (this is the first node): " + mine);
        return Future.succeededFuture();
      }
      if (r.elseReads().isEmpty()) {
        return check();
      }
      String stored = r.elseReads().get(0).value();
      Optional<String> why = disagreement(mine, stored, key);
      if (why.isPresent()) {
        return Future.failedFuture(new Disagreement(why.get()));
      }
      return Future.succeededFuture();
    });
  }

  /**
   * The line naming the first shared setting whose local value differs from the stored record,
   * empty when they agree (or when the record does not parse: then nothing can be compared).
   */
  static Optional<String> disagreement(Map<String, String> mine, String stored, String key) {
    JsonObject j;
    try {
      j = new JsonObject(stored);
    } catch (RuntimeException e) {
      LOG.severe("the cluster settings record " + key + " is not JSON (" + e.getMessage()
          + "); settings cannot be compared between nodes until it is fixed");
      return Optional.empty();
    }
    for (Map.Entry<String, String> e : mine.entrySet()) {
      Object theirs = j.getValue(e.getKey());
      if (theirs == null) {
        continue;
      }
      String t = String.valueOf(theirs);
      if (!normalize(e.getKey(), t).equals(normalize(e.getKey(), e.getValue()))) {
        return Optional.of("invalid setting " + e.getKey() + "=\"" + e.getValue() + "\": the cluster uses \"" + t
            + "\" (" + key + ", written by node " + j.getString("WrittenBy", "?") + "); every node must use the"
            + " same value (to change it for the whole cluster, edit that record while every node is stopped)");
      }
    }
    return Optional.empty();
  }

  private static String normalize(String setting, String value) {
    if (setting.equals(Setting.AVAILABLE_SUBNETS.name())) {
      return value.replace(" ", "");
    }
    return value.trim();
  }
}
