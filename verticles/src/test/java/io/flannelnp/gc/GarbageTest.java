package io.flannelnp.gc;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.docker.DockerMessage.DockerView;
import io.flannelnp.docker.DockerMessage.ViewEndpoint;
import io.flannelnp.docker.DockerMessage.ViewNetwork;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.FlannelJson;
import io.flannelnp.ipam.NetworkRecord;
import io.flannelnp.ipam.Owner;
import io.flannelnp.ipam.Owner.Kind;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;

/**
 * What the garbage collector decides from etcd and a fresh read of Docker: whose records are
 * garbage, what must be written back, which networks go, and what is only reported. No I/O.
 */
class GarbageTest {
  static final EtcdSchema S = new EtcdSchema("/p");
  static final int VNI = 6515;
  static final String NET = "dockernet1";

  final List<KeyValue> kvs = new ArrayList<>();

  GarbageTest() {
    put(S.pool("n"), new NetworkRecord("n", Cidr.parse("10.50.0.0/20"), VNI, Map.of(), "").toJson());
    put(S.dockerId("n"), NET);
    lease("10.50.0.128-25", "me");
    lease("10.50.1.0-25", "other");
    put(S.node("me"), "{}");
    put(S.node("other"), "{}");
  }

  void put(String key, String value) {
    kvs.removeIf(kv -> kv.key().equals(key));
    kvs.add(new KeyValue(key, value, 1, 7, 1, 0));
  }

  void lease(String block, String node) {
    put(S.subnets("n") + block, FlannelJson.lease("198.18.0.1", VNI, FlannelJson.vtepMac(node, VNI)));
  }

  static DockerView node(ViewEndpoint... eps) {
    return new DockerView("swarm-me", false, false, Map.of(NET, new ViewNetwork("web", "n")), List.of(eps), Set.of());
  }

  static DockerView manager(Set<String> swarmAddresses, ViewEndpoint... eps) {
    return new DockerView("swarm-me", true, true, Map.of(NET, new ViewNetwork("web", "n")), List.of(eps),
        swarmAddresses);
  }

  static ViewEndpoint ep(String id, String ip) {
    return new ViewEndpoint(NET, id, ip, "02:42:0a:32:00:82", "c0ffee" + id, "/run/docker/netns/abc");
  }

  Garbage compute(DockerView view) {
    return Garbage.compute(S, kvs, "me", view);
  }

  static List<String> reclaimed(Garbage g) {
    return g.reclaims().stream().map(Garbage.Reclaim::key).sorted().toList();
  }

  @Test
  void aContainerAddressOrEndpointRecordOfThisNodeThatDockerDoesNotHaveIsGarbage() {
    put(S.allocation("n", "10.50.0.130"), Owner.container("me", "", "10.50.0.5").withEndpoint("ep1").toJson());
    put(S.allocation("n", "10.50.0.131"), Owner.container("me", "", "10.50.0.6").toJson()); // untagged: timed out
    put(S.allocation("n", "10.50.0.132"), Owner.container("me", "", "10.50.0.7").withEndpoint("ep3").toJson());
    put(S.allocation("n", "10.50.0.129"), Owner.nodeGateway("me").toJson()); // the bridge: not a container's
    put(S.allocation("n", "10.50.1.2"), Owner.container("other", "", "").toJson()); // another node judges its own
    put(S.endpoint("me", "ep1"), "{\"FlannelID\":\"n\"}");
    put(S.endpoint("me", "ep9"), "{\"FlannelID\":\"n\"}");
    Garbage g = compute(node(ep("ep1", "10.50.0.130"), ep("ep3b", "10.50.0.132")));
    assertThat(reclaimed(g)).containsExactlyInAnyOrder(S.allocation("n", "10.50.0.131"), S.endpoint("me", "ep9"));
    Garbage.Reclaim record = g.reclaims().stream().filter(r -> r.key().endsWith("ep9")).findFirst().orElseThrow();
    assertThat(record.endpointId()).as("its veth, if a missed DeleteEndpoint left one, goes too").isEqualTo("ep9");
    assertThat(record.modRevision()).isEqualTo(7);
    assertThat(record.guardAbsent()).isNull();
  }

  @Test
  void whatDockerHoldsButEtcdLostIsWrittenBackAndASecondOwnerIsReported() {
    put(S.allocation("n", "10.50.0.131"), Owner.leader(Kind.PLACEHOLDER, "x").toJson());
    Garbage g = compute(node(ep("ep1", "10.50.0.130"), ep("ep2", "10.50.0.131"), ep("ep3", "10.50.1.7")));
    assertThat(g.restores()).extracting(Garbage.Restore::key).containsExactlyInAnyOrder(
        S.allocation("n", "10.50.0.130"), S.endpoint("me", "ep1"), S.endpoint("me", "ep2"), S.endpoint("me", "ep3"));
    Garbage.Restore alloc = g.restores().stream().filter(r -> r.owner() != null).findFirst().orElseThrow();
    assertThat(alloc.owner().node()).isEqualTo("me");
    assertThat(alloc.owner().endpoint()).isEqualTo("ep1");
    Garbage.Restore rec = g.restores().stream().filter(r -> r.key().endsWith("ep1") && r.json() != null).findFirst()
        .orElseThrow();
    assertThat(rec.json()).contains("\"FlannelID\":\"n\"").contains("\"SandboxKey\":\"/run/docker/netns/abc\"")
        .contains("\"Address\":\"10.50.0.130\"");
    assertThat(g.problems()).containsExactlyInAnyOrder(
        "address 10.50.0.131 of network n has two owners: container c0ffeeep2 on me and placeholder of the Swarm leader",
        "address 10.50.1.7 of container c0ffeeep3 on network n is outside this node's block and not allocated in etcd");
  }

