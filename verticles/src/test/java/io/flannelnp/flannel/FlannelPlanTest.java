package io.flannelnp.flannel;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.flannel.VxlanPlan.Network;
import io.flannelnp.flannel.VxlanPlan.Own;
import io.flannelnp.flannel.VxlanPlan.Peer;
import io.flannelnp.ipam.Cidr;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * What the data plane wants, from etcd values alone (no kernel): Flannel's JSON read as flanneld
 * reads it, which leases are this node's and which are peers, and the isolation table's rules.
 */
class FlannelPlanTest {
  static final EtcdSchema S = new EtcdSchema("/p");
  static final String ME = "198.18.0.11";
  static final String CONFIG = "{\"Network\":\"10.50.0.0/20\",\"SubnetLen\":25,\"SubnetMin\":\"10.50.0.128\","
      + "\"SubnetMax\":\"10.50.15.128\",\"Backend\":{\"Type\":\"vxlan\",\"VNI\":6515,\"Port\":8472}}";

  static KeyValue kv(String key, String value) {
    return new KeyValue(key, value, 1, 1, 1, 0);
  }

  static String lease(String ip, String mac) {
    return "{\"PublicIP\":\"" + ip + "\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":6515,"
        + "\"VtepMAC\":\"" + mac + "\"}}";
  }

  /** The reservations flannel-np's IPAM writes with every network's config. */
  static List<KeyValue> reserved(String fid, String subnetKey, int vni) {
    return List.of(kv("/p/address-space/" + subnetKey, fid), kv("/p/vnis/" + vni, fid));
  }

  static List<KeyValue> with(List<KeyValue> a, List<KeyValue> b) {
    List<KeyValue> out = new ArrayList<>(a);
    out.addAll(b);
    return out;
  }

