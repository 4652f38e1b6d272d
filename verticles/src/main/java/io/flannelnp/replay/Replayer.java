package io.flannelnp.replay;

import io.flannelnp.dns.DnsNames;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.WatchEvent;
import io.flannelnp.flannel.ReplayPlan;
import io.flannelnp.flannel.VxlanPlan;
import io.flannelnp.lb.LbDesired;
import io.flannelnp.lb.LbRules;
import io.flannelnp.model.ClusterModel;
import java.io.PrintStream;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SortedMap;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * Rebuilds the cluster state revision by revision and runs the planes' pure desired-state
 * computations on it, never the kernel. Per revision it prints what each plane would apply, as the
 * difference to the previous revision's desired state (the live daemon's kernel holds exactly
 * that after its pass):
 *
 * <pre>
 * revision 42: PUT /flannel/docker-data/services/abc
 * batch plane=lb tool=nft revision=42
 * | add element ip flannel-np-lb backends-3 { … }
 * end batch
 * dns + net web A 10.50.0.2
 * ipam - flannel-1 10.50.0.9
 * </pre>
 *
 * lb: {@link LbRules#full} when the table appears, {@link LbRules#absent} when the last VIP goes,
 * otherwise {@link LbRules#delta} (the live plane's partial pass). flannel: the peer batches of a
 * partial pass ({@code --node} is the node's public IP); a change of devices needs a full pass,
 * which depends on the kernel, and is reported as such.
 */
public final class Replayer {
  private final EtcdSchema schema;
  private final String nodeIp;
  private final Set<String> planes;
  private final PrintStream out;

  public Replayer(String prefix, String nodeIp, Set<String> planes, PrintStream out) {
    this.schema = new EtcdSchema(prefix);
    this.nodeIp = nodeIp;
    this.planes = planes;
    this.out = out;
  }

  private record Desired(Map<String, List<String>> vips, VxlanPlan plan, SortedSet<String> dns,
      SortedMap<String, String> allocations) {}

  /** Prints revisions {@code from}..{@code to} of {@code rec}; returns how many revisions were printed. */
  public int run(Recording rec, long from, long to) {
    Map<String, KeyValue> kvs = new HashMap<>();
    rec.base().forEach(kv -> kvs.put(kv.key(), kv));
    Desired prev = null;
    int printed = 0;
    for (Recording.Step s : rec.steps()) {
      if (prev == null && s.revision() >= from) {
        prev = desired(kvs); // the state the live daemon converged to before `from`
      }
      for (WatchEvent e : s.events()) {
        if (e.type() == WatchEvent.Type.PUT) {
          kvs.put(e.key(), e.kv());
        } else {
          kvs.remove(e.key());
        }
      }
      if (s.revision() < from || (to > 0 && s.revision() > to)) {
        continue;
      }
      StringBuilder head = new StringBuilder("revision ").append(s.revision()).append(':');
      for (WatchEvent e : s.events()) {
        head.append(' ').append(e.type()).append(' ').append(e.key());
      }
      out.println(head);
      Desired now = desired(kvs);
      diff(prev, now, s.revision());
      prev = now;
      printed++;
    }
    return printed;
  }

  private Desired desired(Map<String, KeyValue> kvs) {
    List<KeyValue> all = List.copyOf(kvs.values());
    Map<String, List<String>> vips = planes.contains("lb") ? new LbDesired(schema).compute(all).vips() : Map.of();
    VxlanPlan plan = planes.contains("flannel") ? VxlanPlan.compute(schema, all, nodeIp) : null;
    SortedSet<String> dns = planes.contains("dns") ? DnsNames.of(ClusterModel.of(schema, all)).records()
        : new TreeSet<>();
    SortedMap<String, String> alloc = new TreeMap<>();
    if (planes.contains("ipam")) {
      for (KeyValue kv : all) {
        if (schema.family(kv.key()) == Family.ALLOCATIONS) {
          String fid = schema.flannelIdOf(kv.key()).orElse("?");
          alloc.put(fid + " " + kv.key().substring(kv.key().lastIndexOf('/') + 1), kv.value());
        }
      }
    }
    return new Desired(vips, plan, dns, alloc);
  }

  private void diff(Desired a, Desired b, long rev) {
    if (planes.contains("flannel")) {
      if (!ReplayPlan.sameShape(a.plan(), b.plan())) {
        out.println("flannel full pass: devices " + b.plan().own().stream().map(VxlanPlan.Own::device).toList()
            + (b.plan().problems().isEmpty() ? "" : ", problems " + b.plan().problems()));
      } else {
        List<List<String>> batches = ReplayPlan.peerBatches(a.plan(), b.plan());
        String[] tools = {"ip", "bridge", "ip"};
        for (int i = 0; i < 3; i++) {
          if (!batches.get(i).isEmpty()) {
            batch("flannel", tools[i], rev, String.join("\n", batches.get(i)) + "\n");
          }
        }
      }
    }
    if (planes.contains("lb")) {
      String script;
      if (b.vips().isEmpty()) {
        script = a.vips().isEmpty() ? "" : LbRules.absent();
      } else if (a.vips().isEmpty()) {
        script = LbRules.full(b.vips());
      } else {
        script = LbRules.delta(a.vips(), LbRules.chainsFor(a.vips().values()), b.vips()).script();
      }
      if (!script.isEmpty()) {
        batch("lb", "nft", rev, script);
      }
    }
    if (planes.contains("dns")) {
      setDiff("dns", a.dns(), b.dns());
    }
    if (planes.contains("ipam")) {
      a.allocations().forEach((k, v) -> {
        if (!b.allocations().containsKey(k)) {
          out.println("ipam - " + k);
        }
      });
      b.allocations().forEach((k, v) -> {
        if (!v.equals(a.allocations().get(k))) {
          out.println("ipam + " + k + " " + v);
        }
      });
    }
  }

  private void batch(String plane, String tool, long rev, String text) {
    out.println("batch plane=" + plane + " tool=" + tool + " revision=" + rev);
    text.lines().forEach(l -> out.println("| " + l));
    out.println("end batch");
  }

  private void setDiff(String what, SortedSet<String> a, SortedSet<String> b) {
    for (String x : a) {
      if (!b.contains(x)) {
        out.println(what + " - " + x);
      }
    }
    for (String x : b) {
      if (!a.contains(x)) {
        out.println(what + " + " + x);
      }
    }
  }
}
