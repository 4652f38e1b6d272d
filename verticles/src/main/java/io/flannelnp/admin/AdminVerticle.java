package io.flannelnp.admin;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed.ReconcileReport;
import io.flannelnp.config.Config.HostPort;
import io.flannelnp.docker.DockerMessage.DockerStatus;
import io.flannelnp.etcd.EtcdMessage.EtcdStatus;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import io.vertx.core.http.HttpServer;
import io.vertx.core.json.JsonObject;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The admin server (ADMIN_LISTEN): {@code /health} for liveness and {@code /health/ready} for
 * readiness, with reasons, built from what the planes publish on the bus.
 */
public final class AdminVerticle extends VerticleBase {
  private final HostPort listen;
  private final List<String> planes;
  private EtcdStatus etcd;
  private DockerStatus docker;
  private final Map<String, ReconcileReport> lastOk = new TreeMap<>();
  private final Map<String, ReconcileReport> last = new TreeMap<>();
  private final Map<String, Long> lastOkAt = new TreeMap<>();
  private HttpServer server;

  public AdminVerticle(HostPort listen, List<String> planes) {
    this.listen = listen;
    this.planes = planes;
  }

  @Override
  public Future<?> start() {
    vertx.eventBus().<EtcdStatus>consumer(Addresses.ETCD_STATUS, m -> etcd = m.body());
    vertx.eventBus().<DockerStatus>consumer(Addresses.DOCKER_STATUS, m -> docker = m.body());
    vertx.eventBus().<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, m -> {
      ReconcileReport r = m.body();
      last.put(r.plane(), r);
      if (r.ok()) {
        lastOk.put(r.plane(), r);
        lastOkAt.put(r.plane(), System.currentTimeMillis());
      }
    });
    server = vertx.createHttpServer().requestHandler(req -> {
      switch (req.path()) {
        case "/health" -> req.response().putHeader("Content-Type", "application/json").end(health().encodePrettily());
        case "/health/ready" -> {
          JsonObject h = health();
          req.response().setStatusCode(h.getBoolean("ready") ? 200 : 503)
              .putHeader("Content-Type", "application/json").end(h.encodePrettily());
        }
        default -> req.response().setStatusCode(404).end();
      }
    });
    return server.listen(listen.port(), listen.host());
  }

  JsonObject health() {
    long now = System.currentTimeMillis();
    JsonObject p = new JsonObject();
    boolean ready = etcd != null && etcd.reachable();
    StringBuilder why = new StringBuilder(ready ? "" : "etcd not reachable; ");
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
      }
      p.put(plane, j);
    }
    return new JsonObject()
        .put("live", true)
        .put("ready", ready)
        .put("reasons", why.toString().trim())
        .put("etcd", etcd == null ? new JsonObject().put("reachable", (Object) null)
            : new JsonObject().put("reachable", etcd.reachable()).put("revision", etcd.revision())
                .put("endpoints", etcd.endpoints()).put("error", etcd.error()))
        .put("docker", docker == null ? new JsonObject().put("reachable", (Object) null)
            : new JsonObject().put("reachable", docker.reachable()).put("apiVersion", docker.apiVersion())
                .put("nodeId", docker.nodeId()).put("manager", docker.manager()).put("error", docker.error()))
        .put("planes", p);
  }

  @Override
  public Future<?> stop() {
    return server == null ? Future.succeededFuture() : server.close();
  }
}
