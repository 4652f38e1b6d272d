package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.dns.DnsMessage.InjectDns;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ContainerRecord.Attachment;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.testing.Netns;
import io.vertx.core.eventbus.DeliveryOptions;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The hook handshake end to end on this machine: the DnsVerticle with IS_HOOK_AVAILABLE's socket,
 * records in a real etcd, a real network namespace that appears after Join as on Docker 20.10, and
 * the real hook binary run inside it with {@code ip netns exec}, as runc runs a createContainer
 * hook. The namespace poll is set to 5 s, so an answer within a second can only come from the
 * hook waking the injection, and a lookup right after the hook returned shows it was held until
 * the listener served. Needs root, iproute2, nftables, dig, etcd, gcc (static libc) and make.
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS)
class HookHandshakeTest extends EtcdBusTestBase {
  static final String NODE = "node-hook-test";
  static final String NET = "hnet-0000000000000000000000001";
  static final String EP = "e7000000000000000000000000000000000000000000000000000000000000e7";
  static final String CID = "c7000000000000000000000000000000000000000000000000000000000000c7";

  String stem;
  Path dir;
  Path socket;
  DnsVerticle dns;
  String deployment;

  @BeforeEach
  void setUp() throws Exception {
    byte[] b = new byte[4];
    ThreadLocalRandom.current().nextBytes(b);
    stem = "fnh-" + HexFormat.of().formatHex(b);
    dir = Files.createTempDirectory("fnh-hs");
    socket = dir.resolve("hook.sock");
    startBus(stem);
    DnsListener.Options o = TestSandboxes.options().withUpstreamTimeout(Duration.ofMillis(1500))
        .withNetnsPoll(Duration.ofSeconds(5));
    dns = new DnsVerticle(NODE, true, 600, schema, o, socket.toString());
    deployment = vertx.deployVerticle(dns).await(20, TimeUnit.SECONDS);
  }

  @AfterEach
  void tearDown() throws Exception {
    try {
      if (deployment != null) {
        vertx.undeploy(deployment).await(20, TimeUnit.SECONDS);
        assertThat(socket).as("the socket goes with the plane").doesNotExist();
      }
      stopBus();
    } finally {
      for (String n : Netns.list()) {
        if (n.startsWith(stem)) {
          Netns.run("ip", "netns", "del", n);
        }
      }
      Files.deleteIfExists(socket);
      Files.deleteIfExists(dir);
    }
    assertThat(Netns.list()).as("namespaces left").noneMatch(n -> n.startsWith(stem));
  }

  HookBinaries.Result hookIn(String netns, String containerId) {
    String state = "{\"ociVersion\":\"1.0.2-dev\",\"id\":\"" + containerId + "\",\"status\":\"creating\",\"pid\":1,"
        + "\"bundle\":\"/tmp/x\",\"annotations\":{}}";
    return HookBinaries.run(List.of("ip", "netns", "exec", netns, HookBinaries.hook().toString(), "--socket",
        socket.toString(), "--timeout-ms", "4000"), state, 15_000);
  }

  void put(String key, String value) throws Exception {
    store.put(key, value).await(5, TimeUnit.SECONDS);
  }

  @Test
  void theHookHoldsTheContainerUntilOurResolverServesItsNamespace() throws Exception {
    String c = stem + "-c";
    String key = "/var/run/netns/" + c;
    // what Join leaves behind on Docker 20.10: records and an InjectDns naming a namespace not mounted yet
    put(schema.dockerNetwork(NET), new DockerNetwork(NET, "hooknet", "flannel-np:latest", "fl-hook", "10.7.0.0/24")
        .toJson());
    put(schema.dockerContainer("node-2", "c-other"), new ContainerRecord("c-other", "only-flannel-knows", "c-other",
        "node-2", "", "", "", "", "running", "", Map.of(NET, new Attachment("10.7.0.9", "", List.of(), ""))).toJson());
    put(schema.endpoint(NODE, EP), new JsonObject().put("NetworkID", NET).put("FlannelID", "fl-hook")
        .put("EndpointID", EP).put("Address", "10.7.0.100").put("Node", NODE).put("SandboxKey", key).encode());
    Ack ack = (Ack) vertx.eventBus().request(Addresses.DNS_INJECT, new InjectDns(CID, key, EP),
        new DeliveryOptions().setSendTimeout(30_000)).await(35, TimeUnit.SECONDS).body();
    assertThat(ack.detail()).startsWith("waiting");

    // runc create: libnetwork-setkey mounts the namespace and brings lo up, then our hook runs in it
    Thread.sleep(300);
    Netns.run("ip", "netns", "add", c).ok();
    Netns.run("ip", "-n", c, "link", "set", "dev", "lo", "up").ok();
    assertThat(dns.served()).as("the next poll is seconds away").isZero();
    HookBinaries.Result r = hookIn(c, CID);
    assertThat(r.exit()).isZero();
    assertThat(r.err()).isEmpty();
    assertThat(r.millis()).as("woken by the hook, not by the 5 s poll").isLessThan(2500);

    // the container's first query, right after the hook returned
    Netns.Result dig = Netns.run("ip", "netns", "exec", c, "dig", "@127.0.0.11", "+time=2", "+tries=1", "+short",
        "only-flannel-knows");
    assertThat(dig.out().strip()).as(dig.err()).isEqualTo("10.7.0.9");

    // a later hook for the same namespace (a restart of the container) is answered at once
    r = hookIn(c, CID);
    assertThat(r.exit()).isZero();
    assertThat(r.err()).isEmpty();
    assertThat(r.millis()).isLessThan(1000);
  }

