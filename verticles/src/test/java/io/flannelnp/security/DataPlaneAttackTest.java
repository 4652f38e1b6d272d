package io.flannelnp.security;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.testing.DockerSandbox;
import io.flannelnp.testing.InNetns;
import io.flannelnp.testing.Netns;
import io.flannelnp.testing.Poll;
import io.vertx.core.json.JsonObject;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.nio.ByteBuffer;
import java.nio.channels.DatagramChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;

/**
 * Attacks on the data plane through what it trusts (review M3, L2, L1, L6): etcd records written
 * by another node (buggy, compromised, or just any etcd writer, as every node is one) and a
 * container flooding its resolver, against the real daemon with its data plane in a namespace.
 *
 * <ul>
 *   <li>The load balancer must not DNAT what no network owns: a VIP outside a network's cluster
 *       range or of a network nobody reserved, a backend outside the network's subnet, a
 *       container record under another node's key.</li>
 *   <li>The DNS plane must not enter a namespace that is no container of Docker's: /run/netns/…,
 *       Docker's ingress sandbox, /proc/…/ns/net, a record of another node naming this one.</li>
 *   <li>An etcd key cannot forge a log line.</li>
 *   <li>A container flooding its resolver is held to DNS_QUERY_RATE; its neighbour is served.</li>
 * </ul>
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class DataPlaneAttackTest {
  static final int RATE = 200;
  static SecurityLab lab;
  static SecurityLab.Network net;
  static String vip;
  static final List<DockerSandbox> sandboxes = new ArrayList<>();
  static final List<String> keys = new ArrayList<>();

  @BeforeAll
  static void up() throws Exception {
    lab = new SecurityLab("fns-node");
    lab.env.put("ADMIN_INSECURE_LOOPBACK", "true");
    lab.env.put("DNS_QUERY_RATE", Integer.toString(RATE));
    lab.start();
    net = lab.createNetwork("fns" + lab.run, "fnsnet");
    vip = lab.vip(net);
    service("web", Map.of(net.netId(), vip)); // as the Docker side writes it: the address alone
  }

  @AfterAll
  static void down() throws Exception {
    try {
      if (lab != null) {
        for (String k : keys) {
          lab.etcd.delete(k).await(5, TimeUnit.SECONDS);
        }
      }
    } finally {
      if (lab != null) {
        lab.daemon.stop(10, TimeUnit.SECONDS); // ejects from every sandbox before they go
        lab.daemon = null;
      }
      sandboxes.forEach(DockerSandbox::close);
      if (lab != null) {
        lab.etcd.deletePrefix(lab.prefix + "/").await(5, TimeUnit.SECONDS);
        lab.close();
      }
    }
  }

  static void service(String id, Map<String, String> vips) throws Exception {
    put(lab.schema.dockerService(id), new ServiceRecord(id, id, ServiceRecord.EndpointMode.VIP, vips, Map.of()).toJson());
  }

  static long put(String key, String value) throws Exception {
    keys.add(key);
    return lab.put(key, value);
  }

  /** A running task of {@code service}: its record, under {@code underNode}'s key, naming {@code node}. */
  static long task(String underNode, String node, String id, String service, String sandbox, String netId, String ip)
      throws Exception {
    String cid = (id + lab.run + "0".repeat(64)).substring(0, 64);
    return put(lab.schema.dockerContainer(underNode, cid), new ContainerRecord(cid, service + ".1." + id, id, node,
        service, service, "task" + id, service + ".1." + id, "running", sandbox,
        Map.of(netId, new ContainerRecord.Attachment(ip, "ep" + id, List.of(), ""))).toJson());
  }

  static String lbTable() {
    Netns.Result r = lab.ns.exec(lab.host, "nft", "list", "table", "ip", "flannel-np-lb");
    return r.exit() == 0 ? r.out() : "";
  }

  @Test
  @Order(1)
  void theLoadBalancerRedirectsOnlyAddressesANetworkOwns() throws Exception {
    String backend = lab.address(net);
    task(lab.node, lab.node, "good", "web", "", net.netId(), backend);
    // a network record naming a flannel-id nobody reserved, with a VIP on the cloud's DNS server
    String rogueNet = ("nrogue" + lab.run + "0".repeat(64)).substring(0, 25);
    put(lab.schema.dockerNetwork(rogueNet), new DockerNetwork(rogueNet, "rogue", "flannel-np", "rogue", "10.0.0.0/8")
        .toJson());
    service("dns", Map.of(rogueNet, "10.0.0.2"));
    task(lab.node, lab.node, "thief", "dns", "", rogueNet, "198.19.8.66");
    // on the real network: a VIP outside it, a VIP in a node's block (a node's gateway)
    service("far", Map.of(net.netId(), "10.0.0.53"));
    String gateway = SecurityLab.bare(net.subnet()).replaceFirst("\\.0$", ".129");
    service("gw", Map.of(net.netId(), gateway));
    // a legitimate VIP whose task record points outside the network, and records misplaced in etcd
    String vip2 = lab.vip(net);
    service("web2", Map.of(net.netId(), vip2));
    task(lab.node, lab.node, "out", "web2", "", net.netId(), "10.0.0.2");
    String imp1 = lab.address(net);
    String imp2 = lab.address(net);
    task(lab.node, "other-node", "imp1", "web2", "", net.netId(), imp1);
    long last = task("other-node", lab.node, "imp2", "web2", "", net.netId(), imp2);

    Poll.await("the lb pass after revision " + last, Duration.ofSeconds(20),
        () -> reconciled("lb", last) && lbTable().contains(vip) && lbTable().contains(vip2));
    String table = lbTable();
    assertThat(ips(table)).as("the legitimate VIPs and task in " + table).contains(vip, vip2, backend);
    assertThat(ips(table)).as("nothing the network does not own, nothing from misplaced records: " + table)
        .doesNotContain("10.0.0.2", "10.0.0.53", gateway, "198.19.8.66", imp1, imp2);
    String log = lab.log();
    assertThat(log).contains("VIP 10.0.0.2 on network " + rogueNet + " is not programmed: network rogue has no config")
        .contains("VIP 10.0.0.53 on network " + net.netId() + " is not programmed: it is outside the network's cluster range")
        .contains("VIP " + gateway + " on network " + net.netId() + " is not programmed")
        .contains("address 10.0.0.2 is outside subnet " + net.subnet())
        .contains("it names node 'other-node'")
        .contains("docker-data/containers/other-node/imp2");
  }

  /** Every dotted quad in an nft listing. */
  static List<String> ips(String text) {
    List<String> out = new ArrayList<>();
    java.util.regex.Matcher m = java.util.regex.Pattern.compile("(?<![0-9.])\\d{1,3}(\\.\\d{1,3}){3}(?![0-9.])")
        .matcher(text);
    while (m.find()) {
      out.add(m.group());
    }
    return out;
  }

  static boolean reconciled(String plane, long revision) {
    try {
      JsonObject p = lab.health(null).getJsonObject("planes").getJsonObject(plane);
      return p.getLong("lastSuccessRevision", 0L) >= revision;
    } catch (Exception e) {
      return false;
    }
  }

  static boolean hasDnsTable(String netns) {
    return lab.ns.exec(netns, "nft", "list", "table", "ip", "flannel-np-dns").exit() == 0;
  }

  @Test
  @Order(2)
  void theDnsPlaneEntersOnlyContainersOfDockersOnThisNode() throws Exception {
    String victim = lab.ns.add("victim");
    String ingress = lab.ns.add("ingress");
    String other = lab.ns.add("othernode");
    String mine = lab.ns.add("mine");
    DockerSandbox ingressBox = sandbox(ingress, "ingress_sbox");
    DockerSandbox otherBox = sandbox(other, null);
    DockerSandbox mineBox = sandbox(mine, null);
    // records of this node naming namespaces outside Docker's container directory
    task(lab.node, lab.node, "v1", "web", "/var/run/netns/" + victim, net.netId(), lab.address(net));
    task(lab.node, lab.node, "v2", "web", ingressBox.key, net.netId(), lab.address(net));
    task(lab.node, lab.node, "v3", "web", "/proc/1/ns/net", net.netId(), lab.address(net));
    put(lab.schema.endpoint(lab.node, "e".repeat(64)), new JsonObject().put("EndpointID", "e".repeat(64))
        .put("NetworkID", net.netId()).put("SandboxKey", "/var/run/netns/" + victim).encode());
    // another node's record naming this node, with a real container path
    task("other-node", lab.node, "v4", "web", otherBox.key, net.netId(), lab.address(net));
    // the control: this node's own container
    long last = task(lab.node, lab.node, "ok", "web", mineBox.key, net.netId(), lab.address(net));

    Poll.await("the resolver in this node's container", Duration.ofSeconds(30), () -> hasDnsTable(mine));
    Poll.await("the dns pass after revision " + last, Duration.ofSeconds(20), () -> reconciled("dns", last));
    Thread.sleep(1000); // an injection the pass started would have finished
    assertThat(hasDnsTable(victim)).as("a namespace outside Docker's directory (record and endpoint)").isFalse();
    assertThat(hasDnsTable(ingress)).as("Docker's ingress sandbox").isFalse();
    assertThat(hasDnsTable(other)).as("a container named by another node's record").isFalse();
    assertThat(Netns.run("nft", "list", "table", "ip", "flannel-np-dns").exit()).as("the host's namespace").isNotZero();
    assertThat(lab.log()).contains("SandboxKey '/var/run/netns/" + victim + "' is not a container's namespace")
        .contains("SandboxKey '" + ingressBox.key + "' is not a container's namespace")
        .contains("SandboxKey '/proc/1/ns/net' is not a container's namespace")
        .contains("docker-data/containers/other-node/v4");
  }

  static DockerSandbox sandbox(String netns, String name) {
    DockerSandbox s = name == null ? DockerSandbox.of(netns) : DockerSandbox.of(netns, name);
    sandboxes.add(s);
    return s;
  }

  @Test
  @Order(3)
  void anEtcdKeyCannotForgeALogLine() throws Exception {
    String forged = "2026-01-01T00:00:00.000Z ERROR Daemon: forged by an etcd key";
    long rev = put(lab.schema.dockerService("x\n" + forged), "{");
    put(lab.schema.dockerContainer(lab.node, "y\r\n" + forged), "{\"Node\":\"\\n" + forged + "\"}");
    Poll.await("the unreadable record reported", Duration.ofSeconds(20),
        () -> lab.log().contains("x\\n" + forged) && reconciled("lb", rev));
    assertThat(lab.log().lines()).as("no line starts with what the key carried")
        .noneMatch(l -> l.startsWith("2026-01-01T00:00:00.000Z")).noneMatch(l -> l.contains("\r"));
  }

  /** A container sends queries as fast as it can; its neighbour on the node is still answered. */
  @Test
  @Order(4)
  void aContainerFloodingItsResolverIsHeldToItsRateAndItsNeighbourIsServed() throws Exception {
    String a = lab.ns.add("flooder");
    String b = lab.ns.add("neighbour");
    DockerSandbox boxA = sandbox(a, null);
    DockerSandbox boxB = sandbox(b, null);
    task(lab.node, lab.node, "fa", "web", boxA.key, net.netId(), lab.address(net));
    task(lab.node, lab.node, "fb", "web", boxB.key, net.netId(), lab.address(net));
    Poll.await("both resolvers answer", Duration.ofSeconds(30), () -> answers(a) && answers(b));
    Thread.sleep(1500); // full budgets
    double limitedBefore = lab.metric("fnp_dns_rate_limited_total", null);

    long seconds = 3;
    CompletableFuture<long[]> flood = CompletableFuture.supplyAsync(() -> {
      try {
        return InNetns.call(a, () -> flood(seconds));
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    });
    Thread.sleep(300);
    int probes = 0;
    int answered = 0;
    while (!flood.isDone()) {
      probes++;
      answered += answers(b) ? 1 : 0;
      Thread.sleep(50);
    }
    long[] f = flood.get();
    System.out.printf("flood: sent %d, answered %d in %d s (rate %d/s); neighbour %d/%d answered%n", f[0], f[1],
        seconds, RATE, answered, probes);
    assertThat(answered).as("the neighbour's queries answered during the flood").isEqualTo(probes);
    assertThat(probes).isGreaterThan(10);
    assertThat(f[0]).as("queries the flooder sent").isGreaterThan(20L * RATE);
    // one second's burst plus the rate: the rest was never read
    assertThat(f[1]).as("answers the flooder got").isLessThanOrEqualTo(RATE * (seconds + 1) + RATE / 2);
    assertThat(lab.metric("fnp_dns_rate_limited_total", null)).isGreaterThan(limitedBefore);
    // what it sent while over budget waits in its own socket buffer (about two thousand queries),
    // read at its rate: then it is served again
    Poll.await("the flooder is served again once its backlog is read", Duration.ofSeconds(30), () -> answers(a));
  }

  /** Sends A queries for "web" as fast as one thread can for {@code seconds}; {sent, answered}. */
  static long[] flood(long seconds) throws Exception {
    try (DatagramChannel ch = DatagramChannel.open(StandardProtocolFamily.INET)) {
      ch.connect(new InetSocketAddress("127.0.0.11", 53));
      ch.configureBlocking(false);
      ByteBuffer in = ByteBuffer.allocate(1500);
      long sent = 0;
      long got = 0;
      long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
      int id = 0;
      while (System.nanoTime() < end) {
        if (ch.write(query(++id & 0xffff, "web")) > 0) {
          sent++;
        }
        in.clear();
        while (ch.read(in) > 0) {
          got++;
          in.clear();
        }
      }
      long drain = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(300);
      while (System.nanoTime() < drain) {
        in.clear();
        if (ch.read(in) > 0) {
          got++;
        }
      }
      return new long[] {sent, got};
    }
  }

  /** One query from inside {@code netns} for "web": answered with the VIP within a second. */
  static boolean answers(String netns) {
    return answers(netns, "web");
  }

  /** One A query from inside {@code netns}: answered (NOERROR, an answer) within a second. */
  static boolean answers(String netns, String name) {
    try {
      return InNetns.call(netns, () -> {
        try (DatagramChannel ch = DatagramChannel.open(StandardProtocolFamily.INET)) {
          ch.connect(new InetSocketAddress("127.0.0.11", 53));
          ch.configureBlocking(false);
          ch.write(query(4242, name));
          ByteBuffer in = ByteBuffer.allocate(1500);
          long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
          while (System.nanoTime() < deadline) {
            in.clear();
            if (ch.read(in) > 0) {
              in.flip();
              return in.getShort(0) == 4242 && (in.get(3) & 0x0f) == 0 && in.getShort(6) > 0;
            }
            Thread.sleep(2);
          }
          return false;
        }
      });
    } catch (Exception e) {
      return false;
    }
  }

  static ByteBuffer query(int id, String name) {
    ByteBuffer b = ByteBuffer.allocate(64);
    b.putShort((short) id).putShort((short) 0x0100).putShort((short) 1).putShort((short) 0).putShort((short) 0)
        .putShort((short) 0);
    for (String label : name.split("\\.")) {
      b.put((byte) label.length()).put(label.getBytes(StandardCharsets.US_ASCII));
    }
    b.put((byte) 0).putShort((short) 1).putShort((short) 1);
    return b.flip();
  }
}
