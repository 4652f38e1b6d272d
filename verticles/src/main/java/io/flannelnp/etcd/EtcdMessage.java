package io.flannelnp.etcd;

import io.flannelnp.etcd.EtcdSchema.Family;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** Messages the EtcdWatchVerticle publishes and answers. Addresses: {@link io.flannelnp.bus.Addresses}. */
public sealed interface EtcdMessage {

  /** etcd became reachable or unreachable; the revision is the newest seen. */
  record EtcdStatus(boolean reachable, List<String> endpoints, long revision, String error) implements EtcdMessage {}

  /**
   * Wakes reconcilers: the cluster state changed at {@code revision} in these families. It carries
   * no data on purpose: a reconciler reads the whole state and computes what it wants.
   */
  record StateChanged(long revision, Set<Family> families, boolean resync) implements EtcdMessage {}

  /** The raw key changes of one watch batch, for the console, the recorder and replay. */
  record KeyChanges(long revision, List<WatchEvent> events, boolean resync) implements EtcdMessage {}

  /** Asks for the current {@link ClusterState}. */
  record SnapshotRequest() implements EtcdMessage {}

  /**
   * An immutable view of everything under ETCD_PREFIX at {@code revision}, keyed by etcd key.
   * {@code synced} is false until the first complete listing arrived.
   */
  record ClusterState(long revision, boolean synced, Map<String, KeyValue> kvs) implements EtcdMessage {
    public static final ClusterState EMPTY = new ClusterState(0, false, Map.of());

    /** The entries whose key starts with {@code prefix}, in key order. */
    public List<KeyValue> under(String prefix) {
      return kvs.values().stream().filter(kv -> kv.key().startsWith(prefix))
          .sorted(java.util.Comparator.comparing(KeyValue::key)).toList();
    }
  }
}
