package io.flannelnp.security;

import static io.flannelnp.testing.PluginClient.j;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.Daemon;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.log.Logging;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Lab;
import io.flannelnp.testing.Netns;
import io.flannelnp.testing.PluginClient;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

/**
 * What the attacks of the security suite run against: a real etcd, and the real daemon
 * in-process with its data plane in a network namespace of its own (its "host"), its plugin
 * socket called as dockerd calls it, its admin server on loopback, its log captured as an
 * operator reads it (text format). {@link #close()} leaves nothing: daemon, namespaces, etcd keys,
 * files.
 */
final class SecurityLab implements AutoCloseable {
  static final String GLOBAL = "FlannelGlobal";
  static final String LOCAL = "FlannelLocal";
  static final String GW_OPT = "com.docker.network.gateway";

  final String run = HexFormat.of().formatHex(java.nio.ByteBuffer.allocate(4).putInt((int) System.nanoTime()).array())
      .substring(2);
  final String prefix = "/fns-" + run;
  final EtcdSchema schema = new EtcdSchema(prefix);
  final String node;
  final Netns ns = new Netns();
  final String host;
  final EtcdServer etcdServer;
  final Vertx vertx;
  final EtcdStore etcd;
  final Path dir;
  final Map<String, String> env;
  final int adminPort;
  final PluginClient plugin;
  final ByteArrayOutputStream log = new ByteArrayOutputStream();
  Daemon daemon;

  /** Everything but the daemon; {@link #start} it after adding to {@link #env}. */
  SecurityLab(String node) throws Exception {
    this.node = node;
    etcdServer = EtcdServer.start();
    vertx = Vertx.vertx();
    etcd = new EtcdStore(vertx, etcdServer.endpoints(), Optional.empty(), Duration.ofSeconds(5));
    dir = Files.createTempDirectory("fns-");
    host = ns.add("host");
    ns.ipBatch(host, List.of("link add eth0 type veth peer name eth0p", "link set dev eth0p up",
        "addr add 198.19.8.1/24 dev eth0", "link set dev eth0 up")).ok();
    adminPort = EtcdServer.freePort();
    env = Lab.daemonEnv(etcdServer, prefix, "10.52.0.0/16", dir, node, "-public-ip=198.19.8.1,-iface=eth0");
    env.put("ADMIN_LISTEN", "127.0.0.1:" + adminPort);
    plugin = new PluginClient(Lab.pluginSocket(dir, node));
  }

  /** Starts the daemon, logging (text format, info) into {@link #log()} as well as to stderr. */
  SecurityLab start() throws Exception {
    PrintStream both = new PrintStream(new OutputStream() {
      @Override
      public void write(int b) {
        synchronized (log) {
          log.write(b);
        }
        System.err.write(b);
      }

      @Override
      public void write(byte[] b, int off, int len) {
        synchronized (log) {
          log.write(b, off, len);
        }
        System.err.write(b, off, len);
      }
    }, true, StandardCharsets.UTF_8);
    Logging.configure("info", "text", both);
    daemon = Lab.startDaemon(env, host);
    return this;
  }

  String log() {
    synchronized (log) {
      return log.toString(StandardCharsets.UTF_8);
    }
  }

  @Override
  public void close() throws Exception {
    try {
      if (daemon != null) {
        daemon.stop(10, TimeUnit.SECONDS);
      }
    } finally {
      Logging.configure("warn");
      ns.close();
      List<KeyValue> left = Lab.closeEtcd(etcdServer, vertx, etcd, prefix);
      Lab.deleteDir(dir);
      assertThat(left).as("etcd keys left").isEmpty();
    }
  }

  // ---- the plugin and etcd, as Docker and the other nodes use them ------------------------------

  record Network(String fid, String netId, String subnet, String gateway) {}

