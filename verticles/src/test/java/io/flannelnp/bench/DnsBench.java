package io.flannelnp.bench;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Codecs;
import io.flannelnp.config.Config;
import io.flannelnp.dns.DnsMessage.EjectDns;
import io.flannelnp.dns.DnsMessage.InjectDns;
import io.flannelnp.dns.DnsVerticle;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ContainerRecord.Attachment;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.eventbus.DeliveryOptions;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The Java side of scripts/bench/dns-bench.sh.
 *
 * <pre>
 * DnsBench serve NETNS DIR    a DnsVerticle serving a generated cluster (DIR/hosts, DIR/queries)
 *                             injected into /var/run/netns/NETNS (or NETNS itself when it is a path,
 *                             e.g. /proc/PID/ns/net of a real container); prints READY, runs until
 *                             stdin closes
 * DnsBench memory COUNT STEM  injects into COUNT namespaces STEM-1..STEM-COUNT (which exist, lo up)
 *                             and prints the JVM's heap and RSS growth per injected container
 * </pre>
 *
 * The cluster state is served from memory on fnp.state.snapshot (no etcd): the DNS plane is what
 * is measured.
 */
public final class DnsBench {
  static final String NODE = "bench-node";
  static final String NET = "benchnet00000000000000000000001";
  static final String OVERLAY = "benchovl00000000000000000000002";

  private DnsBench() {}

  public static void main(String[] args) throws Exception {
    if (args.length == 3 && args[0].equals("serve")) {
      serve(args[1], Path.of(args[2]));
    } else if (args.length == 3 && args[0].equals("memory")) {
      memory(Integer.parseInt(args[1]), args[2]);
    } else {
      System.err.println("usage: DnsBench serve NETNS DIR | DnsBench memory COUNT STEM");
      System.exit(2);
    }
    System.exit(0);
  }

  /** 40 VIP services (4 tasks each), 10 DNSRR services (4 tasks each), 100 plain containers. */
  static Map<String, KeyValue> cluster(EtcdSchema schema, Map<String, List<String>> hosts) {
    Map<String, KeyValue> kvs = new LinkedHashMap<>();
    put(kvs, schema.dockerNetwork(NET), new DockerNetwork(NET, "bench", "flannel-np:latest", "fl-bench", "10.60.0.0/16")
        .toJson());
    put(kvs, schema.dockerNetwork(OVERLAY), new DockerNetwork(OVERLAY, "bench-overlay", "overlay", "", "10.61.0.0/16")
        .toJson());
    int host = 10;
    for (int s = 0; s < 50; s++) {
      boolean rr = s >= 40;
      String svc = (rr ? "rr" : "svc") + s;
      String vip = "10.60.0." + (100 + s);
      put(kvs, schema.dockerService("sid" + s), new ServiceRecord("sid" + s, svc, rr ? EndpointMode.DNSRR : EndpointMode.VIP,
          rr ? Map.of() : Map.of(NET, vip), Map.of()).toJson());
      if (!rr) {
        hosts.computeIfAbsent(svc, k -> new ArrayList<>()).add(vip);
      }
      for (int t = 1; t <= 4; t++) {
        String ip = "10.60." + (1 + host / 250) + "." + (1 + host % 250);
        host++;
        String id = String.format("%064x", (long) s * 100 + t);
        String task = svc + "." + t + ".task" + s + "x" + t;
        put(kvs, schema.dockerContainer("node-" + (t % 3), id), new ContainerRecord(id, task, id.substring(0, 12),
            "node-" + (t % 3), "sid" + s, svc, "task" + s + "x" + t, task, "running", "",
            Map.of(NET, new Attachment(ip, "", List.of(), ""))).toJson());
        hosts.computeIfAbsent(task, k -> new ArrayList<>()).add(ip);
        hosts.computeIfAbsent("tasks." + svc, k -> new ArrayList<>()).add(ip);
        if (rr) {
          hosts.computeIfAbsent(svc, k -> new ArrayList<>()).add(ip);
        }
      }
    }
    for (int c = 0; c < 100; c++) {
      String ip = "10.61.0." + (10 + c);
      String id = String.format("%064x", 900000L + c);
      put(kvs, schema.dockerContainer("node-1", id), new ContainerRecord(id, "app" + c, "app" + c, "node-1", "", "",
          "", "", "running", "", Map.of(OVERLAY, new Attachment(ip, "", List.of(), ""))).toJson());
      hosts.computeIfAbsent("app" + c, k -> new ArrayList<>()).add(ip);
    }
    return kvs;
  }

