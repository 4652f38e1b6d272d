package io.flannelnp.docker;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Codecs;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.model.ClusterModel;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import io.flannelnp.testing.Dockerd;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The DockerVerticle against a real dockerd 20.10 (a one-node Swarm in its own namespaces) and a
 * real etcd: what Docker has must show up in etcd, changes must follow, an event-stream outage
 * must lose nothing, and a node that stops renewing loses its container records at the TTL.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class DockerMirrorTest {
  private static final int TTL = 5;
  private static EtcdServer etcdServer;
  private static Dockerd dockerd;
  private static String nodeId;
  private static int prefixes;

  private Vertx vertx;
  private EtcdStore etcd;
  private EtcdSchema schema;
  private String prefix;
  private String deployment;
  private final List<String> services = new ArrayList<>();
  private final List<String> containers = new ArrayList<>();
  private final List<String> networks = new ArrayList<>();

  @BeforeAll
  static void cluster() {
    etcdServer = EtcdServer.start();
    dockerd = Dockerd.start();
    nodeId = dockerd.docker("info", "-f", "{{.Swarm.NodeID}}").ok().out().strip();
    assertThat(nodeId).isNotEmpty();
  }

  @AfterAll
  static void teardown() {
    try {
      if (dockerd != null) {
        dockerd.close();
      }
    } finally {
      if (etcdServer != null) {
        etcdServer.close();
      }
    }
  }

  private void startMirror(Path socket) {
    vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    prefix = "/fnd-mirror-" + (++prefixes);
    Config config = Config.fromEnv(Map.of("ETCD_ENDPOINTS", etcdServer.endpoint(), "ETCD_PREFIX", prefix,
        "AVAILABLE_SUBNETS", "10.99.0.0/16", "DOCKER_SOCKET", socket.toString(), "NODE_NAME", "fnd-host",
        "NODE_RECORDS_TTL", Integer.toString(TTL)));
    schema = new EtcdSchema(config.etcdPrefix());
    etcd = new EtcdStore(vertx, config.etcdEndpoints(), Optional.empty(), Duration.ofSeconds(5));
    deployment = await(vertx.deployVerticle(new DockerVerticle(config, etcd, schema)));
  }

  private void stopMirror() {
    if (deployment != null) {
      await(vertx.undeploy(deployment));
      deployment = null;
    }
  }

  @AfterEach
  void cleanup() {
    try {
      stopMirror();
      if (!services.isEmpty()) {
        List<String> argv = new ArrayList<>(List.of("service", "rm"));
        argv.addAll(services);
        dockerd.docker(argv.toArray(String[]::new));
      }
      if (!containers.isEmpty()) {
        List<String> argv = new ArrayList<>(List.of("rm", "-f"));
        argv.addAll(containers);
        dockerd.docker(argv.toArray(String[]::new));
      }
      for (String n : networks) {
        eventually("network " + n + " removed", Duration.ofSeconds(40), () -> {
          dockerd.docker("network", "rm", n);
          return dockerd.docker("network", "inspect", n).exit() != 0;
        });
      }
    } finally {
      if (etcd != null) {
        await(etcd.deletePrefix(prefix + "/"));
        etcd.close();
      }
      if (vertx != null) {
        await(vertx.close());
      }
    }
  }

  @Test
  void mirrorsNetworksServicesAndContainersAndFollowsTheirChanges() {
    startMirror(dockerd.socket());
    // an ordinary overlay carrying our IPAM option is still not flannel-np's
    String net = network("fndnet", "--ipam-opt", "flannel-id=fnd-not-ours");
    String web = service("web", "--replicas", "2", "--network", "name=fndnet,alias=webalias",
        "--stop-grace-period", "8s");
    String rr = service("rr", "--replicas", "1", "--endpoint-mode", "dnsrr", "--network", "fndnet",
        "--stop-grace-period", "1s");
    String c1 = container("c1", "--network", "fndnet", "--network-alias", "c1alias", "--hostname", "c1host");

    ClusterModel m = awaitModel("network, 2 services and 4 containers mirrored", Duration.ofSeconds(60),
        x -> x.services().size() == 2 && x.containers().size() == 4 && x.networks().containsKey(net)
            && x.services().get(web) != null && !x.services().get(web).vips().isEmpty());

    JsonObject netInspect = inspect("network", net);
    var n = m.networks().get(net);
    assertThat(n.name()).isEqualTo("fndnet");
    assertThat(n.driver()).isEqualTo("overlay");
    assertThat(n.flannelId()).isEmpty();
    assertThat(n.subnet()).isEqualTo(netInspect.getJsonObject("IPAM").getJsonArray("Config").getJsonObject(0)
        .getString("Subnet"));

    ServiceRecord w = m.services().get(web);
    assertThat(w.name()).isEqualTo("web");
    assertThat(w.mode()).isEqualTo(EndpointMode.VIP);
    String vip = inspect("service", web).getJsonObject("Endpoint").getJsonArray("VirtualIPs").stream()
        .map(JsonObject.class::cast).filter(v -> v.getString("NetworkID").equals(net)).findFirst().orElseThrow()
        .getString("Addr");
    assertThat(w.vips()).containsExactly(Map.entry(net, vip.substring(0, vip.indexOf('/'))));
    assertThat(w.aliases()).containsExactly(Map.entry(net, List.of("webalias")));
    ServiceRecord r = m.services().get(rr);
    assertThat(r.mode()).isEqualTo(EndpointMode.DNSRR);
    assertThat(r.vips()).isEmpty();

    // every container as `docker inspect` shows it, keyed by the Swarm node ID
    for (ContainerRecord c : m.containers()) {
      JsonObject ci = inspect("container", c.containerId());
      JsonObject ep = ci.getJsonObject("NetworkSettings").getJsonObject("Networks").getJsonObject("fndnet");
      JsonObject labels = ci.getJsonObject("Config").getJsonObject("Labels");
      assertThat(c.node()).isEqualTo(nodeId);
      assertThat(c.state()).isEqualTo("running");
      assertThat(c.name()).isEqualTo(ci.getString("Name").substring(1));
      assertThat(c.hostname()).isEqualTo(ci.getJsonObject("Config").getString("Hostname"));
      assertThat(c.sandboxKey()).isEqualTo(ci.getJsonObject("NetworkSettings").getString("SandboxKey"));
      assertThat(c.serviceId()).isEqualTo(labels.getString("com.docker.swarm.service.id", ""));
      assertThat(c.taskId()).isEqualTo(labels.getString("com.docker.swarm.task.id", ""));
      assertThat(c.taskName()).isEqualTo(labels.getString("com.docker.swarm.task.name", ""));
      assertThat(c.networks()).containsOnlyKeys(net); // not the ingress, not docker_gwbridge
      assertThat(c.networks().get(net).ip()).isEqualTo(ep.getString("IPAddress"));
      assertThat(c.networks().get(net).endpointId()).isEqualTo(ep.getString("EndpointID"));
      assertThat(c.networks().get(net).aliases()).doesNotContain(c.shortId());
      if (!c.taskId().isEmpty()) {
        // Swarm gives a task the leader's address as its endpoint IPAM config, where the mirror
        // reads the placeholder from; Docker's own IPAM honours it, so there is none here
        assertThat(ep.getJsonObject("IPAMConfig").getString("IPv4Address")).isEqualTo(ep.getString("IPAddress"));
      }
      assertThat(c.networks().get(net).placeholder()).isEmpty();
    }
    assertThat(m.containers()).filteredOn(c -> c.serviceId().equals(web)).hasSize(2)
        .allSatisfy(c -> assertThat(c.taskName()).startsWith("web."));
    ContainerRecord plain = m.containers().stream().filter(c -> c.containerId().equals(c1)).findFirst().orElseThrow();
    assertThat(plain.name()).isEqualTo("c1");
    assertThat(plain.hostname()).isEqualTo("c1host");
    assertThat(plain.serviceId()).isEmpty();
    assertThat(plain.networks().get(net).aliases()).contains("c1alias");
    assertThat(m.backends(web, net)).hasSize(2);

    // scale down: the leaving task is "stopping" (out of the VIP backends) while it still runs
    dockerd.docker("service", "scale", "--detach", "web=1").ok();
    ClusterModel draining = awaitModel("one web task stopping", Duration.ofSeconds(20),
        x -> x.containers().stream().anyMatch(c -> c.serviceId().equals(web) && c.state().equals("stopping")));
    assertThat(draining.backends(web, net)).hasSize(1);
    assertThat(dockerd.docker("ps", "-q", "-f", "label=com.docker.swarm.service.id=" + web).ok().out().strip()
        .split("\n")).as("the stopping task's container still runs (8 s grace)").hasSize(2);
    awaitModel("the stopped web task gone", Duration.ofSeconds(30),
        x -> x.containers().stream().filter(c -> c.serviceId().equals(web)).count() == 1);

    // service rm: the service and its task vanish
    dockerd.docker("service", "rm", rr).ok();
    services.remove(rr);
    awaitModel("service rr and its task gone", Duration.ofSeconds(30),
        x -> !x.services().containsKey(rr) && x.containers().stream().noneMatch(c -> c.serviceId().equals(rr)));

    // container stop: its record vanishes
    dockerd.docker("stop", "-t", "1", c1).ok();
    ClusterModel end = awaitModel("c1 gone", Duration.ofSeconds(20),
        x -> x.containers().stream().noneMatch(c -> c.containerId().equals(c1)));
    assertThat(end.services()).containsOnlyKeys(web);
    assertThat(end.networks()).containsKey(net);

    // network create / rm
    String spare = network("fndspare");
    awaitModel("fndspare mirrored", Duration.ofSeconds(20), x -> x.networks().containsKey(spare));
    dockerd.docker("network", "rm", spare).ok();
    networks.remove(spare);
    awaitModel("fndspare gone", Duration.ofSeconds(20), x -> !x.networks().containsKey(spare) && x.networks().containsKey(net));
  }

  @Test
  void anEventStreamOutageLosesNothingAndADeadNodesContainersExpire() throws Exception {
    Vertx pv = Vertx.vertx();
    SocketProxy proxy = new SocketProxy(pv, dockerd.dir().resolve("proxy.sock"), dockerd.socket());
    try {
      startMirror(proxy.path());
      String net = network("fndnet2");
      String s2 = service("s2", "--replicas", "1", "--network", "fndnet2", "--stop-grace-period", "1s");
      String c2 = container("c2", "--network", "fndnet2");
      awaitModel("s2 and c2 mirrored", Duration.ofSeconds(60),
          x -> x.services().containsKey(s2) && x.containers().size() == 2);

      // Docker changes while the verticle cannot see it
      proxy.cut();
      dockerd.docker("service", "rm", s2).ok();
      services.remove(s2);
      dockerd.docker("rm", "-f", c2).ok();
      String c3 = container("c3", "--network", "fndnet2");
      String s3 = service("s3", "--replicas", "1", "--endpoint-mode", "dnsrr", "--network", "fndnet2",
          "--stop-grace-period", "1s");
      eventually("s2's task gone and s3's running in Docker", Duration.ofSeconds(40), () ->
          dockerd.docker("ps", "-q", "-f", "label=com.docker.swarm.service.id=" + s2).ok().out().isBlank()
              && !dockerd.docker("ps", "-q", "-f", "label=com.docker.swarm.service.id=" + s3).ok().out().isBlank());
      ClusterModel stale = model();
      assertThat(stale.services()).as("nothing seen during the outage").containsKey(s2).doesNotContainKey(s3);

      proxy.restore();
      ClusterModel m = awaitModel("the state after the outage", Duration.ofSeconds(30),
          x -> !x.services().containsKey(s2) && x.services().containsKey(s3) && x.containers().size() == 2
              && x.containers().stream().anyMatch(c -> c.containerId().equals(c3))
              && x.containers().stream().anyMatch(c -> c.serviceId().equals(s3)));
      assertThat(m.containers()).noneMatch(c -> c.containerId().equals(c2) || c.serviceId().equals(s2));
      assertThat(m.networks()).containsKey(net);

      // the node stops renewing its lease (the daemon is gone): its containers expire, the
      // managers' network and service records stay
      long t0 = System.nanoTime();
      stopMirror();
      assertThat(model().containers()).as("not revoked at stop").hasSize(2);
      ClusterModel after = awaitModel("container records expired", Duration.ofSeconds(TTL + 10),
          x -> x.containers().isEmpty());
      assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(TTL + 5));
      assertThat(after.services()).containsKey(s3);
      assertThat(after.networks()).containsKey(net);
    } finally {
      proxy.close();
      await(pv.close());
    }
  }

  @Test
  void aTaskBeingScaledAwayLeavesTheBackendsBeforeDockerSignalsIt() {
    startMirror(dockerd.socket());
    String net = network("fndnet3");
    String svc = service("drain", "--replicas", "3", "--network", "fndnet3", "--stop-grace-period", "1s");
    awaitModel("3 drain tasks running", Duration.ofSeconds(60), x -> x.services().containsKey(svc)
        && x.containers().stream().filter(c -> c.serviceId().equals(svc) && c.running()).count() == 3);

    dockerd.docker("service", "scale", "--detach", "drain=1").ok();
    long t0 = System.nanoTime();
    // Docker's executor deactivates the binding now and signals the containers 2 s later
    Map<String, Long> stoppingAt = new java.util.HashMap<>();
    ClusterModel m = model();
    while (stoppingAt.size() < 2) {
      long t = System.nanoTime() - t0;
      if (t > Duration.ofMillis(700).toNanos()) {
        throw new AssertionError("within 700 ms only " + stoppingAt.size() + " task(s) turned stopping; etcd has "
            + m);
      }
      for (ContainerRecord c : m.containers()) {
        if (c.serviceId().equals(svc) && c.state().equals("stopping")) {
          stoppingAt.putIfAbsent(c.containerId(), t);
        }
      }
      sleep(20);
      m = model();
    }
    assertThat(m.backends(svc, net)).as("only the staying task takes new connections").hasSize(1);
    assertThat(dockerd.docker("ps", "-q", "--no-trunc", "-f", "label=com.docker.swarm.service.id=" + svc).ok().out()
        .strip().split("\n")).as("the leaving containers still run: Docker has not signalled them yet")
        .contains(stoppingAt.keySet().toArray(String[]::new));

    // they never come back among the backends, and vanish once stopped
    long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
    while (m.containers().stream().anyMatch(c -> stoppingAt.containsKey(c.containerId()))) {
      assertThat(m.containers()).filteredOn(c -> stoppingAt.containsKey(c.containerId()))
          .as("a stopping task stays stopping").allSatisfy(c -> assertThat(c.state()).isEqualTo("stopping"));
      if (System.nanoTime() > deadline) {
        throw new AssertionError("the stopped tasks did not vanish within 30 s; etcd has " + m);
      }
      sleep(50);
      m = model();
    }
    ContainerRecord last = m.containers().stream().filter(c -> c.serviceId().equals(svc)).collect(
        java.util.stream.Collectors.collectingAndThen(java.util.stream.Collectors.toList(), l -> {
          assertThat(l).singleElement().satisfies(c -> assertThat(c.running()).isTrue());
          return l.get(0);
        }));

    // service rm: the removed service's last task leaves as early (the task filter no longer
    // knows the service, its tasks are found in the full list)
    dockerd.docker("service", "rm", svc).ok();
    services.remove(svc);
    long t1 = System.nanoTime();
    while (!m.containers().stream().anyMatch(c -> c.containerId().equals(last.containerId())
        && c.state().equals("stopping"))) {
      if (System.nanoTime() - t1 > Duration.ofMillis(700).toNanos()) {
        throw new AssertionError("the removed service's task not stopping within 700 ms; etcd has " + m);
      }
      sleep(20);
      m = model();
    }
    assertThat(dockerd.docker("ps", "-q", "--no-trunc", "-f", "id=" + last.containerId()).ok().out().strip())
        .as("still running: Docker has not signalled it yet").isEqualTo(last.containerId());
    awaitModel("the removed service's task gone", Duration.ofSeconds(30),
        x -> x.containers().stream().noneMatch(c -> c.containerId().equals(last.containerId())));
  }

  @Test
  void everyStepOfARollingUpdateLeavesTheBackendsBeforeDockerKillsItsTask() {
    startMirror(dockerd.socket());
    String net = network("fndnet4");
    String svc = service("roll", "--replicas", "2", "--network", "fndnet4", "--stop-grace-period", "1s",
        "--update-parallelism", "1", "--update-delay", "3s");
    ClusterModel m = awaitModel("2 roll tasks running", Duration.ofSeconds(60), x -> x.services().containsKey(svc)
        && x.containers().stream().filter(c -> c.serviceId().equals(svc) && c.running()).count() == 2);
    List<String> old = m.containers().stream().filter(c -> c.serviceId().equals(svc))
        .map(ContainerRecord::containerId).toList();

    long since = System.currentTimeMillis() / 1000 - 1;
    dockerd.docker("service", "update", "--detach", "--force", "roll").ok();
    // the second old task is shut down one step (start of its successor + 3 s) after the update
    // event: the drain must follow the whole update, not only its first 1.5 s
    Map<String, Long> stoppingAtMs = new java.util.HashMap<>();
    long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
    while (m.containers().stream().anyMatch(c -> old.contains(c.containerId()))) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("the old tasks did not leave within 60 s; etcd has " + m);
      }
      long now = System.currentTimeMillis();
      for (ContainerRecord c : m.containers()) {
        if (old.contains(c.containerId()) && c.state().equals("stopping")) {
          stoppingAtMs.putIfAbsent(c.containerId(), now);
        } else if (stoppingAtMs.containsKey(c.containerId())) {
          throw new AssertionError("a stopping task came back as " + c.state() + ": " + c);
        }
      }
      sleep(20);
      m = model();
    }
    assertThat(stoppingAtMs).as("every old task was seen stopping").containsOnlyKeys(old);
    String kills = dockerd.docker("events", "--since", Long.toString(since), "--until",
        Long.toString(System.currentTimeMillis() / 1000 + 1), "--filter", "type=container", "--filter", "event=kill",
        "--format", "{{.ID}} {{.TimeNano}}").ok().out();
    for (String id : old) {
      long killMs = kills.lines().filter(l -> l.startsWith(id + " ")).mapToLong(l -> Long.parseLong(l.split(" ")[1]))
          .min().orElseThrow(() -> new AssertionError("no kill event of " + id + " in:\n" + kills)) / 1_000_000;
      assertThat(killMs - stoppingAtMs.get(id)).as("task %s stopping this many ms before Docker signalled it", id)
          .isGreaterThan(1000);
    }
    awaitModel("2 new roll tasks running", Duration.ofSeconds(30), x -> x.containers().stream()
        .filter(c -> c.serviceId().equals(svc) && c.running() && !old.contains(c.containerId())).count() == 2);
  }

  // ---- helpers ------------------------------------------------------------------------------

  private String network(String name, String... opts) {
    List<String> argv = new ArrayList<>(List.of("network", "create", "-d", "overlay", "--attachable"));
    argv.addAll(List.of(opts));
    argv.add(name);
    String id = dockerd.docker(argv.toArray(String[]::new)).ok().out().strip();
    networks.add(id);
    return id;
  }

  private String service(String name, String... opts) {
    List<String> argv = new ArrayList<>(List.of("service", "create", "--detach", "--no-resolve-image", "--name", name));
    argv.addAll(List.of(opts));
    argv.addAll(List.of(Dockerd.IMAGE, "sleep", "3600"));
    String id = dockerd.docker(argv.toArray(String[]::new)).ok().out().strip();
    services.add(id);
    return id;
  }

  private String container(String name, String... opts) {
    List<String> argv = new ArrayList<>(List.of("run", "-d", "--name", name));
    argv.addAll(List.of(opts));
    argv.addAll(List.of(Dockerd.IMAGE, "sleep", "3600"));
    String id = dockerd.docker(argv.toArray(String[]::new)).ok().out().strip();
    containers.add(id);
    return id;
  }

  private JsonObject inspect(String kind, String id) {
    return new JsonArray(dockerd.docker(kind, "inspect", id).ok().out()).getJsonObject(0);
  }

  private ClusterModel model() {
    List<KeyValue> kvs = await(etcd.list(prefix + "/docker-data/")).kvs();
    return ClusterModel.of(schema, kvs);
  }

  private ClusterModel awaitModel(String what, Duration max, Predicate<ClusterModel> p) {
    long deadline = System.nanoTime() + max.toNanos();
    ClusterModel m = model();
    while (!p.test(m)) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("not within " + max.toSeconds() + " s: " + what + "; etcd has " + m
            + "\ndockerd log:\n" + dockerd.logTail());
      }
      sleep(200);
      m = model();
    }
    return m;
  }

  private static void eventually(String what, Duration max, java.util.function.BooleanSupplier p) {
    long deadline = System.nanoTime() + max.toNanos();
    while (!p.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("not within " + max.toSeconds() + " s: " + what);
      }
      sleep(300);
    }
  }

  private static void sleep(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError(e);
    }
  }

  private static <T> T await(io.vertx.core.Future<T> f) {
    try {
      return f.await(20, TimeUnit.SECONDS);
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }
}
