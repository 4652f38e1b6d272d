package io.flannelnp.lb;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.WatchEvent;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;

/**
 * The desired VIP → tasks map: which services, networks and tasks count, and that the incremental
 * computation (only changed keys parsed, only touched services recomputed) always equals a
 * computation from scratch and names every VIP that changed.
 */
class LoadBalancerDesiredTest {
  static final EtcdSchema SCHEMA = new EtcdSchema("/d");
  static final String FLANNEL = "netflannel000000000000000";
  static final String OVERLAY = "netoverlay000000000000000";

  long rev;
  final Map<String, KeyValue> kvs = new HashMap<>();

  /** The watch events of the changes since the last drain, as EtcdWatchVerticle publishes them. */
  final List<WatchEvent> events = new ArrayList<>();

  void put(String key, String value) {
    rev++;
    KeyValue kv = new KeyValue(key, value, rev, rev, 1, 0);
    events.add(new WatchEvent(WatchEvent.Type.PUT, key, kv, kvs.put(key, kv)));
  }

  void remove(String key) {
    KeyValue old = kvs.remove(key);
    if (old != null) {
      rev++;
      events.add(new WatchEvent(WatchEvent.Type.DELETE, key, new KeyValue(key, "", 0, rev, 0, 0), old));
    }
  }

  List<WatchEvent> drain() {
    List<WatchEvent> out = List.copyOf(events);
    events.clear();
    return out;
  }

  static ContainerRecord ctr(String id, String svc, String state, Map<String, String> ips) {
    Map<String, ContainerRecord.Attachment> nets = new TreeMap<>();
    ips.forEach((n, ip) -> nets.put(n, new ContainerRecord.Attachment(ip, "ep" + id, List.of(), "")));
    return new ContainerRecord(id, id, id, "n1", svc, svc, "t" + id, svc + ".1", state, "", nets);
  }

  @Test
  void onlyVipServicesOnFlannelNetworksWithRunningTasksCount() {
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/20").toJson());
    put(SCHEMA.dockerNetwork(OVERLAY), new DockerNetwork(OVERLAY, "o", "overlay", "", "10.0.1.0/24").toJson());
    put(SCHEMA.dockerService("s1"), new ServiceRecord("s1", "web", ServiceRecord.EndpointMode.VIP,
        Map.of(FLANNEL, "10.50.0.4/20", OVERLAY, "10.0.1.4/24"), Map.of()).toJson());
    put(SCHEMA.dockerService("s2"), new ServiceRecord("s2", "rr", ServiceRecord.EndpointMode.DNSRR,
        Map.of(FLANNEL, "10.50.0.5"), Map.of()).toJson());
    put(SCHEMA.dockerService("s3"), new ServiceRecord("s3", "dup", ServiceRecord.EndpointMode.VIP,
        Map.of(FLANNEL, "10.50.0.4"), Map.of()).toJson());
    put(SCHEMA.dockerService("s4"), new ServiceRecord("s4", "bad", ServiceRecord.EndpointMode.VIP,
        Map.of(FLANNEL, "10.50.0.300"), Map.of()).toJson());
    put(SCHEMA.dockerContainer("n1", "c2"), ctr("c2", "s1", "running", Map.of(FLANNEL, "10.50.0.131/25",
        OVERLAY, "10.0.1.9/24")).toJson());
    put(SCHEMA.dockerContainer("n2", "c1"), ctr("c1", "s1", "running", Map.of(FLANNEL, "10.50.1.2/25")).toJson());
    put(SCHEMA.dockerContainer("n2", "c3"), ctr("c3", "s1", "stopping", Map.of(FLANNEL, "10.50.1.3/25")).toJson());
    put(SCHEMA.dockerContainer("n2", "c4"), ctr("c4", "s2", "running", Map.of(FLANNEL, "10.50.1.4/25")).toJson());
    put(SCHEMA.dockerContainer("n2", "c5"), "{not json");
    put(SCHEMA.node("n1"), "{}");
    LbDesired.Result r = new LbDesired(SCHEMA).compute(kvs.values());
    assertThat(r.vips()).containsExactly(Map.entry("10.50.0.4", List.of("10.50.1.2", "10.50.0.131")));
    assertThat(r.services()).isEqualTo(1);
    assertThat(r.backends()).isEqualTo(2);
    assertThat(r.chains()).as("a pick chain for every count up to the largest").containsExactly(1, 2);
    assertThat(r.problems()).anyMatch(p -> p.contains("claimed by services s1 and s3"))
        .anyMatch(p -> p.contains("invalid VIP 10.50.0.300")).anyMatch(p -> p.contains("unreadable record"));
    assertThat(r.changed()).as("first computation: everything").isNull();
  }