  @Test
  void withoutAnAnswerFromDockerNothingIsJudgedAgainstIt() {
    put(S.allocation("n", "10.50.0.131"), Owner.container("me", "", "").toJson());
    put(S.endpoint("me", "ep9"), "{\"FlannelID\":\"n\"}");
    Garbage g = compute(null);
    assertThat(g.reclaims()).isEmpty();
    assertThat(g.restores()).isEmpty();
    assertThat(g.removals()).isEmpty();
  }

  @Test
  void aManagerFreesLeaderAddressesTheSwarmNoLongerHoldsButNeverTheGateway() {
    put(S.allocation("n", "10.50.0.1"), Owner.leader(Kind.GATEWAY, "x").toJson());
    put(S.allocation("n", "10.50.0.2"), Owner.leader(Kind.PLACEHOLDER, "x").toJson()); // a task's
    put(S.allocation("n", "10.50.0.3"), Owner.leader(Kind.PLACEHOLDER, "x").toJson()); // a VIP
    put(S.allocation("n", "10.50.0.4"), Owner.leader(Kind.PLACEHOLDER, "x").toJson()); // nobody's
    assertThat(reclaimed(compute(manager(Set.of("10.50.0.2", "10.50.0.3")))))
        .containsExactly(S.allocation("n", "10.50.0.4"));
    assertThat(reclaimed(compute(node()))).as("a worker does not judge the leader's").isEmpty();
    DockerView incomplete = new DockerView("m", true, false, Map.of(), List.of(), Set.of());
    assertThat(reclaimed(compute(incomplete))).as("nor a manager whose Swarm lists failed").isEmpty();
  }

  @Test
  void aNetworkGoesWhenDockerFreedItOrForgotItAndNoEndpointIsLeft() {
    assertThat(compute(manager(Set.of())).removals()).isEmpty();
    DockerView forgot = new DockerView("m", true, true, Map.of(), List.of(), Set.of());
    assertThat(compute(forgot).removals()).extracting(Garbage.Removal::flannelId, Garbage.Removal::freed)
        .containsExactly(org.assertj.core.groups.Tuple.tuple("n", false));
    put(S.freed("n"), "{\"DockerID\":\"" + NET + "\"}");
    assertThat(compute(manager(Set.of())).removals()).extracting(Garbage.Removal::freed).containsExactly(true);
    put(S.endpoint("other", "ep"), "{\"FlannelID\":\"n\"}");
    assertThat(compute(forgot).removals()).as("an endpoint is left").isEmpty();
  }

  @Test
  void aGoneNodesRecordsAreFreedOnlyWhileItHasNoNodeRecordAndNoLease() {
    put(S.allocation("n", "10.50.2.2"), Owner.container("dead", "", "").toJson());
    put(S.allocation("n", "10.50.2.1"), Owner.nodeGateway("dead").toJson());
    put(S.endpoint("dead", "ep"), "{\"FlannelID\":\"n\"}");
    put(S.poolRef("n", "dead"), "{\"Refs\":1}");
    Garbage g = compute(manager(Set.of()));
    assertThat(reclaimed(g)).containsExactlyInAnyOrder(S.allocation("n", "10.50.2.1"), S.allocation("n", "10.50.2.2"),
        S.endpoint("dead", "ep"), S.poolRef("n", "dead"));
    assertThat(g.reclaims()).extracting(Garbage.Reclaim::guardAbsent).containsOnly(S.node("dead"));
    assertThat(reclaimed(compute(null))).as("nor does it need Docker").isEqualTo(reclaimed(g));
    assertThat(reclaimed(Garbage.compute(S, kvs, "other", null))).as("one live node judges: the first by name")
        .isEmpty();

    lease("10.50.2.0-25", "dead");
    assertThat(reclaimed(compute(manager(Set.of())))).as("it still holds a lease").isEmpty();
    kvs.removeIf(kv -> kv.key().endsWith("10.50.2.0-25"));
    put(S.node("dead"), "{}");
    assertThat(reclaimed(compute(manager(Set.of())))).as("its node record is back").isEmpty();
  }

  @Test
  void everyRecordThatDoesNotParseIsReportedOnceNamingItsKey() {
    put(S.vnis() + "abc", "x");
    put(S.addressSpace() + "10.50.0.0-99", "x");
    put(S.subnets("n") + "10.50.3.0-25", "not json");
    put(S.allocation("n", "10.50.0.300"), "{}");
    put(S.allocation("n", "10.50.0.140"), "{\"Kind\":\"bogus\"}");
    put(S.endpoint("me", "ep"), "[");
    put(S.settings(), "nope");
    put(S.dockerContainer("node", "c"), "{\"Networks\":3}");
    put(S.pool("m"), "{\"VNI\":\"x\"}");
    List<String> problems = compute(node()).problems();
    assertThat(problems).hasSize(9);
    assertThat(String.join("\n", problems)).contains("malformed record /p/vnis/abc")
        .contains("malformed record /p/address-space/10.50.0.0-99").contains("/p/networks/n/subnets/10.50.3.0-25")
        .contains("/p/networks/n/allocations/10.50.0.300").contains("/p/networks/n/allocations/10.50.0.140")
        .contains("(the address stays taken)").contains("/p/endpoints/me/ep").contains("/p/settings")
        .contains("/p/docker-data/containers/node/c").contains("/p/networks/m/pool");
    put(S.vnis() + "bad\nFORGED line", "x");
    assertThat(String.join("", compute(node()).problems())).doesNotContain("\n").contains("bad?FORGED line");
  }
}
