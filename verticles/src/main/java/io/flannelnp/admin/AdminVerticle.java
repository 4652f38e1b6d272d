package io.flannelnp.admin;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.bus.Observed.ReconcileReport;
import io.flannelnp.config.Config.HostPort;
import io.flannelnp.docker.DockerMessage.DockerStatus;
import io.flannelnp.etcd.EtcdMessage.EtcdStatus;
import io.flannelnp.etcd.EtcdMessage.KeyChanges;
import io.micrometer.core.instrument.Gauge;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import io.vertx.core.http.HttpServer;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.bridge.PermittedOptions;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.StaticHandler;
import io.vertx.ext.web.handler.sockjs.BridgeEvent;
import io.vertx.ext.web.handler.sockjs.SockJSBridgeOptions;
import io.vertx.ext.web.handler.sockjs.SockJSHandler;
import io.vertx.ext.web.handler.sockjs.SockJSHandlerOptions;
import io.vertx.ext.web.handler.sockjs.SockJSSocket;
import io.vertx.ext.web.handler.sockjs.Transport;
import io.vertx.micrometer.PrometheusScrapingHandler;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.LongSupplier;

/**
 * The admin server (ADMIN_LISTEN). {@code /health} (liveness) and {@code /health/ready}
 * (readiness) with reasons; {@code /metrics} in Prometheus text; {@code /console}, a static page
 * that streams the bus over a SockJS bridge. Everything is built from what the planes publish.
 *
 * <p>The bridge is outbound only and permits exactly the {@link #CONSOLE} addresses: bus bodies are
 * records passed by reference, so this verticle republishes each one as JSON there
 * ({@link #CONSOLE}), and only while a console has registered for it. With ADMIN_TOKEN set every
 * path needs it (header {@code Authorization: Bearer T}, or {@code ?token=T} once, which sets an
 * HttpOnly same-site cookie so the console's script, style and websocket requests carry it).
 *
 * <p><b>Browsers.</b> A web page the operator opens elsewhere must not read this server, whatever
 * the token setup: a request with an {@code Origin} (every websocket and cross-origin request a
 * browser makes) must come from this server's own origin or one of ADMIN_ORIGINS. Without a token
 * (ADMIN_INSECURE_LOOPBACK), every request's {@code Host} must also name this server (an address
 * literal, localhost, the ADMIN_LISTEN host or an ADMIN_ORIGINS host), so a DNS name rebound to
 * 127.0.0.1 reads nothing; with a token, the token does that (a rebinding page has neither the
 * token nor its cookie, which belongs to the real name), and scrapers may use any name. Of SockJS
 * only the raw websocket endpoint is served: no transport that answers cross-origin reads, no
 * iframe.
 *
 * <p><b>Resources.</b> At most {@link #MAX_SESSIONS} consoles at once; a console that stops
 * reading is closed once {@link #WRITE_QUEUE_BYTES} wait to be written to it, instead of being
 * buffered for without bound.
 */
public final class AdminVerticle extends VerticleBase {
  private static final java.util.logging.Logger LOG = java.util.logging.Logger.getLogger(AdminVerticle.class.getName());
  /** Bus address → the console address its JSON form is published on. */
  public static final Map<String, String> CONSOLE = Map.of(
      Addresses.DOCKER_EVENTS, "console.docker.events",
      Addresses.DOCKER_STATUS, "console.docker.status",
      Addresses.ETCD_CHANGES, "console.etcd.changes",
      Addresses.ETCD_STATUS, "console.etcd.status",
      Addresses.RECONCILE_REPORT, "console.reconcile.report",
      Addresses.KERNEL_BATCH, "console.kernel.batch",
      Addresses.PROBLEMS, "console.problems");

  /** The cluster page's address: the cluster as `flannel-np status` shows it, from the watched etcd state. */
  public static final String CLUSTER = "console.cluster";
  /** How often the cluster page gets the view (when etcd changed, and every third time regardless). */
  static final long CLUSTER_PERIOD_MS = 1000;