  @Test
  void aContainerNotOnOurNetworksIsNotHeld() throws Exception {
    String other = stem + "-o";
    Netns.run("ip", "netns", "add", other).ok();
    HookBinaries.Result r = hookIn(other, CID);
    assertThat(r.exit()).isZero();
    assertThat(r.err()).isEmpty();
    assertThat(r.millis()).isLessThan(1000);
    assertThat(dns.served()).isZero();
  }

  /**
   * The hook gives up after its own deadline and closes its connection: from then on nobody reads
   * the answer, so the plane stops looking at the sandbox for it (it went on for 10 s).
   */
  @Test
  void aHookThatGaveUpIsNoLongerWaitedFor() throws Exception {
    String c = stem + "-g";
    String key = "/var/run/netns/" + c;
    Netns.run("ip", "netns", "add", c).ok(); // its loopback stays down: the resolver cannot open its sockets
    put(schema.dockerNetwork(NET), new DockerNetwork(NET, "hooknet", "flannel-np:latest", "fl-hook", "10.7.0.0/24")
        .toJson());
    put(schema.endpoint(NODE, EP), new JsonObject().put("NetworkID", NET).put("FlannelID", "fl-hook")
        .put("EndpointID", EP).put("Address", "10.7.0.100").put("Node", NODE).put("SandboxKey", key).encode());
    java.util.List<String> said = new java.util.concurrent.CopyOnWriteArrayList<>();
    java.util.logging.Handler h = new java.util.logging.Handler() {
      @Override
      public void publish(java.util.logging.LogRecord r) {
        said.add(r.getMessage());
      }

      @Override
      public void flush() {
      }

      @Override
      public void close() {
      }
    };
    java.util.logging.Logger log = java.util.logging.Logger.getLogger(DnsVerticle.class.getName());
    log.addHandler(h);
    try {
      Path ns = Path.of("/run/netns/" + c);
      long dev = (Long) Files.getAttribute(ns, "unix:dev");
      long ino = (Long) Files.getAttribute(ns, "unix:ino");
      try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
        ch.connect(UnixDomainSocketAddress.of(socket));
        ch.write(ByteBuffer.wrap(("{\"id\":\"" + CID + "\",\"netns\":{\"dev\":" + dev + ",\"ino\":" + ino + "}}\n")
            .getBytes(StandardCharsets.UTF_8)));
        Thread.sleep(300); // what the hook does after its deadline: close
      }
      io.flannelnp.testing.Poll.await("the plane noticed the hook left", Duration.ofSeconds(5),
          () -> said.stream().anyMatch(m -> m.contains("OCI hook of container " + CID.substring(0, 12))));
      String line = said.stream().filter(m -> m.contains("OCI hook of container")).findFirst().orElseThrow();
      assertThat(line).as("ended because the hook closed, before the injection gave up").contains(": gone after");
    } finally {
      log.removeHandler(h);
    }
  }

  @Test
  void aBadRequestIsAnsweredWithWhatIsWrong() throws Exception {
    assertThat(ask("hello\n")).containsEntry("ok", false).containsEntry("status", "bad-request")
        .containsEntry("detail", "request is not a JSON object: 'hello'");
    assertThat(ask("{\"id\":\"a b\",\"netns\":{\"dev\":1,\"ino\":2}}\n").get("detail").toString())
        .startsWith("\"id\" must be a container id");
    assertThat(ask("{\"id\":\"abc\",\"netns\":{\"ino\":2}}\n").get("detail").toString())
        .startsWith("\"netns\" must be {\"dev\":<number>,\"ino\":<positive number>}");
    assertThat(ask("x".repeat(HookServer.MAX_LINE + 10))).containsEntry("status", "bad-request");
  }

  Map<String, Object> ask(String request) throws IOException {
    try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
      ch.connect(UnixDomainSocketAddress.of(socket));
      ch.write(ByteBuffer.wrap(request.getBytes(StandardCharsets.UTF_8)));
      ByteBuffer b = ByteBuffer.allocate(4096);
      while (ch.read(b) >= 0) {
        if (b.position() > 0 && b.get(b.position() - 1) == '\n') {
          break;
        }
      }
      return new JsonObject(new String(b.array(), 0, b.position(), StandardCharsets.UTF_8).strip()).getMap();
    }
  }
}