  /** docker network create, as dockerd calls the plugin, and the network record the Docker side writes. */
  Network createNetwork(String fid, String name) throws Exception {
    JsonObject pool = plugin.ok("/IpamDriver.RequestPool", j("AddressSpace", GLOBAL, "Pool", "", "SubPool", "",
        "Options", j("flannel-id", fid), "V6", false));
    String subnet = pool.getString("Pool");
    String gw = plugin.ok("/IpamDriver.RequestAddress", j("PoolID", pool.getString("PoolID"), "Address", "",
        "Options", j("flannel-id", fid, "RequestAddressType", GW_OPT))).getString("Address");
    String netId = ("n" + fid + "0".repeat(64)).substring(0, 25);
    JsonObject generic = plugin.ok("/NetworkDriver.AllocateNetwork", j("NetworkID", netId, "Options", j(),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "", "Pool", subnet, "Gateway", gw)), "IPv6Data", null))
        .getJsonObject("Options");
    plugin.ok("/IpamDriver.RequestPool", j("AddressSpace", LOCAL, "Pool", subnet, "SubPool", "",
        "Options", j("flannel-id", fid), "V6", false));
    plugin.ok("/NetworkDriver.CreateNetwork", j("NetworkID", netId,
        "Options", j("com.docker.network.generic", generic, "com.docker.network.enable_ipv6", false),
        "IPv4Data", new JsonArray().add(j("AddressSpace", LOCAL, "Pool", subnet, "Gateway", gw)),
        "IPv6Data", new JsonArray()));
    put(schema.dockerNetwork(netId), new DockerNetwork(netId, name, "flannel-np", fid, subnet).toJson());
    return new Network(fid, netId, subnet, gw);
  }

  /** A VIP the leader asks for (cluster range), without its prefix. */
  String vip(Network n) throws Exception {
    return bare(plugin.ok("/IpamDriver.RequestAddress", j("PoolID", GLOBAL + "/" + n.fid(), "Address", "",
        "Options", j("flannel-id", n.fid(), "com.docker.network.ipam.serial", "true"))).getString("Address"));
  }

  /** A container address of this node's block, without its prefix. */
  String address(Network n) throws Exception {
    return bare(plugin.ok("/IpamDriver.RequestAddress", j("PoolID", LOCAL + "/" + n.fid(), "Address", "",
        "Options", j())).getString("Address"));
  }

  static String bare(String cidr) {
    return cidr.substring(0, cidr.indexOf('/'));
  }

  long put(String key, String value) throws Exception {
    return etcd.put(key, value).await(5, TimeUnit.SECONDS);
  }

  long delete(String key) throws Exception {
    etcd.delete(key).await(5, TimeUnit.SECONDS);
    return etcd.list(prefix + "/").await(5, TimeUnit.SECONDS).revision();
  }

  /** Every key and value under the prefix: what a refused call must leave as it was. */
  Map<String, String> etcdState() throws Exception {
    Map<String, String> m = new TreeMap<>();
    for (KeyValue kv : etcd.list(prefix + "/").await(5, TimeUnit.SECONDS).kvs()) {
      m.put(kv.key(), kv.value());
    }
    return m;
  }

  /** The links of the daemon's host namespace (name and kind): what a refused call must not change. */
  List<String> links() {
    List<String> out = new ArrayList<>();
    for (Object o : new JsonArray(ns.ip(host, "-j", "-d", "link", "show").ok().out())) {
      JsonObject l = (JsonObject) o;
      JsonObject info = l.getJsonObject("linkinfo", new JsonObject());
      out.add(l.getString("ifname") + ":" + info.getString("info_kind", "") + ":" + l.getString("master", ""));
    }
    return out;
  }

  /** The daemon's answer for an admin path, as {@code status body}, from a plain HTTP/1.1 request. */
  HttpAnswer admin(String path, Map<String, String> headers) throws IOException {
    return rawHttp(adminPort, "GET " + path, headers);
  }

  record HttpAnswer(int status, String head, String body) {}

  /** One HTTP/1.1 request over a socket: any Host and Origin a browser may send, no client-side rules. */
  static HttpAnswer rawHttp(int port, String requestLine, Map<String, String> headers) throws IOException {
    try (Socket s = new Socket("127.0.0.1", port)) {
      s.setSoTimeout(10_000);
      StringBuilder req = new StringBuilder(requestLine).append(" HTTP/1.1\r\n");
      if (!headers.containsKey("Host")) {
        req.append("Host: 127.0.0.1:").append(port).append("\r\n");
      }
      headers.forEach((k, v) -> req.append(k).append(": ").append(v).append("\r\n"));
      req.append("Connection: close\r\n\r\n");
      s.getOutputStream().write(req.toString().getBytes(StandardCharsets.ISO_8859_1));
      String all = new String(s.getInputStream().readAllBytes(), StandardCharsets.ISO_8859_1);
      int end = all.indexOf("\r\n\r\n");
      String head = end < 0 ? all : all.substring(0, end);
      String body = end < 0 ? "" : all.substring(end + 4);
      if (head.toLowerCase(java.util.Locale.ROOT).contains("transfer-encoding: chunked")) {
        StringBuilder b = new StringBuilder();
        int i = 0;
        while (i < body.length()) {
          int nl = body.indexOf("\r\n", i);
          int n = Integer.parseInt(body.substring(i, nl).split(";")[0].strip(), 16);
          if (n == 0) {
            break;
          }
          b.append(body, nl + 2, nl + 2 + n);
          i = nl + 2 + n + 2;
        }
        body = b.toString();
      }
      int status = Integer.parseInt(head.split(" ", 3)[1]);
      return new HttpAnswer(status, head, body);
    }
  }

  /** A sample's value on /metrics (by name and labels as Prometheus prints them); 0 if absent. */
  double metric(String sample, String token) throws IOException {
    HttpAnswer a = admin("/metrics", token == null ? Map.of() : Map.of("Authorization", "Bearer " + token));
    assertThat(a.status()).as("/metrics").isEqualTo(200);
    return a.body().lines().filter(l -> l.startsWith(sample + " ")).findFirst()
        .map(l -> Double.parseDouble(l.substring(sample.length() + 1).strip())).orElse(0.0);
  }

  /** The daemon's /health as JSON. */
  JsonObject health(String token) throws IOException {
    HttpAnswer a = admin("/health", token == null ? Map.of() : Map.of("Authorization", "Bearer " + token));
    assertThat(a.status()).as("/health " + a.body()).isEqualTo(200);
    return new JsonObject(a.body());
  }
}