  private static final String COOKIE = "fnp-admin-token";
  /** Consoles open at once; one more is closed at once (each costs a copy of every message). */
  static final int MAX_SESSIONS = 16;
  /**
   * Bytes queued for one console before it counts as not reading and is closed: room for a full
   * load-balancer sync at 20,000 services (about 2 MB) and the messages around it.
   */
  static final int WRITE_QUEUE_BYTES = 8 << 20;
  /** The one SockJS path the console uses: the bridge's raw websocket. */
  private static final String WEBSOCKET = "/console/eventbus/websocket";

  private final HostPort listen;
  private final String token;
  private final List<String> origins;
  private final java.util.Set<String> hosts = new java.util.HashSet<>();
  /** Open consoles and the console addresses each has registered for (the verticle's context). */
  private final Map<SockJSSocket, java.util.Set<String>> sessions = new java.util.HashMap<>();
  private final List<String> planes;
  private final LongSupplier etcdHead;
  private EtcdStatus etcd;
  private DockerStatus docker;
  private final Map<String, ReconcileReport> lastOk = new TreeMap<>();
  private final Map<String, ReconcileReport> last = new TreeMap<>();
  private final Map<String, Long> lastOkAt = new TreeMap<>();
  /** What each source last reported wrong (see {@link io.flannelnp.bus.Observed.Problems}). */
  private final io.flannelnp.etcd.EtcdSchema schema;
  private long clusterRevision = -1;
  private io.flannelnp.status.ClusterStatus clusterView;
  private long clusterQuiet;
  private final Map<String, List<String>> problems = new java.util.concurrent.ConcurrentSkipListMap<>();
  private final AtomicLong watchRevision = new AtomicLong();
  private boolean listedOnce;
  private HttpServer server;

  /**
   * {@code origins}: ADMIN_ORIGINS, normalised; {@code etcdHead}: the newest revision any etcd
   * answer carried (for the watch lag).
   */
  public AdminVerticle(HostPort listen, String token, List<String> origins, List<String> planes,
      LongSupplier etcdHead) {
    this(listen, token, origins, planes, etcdHead, null);
  }

  /** {@code schema}: where the cluster's records are, for /health's one-line view of the cluster (null: none). */
  public AdminVerticle(HostPort listen, String token, List<String> origins, List<String> planes,
      LongSupplier etcdHead, io.flannelnp.etcd.EtcdSchema schema) {
    this.schema = schema;
    this.listen = listen;
    this.token = token;
    this.origins = List.copyOf(origins);
    this.planes = planes;
    this.etcdHead = etcdHead;
    hosts.add("localhost");
    hosts.add(listen.host().toLowerCase(java.util.Locale.ROOT));
    for (String o : origins) {
      hosts.add(hostName(o.substring(o.indexOf("://") + 3)));
    }
  }

