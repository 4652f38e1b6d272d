package io.flannelnp.lb;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.flannel.Kernel;
import io.flannelnp.testing.Netns;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Ending UDP flows over ctnetlink, against the real conntrack table of a namespace of its own
 * (entries made and read back with Debian's conntrack tool): exactly the UDP flows from the VIP
 * to the task that left end; TCP flows, other tasks of the VIP and other VIPs keep theirs.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class ConntrackTest {
  static Netns ns;
  static String host;
  /** The plane runs flushes on a thread of its own; so does this test (setns needs one). */
  static ExecutorService thread = Executors.newSingleThreadExecutor();

  @BeforeAll
  static void up() {
    ns = new Netns();
    host = ns.add("ct");
  }

  @AfterAll
  static void down() {
    thread.shutdownNow();
    ns.close();
    assertThat(Netns.list()).noneMatch(n -> n.startsWith(ns.stem()));
  }

  /** A flow client:port → vip:dport answered by task (the DNAT the table makes). */
  static void flow(String proto, String client, int port, String vip, String task) {
    List<String> argv = new java.util.ArrayList<>(List.of("conntrack", "-I", "-p", proto, "-s", client, "-d", vip,
        "--sport", String.valueOf(port), "--dport", "53", "-r", task, "-q", client, "--reply-port-src", "53",
        "--reply-port-dst", String.valueOf(port), "-t", "100", "-u", "SEEN_REPLY"));
    if (proto.equals("tcp")) {
      argv.addAll(List.of("--state", "ESTABLISHED"));
    }
    ns.exec(host, argv.toArray(String[]::new)).ok();
  }

  static List<String> flows() {
    return ns.exec(host, "conntrack", "-L").ok().out().lines().filter(l -> l.startsWith("udp") || l.startsWith("tcp"))
        .map(l -> l.replaceAll("\\s+", " ").replaceAll(" \\d+ (ESTABLISHED )?src=", " src=").replaceAll(" mark=.*", ""))
        .sorted().toList();
  }

  @Test
  void onlyTheUdpFlowsFromTheVipToTheGoneTaskEnd() throws Exception {
    String vip = "10.96.0.10";
    for (int p = 4000; p < 4300; p++) { // more than one dump message's worth
      flow("udp", "10.0.0.2", p, vip, "10.1.0.5");
    }
    flow("udp", "10.0.0.2", 5000, vip, "10.1.0.6"); // another task of the VIP
    flow("udp", "10.0.0.2", 5001, "10.96.0.11", "10.1.0.5"); // the task behind another VIP
    flow("tcp", "10.0.0.2", 5002, vip, "10.1.0.5"); // TCP may finish
    flow("udp", "10.0.0.2", 5003, "10.1.0.5", "10.1.0.5"); // straight to the task, no VIP
    assertThat(flows()).hasSize(304);

    try (Conntrack ct = new Conntrack(Kernel.inNetns(host))) {
      int ended = thread.submit(() -> ct.flush(List.of(new Conntrack.Gone(vip, "10.1.0.5")))).get();
      assertThat(ended).isEqualTo(300);
      assertThat(flows()).containsExactly(
          "tcp 6 src=10.0.0.2 dst=10.96.0.10 sport=5002 dport=53 src=10.1.0.5 dst=10.0.0.2 sport=53 dport=5002",
          "udp 17 src=10.0.0.2 dst=10.1.0.5 sport=5003 dport=53 src=10.1.0.5 dst=10.0.0.2 sport=53 dport=5003",
          "udp 17 src=10.0.0.2 dst=10.96.0.10 sport=5000 dport=53 src=10.1.0.6 dst=10.0.0.2 sport=53 dport=5000",
          "udp 17 src=10.0.0.2 dst=10.96.0.11 sport=5001 dport=53 src=10.1.0.5 dst=10.0.0.2 sport=53 dport=5001");
      // again, and for a task with no flow: nothing to end, no error; the socket is reused
      assertThat(thread.submit(() -> ct.flush(List.of(new Conntrack.Gone(vip, "10.1.0.5"),
          new Conntrack.Gone(vip, "10.1.0.99")))).get()).isZero();
      assertThat(flows()).hasSize(4);
    }
    ns.exec(host, "conntrack", "-F");
  }

  @Test
  void aNamespaceThatIsGoneIsReportedAndEndsNothing() throws Exception {
    try (Conntrack ct = new Conntrack(Kernel.inNetns(ns.stem() + "-missing"))) {
      assertThat(thread.submit(() -> ct.flush(List.of(new Conntrack.Gone("10.96.0.10", "10.1.0.5")))).get()).isZero();
    }
  }

  @Test
  void requestsAreWellFormedNetlinkAndAddressesAreChecked() {
    byte[] dump = Conntrack.dumpRequest(7, Conntrack.ipv4("10.96.0.10"));
    ByteBuffer b = ByteBuffer.wrap(dump).order(ByteOrder.nativeOrder());
    assertThat(b.getInt(0)).as("nlmsg_len").isEqualTo(dump.length);
    assertThat(dump.length % 4).isZero();
    assertThat(b.getShort(4)).as("CTNETLINK GET").isEqualTo((short) 0x101);
    assertThat(b.getInt(8)).as("seq").isEqualTo(7);
    assertThatThrownBy(() -> Conntrack.ipv4("10.96.0.300")).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("10.96.0.300");
    assertThatThrownBy(() -> Conntrack.ipv4("localhost")).isInstanceOf(IllegalArgumentException.class);
  }
}
