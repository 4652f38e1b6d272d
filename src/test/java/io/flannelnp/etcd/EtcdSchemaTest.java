package io.flannelnp.etcd;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.ipam.Cidr;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class EtcdSchemaTest {

  private static final String ID = "n-4f2a";
  private static final Cidr NET = Cidr.parse("10.1.0.0/20");
  private static final Cidr BLOCK = Cidr.parse("10.1.0.128/25");

  // ---- key builders -------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"/flannel", "/flannel/"})
  void keyBuilders(String prefix) {
    EtcdSchema s = new EtcdSchema(prefix);
    assertThat(s.root()).isEqualTo("/flannel/");
    assertThat(s.addressSpace()).isEqualTo("/flannel/address-space/");
    assertThat(s.addressSpace(NET)).isEqualTo("/flannel/address-space/10.1.0.0-20");
    assertThat(s.vnis()).isEqualTo("/flannel/vnis/");
    assertThat(s.vni(6515)).isEqualTo("/flannel/vnis/6515");
    assertThat(s.networks()).isEqualTo("/flannel/networks/");
    assertThat(s.network(ID)).isEqualTo("/flannel/networks/n-4f2a/");
    assertThat(s.networkConfig(ID)).isEqualTo("/flannel/networks/n-4f2a/config");
    assertThat(s.subnets(ID)).isEqualTo("/flannel/networks/n-4f2a/subnets/");
    assertThat(s.subnet(ID, BLOCK)).isEqualTo("/flannel/networks/n-4f2a/subnets/10.1.0.128-25");
    assertThat(s.pool(ID)).isEqualTo("/flannel/networks/n-4f2a/pool");
    assertThat(s.allocations(ID)).isEqualTo("/flannel/networks/n-4f2a/allocations/");
    assertThat(s.allocation(ID, "10.1.0.130")).isEqualTo("/flannel/networks/n-4f2a/allocations/10.1.0.130");
    assertThat(s.endpoints("node-a")).isEqualTo("/flannel/endpoints/node-a/");
    assertThat(s.endpoint("node-a", "ep1")).isEqualTo("/flannel/endpoints/node-a/ep1");
    assertThat(s.nodes()).isEqualTo("/flannel/nodes/");
    assertThat(s.node("node-a")).isEqualTo("/flannel/nodes/node-a");
    assertThat(s.dockerNetworks()).isEqualTo("/flannel/docker-data/networks/");
    assertThat(s.dockerServices()).isEqualTo("/flannel/docker-data/services/");
    assertThat(s.dockerContainers()).isEqualTo("/flannel/docker-data/containers/");
    assertThat(s.dockerContainers("node-a")).isEqualTo("/flannel/docker-data/containers/node-a/");
  }

  @Test
  void trailingSlashDoesNotChangeAnyKey() {
    EtcdSchema a = new EtcdSchema("/flannel");
    EtcdSchema b = new EtcdSchema("/flannel/");
    for (Map.Entry<String, Family> e : keysAndFamilies(a).entrySet()) {
      assertThat(e.getKey()).doesNotContain("//");
    }
    assertThat(keysAndFamilies(b)).isEqualTo(keysAndFamilies(a));
  }

  @Test
  void nestedPrefix() {
    EtcdSchema s = new EtcdSchema("/org/cluster-1/flannel");
    assertThat(s.root()).isEqualTo("/org/cluster-1/flannel/");
    assertThat(s.subnet(ID, BLOCK)).isEqualTo("/org/cluster-1/flannel/networks/n-4f2a/subnets/10.1.0.128-25");
    assertThat(s.family(s.node("x"))).isEqualTo(Family.NODES);
    assertThat(s.family("/flannel/nodes/x")).isEqualTo(Family.OTHER);
    assertThat(s.flannelIdOf(s.pool(ID))).contains(ID);
  }

  // ---- family() ---------------------------------------------------------------------------

  /** Every key kind the schema builds, with the family it must be classified as. */
  private static Map<String, Family> keysAndFamilies(EtcdSchema s) {
    Map<String, Family> m = new LinkedHashMap<>();
    m.put(s.addressSpace(NET), Family.ADDRESS_SPACE);
    m.put(s.addressSpace(), Family.ADDRESS_SPACE);
    m.put(s.vni(6515), Family.VNIS);
    m.put(s.vnis(), Family.VNIS);
    m.put(s.networkConfig(ID), Family.NETWORK_CONFIG);
    m.put(s.subnet(ID, BLOCK), Family.SUBNET_LEASES);
    m.put(s.subnets(ID), Family.SUBNET_LEASES);
    m.put(s.pool(ID), Family.POOLS);
    m.put(s.freed(ID), Family.POOLS);
    m.put(s.settings(), Family.SETTINGS);
    m.put(s.allocation(ID, "10.1.0.130"), Family.ALLOCATIONS);
    m.put(s.allocations(ID), Family.ALLOCATIONS);
    m.put(s.endpoint("node-a", "ep1"), Family.ENDPOINTS);
    m.put(s.endpoints("node-a"), Family.ENDPOINTS);
    m.put(s.node("node-a"), Family.NODES);
    m.put(s.nodes(), Family.NODES);
    m.put(s.dockerNetworks() + "d0ck3r1d", Family.DOCKER_NETWORKS);
    m.put(s.dockerServices() + "svc1", Family.DOCKER_SERVICES);
    m.put(s.dockerContainers("node-a") + "c0nt41n3r", Family.DOCKER_CONTAINERS);
    m.put(s.dockerContainers("node-a"), Family.DOCKER_CONTAINERS);
    return m;
  }

  @ParameterizedTest
  @ValueSource(strings = {"/flannel", "/flannel/"})
  void familyOfEveryBuiltKey(String prefix) {
    EtcdSchema s = new EtcdSchema(prefix);
    Map<String, Family> expected = keysAndFamilies(s);
    for (Map.Entry<String, Family> e : expected.entrySet()) {
      assertThat(s.family(e.getKey())).as(e.getKey()).isEqualTo(e.getValue());
    }
    Set<Family> covered = EnumSet.noneOf(Family.class);
    covered.addAll(expected.values());
    assertThat(covered).containsAll(EnumSet.complementOf(EnumSet.of(Family.OTHER)));
  }

  @ParameterizedTest
  @ValueSource(strings = {"/flannel", "/flannel/"})
  void familyOfLiteralKeys(String prefix) {
    EtcdSchema s = new EtcdSchema(prefix);
    assertThat(s.family("/flannel/address-space/10.1.0.0-20")).isEqualTo(Family.ADDRESS_SPACE);
    assertThat(s.family("/flannel/vnis/6515")).isEqualTo(Family.VNIS);
    assertThat(s.family("/flannel/networks/abc/config")).isEqualTo(Family.NETWORK_CONFIG);
    assertThat(s.family("/flannel/networks/abc/subnets/10.1.0.0-25")).isEqualTo(Family.SUBNET_LEASES);
    assertThat(s.family("/flannel/networks/abc/pool")).isEqualTo(Family.POOLS);
    assertThat(s.family("/flannel/networks/abc/allocations/10.1.0.5")).isEqualTo(Family.ALLOCATIONS);
    assertThat(s.family("/flannel/endpoints/node-a/ep")).isEqualTo(Family.ENDPOINTS);
    assertThat(s.family("/flannel/nodes/node-a")).isEqualTo(Family.NODES);
    assertThat(s.family("/flannel/docker-data/networks/x")).isEqualTo(Family.DOCKER_NETWORKS);
    assertThat(s.family("/flannel/docker-data/services/x")).isEqualTo(Family.DOCKER_SERVICES);
    assertThat(s.family("/flannel/docker-data/containers/node-a/x")).isEqualTo(Family.DOCKER_CONTAINERS);
  }

  @ParameterizedTest
  @ValueSource(strings = {
      "/flannel",
      "/flannel/",
      "/flannelx/nodes/a",
      "/flannel-other/vnis/1",
      "/other/flannel/nodes/a",
      "flannel/nodes/a",
      "",
      "/flannel/unknown/x",
      "/flannel/address-space",
      "/flannel/vnis",
      "/flannel/nodes",
      "/flannel/networks/",
      "/flannel/networks/abc",
      "/flannel/networks/abc/",
      "/flannel/networks/abc/configuration",
      "/flannel/networks/abc/leases/x",
      "/flannel/docker-data/volumes/x",
      "/flannel/docker-data/networks",
      "/FLANNEL/nodes/a"})
  void familyOfOtherKeys(String key) {
    assertThat(new EtcdSchema("/flannel").family(key)).as(key).isEqualTo(Family.OTHER);
    assertThat(new EtcdSchema("/flannel/").family(key)).as(key).isEqualTo(Family.OTHER);
  }

  // ---- flannelIdOf() --------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"/flannel", "/flannel/"})
  void flannelIdOfNetworkKeys(String prefix) {
    EtcdSchema s = new EtcdSchema(prefix);
    assertThat(s.flannelIdOf(s.network(ID))).contains(ID);
    assertThat(s.flannelIdOf(s.networkConfig(ID))).contains(ID);
    assertThat(s.flannelIdOf(s.subnets(ID))).contains(ID);
    assertThat(s.flannelIdOf(s.subnet(ID, BLOCK))).contains(ID);
    assertThat(s.flannelIdOf(s.pool(ID))).contains(ID);
    assertThat(s.flannelIdOf(s.allocations(ID))).contains(ID);
    assertThat(s.flannelIdOf(s.allocation(ID, "10.1.0.130"))).contains(ID);
    assertThat(s.flannelIdOf("/flannel/networks/other-id/config")).contains("other-id");
  }

  @ParameterizedTest
  @ValueSource(strings = {"/flannel", "/flannel/"})
  void flannelIdOfOtherKeys(String prefix) {
    EtcdSchema s = new EtcdSchema(prefix);
    assertThat(s.flannelIdOf(s.networks())).isEmpty();
    assertThat(s.flannelIdOf("/flannel/networks/" + ID)).isEmpty();
    assertThat(s.flannelIdOf(s.addressSpace(NET))).isEmpty();
    assertThat(s.flannelIdOf(s.vni(6515))).isEmpty();
    assertThat(s.flannelIdOf(s.node("node-a"))).isEmpty();
    assertThat(s.flannelIdOf(s.endpoint("node-a", "ep1"))).isEmpty();
    assertThat(s.flannelIdOf(s.dockerNetworks() + "x")).isEmpty();
    assertThat(s.flannelIdOf("/other/networks/" + ID + "/config")).isEmpty();
    assertThat(s.flannelIdOf("/flannelx/networks/" + ID + "/config")).isEmpty();
    assertThat(s.flannelIdOf("")).isEmpty();
  }

  @Test
  void flannelIdAgreesWithFamilyForNetworkKeys() {
    EtcdSchema s = new EtcdSchema("/flannel");
    for (Map.Entry<String, Family> e : keysAndFamilies(s).entrySet()) {
      boolean networkFamily = EnumSet.of(Family.NETWORK_CONFIG, Family.SUBNET_LEASES, Family.POOLS,
          Family.ALLOCATIONS).contains(e.getValue());
      assertThat(s.flannelIdOf(e.getKey()).isPresent()).as(e.getKey()).isEqualTo(networkFamily);
    }
  }
}
