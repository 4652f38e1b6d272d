package io.flannelnp.etcd;

/**
 * A change to one key. {@code prev} is the value before the change when etcd still had it (a
 * DELETE's previous value is what tells a reader which object went away).
 */
public record WatchEvent(Type type, String key, KeyValue kv, KeyValue prev) {
  public enum Type { PUT, DELETE }

  public long modRevision() {
    return kv.modRevision();
  }
}
