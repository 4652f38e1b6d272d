package io.flannelnp.etcd;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.op.Cmp;
import io.etcd.jetcd.op.CmpTarget;
import io.etcd.jetcd.op.Op;
import io.etcd.jetcd.options.DeleteOption;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.PutOption;
import io.vertx.core.Future;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A compare-and-set transaction: all conditions hold → the "then" operations, else the "else"
 * reads. Built fluently, committed once: {@code store.txn().ifAbsent(k).thenPut(k, v).commit()}.
 */
public final class Txn {
  /** Outcome: whether the conditions held, the revision after the commit, and the else-branch reads. */
  public record Result(boolean succeeded, long revision, List<KeyValue> elseReads) {}

  private final EtcdStore store;
  private final List<Cmp> cmps = new ArrayList<>();
  private final List<Op> thens = new ArrayList<>();
  private final List<Op> elses = new ArrayList<>();

  Txn(EtcdStore store) {
    this.store = store;
  }

  static ByteSequence bs(String s) {
    return ByteSequence.from(s, StandardCharsets.UTF_8);
  }

  public Txn ifAbsent(String key) {
    cmps.add(new Cmp(bs(key), Cmp.Op.EQUAL, CmpTarget.version(0)));
    return this;
  }

  /** The key's last modification is exactly {@code modRevision} (0 = the key is absent). */
  public Txn ifModRevision(String key, long modRevision) {
    cmps.add(new Cmp(bs(key), Cmp.Op.EQUAL, CmpTarget.modRevision(modRevision)));
    return this;
  }

  public Txn ifValue(String key, String value) {
    cmps.add(new Cmp(bs(key), Cmp.Op.EQUAL, CmpTarget.value(bs(value))));
    return this;
  }

  public Txn thenPut(String key, String value) {
    return thenPut(key, value, 0);
  }

  public Txn thenPut(String key, String value, long leaseId) {
    PutOption.Builder b = PutOption.builder();
    if (leaseId != 0) {
      b.withLeaseId(leaseId);
    }
    thens.add(Op.put(bs(key), bs(value), b.build()));
    return this;
  }

  public Txn thenDelete(String key) {
    thens.add(Op.delete(bs(key), DeleteOption.DEFAULT));
    return this;
  }

  public Txn thenDeletePrefix(String prefix) {
    thens.add(Op.delete(bs(prefix), DeleteOption.builder().isPrefix(true).build()));
    return this;
  }

  /** On failure, read this key so the caller sees who holds it. */
  public Txn elseGet(String key) {
    elses.add(Op.get(bs(key), GetOption.DEFAULT));
    return this;
  }

  public Future<Result> commit() {
    return store.commit(cmps.toArray(Cmp[]::new), thens.toArray(Op[]::new), elses.toArray(Op[]::new));
  }
}
