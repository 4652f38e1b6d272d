package io.flannelnp.e2e;

import static org.assertj.core.api.Assertions.assertThat;

import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * The lab's three-member etcd (`swarm-lab.sh up 1 --etcd 3`), which fault tests drive through
 * {@link SwarmLab}: members on their own addresses of the lab bridge, a leader that can be found,
 * a frozen leader replaced by a new one while the cluster keeps serving, a member killed with
 * SIGKILL and started again on its data, catching up on what was written while it was down, and
 * `down` leaving the host as before. One node (its dockerd is part of every lab), no plugin.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class SwarmLabEtcdIT {
  final String prefix = System.getProperty("flannelnp.e2e.etcdPrefix", "fnk");
  final String net = System.getProperty("flannelnp.e2e.etcdNet", "198.18.9");
  final SwarmLab lab = new SwarmLab(SwarmE2ESuite.root(), prefix, net, "");
  boolean up;

  @BeforeAll
  void up() {
    assertThat(new com.sun.security.auth.module.UnixSystem().getUid()).as("the lab needs root").isZero();
    up = true;
    lab.up(1, "host", 3, false).out();
  }

  @AfterAll
  void down() {
    if (!up) {
      return;
    }
    SwarmLab.Result r = lab.lab(Duration.ofMinutes(2), "down");
    assertThat(r.exit()).as("lab down: the host must be exactly as before up\n" + r.err()).isZero();
    assertThat(r.err()).contains("host identical to the snapshot taken before 'up'");
  }

  /** The member of the first endpoint that answers a serializable read with the value. */
  String get(String key) {
    return lab.etcdctl("get", "--print-value-only", key).out().strip();
  }

  @Test
  @Order(1)
  void threeMembersOnTheirOwnAddressesFormOneCluster() {
    assertThat(lab.etcdEndpoints()).containsExactly("http://" + net + ".1:2379", "http://" + net + ".2:2379", "http://" + net + ".3:2379");
    assertThat(lab.etcdctl("member", "list").out().lines().filter(l -> l.contains("started")).count()).isEqualTo(3);
    assertThat(lab.etcdLeader()).isBetween(1, 3);
  }

  @Test
  @Order(2)
  void aFrozenLeaderIsReplacedAndTheClusterKeepsServing() {
    int leader = lab.etcdLeader();
    lab.etcdStop(leader);
    try {
      SwarmE2ESuite.await(Duration.ofSeconds(20), "a new leader among the two others", () -> {
        int now = lab.etcdLeader();
        return now != leader;
      });
      lab.etcdctl("put", "/fnk/frozen", "v1").out();
      assertThat(get("/fnk/frozen")).isEqualTo("v1");
    } finally {
      lab.etcdCont(leader);
    }
    SwarmE2ESuite.await(Duration.ofSeconds(20), "the thawed member serving the new value",
        () -> lab.etcdctlAt(leader, "get", "--print-value-only", "--consistency=s", "/fnk/frozen")
            .out().strip().equals("v1"));
  }

  @Test
  @Order(3)
  void aKilledMemberStartsAgainOnItsDataAndCatchesUp() {
    int member = lab.etcdLeader() % 3 + 1; // a follower
    lab.etcdctl("put", "/fnk/before", "b").out();
    lab.etcdKill(member);
    assertThat(lab.etcdctlAt(member, "--command-timeout=1s", "endpoint", "health").ok()).as("a killed member").isFalse();
    lab.etcdctl("put", "/fnk/while-down", "w").out(); // two of three: still a quorum
    lab.etcdStart(member);
    List<String> both = List.of("b", "w");
    SwarmE2ESuite.await(Duration.ofSeconds(20), "member " + member + " with the key written before and while it was down", () -> List.of(
        lab.etcdctlAt(member, "get", "--print-value-only", "--consistency=s", "/fnk/before").out().strip(),
        lab.etcdctlAt(member, "get", "--print-value-only", "--consistency=s", "/fnk/while-down").out().strip())
        .equals(both));
    assertThat(lab.etcdctl("member", "list").out().lines().filter(l -> l.contains("started")).count()).as("members").isEqualTo(3);
  }

  @Test
  @Order(4)
  void allMembersFrozenAnswerNothingUntilThawed() {
    lab.etcdStopAll();
    try {
      assertThat(lab.etcdctl("--command-timeout=1s", "get", "/fnk/before").ok()).as("a get with every member frozen").isFalse();
    } finally {
      lab.etcdContAll();
    }
    SwarmE2ESuite.await(Duration.ofSeconds(20), "the cluster serving again", () -> get("/fnk/before").equals("b"));
  }
}