  static void put(Map<String, KeyValue> kvs, String key, String value) {
    kvs.put(key, new KeyValue(key, value, 1, 1, 1, 0));
  }

  /** The client container record of a sandbox, attached to both networks. */
  static void client(Map<String, KeyValue> kvs, EtcdSchema schema, String id, String sandbox, int n) {
    put(kvs, schema.dockerContainer(NODE, id), new ContainerRecord(id, "client-" + n, "client-" + n, NODE, "", "", "",
        "", "running", sandbox, Map.of(NET, new Attachment("10.60.200." + (n % 250 + 1), "ep-" + id, List.of(), ""),
        OVERLAY, new Attachment("10.61.200." + (n % 250 + 1), "", List.of(), ""))).toJson());
  }

  static Vertx vertx(Map<String, KeyValue> kvs) {
    Vertx vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    ClusterState state = new ClusterState(1, true, Map.copyOf(kvs));
    vertx.eventBus().consumer(Addresses.STATE_SNAPSHOT, m -> m.reply(state));
    return vertx;
  }

  static DnsVerticle dns() {
    Config config = Config.fromEnv(Map.of("ETCD_ENDPOINTS", "http://127.0.0.1:2379", "AVAILABLE_SUBNETS",
        "10.60.0.0/15", "NODE_NAME", NODE, "DNS_TTL", "600", "DNS_DOCKER_COMPATIBILITY_MODE", "true"), () -> NODE);
    // the resolver's own speed, from one client: no per-container budget (DNS_QUERY_RATE=0)
    return io.flannelnp.dns.TestSandboxes.verticle(config, new EtcdSchema("/bench"), 0);
  }

  static Ack inject(Vertx vertx, String id, String key, String ep) throws Exception {
    return (Ack) vertx.eventBus().request(Addresses.DNS_INJECT, new InjectDns(id, key, ep),
        new DeliveryOptions().setSendTimeout(120_000)).await(130, TimeUnit.SECONDS).body();
  }

  static void serve(String netns, Path dir) throws Exception {
    EtcdSchema schema = new EtcdSchema("/bench");
    Map<String, List<String>> hosts = new LinkedHashMap<>();
    Map<String, KeyValue> kvs = cluster(schema, hosts);
    String key = netns.startsWith("/") ? netns : "/var/run/netns/" + netns;
    client(kvs, schema, "c".repeat(64), key, 1);
    StringBuilder h = new StringBuilder();
    StringBuilder q = new StringBuilder();
    hosts.forEach((name, ips) -> {
      ips.forEach(ip -> h.append(ip).append(' ').append(name).append('\n'));
      q.append(name).append(" A\n");
    });
    Files.createDirectories(dir);
    Files.writeString(dir.resolve("hosts"), h);
    Files.writeString(dir.resolve("queries"), q);
    Vertx vertx = vertx(kvs);
    vertx.deployVerticle(dns()).await(30, TimeUnit.SECONDS);
    Thread.sleep(500); // the first pass: names and scope
    Ack ack = inject(vertx, "c".repeat(64), key, "ep-bench");
    System.out.println("READY " + ack.detail() + "; " + hosts.size() + " names");
    System.out.flush();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    while (in.readLine() != null) {
      // until stdin closes
    }
    vertx.close().await(30, TimeUnit.SECONDS);
    System.out.println("STOPPED");
  }

