package io.flannelnp.etcd;

/** One etcd key with its value (UTF-8) and the revisions a compare-and-set needs. */
public record KeyValue(String key, String value, long createRevision, long modRevision, long version, long lease) {

  static KeyValue of(io.etcd.jetcd.KeyValue kv) {
    return new KeyValue(kv.getKey().toString(), kv.getValue().toString(), kv.getCreateRevision(),
        kv.getModRevision(), kv.getVersion(), kv.getLease());
  }
}
