package io.flannelnp.lb;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.WatchEvent;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.FlannelJson;
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

  static ContainerRecord ctr(String node, String id, String svc, String state, Map<String, String> ips) {
    Map<String, ContainerRecord.Attachment> nets = new TreeMap<>();
    ips.forEach((n, ip) -> nets.put(n, new ContainerRecord.Attachment(ip, "ep" + id, List.of(), "")));
    return new ContainerRecord(id, id, id, node, svc, svc, "t" + id, svc + ".1", state, "", nets);
  }

  /** A container record as its node writes it: under its own node's key. */
  void putCtr(String node, String id, String svc, String state, Map<String, String> ips) {
    put(SCHEMA.dockerContainer(node, id), ctr(node, id, svc, state, ips).toJson());
  }

  /**
   * The IPAM side of flannel network {@code fid}: its subnet's reservation and its Flannel config,
   * the first {@code clusterLen} block being its cluster range (as Ipam writes them).
   */
  void flannelNetwork(String fid, String subnet, int clusterLen) {
    Cidr net = Cidr.parse(subnet);
    put(SCHEMA.addressSpace(net), fid);
    put(SCHEMA.networkConfig(fid), FlannelJson.networkConfig(net, 25, new Cidr(net.base() + (1L << (32 - clusterLen)), 25),
        Cidr.containing(net.last(), 25), 7000));
  }

  @Test
  void onlyVipServicesOnFlannelNetworksWithRunningTasksCount() {
    flannelNetwork("fid-a", "10.50.0.0/20", 25);
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
    putCtr("n1", "c2", "s1", "running", Map.of(FLANNEL, "10.50.0.131/25", OVERLAY, "10.0.1.9/24"));
    putCtr("n2", "c1", "s1", "running", Map.of(FLANNEL, "10.50.1.2/25"));
    putCtr("n2", "c3", "s1", "stopping", Map.of(FLANNEL, "10.50.1.3/25"));
    putCtr("n2", "c4", "s2", "running", Map.of(FLANNEL, "10.50.1.4/25"));
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
    flannelNetwork("fid-a", "10.50.0.0/20", 25);
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
    flannelNetwork("fid-a", "10.50.0.0/20", 25);
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
    flannelNetwork("fid-a", "10.50.0.0/16", 17); // a cluster range of 10.50.0.0/17 for 20,000 VIPs
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/16").toJson());
    for (int i = 0; i < 20_000; i++) {
      String sid = "svc" + i;
      put(SCHEMA.dockerService(sid), new ServiceRecord(sid, sid, ServiceRecord.EndpointMode.VIP,
          Map.of(FLANNEL, "10.50." + (i / 250) + "." + (i % 250 + 1)), Map.of()).toJson());
      putCtr("n1", "c" + i, sid, "running", Map.of(FLANNEL, "10.50." + (128 + i / 250) + "." + (i % 250 + 1)));
    }
    LbDesired inc = new LbDesired(SCHEMA);
    inc.compute(kvs.values());
    drain();
    putCtr("n1", "c77", "svc77", "stopping", Map.of(FLANNEL, "10.50.128.78"));
    LbDesired.Result r = inc.update(drain());
    assertThat(r.changed()).containsExactly("10.50.0.78");
    assertThat(r.vips().get("10.50.0.78")).isEmpty();
    assertThat(r.vips()).hasSize(20_000);
    assertThat(r.backends()).isEqualTo(19_999);
  }

  void mutate(Random rnd) {
    int roll = rnd.nextInt(100);
    String sid = "s" + rnd.nextInt(12);
    if (roll < 2) {
      // the network's reservation or config comes or goes: its VIPs with it
      String key = rnd.nextBoolean() ? SCHEMA.addressSpace(Cidr.parse("10.50.0.0/20")) : SCHEMA.networkConfig("fid-a");
      if (kvs.containsKey(key) && rnd.nextBoolean()) {
        remove(key);
      } else if (!kvs.containsKey(key)) {
        flannelNetwork("fid-a", "10.50.0.0/20", 25);
      }
    } else if (roll < 4) {
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
      String node = "n" + rnd.nextInt(2);
      String key = SCHEMA.dockerContainer(node, cid);
      if (rnd.nextInt(6) == 0) {
        remove(key);
      } else {
        List<String> states = List.of("running", "running", "running", "stopping");
        // now and then an address outside the subnet, or a record naming another node than its key
        String ip = rnd.nextInt(20) == 0 ? "10.51.0." + (130 + rnd.nextInt(60))
            : "10.50." + rnd.nextInt(3) + "." + (130 + rnd.nextInt(60));
        String named = rnd.nextInt(20) == 0 ? "n9" : node;
        put(key, ctr(named, cid, sid, states.get(rnd.nextInt(4)), Map.of(FLANNEL, ip)).toJson());
      }
    }
  }

  @Test
  void unchangedKeysAreNotParsedAgainAndAnUnrelatedChangeNamesNoVip() {
    flannelNetwork("fid-a", "10.50.0.0/20", 25);
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/20").toJson());
    List<String> sids = new ArrayList<>();
    for (int i = 0; i < 50; i++) {
      sids.add("svc" + i);
      put(SCHEMA.dockerService("svc" + i), new ServiceRecord("svc" + i, "x", ServiceRecord.EndpointMode.VIP,
          Map.of(FLANNEL, "10.50.0." + (2 + i)), Map.of()).toJson());
    }
    LbDesired d = new LbDesired(SCHEMA);
    d.compute(kvs.values());
    putCtr("n1", "cx", "svc7", "running", Map.of(FLANNEL, "10.50.0.200"));
    LbDesired.Result r = d.compute(kvs.values());
    assertThat(r.changed()).containsExactly("10.50.0.9");
    put(SCHEMA.node("n1"), "{}");
    assertThat(d.compute(kvs.values()).changed()).isEmpty();
  }

  /**
   * The table rewrites host traffic too, so only addresses a network owns get in: a VIP in the
   * cluster range of a network whose subnet is reserved for it, backends in its subnet, container
   * records under their own node's key. Everything else is left out and named.
   */
  @Test
  void onlyAddressesTheNetworkOwnsAreProgrammed() {
    flannelNetwork("fid-a", "10.50.0.0/20", 25);
    put(SCHEMA.dockerNetwork(FLANNEL), new DockerNetwork(FLANNEL, "a", "flannel-np", "fid-a", "10.50.0.0/20").toJson());
    // a network record whose flannel-id has no reservation nor config: anyone can write one
    String rogueNet = "netrogue00000000000000000";
    put(SCHEMA.dockerNetwork(rogueNet), new DockerNetwork(rogueNet, "r", "flannel-np", "rogue", "10.0.0.0/8").toJson());
    // a config claiming a subnet reserved for another network
    put(SCHEMA.networkConfig("thief"), FlannelJson.networkConfig(Cidr.parse("10.50.0.0/20"), 25,
        Cidr.parse("10.50.0.128/25"), Cidr.parse("10.50.15.128/25"), 7001));
    String thiefNet = "netthief00000000000000000";
    put(SCHEMA.dockerNetwork(thiefNet), new DockerNetwork(thiefNet, "t", "flannel-np", "thief", "10.50.0.0/20").toJson());
    put(SCHEMA.dockerService("ok"), new ServiceRecord("ok", "ok", ServiceRecord.EndpointMode.VIP,
        Map.of(FLANNEL, "10.50.0.9/20"), Map.of()).toJson());
    put(SCHEMA.dockerService("etcd"), new ServiceRecord("etcd", "etcd", ServiceRecord.EndpointMode.VIP,
        Map.of(rogueNet, "10.0.0.5"), Map.of()).toJson());
    put(SCHEMA.dockerService("block"), new ServiceRecord("block", "block", ServiceRecord.EndpointMode.VIP,
        Map.of(FLANNEL, "10.50.1.1"), Map.of()).toJson()); // a node's gateway, outside the cluster range
    put(SCHEMA.dockerService("stolen"), new ServiceRecord("stolen", "stolen", ServiceRecord.EndpointMode.VIP,
        Map.of(thiefNet, "10.50.0.10"), Map.of()).toJson());
    putCtr("n1", "c1", "ok", "running", Map.of(FLANNEL, "10.50.0.130"));
    putCtr("n1", "c2", "ok", "running", Map.of(FLANNEL, "10.9.9.9")); // outside the subnet
    put(SCHEMA.dockerContainer("n1", "c3"), ctr("n2", "c3", "ok", "running", Map.of(FLANNEL, "10.50.1.130")).toJson());
    put(SCHEMA.dockerContainer("n1", "c4"), ctr("n1", "c5", "ok", "running", Map.of(FLANNEL, "10.50.1.131")).toJson());
    LbDesired.Result r = new LbDesired(SCHEMA).compute(kvs.values());
    assertThat(r.vips()).containsExactly(Map.entry("10.50.0.9", List.of("10.50.0.130")));
    assertThat(r.problems())
        .anyMatch(p -> p.contains("VIP 10.0.0.5") && p.contains("network rogue has no config"))
        .anyMatch(p -> p.contains("VIP 10.50.1.1") && p.contains("outside the network's cluster range [10.50.0.0-10.50.0.127]"))
        .anyMatch(p -> p.contains("VIP 10.50.0.10") && p.contains("not reserved for it")
            && p.contains("reserved for another network"))
        .anyMatch(p -> p.contains("10.9.9.9 is outside subnet 10.50.0.0/20"))
        .anyMatch(p -> p.contains(SCHEMA.dockerContainer("n1", "c3")) && p.contains("node 'n2'"))
        .anyMatch(p -> p.contains(SCHEMA.dockerContainer("n1", "c4")) && p.contains("container 'c5'"));

    // the reservation goes (the network is being removed): its VIPs go with it, incrementally too
    LbDesired inc = new LbDesired(SCHEMA);
    inc.compute(kvs.values());
    drain();
    remove(SCHEMA.addressSpace(Cidr.parse("10.50.0.0/20")));
    assertThat(inc.update(drain()).vips()).isEmpty();
    flannelNetwork("fid-a", "10.50.0.0/20", 25);
    assertThat(inc.update(drain()).vips()).containsOnlyKeys("10.50.0.9");
  }
}
