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
import io.vertx.ext.web.handler.sockjs.SockJSBridgeOptions;
import io.vertx.ext.web.handler.sockjs.SockJSHandler;
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
 * ({@link #CONSOLE}). With ADMIN_TOKEN set every path needs it (header
 * {@code Authorization: Bearer T}, or {@code ?token=T} once, which sets an HttpOnly same-site cookie so
 * the console's script, style and websocket requests carry it).
 */
public final class AdminVerticle extends VerticleBase {
  /** Bus address → the console address its JSON form is published on. */
  public static final Map<String, String> CONSOLE = Map.of(
      Addresses.DOCKER_EVENTS, "console.docker.events",
      Addresses.DOCKER_STATUS, "console.docker.status",
      Addresses.ETCD_CHANGES, "console.etcd.changes",
      Addresses.ETCD_STATUS, "console.etcd.status",
      Addresses.RECONCILE_REPORT, "console.reconcile.report",
      Addresses.KERNEL_BATCH, "console.kernel.batch",
      Addresses.PROBLEMS, "console.problems");

  private static final String COOKIE = "fnp-admin-token";

  private final HostPort listen;
  private final String token;
  private final List<String> planes;
  private final LongSupplier etcdHead;
  private EtcdStatus etcd;
  private DockerStatus docker;
  private final Map<String, ReconcileReport> lastOk = new TreeMap<>();
  private final Map<String, ReconcileReport> last = new TreeMap<>();
  private final Map<String, Long> lastOkAt = new TreeMap<>();
  /** What each source last reported wrong (see {@link io.flannelnp.bus.Observed.Problems}). */
  private final Map<String, List<String>> problems = new java.util.concurrent.ConcurrentSkipListMap<>();
  private final AtomicLong watchRevision = new AtomicLong();
  private boolean listedOnce;
  private HttpServer server;

  /** {@code etcdHead}: the newest revision any etcd answer carried (for the watch lag). */
  public AdminVerticle(HostPort listen, String token, List<String> planes, LongSupplier etcdHead) {
    this.listen = listen;
    this.token = token;
    this.planes = planes;
    this.etcdHead = etcdHead;
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
    CONSOLE.forEach((from, to) -> bus.consumer(from, m -> bus.publish(to, BusJson.of(m.body()))));

    Router router = Router.router(vertx);
    router.route().handler(this::authorize);
    router.get("/health").handler(rc -> json(rc, 200, health()));
    router.get("/health/ready").handler(rc -> {
      JsonObject h = health();
      json(rc, h.getBoolean("ready") ? 200 : 503, h);
    });
    router.get("/metrics").handler(PrometheusScrapingHandler.create(Metrics.REGISTRY));
    // outbound only, exactly these addresses; nothing inbound (the bridge denies what is not listed)
    SockJSBridgeOptions bridge = new SockJSBridgeOptions();
    CONSOLE.values().forEach(a -> bridge.addOutboundPermitted(new PermittedOptions().setAddress(a)));
    router.route("/console/eventbus/*").subRouter(SockJSHandler.create(vertx).bridge(bridge));
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
            .setSameSite(io.vertx.core.http.CookieSameSite.STRICT));
      }
      rc.next();
    } else {
      rc.response().setStatusCode(401).putHeader("WWW-Authenticate", "Bearer realm=\"flannel-np\"")
          .end("ADMIN_TOKEN required: send 'Authorization: Bearer <token>' or ?token=<token>\n");
    }
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