  @Test
  void ownLeaseAndPeersOfANetwork() {
    List<KeyValue> kvs = with(reserved("a", "10.50.0.0-20", 6515), List.of(
        kv("/p/networks/a/config", CONFIG),
        kv("/p/networks/a/subnets/10.50.0.128-25", lease(ME, "0e:00:00:00:00:01")),
        kv("/p/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02")),
        kv("/p/networks/a/subnets/10.50.1.128-25", lease("198.18.0.13", "0E:00:00:00:00:03")),
        kv("/p/networks/a/pool", "{}"),
        kv("/p/networks/a/allocations/10.50.0.130", "{}")));
    VxlanPlan p = VxlanPlan.compute(S, kvs, ME);
    assertThat(p.problems()).isEmpty();
    assertThat(p.networks()).containsOnlyKeys("a");
    Network n = p.networks().get("a");
    assertThat(n).isEqualTo(new Network("a", Cidr.parse("10.50.0.0/20"), 6515, 8472, true, 25));
    assertThat(n.device()).isEqualTo("flannel.6515");
    assertThat(p.own()).hasSize(1);
    Own o = p.own().get(0);
    assertThat(o.block()).isEqualTo(Cidr.parse("10.50.0.128/25"));
    assertThat(o.vtepMac()).isEqualTo("0e:00:00:00:00:01");
    assertThat(o.address()).isEqualTo("10.50.0.128/32");
    assertThat(o.peers()).extracting(Peer::block, Peer::publicIp, Peer::vtepMac, Peer::gateway).containsExactly(
        org.assertj.core.groups.Tuple.tuple(Cidr.parse("10.50.1.0/25"), "198.18.0.12", "0e:00:00:00:00:02", "10.50.1.0"),
        org.assertj.core.groups.Tuple.tuple(Cidr.parse("10.50.1.128/25"), "198.18.0.13", "0e:00:00:00:00:03",
            "10.50.1.128"));
  }

  @Test
  void flannelJsonIsReadCaseInsensitivelyWithFlannelsDefaults() {
    // Go's encoding/json matches field names in any case; VNI defaults to 1, Port 0 means 8472
    List<KeyValue> kvs = with(reserved("b", "10.5.0.0-16", 1), List.of(
        kv("/p/networks/b/config", "{\"network\":\"10.5.0.0/16\",\"backend\":{\"type\":\"vxlan\"}}"),
        kv("/p/networks/b/subnets/10.5.52.0-24", "{\"publicip\":\"" + ME + "\",\"backendtype\":\"vxlan\","
            + "\"backenddata\":{\"vni\":1,\"vtepmac\":\"c6:d2:32:6f:8f:44\"}}"),
        // the documented example of Flannel's Documentation/reservations.md, byte for byte
        kv("/p/networks/b/subnets/10.5.7.0-24", "{\"PublicIP\":\"192.168.64.3\",\"PublicIPv6\":null,"
            + "\"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":1,\"VtepMAC\":\"c6:d2:32:6f:8f:45\"}}"),
        // dual-stack key: the IPv4 half counts
        kv("/p/networks/b/subnets/10.5.8.0-24&fc00::-64", lease("192.168.64.4", "c6:d2:32:6f:8f:46"))));
    VxlanPlan p = VxlanPlan.compute(S, kvs, ME);
    assertThat(p.problems()).isEmpty();
    Network n = p.networks().get("b");
    assertThat(n.vni()).isEqualTo(1);
    assertThat(n.port()).isEqualTo(8472);
    assertThat(p.own().get(0).block()).isEqualTo(Cidr.parse("10.5.52.0/24"));
    assertThat(p.own().get(0).peers()).extracting(Peer::publicIp).containsExactly("192.168.64.3", "192.168.64.4");
  }

  /** Keys of Flannel's config the data plane does not follow are named in the plan's problems (fnp.problems). */
  @Test
  void unsupportedFlannelConfigKeysAreReportedNotIgnored() {
    String config = "{\"Network\":\"10.50.0.0/20\",\"SubnetLen\":25,\"SubnetMin\":\"10.50.0.128\",\"EnableIPv6\":true,"
        + "\"IPv6Network\":\"fc00::/48\",\"EnableIPv4\":true,\"Backend\":{\"Type\":\"vxlan\",\"VNI\":6515,"
        + "\"DirectRouting\":true,\"GBP\":false,\"MTU\":1400,\"Learning\":0}}";
    VxlanPlan p = VxlanPlan.compute(S, with(reserved("a", "10.50.0.0-20", 6515), List.of(
        kv("/p/networks/a/config", config))), ME);
    assertThat(p.networks()).containsKey("a");
    assertThat(p.networks().get("a").directRouting()).as("Backend.DirectRouting is honoured").isTrue();
    assertThat(p.problems()).containsExactlyInAnyOrder(
        "network a: Flannel config EnableIPv6=true is not supported (flannel-np networks are IPv4 only); ignored",
        "network a: Flannel config IPv6Network=fc00::/48 is not supported (flannel-np networks are IPv4 only); ignored",
        "network a: Flannel config Backend.MTU=1400 is not supported (the MTU is the uplink's less 50); ignored");
    // flannel-np's own config asks for nothing it does not do
    assertThat(VxlanPlan.compute(S, with(reserved("a", "10.50.0.0-20", 6515), List.of(kv("/p/networks/a/config",
        io.flannelnp.ipam.FlannelJson.networkConfig(Cidr.parse("10.50.0.0/20"), 25, Cidr.parse("10.50.0.128/25"),
            Cidr.parse("10.50.15.128/25"), 6515)))), ME).problems()).isEmpty();
    VxlanPlan other = VxlanPlan.compute(S, with(reserved("c", "10.70.0.0-16", 1), List.of(kv("/p/networks/c/config",
        "{\"Network\":\"10.70.0.0/16\",\"Backend\":{\"Type\":\"host-gw\"}}"))), ME);
    assertThat(other.problems()).singleElement().asString().contains("Backend.Type=host-gw is not supported");
  }

  /** DirectRouting: peers on the uplink's subnet leave VXLAN for a route via their PublicIP; the diff touches only its own routes. */
  @Test
  void directRoutingSplitsPeersOnTheUplinksSubnetAndDiffsOnlyItsOwnRoutes() {
    String config = CONFIG.replace("\"Backend\":{", "\"Backend\":{\"DirectRouting\":true,");
    List<KeyValue> kvs = with(reserved("a", "10.50.0.0-20", 6515), List.of(kv("/p/networks/a/config", config),
        kv("/p/networks/a/subnets/10.50.0.128-25", lease(ME, "0e:00:00:00:00:01")),
        kv("/p/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02")),
        kv("/p/networks/a/subnets/10.50.1.128-25", lease("198.19.0.13", "0e:00:00:00:00:03"))));
    VxlanPlan p = VxlanPlan.compute(S, kvs, ME);
    DirectRoutes.Split split = DirectRoutes.split(p.own(), List.of(ME + "/24"));
    assertThat(split.direct()).containsExactly(java.util.Map.entry("10.50.1.0/25", "198.18.0.12"));
    assertThat(split.viaVxlan().get(0).peers()).extracting(Peer::publicIp).containsExactly("198.19.0.13");
    assertThat(DirectRoutes.split(p.own(), List.of()).direct()).as("no uplink: nothing direct").isEmpty();
    VxlanPlan off = VxlanPlan.compute(S, with(reserved("a", "10.50.0.0-20", 6515), List.of(kv("/p/networks/a/config",
        CONFIG), kvs.get(3), kvs.get(4))), ME);
    assertThat(DirectRoutes.split(off.own(), List.of(ME + "/24")).direct()).as("DirectRouting off").isEmpty();

    io.vertx.core.json.JsonArray routes = new io.vertx.core.json.JsonArray(
        "[{\"dst\":\"10.50.1.0/25\",\"gateway\":\"198.18.0.99\",\"dev\":\"eth0\",\"protocol\":\"250\"},"
            + "{\"dst\":\"10.50.9.0/25\",\"gateway\":\"198.18.0.20\",\"dev\":\"eth0\",\"protocol\":\"250\"},"
            + "{\"dst\":\"198.18.0.0/24\",\"dev\":\"eth0\",\"protocol\":\"kernel\"},"
            + "{\"dst\":\"10.50.2.0/25\",\"gateway\":\"198.18.0.5\",\"dev\":\"eth0\"}]");
    assertThat(DirectRoutes.diff(split.direct(), "eth0", routes)).containsExactly(
        "route del 10.50.1.0/25 proto 250 dev eth0",
        "route del 10.50.9.0/25 proto 250 dev eth0",
        "route replace 10.50.1.0/25 via 198.18.0.12 dev eth0 proto 250");
    assertThat(Isolation.desired(p.networks().values(), "eth0").rules().get("isolate"))
        .contains("meta:iifname==eth0 ip.saddr==10.50.0.0/20 ip.daddr==10.50.0.0/20 accept");
    assertThat(Isolation.script(off.networks().values(), "eth0")).doesNotContain("\"eth0\"");
  }

  @Test
  void otherBackendsAndBadLeasesAreLeftOutAndNamed() {
    List<KeyValue> kvs = new ArrayList<>(List.of(
        kv("/p/address-space/10.50.0.0-20", "a"), kv("/p/address-space/10.70.0.0-16", "c"),
        kv("/p/networks/a/config", CONFIG),
        kv("/p/networks/a/subnets/10.50.0.128-25", lease(ME, "0e:00:00:00:00:01")),
        kv("/p/networks/a/subnets/10.50.2.0-25", "{\"PublicIP\":\"198.18.0.20\",\"BackendType\":\"udp\"}"),
        kv("/p/networks/a/subnets/10.50.3.0-25", lease("198.18.0.21", "01:00:5e:00:00:01")), // multicast MAC
        kv("/p/networks/a/subnets/10.50.4.0-25", "not json"),
        kv("/p/networks/a/subnets/10.60.0.0-25", lease("198.18.0.22", "0e:00:00:00:00:22")), // outside the network
        kv("/p/networks/a/subnets/10.50.5.0-25", lease("198.18.0.23", "0e:00:00:00:00:01")), // our MAC
        kv("/p/networks/a/subnets/10.50.6.0-25", lease("198.18.0.24", "0e:00:00:00:00:24")),
        kv("/p/networks/a/subnets/10.50.7.0-25", lease("198.18.0.25", "0e:00:00:00:00:24")), // a twin MAC
        kv("/p/networks/c/config", "{\"Network\":\"10.70.0.0/16\",\"Backend\":{\"Type\":\"host-gw\"}}"),
        kv("/p/networks/c/subnets/10.70.1.0-24", lease(ME, "0e:00:00:00:00:31")),
        kv("/p/networks/d/config", "{\"Backend\":{\"Type\":\"vxlan\"}}")));
    VxlanPlan p = VxlanPlan.compute(S, kvs, ME);
    assertThat(p.own()).extracting(o -> o.network().flannelId()).containsExactly("a");
    assertThat(p.own().get(0).peers()).extracting(Peer::publicIp).containsExactly("198.18.0.24");
    assertThat(p.networks()).containsOnlyKeys("a", "c"); // c is not vxlan, but its subnet is isolated too
    assertThat(String.join("\n", p.problems()))
        .contains("10.50.3.0-25").contains("10.50.4.0-25").contains("10.60.0.0-25 ignored: 10.60.0.0/25 is outside")
        .contains("10.50.5.0-25 has this node's VtepMAC").contains("10.50.7.0-25 has the VtepMAC")
        .contains("network d: config rejected (no Network)").doesNotContain("10.50.2.0");
  }

  @Test
  void withoutAPublicIpNoNetworkIsThisNodesAndWithoutALeaseNeither() {
    List<KeyValue> kvs = with(reserved("a", "10.50.0.0-20", 6515), List.of(kv("/p/networks/a/config", CONFIG),
        kv("/p/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"))));
    assertThat(VxlanPlan.compute(S, kvs, null).own()).isEmpty();
    assertThat(VxlanPlan.compute(S, kvs, ME).own()).isEmpty();
    assertThat(VxlanPlan.compute(S, kvs, ME).networks()).containsOnlyKeys("a");
  }

  /** A config that exists but cannot be used never makes the network look deleted. */
  @Test
  void aConfigThatDoesNotParseKeepsTheNetworkAsItsLastGoodConfigSaid() {
    VxlanPlan.Cache cache = new VxlanPlan.Cache();
    List<KeyValue> base = with(reserved("a", "10.50.0.0-20", 6515),
        List.of(kv("/p/networks/a/subnets/10.50.0.128-25", lease(ME, "0e:00:00:00:00:01")),
            kv("/p/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"))));
    VxlanPlan good = VxlanPlan.compute(S, with(base, List.of(kv("/p/networks/a/config", CONFIG))), ME, cache, c -> true);
    for (String bad : List.of(CONFIG.replace("\"VNI\":6515", "\"VNI\":\"6515\""), "not json", "{}",
        CONFIG.replace("10.50.0.0/20", "0.0.0.0/0"))) {
      VxlanPlan p = VxlanPlan.compute(S, with(base, List.of(kv("/p/networks/a/config", bad))), ME, cache, c -> true);
      assertThat(p.networks()).as(bad).isEqualTo(good.networks());
      assertThat(p.own()).as(bad).isEqualTo(good.own());
      assertThat(p.frozen()).isEmpty();
      assertThat(p.problems()).as(bad).singleElement().asString().startsWith("network a: config rejected (")
          .endsWith("kept as 10.50.0.0/20 VNI 6515 (its last good config)");
    }
  }

  @Test
  void withoutALastGoodConfigTheReservationsStandInAndWithoutThemTooTheNetworkIsFrozen() {
    List<KeyValue> leases = List.of(kv("/p/networks/a/subnets/10.50.0.128-25", lease(ME, "0e:00:00:00:00:01")),
        kv("/p/networks/a/config", "{\"Network\":"));
    VxlanPlan fromReservations = VxlanPlan.compute(S, with(reserved("a", "10.50.0.0-20", 6515), leases), ME);
    assertThat(fromReservations.networks().get("a"))
        .isEqualTo(new Network("a", Cidr.parse("10.50.0.0/20"), 6515, 8472, true, 25));
    assertThat(fromReservations.own()).extracting(Own::block).containsExactly(Cidr.parse("10.50.0.128/25"));
    assertThat(fromReservations.problems()).singleElement().asString().endsWith("(from its reservations)");

    VxlanPlan frozen = VxlanPlan.compute(S, leases, ME);
    assertThat(frozen.networks()).isEmpty();
    assertThat(frozen.frozen()).containsExactly("a");
    assertThat(frozen.problems()).singleElement().asString().endsWith("its kernel state is left as it is");
  }

  @Test
  void aConfigMustNameACarvedBlockReservedForItsOwnFlannelIdAndVni() {
    java.util.function.Predicate<Cidr> carved = c -> c.prefix() == 20 && Cidr.parse("10.50.0.0/16").contains(c);
    List<KeyValue> kvs = with(with(reserved("a", "10.50.0.0-20", 6515), reserved("b", "10.50.16.0-20", 6516)), List.of(
        kv("/p/networks/a/config", CONFIG),
        kv("/p/networks/b/config", CONFIG.replace("10.50.0.0/20", "10.50.16.0/20").replace("6515", "6516")),
        kv("/p/networks/all/config", CONFIG.replace("10.50.0.0/20", "0.0.0.0/0").replace("6515", "7001")),
        kv("/p/networks/wide/config", CONFIG.replace("10.50.0.0/20", "10.50.0.0/16").replace("6515", "7002")),
        kv("/p/networks/copy/config", CONFIG.replace("6515", "7003")),
        kv("/p/networks/vni/config", CONFIG.replace("10.50.0.0/20", "10.50.32.0/20")),
        kv("/p/address-space/10.50.32.0-20", "vni")));
    VxlanPlan p = VxlanPlan.compute(S, kvs, ME, new VxlanPlan.Cache(), carved);
    assertThat(p.networks()).containsOnlyKeys("a", "b");
    assertThat(p.frozen()).containsExactlyInAnyOrder("all", "wide", "copy", "vni");
    assertThat(String.join("\n", p.problems()))
        .contains("network all: config rejected (Network 0.0.0.0/0 is not a block the cluster's AVAILABLE_SUBNETS")
        .contains("network wide: config rejected (Network 10.50.0.0/16 is not a block")
        .contains("network copy: config rejected (Network 10.50.0.0/20 is reserved for network a)")
        .contains("network vni: config rejected (VNI 6515 is reserved for network a)");
    // the isolation table gets only the two real networks: no interval conflict, nothing dropped wholesale
    assertThat(Isolation.script(p.networks().values())).doesNotContain("0.0.0.0/0").doesNotContain("10.50.0.0/16");
  }

  /**
   * A lease that is not a SubnetLen block (a copy of a peer's value under the network's own key,
   * say) is ignored: it must not shadow the real peer whose VTEP MAC it carries, nor overlap blocks.
   */
  @Test
  void aLeaseThatIsNotABlockOfTheNetworksSubnetLenIsIgnoredAndShadowsNoRealPeer() {
    List<KeyValue> kvs = with(reserved("a", "10.50.0.0-20", 6515), List.of(kv("/p/networks/a/config", CONFIG),
        kv("/p/networks/a/subnets/10.50.0.128-25", lease(ME, "0e:00:00:00:00:01")),
        kv("/p/networks/a/subnets/10.50.0.0-20&fc00::-64", lease("198.18.0.12", "0e:00:00:00:00:02")),
        kv("/p/networks/a/subnets/10.50.1.0-24", lease("198.18.0.14", "0e:00:00:00:00:04")),
        kv("/p/networks/a/subnets/10.50.1.0-25", lease("198.18.0.12", "0e:00:00:00:00:02"))));
    VxlanPlan p = VxlanPlan.compute(S, kvs, ME);
    assertThat(p.own().get(0).peers()).extracting(Peer::block).containsExactly(Cidr.parse("10.50.1.0/25"));
    assertThat(String.join("\n", p.problems()))
        .contains("10.50.0.0-20&fc00::-64 ignored: a /20 is not a block of the network's SubnetLen /25")
        .contains("10.50.1.0-24 ignored: a /24 is not a block");
  }

  @Test
  void aDeletedReservationMeansTheNetworkIsGone() {
    VxlanPlan.Cache cache = new VxlanPlan.Cache();
    List<KeyValue> config = List.of(kv("/p/networks/a/config", CONFIG),
        kv("/p/networks/a/subnets/10.50.0.128-25", lease(ME, "0e:00:00:00:00:01")));
    assertThat(VxlanPlan.compute(S, with(reserved("a", "10.50.0.0-20", 6515), config), ME, cache, c -> true)
        .networks()).containsOnlyKeys("a");
    VxlanPlan after = VxlanPlan.compute(S, config, ME, cache, c -> true);
    assertThat(after.networks()).isEmpty();
    assertThat(after.frozen()).isEmpty();
    assertThat(after.own()).isEmpty();
  }

  @Test
  void theIsolationTableAllowsANetworkOnlyFromItsOwnBridgeAndDevice() {
    Network a = new Network("a", Cidr.parse("10.50.0.0/20"), 6515, 8472, true);
    Network b = new Network("b", Cidr.parse("10.50.16.0/20"), 6516, 8472, true);
    String script = Isolation.script(List.of(b, a));
    assertThat(script).startsWith("table inet flannel-np {}\ndelete table inet flannel-np\ntable inet flannel-np {\n")
        .contains("elements = { 10.50.0.0/20, 10.50.16.0/20 }")
        .contains("type filter hook forward priority filter - 5; policy accept;")
        .contains("ip daddr @networks jump isolate")
        .contains("iifname \"" + Names.bridge("a") + "\" ip saddr 10.50.0.0/20 ip daddr 10.50.0.0/20 accept")
        .contains("iifname \"flannel.6516\" ip saddr 10.50.16.0/20 ip daddr 10.50.16.0/20 accept")
        .contains("counter drop");
    assertThat(script.indexOf("network a from its bridge")).isLessThan(script.indexOf("network b from its bridge"));
    assertThat(Isolation.script(List.of())).isEqualTo("table inet flannel-np {}\ndelete table inet flannel-np\n");
    assertThat(Isolation.desired(List.of())).isEqualTo(Isolation.Model.ABSENT);
    Isolation.Model m = Isolation.desired(List.of(a, b));
    assertThat(m.elements()).containsExactly("10.50.0.0/20", "10.50.16.0/20");
    assertThat(m.rules().get("isolate")).hasSize(5).last().isEqualTo("counter drop");
  }

  @Test
  void theIsolationTableReadBackFromNftJsonComparesEqualToWhatWasWritten() {
    // `nft -j list table inet flannel-np` after the script of network a was applied (nft 1.0.6)
    Network a = new Network("a", Cidr.parse("10.50.0.0/20"), 6515, 8472, true);
    String br = Names.bridge("a");
    String json = "{\"nftables\": [{\"metainfo\": {\"version\": \"1.0.6\"}},"
        + "{\"table\": {\"family\": \"inet\", \"name\": \"flannel-np\", \"handle\": 7}},"
        + "{\"set\": {\"family\": \"inet\", \"name\": \"networks\", \"table\": \"flannel-np\", \"type\": \"ipv4_addr\","
        + " \"handle\": 1, \"flags\": [\"interval\"], \"elem\": [{\"prefix\": {\"addr\": \"10.50.0.0\", \"len\": 20}}]}},"
        + "{\"chain\": {\"family\": \"inet\", \"table\": \"flannel-np\", \"name\": \"forward\", \"handle\": 2,"
        + " \"type\": \"filter\", \"hook\": \"forward\", \"prio\": -5, \"policy\": \"accept\"}},"
        + "{\"chain\": {\"family\": \"inet\", \"table\": \"flannel-np\", \"name\": \"isolate\", \"handle\": 3}},"
        + "{\"rule\": {\"family\": \"inet\", \"table\": \"flannel-np\", \"chain\": \"forward\", \"handle\": 4,"
        + " \"expr\": [{\"match\": {\"op\": \"==\", \"left\": {\"payload\": {\"protocol\": \"ip\", \"field\": \"daddr\"}},"
        + " \"right\": \"@networks\"}}, {\"jump\": {\"target\": \"isolate\"}}]}},"
        + rule(5, br) + "," + rule(6, "flannel.6515") + ","
        + "{\"rule\": {\"family\": \"inet\", \"table\": \"flannel-np\", \"chain\": \"isolate\", \"handle\": 7,"
        + " \"expr\": [{\"counter\": {\"packets\": 3, \"bytes\": 252}}, {\"drop\": null}]}}]}";
    assertThat(Isolation.actual(json)).isEqualTo(Isolation.desired(List.of(a)));
    Network b = new Network("b", Cidr.parse("10.50.16.0/20"), 6516, 8472, true);
    assertThat(Isolation.actual(json)).isNotEqualTo(Isolation.desired(List.of(a, b)));
  }

  private static String rule(int handle, String dev) {
    return "{\"rule\": {\"family\": \"inet\", \"table\": \"flannel-np\", \"chain\": \"isolate\", \"handle\": " + handle
        + ", \"expr\": [{\"match\": {\"op\": \"==\", \"left\": {\"meta\": {\"key\": \"iifname\"}}, \"right\": \"" + dev
        + "\"}}, {\"match\": {\"op\": \"==\", \"left\": {\"payload\": {\"protocol\": \"ip\", \"field\": \"saddr\"}},"
        + " \"right\": {\"prefix\": {\"addr\": \"10.50.0.0\", \"len\": 20}}}}, {\"match\": {\"op\": \"==\", \"left\":"
        + " {\"payload\": {\"protocol\": \"ip\", \"field\": \"daddr\"}}, \"right\": {\"prefix\": {\"addr\": \"10.50.0.0\","
        + " \"len\": 20}}}}, {\"accept\": null}]}}";
  }
}