  static void memory(int count, String stem) throws Exception {
    EtcdSchema schema = new EtcdSchema("/bench");
    Map<String, KeyValue> kvs = cluster(schema, new HashMap<>());
    for (int i = 1; i <= count; i++) {
      // no SandboxKey in the records: only the InjectDns requests below inject
      client(kvs, schema, String.format("%064x", 5_000_000L + i), "", i);
    }
    Vertx vertx = vertx(kvs);
    vertx.deployVerticle(dns()).await(30, TimeUnit.SECONDS);
    Thread.sleep(500);
    // warm-up: the first injections load classes and fill the allocators' caches; the baseline
    // is taken after one full inject/eject round on a few namespaces
    int warm = Math.min(10, count);
    for (int i = 1; i <= warm; i++) {
      inject(vertx, String.format("%064x", 5_000_000L + i), "/var/run/netns/" + stem + "-" + i, "ep-" + i);
    }
    for (int i = 1; i <= warm; i++) {
      vertx.eventBus().request(Addresses.DNS_EJECT, new EjectDns("/var/run/netns/" + stem + "-" + i, ""),
          new DeliveryOptions().setSendTimeout(60_000)).await(70, TimeUnit.SECONDS);
    }
    // two halves: the growth over the second half is the marginal cost of one more container,
    // free of what the first injections create once (threads, JIT code, heap regions)
    long heap0 = heap();
    long rss0 = rss();
    long slab0 = slab();
    int half = count / 2;
    long t0 = System.nanoTime();
    int ok = injectRange(vertx, stem, 1, half);
    long heapA = heap();
    long rssA = rss();
    long slabA = slab();
    ok += injectRange(vertx, stem, half + 1, count);
    long injectMs = (System.nanoTime() - t0) / 1_000_000;
    Thread.sleep(1000);
    long heap1 = heap();
    long rss1 = rss();
    long slab1 = slab();
    int second = count - half;
    System.out.printf("MEMORY injected=%d of %d in %d ms; marginal per container (second %d): heap %.1f KB, "
            + "RSS %.1f KB, kernel slab %.1f KB; average over all %d: heap %.1f KB, RSS %.1f KB, kernel slab %.1f KB"
            + " (heap %d -> %d KB, RSS %d -> %d KB)%n",
        ok, count, injectMs, second, (heap1 - heapA) / 1024.0 / second, (rss1 - rssA) / 1024.0 / second,
        (slab1 - slabA) / 1024.0 / second, count, (heap1 - heap0) / 1024.0 / count, (rss1 - rss0) / 1024.0 / count,
        (slab1 - slab0) / 1024.0 / count, heap0 / 1024, heap1 / 1024, rss0 / 1024, rss1 / 1024);
    long t1 = System.nanoTime();
    List<Future<?>> ejects = new ArrayList<>();
    for (int i = 1; i <= count; i++) {
      ejects.add(vertx.eventBus().request(Addresses.DNS_EJECT, new EjectDns("/var/run/netns/" + stem + "-" + i, ""),
          new DeliveryOptions().setSendTimeout(300_000)));
    }
    Future.all(ejects).await(320, TimeUnit.SECONDS);
    System.out.printf("EJECTED %d in %d ms%n", count, (System.nanoTime() - t1) / 1_000_000);
    vertx.close().await(30, TimeUnit.SECONDS);
  }

  /** InjectDns for STEM-from..STEM-to, all at once; the number acknowledged as injected. */
  static int injectRange(Vertx vertx, String stem, int from, int to) throws Exception {
    List<Future<?>> acks = new ArrayList<>();
    for (int i = from; i <= to; i++) {
      acks.add(vertx.eventBus().request(Addresses.DNS_INJECT, new InjectDns(String.format("%064x", 5_000_000L + i),
          "/var/run/netns/" + stem + "-" + i, "ep-" + i), new DeliveryOptions().setSendTimeout(300_000)));
    }
    Future.join(acks).otherwiseEmpty().await(320, TimeUnit.SECONDS);
    int ok = 0;
    Map<String, Integer> other = new LinkedHashMap<>();
    for (Future<?> f : acks) {
      Object body = f.succeeded() ? ((io.vertx.core.eventbus.Message<?>) f.result()).body() : null;
      if (body instanceof Ack a && a.detail().startsWith("injected")) {
        ok++;
      } else {
        String why = f.succeeded() ? String.valueOf(body) : String.valueOf(f.cause().getMessage());
        other.merge(why.replaceAll("[0-9]+", "N"), 1, Integer::sum);
      }
    }
    other.forEach((why, n) -> System.err.println("not injected (" + n + "): " + why));
    return ok;
  }

  /** Kernel slab memory (sockets, nft objects, and whatever else the host does meanwhile). */
  static long slab() throws IOException {
    for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
      if (line.startsWith("Slab:")) {
        return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
      }
    }
    return 0;
  }

  static long heap() throws InterruptedException {
    long best = Long.MAX_VALUE;
    for (int i = 0; i < 3; i++) {
      System.gc();
      Thread.sleep(200);
      best = Math.min(best, ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed());
    }
    return best;
  }

  static long rss() throws IOException {
    for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
      if (line.startsWith("VmRSS:")) {
        return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
      }
    }
    return 0;
  }
}
