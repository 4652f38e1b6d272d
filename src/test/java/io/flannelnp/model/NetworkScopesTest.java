package io.flannelnp.model;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.ipam.Ipv4;
import org.junit.jupiter.api.Test;

/** Where a network's VIPs may be: its cluster range and the blocks the range grew into, never elsewhere. */
class NetworkScopesTest {
  static final EtcdSchema S = new EtcdSchema("/fnp");
  static final String CONFIG = "{\"Network\":\"10.50.0.0/20\",\"SubnetLen\":25,\"SubnetMin\":\"10.50.0.128\","
      + "\"SubnetMax\":\"10.50.15.128\",\"Backend\":{\"Type\":\"vxlan\",\"VNI\":6515,\"Port\":8472}}";

  @Test
  void vipsAreAllowedInTheGrownBlocksOfTheirOwnNetworkOnly() {
    NetworkScopes scopes = new NetworkScopes(S);
    scopes.put("/fnp/address-space/10.50.0.0-20", "a");
    scopes.put(S.networkConfig("a"), CONFIG);
    NetworkScopes.Scope before = scopes.scope("a").orElseThrow();
    assertThat(before.vipAllowed(Ipv4.parse("10.50.0.77"))).isTrue();
    assertThat(before.vipAllowed(Ipv4.parse("10.50.15.200"))).isFalse();

    String grown = "/fnp/networks/a/cluster-blocks/10.50.15.128-25";
    assertThat(scopes.reads(grown)).isTrue();
    scopes.put(grown, "{\"State\":\"active\"}");
    scopes.put("/fnp/networks/a/cluster-blocks/10.99.0.0-25", "{\"State\":\"active\"}"); // outside the network
    scopes.put("/fnp/networks/a/cluster-blocks/garbage", "{}");
    NetworkScopes.Scope after = scopes.scope("a").orElseThrow();
    assertThat(after.vipAllowed(Ipv4.parse("10.50.15.200"))).isTrue();
    assertThat(after.vipAllowed(Ipv4.parse("10.50.14.200"))).as("a node's block").isFalse();
    assertThat(after.vipAllowed(Ipv4.parse("10.99.0.5"))).as("never outside the network").isFalse();

    scopes.remove(grown);
    assertThat(scopes.scope("a").orElseThrow().vipAllowed(Ipv4.parse("10.50.15.200"))).isFalse();
  }
}
