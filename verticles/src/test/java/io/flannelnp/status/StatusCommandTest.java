package io.flannelnp.status;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.FlannelJson;
import io.flannelnp.ipam.Owner;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.json.JsonObject;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * `flannel-np status` against a real etcd holding what the daemons write (their own serializers):
 * two nodes, a network with a block each, a VIP service with a running task on one node and a
 * leaving one on the other. What an operator reads: each section, the problems, the exit code.
 */
class StatusCommandTest {
  static final String P = "/fnst";
  static final EtcdSchema S = new EtcdSchema(P);
  static EtcdServer etcd;
  static Map<String, String> env;

  record Run(int exit, String out, String err) {}

  static Run status(Map<String, String> env, String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    String[] all = new String[args.length + 1];
    all[0] = "status";
    System.arraycopy(args, 0, all, 1, args.length);
    int rc = StatusCommand.run(all, env, new PrintStream(out, true, StandardCharsets.UTF_8),
        new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Run(rc, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  static String etcdctl(String... args) throws Exception {
    List<String> cmd = new java.util.ArrayList<>(List.of("etcdctl", "--endpoints", etcd.endpoint()));
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    p.getOutputStream().close();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertThat(p.waitFor()).as(String.join(" ", cmd) + ": " + out).isZero();
    return out;
  }

  /** A new etcd lease of ttl seconds: its ID in hex, as etcdctl takes it. */
  static String lease(int ttl) throws Exception {
    String out = etcdctl("lease", "grant", Integer.toString(ttl));
    return out.split("\\s+")[1];
  }

  static void put(String key, String value, String lease) throws Exception {
    if (lease == null) {
      etcdctl("put", key, value);
    } else {
      etcdctl("put", "--lease=" + lease, key, value);
    }
  }

  @BeforeAll
  static void up() throws Exception {
    etcd = EtcdServer.start();
    env = Map.of("ETCD_ENDPOINTS", etcd.endpoint(), "ETCD_PREFIX", P);
  }

  @AfterAll
  static void down() throws Exception {
    if (etcd != null) {
      etcdctl("del", "--prefix", P + "/");
      etcd.close();
    }
  }

  /** The cluster as two daemons and a manager write it; n2's records are on a lease of ttl2 seconds. */
  static void writeCluster(int ttl2) throws Exception {
    String l1 = lease(60);
    String l2 = lease(ttl2);
    put(S.node("n1"), new JsonObject().put("Node", "n1").put("SwarmNodeID", "sw1").put("PublicIP", "198.18.1.1")
        .put("Manager", true).put("Version", "1.2.3-test").encode(), l1);
    put(S.node("n2"), new JsonObject().put("Node", "n2").put("SwarmNodeID", "sw2").put("PublicIP", "198.18.1.2")
        .put("Manager", false).put("Version", "1.2.3-test").encode(), l2);
    Cidr net = Cidr.parse("10.60.0.0/20");
    put(S.addressSpace(net), "f1", null);
    put(S.vni(7001), "f1", null);
    put(S.networkConfig("f1"), FlannelJson.networkConfig(net, 25, Cidr.parse("10.60.0.128/25"),
        Cidr.parse("10.60.15.128/25"), 7001), null);
    put(S.subnet("f1", Cidr.parse("10.60.0.128/25")), FlannelJson.lease("198.18.1.1", 7001,
        FlannelJson.vtepMac("n1", 7001)), l1);
    put(S.subnet("f1", Cidr.parse("10.60.1.0/25")), FlannelJson.lease("198.18.1.2", 7001,
        FlannelJson.vtepMac("n2", 7001)), l2);
    put(S.allocation("f1", "10.60.0.130"), Owner.container("n1", "02:42:0a:3c:00:82", "").toJson(), null);
    put(S.allocation("f1", "10.60.1.2"), Owner.container("n2", "02:42:0a:3c:01:02", "").toJson(), null);
    put(S.allocation("f1", "10.60.0.2"), Owner.leader(Owner.Kind.VIP, "n1").toJson(), null);
    put(S.dockerNetwork("d1"), new DockerNetwork("d1", "web-net", "flannel-np", "f1", net.toString()).toJson(), null);
    put(S.dockerService("s1"), new ServiceRecord("s1", "web", ServiceRecord.EndpointMode.VIP,
        Map.of("d1", "10.60.0.2"), Map.of()).toJson(), null);
    put(S.dockerContainer("sw1", "c1"), new ContainerRecord("c1", "web.1.x", "c1", "sw1", "s1", "web", "t1", "web.1",
        "running", "", Map.of("d1", new ContainerRecord.Attachment("10.60.0.130", "e1", List.of(), ""))).toJson(), l1);
    put(S.dockerContainer("sw2", "c2"), new ContainerRecord("c2", "web.2.y", "c2", "sw2", "s1", "web", "t2", "web.2",
        "stopping", "", Map.of("d1", new ContainerRecord.Attachment("10.60.1.2", "e2", List.of(), ""))).toJson(), l2);
  }

  @Test
  void aHealthyClusterIsShownSectionBySectionAndExits0ThenEachProblemIsListedAndExits1() throws Exception {
    writeCluster(60);
    try {
      Run r = status(env);
      assertThat(r.exit()).as(r.out() + r.err()).isZero();
      assertThat(r.out()).contains("Nodes (2)", "Networks (1)", "Services (1)", "Problems (0)");
      assertThat(r.out()).containsPattern("n1 +198\\.18\\.1\\.1 +manager +1\\.2\\.3-test +record \\d+ s left")
          .containsPattern("n2 +198\\.18\\.1\\.2 +worker");
      assertThat(r.out()).contains("web-net", "10.60.0.0/20 VNI 7001", "flannel-id f1",
          "addresses: 2 on nodes, 1 cluster-wide");
      assertThat(r.out()).containsPattern("10\\.60\\.0\\.128/25 +n1 +198\\.18\\.1\\.1 +1 used, 125 free +lease \\d+ s left")
          .containsPattern("10\\.60\\.1\\.0/25 +n2 +198\\.18\\.1\\.2 +1 used, 125 free");
      assertThat(r.out()).containsPattern("web +vip +\\{web-net=10\\.60\\.0\\.2\\} +tasks \\{n1=1\\} +leaving \\{n2=1\\}");

      Run j = status(env, "--json");
      assertThat(j.exit()).isZero();
      JsonObject o = new JsonObject(j.out());
      assertThat(o.getJsonArray("nodes")).hasSize(2);
      assertThat(o.getJsonArray("networks").getJsonObject(0).getJsonArray("blocks")).hasSize(2);
      assertThat(o.getJsonArray("services").getJsonObject(0).getJsonObject("running").getInteger("n1")).isEqualTo(1);
      assertThat(o.getJsonArray("problems")).isEmpty();

      // a malformed record and a rejected config: listed, exit 1, the rest still shown
      put(P + "/vnis/abc", "x", null);
      put(S.networkConfig("rogue"), "{\"Network\":\"0.0.0.0/0\",\"Backend\":{\"Type\":\"vxlan\",\"VNI\":7002}}", null);
      Run bad = status(env);
      assertThat(bad.exit()).as(bad.out()).isEqualTo(1);
      assertThat(bad.out()).contains("Networks (1)", "web-net").contains("vnis/abc").contains("network rogue: config rejected");
      assertThat(new JsonObject(status(env, "--json").out()).getJsonArray("problems").size()).isGreaterThanOrEqualTo(2);
    } finally {
      etcdctl("del", "--prefix", P + "/");
    }
  }

  @Test
  void aNodeThatStopsRenewingIsListedBeforeItsRecordsExpire() throws Exception {
    writeCluster(6); // n2 stops renewing at once: its records have 6 s
    try {
      long deadline = System.nanoTime() + 8_000_000_000L;
      Run seen = null;
      while (System.nanoTime() < deadline) {
        Run r = status(env);
        if (r.out().contains("node n2: its record expires")) {
          seen = r;
          break;
        }
        Thread.sleep(200);
      }
      assertThat(seen).as("n2's expiring record listed before it expired").isNotNull();
      assertThat(seen.exit()).isEqualTo(1);
      assertThat(seen.out()).contains("(n2) expires in");
    } finally {
      etcdctl("del", "--prefix", P + "/");
    }
  }

  @Test
  void usageAndSettingsErrorsExit2AndAnUnreachableEtcdExits1() {
    Run help = status(env, "--help");
    assertThat(help.exit()).isZero();
    assertThat(help.out()).contains("usage: java -jar flannel-np.jar status [--json]");
    Run unknown = status(env, "--yaml");
    assertThat(unknown.exit()).isEqualTo(2);
    assertThat(unknown.err()).contains("unknown option '--yaml'");
    Run noEtcd = status(Map.of());
    assertThat(noEtcd.exit()).isEqualTo(2);
    assertThat(noEtcd.err()).contains("set ETCD_ENDPOINTS");
    Run badScheme = status(Map.of("ETCD_ENDPOINTS", "ftp://127.0.0.1:1"));
    assertThat(badScheme.exit()).isEqualTo(2);
    Run down = status(Map.of("ETCD_ENDPOINTS", "http://127.0.0.1:" + EtcdServer.freePort()));
    assertThat(down.exit()).isEqualTo(1);
    assertThat(down.err()).contains("did not answer");
  }
}
