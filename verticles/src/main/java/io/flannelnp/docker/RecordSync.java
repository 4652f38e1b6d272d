package io.flannelnp.docker;

import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.Txn;
import io.vertx.core.Future;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Converges the keys under one prefix to a desired map: compare before write (several managers
 * write the same records, so an unchanged record costs no write and no watch event), and every
 * write guarded by the revision it was compared against, so a concurrent writer makes the
 * transaction fail and the caller re-reads instead of overwriting blindly.
 */
final class RecordSync {
  /** etcd refuses transactions of more than 128 operations by default. */
  static final int MAX_OPS = 64;

  /** One change: value null = delete. {@code modRevision} 0 = the key must be absent. */
  record Change(String key, String value, long modRevision) {}

  private RecordSync() {}

  /**
   * What turns {@code current} into {@code desired}: puts for new or different values (or a value
   * on another lease than {@code lease}, when lease != 0), deletes for keys nobody wants.
   */
  static List<Change> diff(Map<String, String> desired, List<KeyValue> current, long lease) {
    Map<String, KeyValue> have = new HashMap<>();
    current.forEach(kv -> have.put(kv.key(), kv));
    List<Change> out = new ArrayList<>();
    desired.forEach((k, v) -> {
      KeyValue kv = have.get(k);
      if (kv == null) {
        out.add(new Change(k, v, 0));
      } else if (!kv.value().equals(v) || (lease != 0 && kv.lease() != lease)) {
        out.add(new Change(k, v, kv.modRevision()));
      }
    });
    for (KeyValue kv : current) {
      if (!desired.containsKey(kv.key())) {
        out.add(new Change(kv.key(), null, kv.modRevision()));
      }
    }
    return out;
  }

  /**
   * Applies the changes in transactions of at most {@link #MAX_OPS}; the result is how many were
   * applied. A transaction whose guard fails (someone else wrote meanwhile) is skipped and
   * reported by {@code conflicts}, so the caller runs another pass on fresh data.
   */
  static Future<Integer> apply(EtcdStore etcd, List<Change> changes, long lease, int[] conflicts) {
    Future<Integer> chain = Future.succeededFuture(0);
    for (int i = 0; i < changes.size(); i += MAX_OPS) {
      List<Change> part = changes.subList(i, Math.min(changes.size(), i + MAX_OPS));
      chain = chain.compose(n -> {
        Txn t = etcd.txn();
        for (Change c : part) {
          t.ifModRevision(c.key(), c.modRevision());
        }
        for (Change c : part) {
          if (c.value() == null) {
            t.thenDelete(c.key());
          } else {
            t.thenPut(c.key(), c.value(), lease);
          }
        }
        return t.commit().map(r -> {
          if (!r.succeeded()) {
            conflicts[0]++;
            return n;
          }
          return n + part.size();
        });
      });
    }
    return chain;
  }
}
