package io.flannelnp.flannel;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.Netns;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Docker's FORWARD DROP on a host with br_netfilter (dockerd loads it): two containers on one
 * flannel-np bridge reach each other only once the Flannel plane's DOCKER-USER rules are in,
 * and removing the rules takes exactly them away. Real kernel, one host and two container
 * namespaces, Docker's chain layout made by hand.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class DockerUserTest {
  static final String BRIDGE = Names.bridge("docker-user-test");

  Netns ns;
  String host;
  String a;
  String b;

  @BeforeEach
  void setUp() {
    ns = new Netns();
    host = ns.add("h");
    a = ns.add("a");
    b = ns.add("b");
    ns.ipBatch(host, List.of("link add name " + BRIDGE + " type bridge", "link set dev " + BRIDGE + " up",
        "link add name va type veth peer name eth0 netns " + a, "link set dev va master " + BRIDGE + " up",
        "link add name vb type veth peer name eth0 netns " + b, "link set dev vb master " + BRIDGE + " up")).ok();
    ns.ipBatch(a, List.of("addr add 10.99.0.2/24 dev eth0", "link set dev eth0 up")).ok();
    ns.ipBatch(b, List.of("addr add 10.99.0.3/24 dev eth0", "link set dev eth0 up")).ok();
    // What dockerd sets up: bridged frames through iptables, FORWARD DROP, DOCKER-USER first.
    ns.exec(host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1").ok();
    ns.exec(host, "iptables", "-w", "5", "-P", "FORWARD", "DROP").ok();
    ns.exec(host, "iptables", "-w", "5", "-N", "DOCKER-USER").ok();
    ns.exec(host, "iptables", "-w", "5", "-A", "DOCKER-USER", "-j", "RETURN").ok();
    ns.exec(host, "iptables", "-w", "5", "-A", "FORWARD", "-j", "DOCKER-USER").ok();
  }

  @AfterEach
  void tearDown() {
    ns.close();
    assertThat(Netns.list()).noneMatch(n -> n.startsWith(ns.stem()));
  }

  boolean ping(String from, String to) {
    return ns.exec(from, "ping", "-c", "1", "-W", "1", to).exit() == 0;
  }

  @Test
  void containersOnOneBridgeTalkOnlyWithTheRules() throws Exception {
    Kernel kernel = Kernel.inNetns(host);
    assertThat(ping(a, "10.99.0.3")).as("FORWARD DROP without our rules").isFalse();

    assertThat(kernel.dockerUserAccept(true)).isTrue();
    assertThat(ping(a, "10.99.0.3")).as("a → b on one flannel-np bridge").isTrue();
    assertThat(ping(b, "10.99.0.2")).as("b → a").isTrue();
    assertThat(kernel.dockerUserAccept(true)).as("second call: already in place").isFalse();

    assertThat(kernel.dockerUserAccept(false)).isTrue();
    assertThat(ns.exec(host, "iptables", "-w", "5", "-S", "DOCKER-USER").ok().out())
        .doesNotContain("flannel-np").contains("-A DOCKER-USER -j RETURN");
    assertThat(ping(a, "10.99.0.3")).as("rules removed").isFalse();
  }
}
