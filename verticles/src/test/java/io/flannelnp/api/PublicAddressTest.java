package io.flannelnp.api;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.config.FlannelOptions;
import io.flannelnp.flannel.Kernel;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The public IP the IPAM writes into a node's lease, found in the data plane's namespace. */
class PublicAddressTest {
  final String ns = "fnppa-" + Long.toHexString(System.nanoTime() & 0xffffff);

  static void run(String... cmd) throws Exception {
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes());
    assertThat(p.waitFor()).as(String.join(" ", cmd) + ": " + out).isZero();
  }

  @BeforeEach
  void netns() throws Exception {
    run("ip", "netns", "add", ns);
    run("ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "up0p");
    run("ip", "-n", ns, "link", "add", "up1", "type", "veth", "peer", "name", "up1p");
    run("ip", "-n", ns, "link", "set", "up0p", "up");
    run("ip", "-n", ns, "link", "set", "up1p", "up");
    run("ip", "-n", ns, "addr", "add", "198.18.7.5/24", "dev", "up0");
    run("ip", "-n", ns, "addr", "add", "198.18.8.5/24", "dev", "up1");
    run("ip", "-n", ns, "link", "set", "up0", "up");
    run("ip", "-n", ns, "link", "set", "up1", "up");
  }

  @AfterEach
  void cleanup() throws Exception {
    run("ip", "netns", "del", ns);
  }

  @Test
  void followsFlannelsRulesInsideTheKernelsNamespace() throws Exception {
    Kernel k = Kernel.inNetns(ns);
    assertThatThrownBy(() -> PublicAddress.resolve(FlannelOptions.parse(""), k))
        .hasMessageContaining("no default route").hasMessageContaining("-public-ip");
    run("ip", "-n", ns, "route", "add", "default", "via", "198.18.8.1", "dev", "up1");
    assertThat(PublicAddress.resolve(FlannelOptions.parse(""), k)).isEqualTo("198.18.8.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface=up0"), k)).isEqualTo("198.18.7.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface=198.18.7.5"), k)).isEqualTo("198.18.7.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface=up0,-public-ip=203.0.113.9"), k)).isEqualTo("203.0.113.9");
  }

  /** -iface repeated (first found wins), -iface-regex on names and addresses, -iface-can-reach by the kernel's route. */
  @Test
  void choosesTheInterfaceAsFlanneldDoes() throws Exception {
    Kernel k = Kernel.inNetns(ns);
    run("ip", "-n", ns, "route", "add", "default", "via", "198.18.8.1", "dev", "up1");
    run("ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", "198.18.7.1", "dev", "up0");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface=nope0 -iface=up1 -iface=up0"), k)).isEqualTo("198.18.8.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface=198.18.9.9,-iface=198.18.7.5"), k)).isEqualTo("198.18.7.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface-regex=^up[01]$"), k)).as("kernel order").isEqualTo("198.18.7.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface-regex=^nomatch$ -iface-regex=p1$"), k)).isEqualTo("198.18.8.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface-regex=^198\\.18\\.8\\."), k)).isEqualTo("198.18.8.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface=nope0,-iface-regex=up0"), k)).as("-iface before -iface-regex")
        .isEqualTo("198.18.7.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface-can-reach=198.51.100.7"), k)).isEqualTo("198.18.7.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface-can-reach=203.0.113.1"), k)).isEqualTo("198.18.8.5");
    assertThat(PublicAddress.resolve(FlannelOptions.parse("-iface-can-reach=198.51.100.7,-public-ip=203.0.113.9"), k))
        .isEqualTo("203.0.113.9");
    assertThatThrownBy(() -> PublicAddress.resolve(FlannelOptions.parse("-iface=nope0,-iface-regex=^zz"), k))
        .hasMessageContaining("no interface matches").hasMessageContaining("-iface nope0 (no such interface)")
        .hasMessageContaining("-iface-regex ^zz");
  }
}