  @Test
  void incrementalComputationsEqualComputationsFromScratch() {
    Random rnd = new Random(7);
    LbDesired inc = new LbDesired(SCHEMA);
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/20").toJson());
    Map<String, List<String>> prev = Map.of();
    for (int step = 0; step < 400; step++) {
      int changes = 1 + rnd.nextInt(4);
      for (int c = 0; c < changes; c++) {
        mutate(rnd);
      }
      LbDesired.Result a = inc.compute(kvs.values());
      Map<String, List<String>> got = new TreeMap<>(a.vips());
      LbDesired.Result b = new LbDesired(SCHEMA).compute(kvs.values());
      assertThat(got).as("step " + step).isEqualTo(new TreeMap<>(b.vips()));
      assertThat(a.chains()).as("step " + step).isEqualTo(b.chains());
      assertThat(a.services()).isEqualTo(b.services());
      assertThat(a.backends()).isEqualTo(b.backends());
      if (a.changed() != null) {
        assertNamesEveryChange(step, a, prev, got);
      }
      prev = got;
    }
  }

  /** A partial result ({@code changed()} set) names every VIP whose tasks differ from before. */
  static void assertNamesEveryChange(int step, LbDesired.Result a, Map<String, List<String>> before,
      Map<String, List<String>> got) {
    Set<String> differ = new HashSet<>(before.keySet());
    differ.addAll(got.keySet());
    differ.removeIf(v -> java.util.Objects.equals(before.get(v), got.get(v)));
    assertThat(a.changed()).as("step " + step + ": every VIP that changed is named").containsAll(differ);
  }

  @Test
  void updatesFromKeyChangesEqualComputationsFromScratchAndMixWithSnapshotPasses() {
    Random rnd = new Random(11);
    LbDesired inc = new LbDesired(SCHEMA);
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/20").toJson());
    for (int c = 0; c < 30; c++) {
      mutate(rnd);
    }
    inc.compute(kvs.values()); // the snapshot pass at start
    drain();
    Map<String, List<String>> prev = new TreeMap<>(new LbDesired(SCHEMA).compute(kvs.values()).vips());
    int partial = 0;
    for (int step = 0; step < 600; step++) {
      int changes = 1 + rnd.nextInt(3);
      for (int c = 0; c < changes; c++) {
        mutate(rnd);
      }
      // mostly key changes; now and then a snapshot pass (periodic resync) in between
      LbDesired.Result a = step % 50 == 49 ? inc.compute(kvs.values()) : inc.update(drain());
      events.clear();
      Map<String, List<String>> got = new TreeMap<>(a.vips());
      LbDesired.Result b = new LbDesired(SCHEMA).compute(kvs.values());
      assertThat(got).as("step " + step).isEqualTo(new TreeMap<>(b.vips()));
      assertThat(a.chains()).as("step " + step).isEqualTo(b.chains());
      assertThat(a.services()).as("step " + step).isEqualTo(b.services());
      assertThat(a.backends()).as("step " + step).isEqualTo(b.backends());
      assertThat(new HashSet<>(a.problems())).as("step " + step).isEqualTo(new HashSet<>(b.problems()));
      if (a.changed() != null) {
        partial++;
        assertNamesEveryChange(step, a, prev, got);
      }
      prev = got;
    }
    assertThat(partial).as("most updates recompute only what they touch").isGreaterThan(400);
  }