  @Override
  public Future<?> start() {
    var bus = vertx.eventBus();
    bus.<EtcdStatus>consumer(Addresses.ETCD_STATUS, m -> {
      if (etcd != null && !etcd.reachable() && m.body().reachable()) {
        Metrics.counter("fnp_etcd_reconnects", "etcd became reachable again after an outage").increment();
      }
      etcd = m.body();
    });
    bus.<DockerStatus>consumer(Addresses.DOCKER_STATUS, m -> docker = m.body());
    bus.<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, m -> report(m.body()));
    bus.<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> batch(m.body()));
    bus.<io.flannelnp.bus.Observed.Problems>consumer(Addresses.PROBLEMS, m -> {
      String source = m.body().source();
      if (problems.put(source, m.body().problems()) == null) { // one gauge per source, registered once
        Gauge.builder("fnp_problems", problems, ps -> ps.getOrDefault(source, List.of()).size())
            .description("problems a source reports now (malformed records, two owners, ...)")
            .tag("source", source).register(Metrics.REGISTRY);
      }
    });
    bus.<KeyChanges>consumer(Addresses.ETCD_CHANGES, m -> {
      watchRevision.accumulateAndGet(m.body().revision(), Math::max);
      if (m.body().resync()) {
        if (listedOnce) {
          Metrics.counter("fnp_etcd_watch_relists", "etcd watch re-listed the prefix (compaction or reconnect)")
              .increment();
        }
        listedOnce = true;
      }
    });
    Gauge.builder("fnp_etcd_watch_lag_revisions", () -> {
      long w = watchRevision.get();
      return w == 0 ? 0 : Math.max(0, etcdHead.getAsLong() - w);
    }).description("revisions etcd is ahead of what the watch delivered").register(Metrics.REGISTRY);
    Gauge.builder("fnp_etcd_watch_revision", watchRevision::get).description("newest revision the watch delivered")
        .register(Metrics.REGISTRY);
    CONSOLE.forEach((from, to) -> bus.consumer(from, m -> {
      if (listened(to)) { // the JSON form costs reflection over every record: only for a console
        Metrics.counter("fnp_console_messages", "bus messages converted and sent to the consoles").increment();
        bus.publish(to, BusJson.of(m.body()));
      }
    }));

    if (schema != null) {
      vertx.setPeriodic(CLUSTER_PERIOD_MS, id -> publishCluster());
    }

    Router router = Router.router(vertx);
    router.route().handler(this::guard);
    router.route().handler(this::authorize);
    router.get("/health").handler(rc -> withCluster(health()).onComplete(h -> json(rc, 200, h.result())));
    router.get("/health/ready").handler(rc -> {
      JsonObject h = health();
      json(rc, h.getBoolean("ready") ? 200 : 503, h);
    });
    router.get("/metrics").handler(PrometheusScrapingHandler.create(Metrics.REGISTRY));
    // outbound only, exactly these addresses; nothing inbound (the bridge denies what is not listed)
    SockJSBridgeOptions bridge = new SockJSBridgeOptions();
    CONSOLE.values().forEach(a -> bridge.addOutboundPermitted(new PermittedOptions().setAddress(a)));
    bridge.addOutboundPermitted(new PermittedOptions().setAddress(CLUSTER));
    SockJSHandlerOptions sockjs = new SockJSHandlerOptions();
    for (Transport t : Transport.values()) {
      if (t != Transport.WEBSOCKET) {
        sockjs.addDisabledTransport(t.name()); // the others answer cross-origin reads with credentials
      }
    }
    // only the raw websocket: not SockJS's /info (CORS), iframe page or session websocket either
    router.route("/console/eventbus/*").handler(rc -> {
      if (rc.request().path().equals(WEBSOCKET)) {
        rc.next();
      } else {
        rc.response().setStatusCode(404).end("the console speaks the raw websocket " + WEBSOCKET + " only\n");
      }
    });
    router.route("/console/eventbus/*").subRouter(SockJSHandler.create(vertx, sockjs).bridge(bridge, this::bridgeEvent));
    router.get("/console").handler(rc -> {
      if (rc.request().path().endsWith("/")) {
        rc.next(); // vertx-web matches "/console" for "/console/" too
      } else {
        rc.redirect("/console/" + (rc.request().query() == null ? "" : "?" + rc.request().query()));
      }
    });
    // a sub-router, so the static handler sees paths below /console (its mount point)
    Router page = Router.router(vertx);
    page.route().handler(StaticHandler.create("console").setCachingEnabled(false));
    router.route("/console/*").subRouter(page);
    server = vertx.createHttpServer().requestHandler(router);
    return server.listen(listen.port(), listen.host());
  }

  /**
   * Refuses what a browser sends on behalf of a page that is not this server's: an {@code Origin}
   * that is not this server's own or one of ADMIN_ORIGINS (cross-origin reads and websockets),
   * and, without a token, a {@code Host} that is not one of this server's names (DNS rebinding).
   * Clients that are not browsers send no Origin; HTTP/1.0 may send no Host.
   */
  private void guard(RoutingContext rc) {
    String host = rc.request().getHeader("Host");
    if (host != null && token.isEmpty() && !hostAllowed(host)) {
      refuse(rc, "Host '" + clip(host) + "' is not a name of this admin server; give the browser its address, localhost,"
          + " or a host of ADMIN_ORIGINS");
      return;
    }
    String origin = rc.request().getHeader("Origin");
    if (origin != null && !originAllowed(origin, host)) {
      refuse(rc, "Origin '" + clip(origin) + "' may not read the admin server; open the console from the server's own"
          + " address, or list the origin in ADMIN_ORIGINS");
      return;
    }
    rc.next();
  }

  private static void refuse(RoutingContext rc, String why) {
    Metrics.counter("fnp_admin_refused", "admin requests refused for their Host or Origin").increment();
    rc.response().setStatusCode(403).putHeader("Content-Type", "text/plain").end(why + "\n");
  }

  /** An address literal (a name a rebinding page could use is never one), localhost, or a configured name. */
  boolean hostAllowed(String hostHeader) {
    String name = hostName(hostHeader);
    return name.startsWith("[") || io.flannelnp.ipam.Ipv4.isValid(name) || hosts.contains(name);
  }

  boolean originAllowed(String origin, String hostHeader) {
    String o = origin.toLowerCase(java.util.Locale.ROOT);
    if (origins.contains(o)) {
      return true;
    }
    if (hostHeader == null) {
      return false;
    }
    // the page came from this server itself (directly, or through a proxy that passes Host)
    String h = hostHeader.toLowerCase(java.util.Locale.ROOT);
    return o.equals("http://" + h) || o.equals("https://" + h);
  }

  /** The host of "host", "host:port", "[v6]" or "[v6]:port", lower case. */
  static String hostName(String authority) {
    String a = authority.trim().toLowerCase(java.util.Locale.ROOT);
    if (a.startsWith("[")) {
      int end = a.indexOf(']');
      return end < 0 ? a : a.substring(0, end + 1);
    }
    int colon = a.lastIndexOf(':');
    return colon < 0 ? a : a.substring(0, colon);
  }

  private static String clip(String s) {
    StringBuilder b = new StringBuilder();
    for (char c : (s.length() > 100 ? s.substring(0, 100) + "..." : s).toCharArray()) {
      b.append(c >= 0x20 && c < 0x7f ? String.valueOf(c) : "?");
    }
    return b.toString();
  }

  /**
   * The bridge's view of the consoles: bounds how many there are, closes one that stopped
   * reading, and tracks who registered for what (so nothing is converted for nobody).
   */
  private void bridgeEvent(BridgeEvent e) {
    SockJSSocket sock = e.socket();
    switch (e.type()) {
      case SOCKET_CREATED -> {
        if (sessions.size() >= MAX_SESSIONS) {
          Metrics.counter("fnp_console_closed", "consoles closed by the server", "reason", "limit").increment();
          LOG.warning("console from " + sock.remoteAddress() + " refused: " + MAX_SESSIONS + " consoles are open");
          e.complete(false); // the bridge closes it
          return;
        }
        sock.setWriteQueueMaxSize(WRITE_QUEUE_BYTES);
        sessions.put(sock, new java.util.HashSet<>());
      }
      case REGISTERED -> {
        java.util.Set<String> mine = sessions.get(sock);
        String a = e.getRawMessage() == null ? null : e.getRawMessage().getString("address");
        if (mine != null && a != null) {
          mine.add(a);
        }
      }
      case UNREGISTER -> {
        java.util.Set<String> mine = sessions.get(sock);
        if (mine != null && e.getRawMessage() != null) {
          mine.remove(e.getRawMessage().getString("address"));
        }
      }
      case SOCKET_CLOSED -> sessions.remove(sock);
      case RECEIVE -> {
        if (!sessions.containsKey(sock)) {
          e.complete(false); // closed for not reading: what was still on its way is dropped
          return;
        }
        if (sock.writeQueueFull()) {
          Metrics.counter("fnp_console_closed", "consoles closed by the server", "reason", "not-reading").increment();
          LOG.warning("console from " + sock.remoteAddress() + " closed: it stopped reading (" + WRITE_QUEUE_BYTES
              + " bytes waiting)");
          sessions.remove(sock);
          sock.close();
          e.complete(false);
          return;
        }
      }
      default -> { }
    }
    e.complete(true);
  }

  /** Whether a console has registered for this console address. */
  private boolean listened(String consoleAddress) {
    for (java.util.Set<String> s : sessions.values()) {
      if (s.contains(consoleAddress)) {
        return true;
      }
    }
    return false;
  }

  private void authorize(RoutingContext rc) {
    if (token.isEmpty()) {
      rc.next();
      return;
    }
    String given = rc.request().getHeader("Authorization");
    boolean fromQuery = false;
    if (given != null && given.startsWith("Bearer ")) {
      given = given.substring(7).trim();
    } else if (rc.request().getParam("token") != null) {
      given = rc.request().getParam("token");
      fromQuery = true;
    } else {
      io.vertx.core.http.Cookie c = rc.request().getCookie(COOKIE);
      given = c == null ? null : c.getValue();
    }
    if (given != null && MessageDigest.isEqual(given.getBytes(StandardCharsets.UTF_8),
        token.getBytes(StandardCharsets.UTF_8))) {
      if (fromQuery) {
        // the console page's own script, style and websocket requests carry it from here on
        rc.response().addCookie(io.vertx.core.http.Cookie.cookie(COOKIE, given).setPath("/").setHttpOnly(true)
            .setSameSite(io.vertx.core.http.CookieSameSite.STRICT).setSecure(behindTls(rc)));
      }
      rc.next();
    } else {
      rc.response().setStatusCode(401).putHeader("WWW-Authenticate", "Bearer realm=\"flannel-np\"")
          .end("ADMIN_TOKEN required: send 'Authorization: Bearer <token>' or ?token=<token>\n");
    }
  }

  /**
   * Whether the browser reached us over TLS: this server speaks plain HTTP, so only a TLS proxy in
   * front of it knows, and says so with {@code X-Forwarded-Proto: https}. It is believed from a
   * loopback peer only (a proxy on this host; a proxy elsewhere would carry the token in clear
   * text over the network anyway). A Secure cookie is then never sent over plain HTTP.
   */
  private static boolean behindTls(RoutingContext rc) {
    io.vertx.core.net.SocketAddress peer = rc.request().remoteAddress();
    String proto = rc.request().getHeader("X-Forwarded-Proto");
    if (proto == null || !proto.trim().equalsIgnoreCase("https") || peer == null || peer.hostAddress() == null) {
      return false;
    }
    String ip = peer.hostAddress();
    return ip.startsWith("127.") && io.flannelnp.ipam.Ipv4.isValid(ip) || ip.equals("0:0:0:0:0:0:0:1") || ip.equals("::1");
  }

  private static void json(RoutingContext rc, int status, JsonObject body) {
    rc.response().setStatusCode(status).putHeader("Content-Type", "application/json").end(body.encodePrettily());
  }

  private void report(ReconcileReport r) {
    last.put(r.plane(), r);
    Metrics.timer("fnp_reconcile", "duration of one reconcile pass", r.plane())
        .record(r.micros(), java.util.concurrent.TimeUnit.MICROSECONDS);
    if (r.ok()) {
      lastOk.put(r.plane(), r);
      lastOkAt.put(r.plane(), System.currentTimeMillis());
    } else {
      Metrics.counter("fnp_reconcile_failures", "reconcile passes that failed", "plane", r.plane()).increment();
    }
  }

  /** nft: transaction time and size; ip: the route/neighbour/FDB entries each batch programs. */
  private void batch(KernelBatch b) {
    if (!b.ok()) {
      Metrics.counter("fnp_kernel_batch_failures", "kernel batches the kernel refused", "plane", b.plane(),
          "tool", b.tool()).increment();
      return;
    }
    if (b.tool().equals("nft")) {
      Metrics.timer("fnp_nft_transaction", "time of one nft -f transaction", b.plane())
          .record(b.micros(), java.util.concurrent.TimeUnit.MICROSECONDS);
      Metrics.size("fnp_nft_transaction_lines", "lines of one nft -f transaction", b.plane())
          .record(b.text().lines().count());
      return;
    }
    for (String line : (Iterable<String>) b.text().lines()::iterator) {
      String[] w = line.trim().split("\\s+", 3);
      if (w.length >= 2 && List.of("route", "neigh", "fdb").contains(w[0])) {
        String op = w[1].equals("del") ? "del" : "set";
        Metrics.counter("fnp_kernel_entries", "routes, neighbours and FDB entries programmed", "kind", w[0],
            "op", op).increment();
      }
    }
  }

  JsonObject health() {
    long now = System.currentTimeMillis();
    JsonObject p = new JsonObject();
    boolean ready = etcd != null && etcd.reachable();
    StringBuilder why = new StringBuilder(ready ? "" : etcd == null ? "etcd not contacted yet; "
        : "etcd not reachable (" + etcd.error() + "); ");
    if (docker != null && !docker.reachable()) {
      why.append("Docker API not reachable (").append(docker.error()).append("); "); // degrades, not unready
    }
    for (String plane : planes) {
      ReconcileReport ok = lastOk.get(plane);
      ReconcileReport any = last.get(plane);
      JsonObject j = new JsonObject();
      if (ok != null) {
        j.put("lastSuccessRevision", ok.revision()).put("lastSuccessAgeSeconds", (now - lastOkAt.get(plane)) / 1000)
            .put("summary", ok.summary());
      } else {
        ready = false;
        why.append(plane).append(" has not reconciled yet; ");
      }
      if (any != null && !any.ok()) {
        j.put("lastError", any.summary());
        why.append(plane).append(" last pass failed: ").append(any.summary()).append("; ");
      }
      p.put(plane, j);
    }
    long w = watchRevision.get();
    return new JsonObject()
        .put("live", true)
        .put("version", io.flannelnp.Version.string())
        .put("ready", ready)
        .put("reasons", why.toString().trim())
        .put("etcd", etcd == null ? new JsonObject().put("reachable", (Object) null)
            : new JsonObject().put("reachable", etcd.reachable()).put("revision", Math.max(etcd.revision(), w))
                .put("watchRevision", w).put("endpoints", etcd.endpoints()).put("error", etcd.error()))
        .put("docker", docker == null ? new JsonObject().put("reachable", (Object) null)
            : new JsonObject().put("reachable", docker.reachable()).put("apiVersion", docker.apiVersion())
                .put("nodeId", docker.nodeId()).put("manager", docker.manager()).put("error", docker.error()))
        .put("planes", p)
        .put("problemCount", problems.values().stream().mapToInt(List::size).sum())
        .put("problems", problemsJson());
  }

  /**
   * Adds {@code cluster}: this node's view of the cluster in one line (nodes, networks, services,
   * problems: what `flannel-np status` counts), from the etcd state it watches; computed once per
   * revision.
   */
  private Future<JsonObject> withCluster(JsonObject h) {
    if (schema == null) {
      return Future.succeededFuture(h);
    }
    return cluster().map(c -> h.put("cluster", c == null ? "not known yet: etcd not listed" : c.summary()))
        .otherwise(e -> h.put("cluster", "not known: " + e.getMessage()));
  }

  /** The cluster view at the watched revision (null before the first listing), computed once per revision. */
  private Future<io.flannelnp.status.ClusterStatus> cluster() {
    return vertx.eventBus().<io.flannelnp.etcd.EtcdMessage.ClusterState>request(Addresses.STATE_SNAPSHOT,
        new io.flannelnp.etcd.EtcdMessage.SnapshotRequest(), new io.vertx.core.eventbus.DeliveryOptions().setSendTimeout(2000))
        .map(m -> {
          io.flannelnp.etcd.EtcdMessage.ClusterState st = m.body();
          if (!st.synced()) {
            return null;
          }
          if (st.revision() != clusterRevision) {
            clusterView = io.flannelnp.status.ClusterStatus.of(schema, st.kvs().values(), Map.of());
            clusterRevision = st.revision();
          }
          return clusterView;
        });
  }

  /** Sends the cluster page its view: when etcd changed, else every third period (a page that just opened). */
  private void publishCluster() {
    if (!listened(CLUSTER)) {
      return;
    }
    long before = clusterRevision;
    cluster().onSuccess(c -> {
      if (c != null && (clusterRevision != before || ++clusterQuiet % 3 == 0)) {
        vertx.eventBus().publish(CLUSTER, c.json().put("revision", clusterRevision));
      }
    });
  }

  private JsonObject problemsJson() {
    JsonObject j = new JsonObject();
    problems.forEach((source, list) -> j.put(source, new io.vertx.core.json.JsonArray(list)));
    return j;
  }

  @Override
  public Future<?> stop() {
    return server == null ? Future.succeededFuture() : server.close();
  }
}
