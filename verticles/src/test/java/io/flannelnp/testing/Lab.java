package io.flannelnp.testing;

import io.flannelnp.Daemon;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.flannel.Kernel;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A multi-host lab in network namespaces, the same plumbing as scripts/lab.sh and
 * ../shared/lab (nothing in the root namespace):
 *
 * <pre>
 *  netns &lt;stem&gt;-infra:  bridge br0 198.18.0.1/24   ("the outside": what egress reaches)
 *        │ veth v-hI (infra side, on br0)
 *  netns &lt;stem&gt;-hI:     eth0 198.18.0.(10+I)/24, no default route, ip_forward=1
 *                        docker_gwbridge 172.18.0.1/16 with Docker's masquerade rule
 *                        (table ip fnplab-docker), as dockerd makes it for overlay-style networks
 * </pre>
 *
 * A "container" is one more namespace: its eth0 is the veth the plugin's Join names, moved in
 * and configured from the Join answer as libnetwork does, and its eth1 sits on the host's
 * docker_gwbridge with the default route, as Docker adds it when Join returns no gateway.
 * {@link #close()} deletes every namespace, which removes every link, route and nft table in them.
 */
public final class Lab implements AutoCloseable {
  public static final String NET = "198.18.0";
  public static final String INFRA_IP = NET + ".1";
  public static final String GWBRIDGE = "docker_gwbridge";
  public static final String GWBRIDGE_IP = "172.18.0.1";

  public final Netns ns = new Netns();
  public final String infra;
  private final List<String> hosts = new ArrayList<>();

  public Lab() {
    infra = ns.add("infra");
    ns.ipBatch(infra, List.of("link add name br0 type bridge", "addr add " + INFRA_IP + "/24 dev br0",
        "link set dev br0 up")).ok();
  }

  /** The underlay address of host I. */
  public static String hostIp(int i) {
    return NET + "." + (10 + i);
  }

  /** Adds host I: its namespace, its link to the infra bridge, forwarding, docker_gwbridge. */
  public String addHost(int i) {
    String h = ns.add("h" + i);
    hosts.add(h);
    ns.ipBatch(infra, List.of("link add name v-h" + i + " type veth peer name eth0 netns " + h,
        "link set dev v-h" + i + " master br0", "link set dev v-h" + i + " up")).ok();
    ns.ipBatch(h, List.of("addr add " + hostIp(i) + "/24 dev eth0", "link set dev eth0 up",
        "link add name " + GWBRIDGE + " type bridge", "addr add " + GWBRIDGE_IP + "/16 dev " + GWBRIDGE,
        "link set dev " + GWBRIDGE + " up")).ok();
    ns.exec(h, "sysctl", "-qw", "net.ipv4.ip_forward=1").ok();
    // Docker's rule for docker_gwbridge: masquerade what leaves by any other interface
    Netns.Result r = Netns.run(List.of("ip", "netns", "exec", h, "nft", "-f", "-"),
        "table ip fnplab-docker {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n"
            + "  ip saddr 172.18.0.0/16 oifname != \"" + GWBRIDGE + "\" masquerade\n }\n}\n");
    r.ok();
    return h;
  }

  /** Deletes a host's namespace at once (a host gone for good); its infra-side veth goes with it. */
  public void removeHost(String h) {
    ns.delete(h);
    hosts.remove(h);
  }

  public List<String> hosts() {
    return List.copyOf(hosts);
  }

  /**
   * The kernel half of attaching a container the way Docker does it after Join, for many at once:
   * each {@code c} names a container namespace (already added), the host it runs on, the veth
   * Join named ({@code SrcName}), its address and the static route from the answers, and its
   * docker_gwbridge address.
   */
  public record Plug(String container, String host, String srcName, String cidr, String routeDst, String nextHop,
      String gwAddress, String gwVeth) {}

  public void plug(List<Plug> plugs) {
    java.util.Map<String, List<String>> perHost = new java.util.LinkedHashMap<>();
    for (Plug p : plugs) {
      List<String> l = perHost.computeIfAbsent(p.host(), k -> new ArrayList<>());
      l.add("link set dev " + p.srcName() + " netns " + p.container());
      l.add("link add name " + p.gwVeth() + " type veth peer name eth1 netns " + p.container());
      l.add("link set dev " + p.gwVeth() + " master " + GWBRIDGE);
      l.add("link set dev " + p.gwVeth() + " up");
    }
    perHost.forEach((h, lines) -> ns.ipBatch(h, lines).ok());
    for (Plug p : plugs) {
      ns.ipBatch(p.container(), List.of("link set dev lo up", "link set dev " + p.srcName() + " name eth0",
          "addr add " + p.cidr() + " dev eth0", "link set dev eth0 up",
          "route add " + p.routeDst() + " via " + p.nextHop() + " dev eth0",
          "addr add " + p.gwAddress() + "/16 dev eth1", "link set dev eth1 up",
          "route add default via " + GWBRIDGE_IP + " dev eth1")).ok();
    }
  }

  @Override
  public void close() {
    ns.close();
  }

  // ---- a host's in-process daemon, as these labs and the replay tests run it -------------------

  /**
   * Host I of a lab with its own daemon in this JVM, as dockerd would run the plugin there: its
   * namespace (added here), underlay address, plugin client and the daemon's settings (the pool
   * 10.50.0.0/16; -public-ip: the lease's PublicIP; -iface: the VXLAN device's uplink in the host
   * namespace). A test adds to {@code env} before {@link #start}.
   */
  public static class DaemonHost {
    public final int i;
    public final String name;
    public final String ns;
    public final String ip;
    public final PluginClient client;
    public final Map<String, String> env;
    public Daemon daemon;

    public DaemonHost(Lab lab, int i, EtcdServer etcd, String prefix, Path dir) {
      this.i = i;
      this.name = "h" + i;
      this.ns = lab.addHost(i);
      this.ip = hostIp(i);
      this.client = new PluginClient(pluginSocket(dir, name));
      this.env = daemonEnv(etcd, prefix, "10.50.0.0/16", dir, name, "-public-ip=" + ip + ",-iface=eth0");
    }

    public void start() throws Exception {
      daemon = startDaemon(env, ns);
    }

    public void stop() throws Exception {
      if (daemon != null) {
        daemon.stop(8, TimeUnit.SECONDS);
        daemon = null;
      }
    }

    /** A plugin call that must succeed ({@link PluginClient#ok}). */
    public JsonObject ok(String path, JsonObject body) throws IOException {
      return client.ok(path, body);
    }
  }

  /**
   * The settings a test's in-process daemon starts with, as the plugin's settings give them: this
   * etcd and prefix, the pool, its plugin socket ({@link #pluginSocket}), no dockerd, its node name
   * and DEFAULT_FLANNEL_OPTIONS. Mutable: a test adds what its scenario needs (ADMIN_LISTEN,
   * SUBNET_LEASE_TTL, …).
   */
  public static Map<String, String> daemonEnv(EtcdServer etcd, String prefix, String subnets, Path dir, String node,
      String flannelOptions) {
    Map<String, String> env = new HashMap<>();
    env.put("ETCD_ENDPOINTS", etcd.endpoint());
    env.put("ETCD_PREFIX", prefix);
    env.put("AVAILABLE_SUBNETS", subnets);
    env.put("PLUGIN_SOCKET", pluginSocket(dir, node).toString());
    env.put("DOCKER_SOCKET", dir.resolve("no-docker.sock").toString());
    env.put("NODE_NAME", node);
    env.put("DEFAULT_FLANNEL_OPTIONS", flannelOptions);
    env.put("GC_GRACE", "5"); // a lab's gone host is collected within its tests
    return env;
  }

  /** Where node's daemon listens for the plugin calls ({@link #daemonEnv}'s PLUGIN_SOCKET). */
  public static Path pluginSocket(Path dir, String node) {
    return dir.resolve(node + ".sock");
  }

  /**
   * A daemon in this JVM with its kernel work in namespace {@code ns}, started (all verticles
   * deployed); one that fails to start is stopped again, so nothing of it is left running.
   */
  public static Daemon startDaemon(Map<String, String> env, String ns) throws Exception {
    Daemon d = new Daemon(Config.fromEnv(env), Kernel.inNetns(ns));
    try {
      d.start().await(30, TimeUnit.SECONDS);
    } catch (Exception e) {
      d.stop(8, TimeUnit.SECONDS);
      throw e;
    }
    return d;
  }

  // ---- cleanup --------------------------------------------------------------------------------

  /**
   * Ends a test's etcd: deletes every key under {@code prefix} (if the server still runs), then
   * closes the client, its Vert.x and the server, even if the delete failed. Returns the keys still
   * there after the delete: none, once the daemons are gone. Any argument may be null (a set-up
   * that failed half way).
   */
  public static List<KeyValue> closeEtcd(EtcdServer server, Vertx vertx, EtcdStore etcd, String prefix)
      throws Exception {
    List<KeyValue> left = List.of();
    try {
      if (etcd != null && server != null && server.isRunning()) {
        etcd.deletePrefix(prefix + "/").await(5, TimeUnit.SECONDS);
        left = etcd.list(prefix + "/").await(5, TimeUnit.SECONDS).kvs();
      }
    } finally {
      if (etcd != null) {
        etcd.close();
      }
      if (vertx != null) {
        vertx.close().await(5, TimeUnit.SECONDS);
      }
      if (server != null) {
        server.close();
      }
    }
    return left;
  }

  /** The names in /tmp that start with {@code prefix}: what a test must not leave behind there. */
  public static java.util.Set<String> tmpEntries(String prefix) throws IOException {
    try (Stream<Path> l = Files.list(Path.of("/tmp"))) {
      return l.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(prefix))
          .collect(java.util.stream.Collectors.toSet());
    }
  }

  /** Removes a test's temporary directory and all in it (sockets, scripts, logs). */
  public static void deleteDir(Path dir) throws IOException {
    try (Stream<Path> s = Files.walk(dir)) {
      s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    }
  }
}