  @Test
  void anUpdateOfOneServiceAt20000ServicesTouchesOnlyItsVip() {
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/16").toJson());
    for (int i = 0; i < 20_000; i++) {
      String sid = "svc" + i;
      put(SCHEMA.dockerService(sid), new ServiceRecord(sid, sid, ServiceRecord.EndpointMode.VIP,
          Map.of(FLANNEL, "10.50." + (i / 250) + "." + (i % 250 + 1)), Map.of()).toJson());
      put(SCHEMA.dockerContainer("n1", "c" + i), ctr("c" + i, sid, "running",
          Map.of(FLANNEL, "10.60." + (i / 250) + "." + (i % 250 + 1))).toJson());
    }
    LbDesired inc = new LbDesired(SCHEMA);
    inc.compute(kvs.values());
    drain();
    put(SCHEMA.dockerContainer("n1", "c77"), ctr("c77", "svc77", "stopping", Map.of(FLANNEL, "10.60.0.78")).toJson());
    LbDesired.Result r = inc.update(drain());
    assertThat(r.changed()).containsExactly("10.50.0.78");
    assertThat(r.vips().get("10.50.0.78")).isEmpty();
    assertThat(r.vips()).hasSize(20_000);
    assertThat(r.backends()).isEqualTo(19_999);
  }

  void mutate(Random rnd) {
    int roll = rnd.nextInt(100);
    String sid = "s" + rnd.nextInt(12);
    if (roll < 3) {
      // a network comes or goes
      if (kvs.containsKey(SCHEMA.dockerNetwork(FLANNEL)) && rnd.nextBoolean()) {
        remove(SCHEMA.dockerNetwork(FLANNEL));
      } else {
        put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/20").toJson());
      }
    } else if (roll < 25) {
      if (rnd.nextInt(5) == 0) {
        remove(SCHEMA.dockerService(sid));
      } else {
        ServiceRecord.EndpointMode mode = rnd.nextInt(6) == 0 ? ServiceRecord.EndpointMode.DNSRR
            : ServiceRecord.EndpointMode.VIP;
        String vip = "10.50.0." + (2 + rnd.nextInt(14)); // collisions happen
        put(SCHEMA.dockerService(sid), new ServiceRecord(sid, sid, mode, Map.of(FLANNEL, vip), Map.of()).toJson());
      }
    } else {
      String cid = "c" + rnd.nextInt(40);
      String key = SCHEMA.dockerContainer("n" + rnd.nextInt(2), cid);
      if (rnd.nextInt(6) == 0) {
        remove(key);
      } else {
        List<String> states = List.of("running", "running", "running", "stopping");
        put(key, ctr(cid, sid, states.get(rnd.nextInt(4)),
            Map.of(FLANNEL, "10.50." + rnd.nextInt(3) + "." + (130 + rnd.nextInt(60)))).toJson());
      }
    }
  }

  @Test
  void unchangedKeysAreNotParsedAgainAndAnUnrelatedChangeNamesNoVip() {
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/20").toJson());
    List<String> sids = new ArrayList<>();
    for (int i = 0; i < 50; i++) {
      sids.add("svc" + i);
      put(SCHEMA.dockerService("svc" + i), new ServiceRecord("svc" + i, "x", ServiceRecord.EndpointMode.VIP,
          Map.of(FLANNEL, "10.50.0." + (2 + i)), Map.of()).toJson());
    }
    LbDesired d = new LbDesired(SCHEMA);
    d.compute(kvs.values());
    put(SCHEMA.dockerContainer("n1", "cx"), ctr("cx", "svc7", "running", Map.of(FLANNEL, "10.50.0.200")).toJson());
    LbDesired.Result r = d.compute(kvs.values());
    assertThat(r.changed()).containsExactly("10.50.0.9");
    put(SCHEMA.node("n1"), "{}");
    assertThat(d.compute(kvs.values()).changed()).isEmpty();
  }
}
