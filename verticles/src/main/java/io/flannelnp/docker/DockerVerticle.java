package io.flannelnp.docker;

import io.flannelnp.bus.Addresses;
import io.flannelnp.docker.DockerMessage.DockerStatus;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonObject;
import io.vertx.core.net.SocketAddress;
import java.util.logging.Logger;

/**
 * Watches the Docker Engine API over its unix socket. This build negotiates the API version and
 * learns the node's Swarm identity and role; mirroring Docker's state into etcd is the Docker
 * integration issue's work.
 */
public final class DockerVerticle extends VerticleBase {
  private static final Logger LOG = Logger.getLogger(DockerVerticle.class.getName());
  /** Newest Engine API version this code speaks. */
  static final String MAX_API = "1.47";

  private final String socketPath;
  private HttpClient client;
  private DockerStatus last = new DockerStatus(false, "", "", false, "not probed yet");
  private long backoffMs = 1000;
  private long timer = -1;
  private boolean stopped;

  public DockerVerticle(String socketPath) {
    this.socketPath = socketPath;
  }

  @Override
  public Future<?> start() {
    client = vertx.createHttpClient(new HttpClientOptions().setConnectTimeout(2000));
    probe();
    return Future.succeededFuture();
  }

  /**
   * The version to use: the newest both sides speak, but never below what the server accepts
   * (Docker 29.0-29.2 refuse anything below 1.44; 20.10 speaks up to 1.41).
   */
  static String negotiate(String serverMax, String serverMin) {
    String v = compare(serverMax, MAX_API) < 0 ? serverMax : MAX_API;
    if (serverMin != null && !serverMin.isEmpty() && compare(v, serverMin) < 0) {
      v = serverMin;
    }
    return v;
  }

  static int compare(String a, String b) {
    String[] x = a.split("\\.");
    String[] y = b.split("\\.");
    for (int i = 0; i < Math.max(x.length, y.length); i++) {
      int p = i < x.length ? Integer.parseInt(x[i]) : 0;
      int q = i < y.length ? Integer.parseInt(y[i]) : 0;
      if (p != q) {
        return Integer.compare(p, q);
      }
    }
    return 0;
  }

  private Future<JsonObject> get(String uri) {
    RequestOptions o = new RequestOptions().setMethod(HttpMethod.GET)
        .setServer(SocketAddress.domainSocketAddress(socketPath)).setHost("localhost").setURI(uri)
        .setTimeout(5000);
    return client.request(o).compose(req -> req.send()).compose(resp -> {
      if (resp.statusCode() != 200) {
        return resp.body().compose(b -> Future.failedFuture("GET " + uri + " answered " + resp.statusCode() + ": " + b));
      }
      return resp.body().map(b -> b.toJsonObject());
    });
  }

  private void probe() {
    if (stopped) {
      return;
    }
    get("/version").compose(v -> {
      String api = negotiate(v.getString("ApiVersion", "1.41"), v.getString("MinAPIVersion", ""));
      return get("/v" + api + "/info").map(info -> {
        JsonObject swarm = info.getJsonObject("Swarm", new JsonObject());
        return new DockerStatus(true, api, swarm.getString("NodeID", ""),
            swarm.getBoolean("ControlAvailable", false), "");
      });
    }).onComplete(ar -> {
      DockerStatus s = ar.succeeded() ? ar.result()
          : new DockerStatus(false, "", "", false, "Docker API at " + socketPath + ": " + ar.cause().getMessage());
      if (!s.equals(last)) {
        if (s.reachable()) {
          LOG.info("Docker API reachable: version " + s.apiVersion() + ", swarm node "
              + (s.nodeId().isEmpty() ? "(none)" : s.nodeId()) + (s.manager() ? " (manager)" : ""));
        } else {
          LOG.info("Docker API not reachable: " + s.error() + "; retrying");
        }
        last = s;
        vertx.eventBus().publish(Addresses.DOCKER_STATUS, s);
      }
      backoffMs = s.reachable() ? 30_000 : Math.min(30_000, backoffMs * 2);
      if (!stopped) {
        timer = vertx.setTimer(s.reachable() ? 30_000 : backoffMs, t -> probe());
      }
    });
  }

  @Override
  public Future<?> stop() {
    stopped = true;
    if (timer >= 0) {
      vertx.cancelTimer(timer);
    }
    return client == null ? Future.succeededFuture() : client.close();
  }
}
