package io.flannelnp.api;

import io.flannelnp.api.PluginRoutes.Route;
import io.flannelnp.api.PluginRoutes.Subsystem;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.VerticleBase;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServer;
import io.vertx.core.http.HttpServerOptions;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.json.DecodeException;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Docker's plugin protocol on a unix socket (docker-contract.md §1.3): POST only, no Content-Type
 * required, empty bodies accepted, every answer a JSON object, 404 for unknown paths. On stop it
 * stops accepting, lets calls in flight finish, and removes the socket file.
 */
public final class ApiVerticle extends VerticleBase {
  private static final Logger LOG = Logger.getLogger(ApiVerticle.class.getName());
  /** Docker's largest request bodies are a few KB; anything near this is not Docker. */
  public static final int MAX_BODY = 1 << 20;
  static final String CONTENT_TYPE = "application/vnd.docker.plugins.v1.1+json";

  private final Path socket;
  private final PluginRoutes routes;
  private HttpServer server;
  private int inFlight;
  private Promise<Void> drained;

  public ApiVerticle(String socketPath, PluginRoutes routes) {
    this.socket = Path.of(socketPath);
    this.routes = routes;
  }

  @Override
  public Future<?> start() {
    server = vertx.createHttpServer(new HttpServerOptions().setIdleTimeout(0)).requestHandler(this::handle);
    // mode 0600 whatever the umask: a local user who could connect could remove networks
    return PrivateSocket.listen(socket, server::listen)
        .onSuccess(s -> LOG.info("plugin API listening on " + socket));
  }

  private void handle(HttpServerRequest req) {
    String path = req.path();
    Subsystem sub = PluginRoutes.subsystemOf(path);
    if (req.method() != HttpMethod.POST) {
      reply(req, sub, 405, null, "flannel-np answers POST only, not " + req.method());
      return;
    }
    Route route = routes.route(path);
    if (route == null) {
      reply(req, sub, 404, null, "flannel-np does not implement " + path);
      return;
    }
    inFlight++;
    Buffer body = Buffer.buffer();
    boolean[] rejected = {false};
    boolean[] ended = {false};
    // counted until answered, or until the client went away before its body was complete (then
    // nothing was called); a call already running is still waited for at stop
    boolean[] settled = {false};
    Runnable finish = () -> {
      if (!settled[0]) {
        settled[0] = true;
        done();
      }
    };
    req.handler(chunk -> {
      if (rejected[0]) {
        return;
      }
      if (body.length() + chunk.length() > MAX_BODY) {
        rejected[0] = true;
        reply(req, sub, 413, null, "request body of " + path + " exceeds " + MAX_BODY + " bytes");
        req.connection().close();
        finish.run();
        return;
      }
      body.appendBuffer(chunk);
    });
    req.exceptionHandler(err -> {
      LOG.fine("request " + path + " failed: " + err);
      if (!ended[0]) {
        finish.run();
      }
    });
    req.response().closeHandler(v -> {
      if (!ended[0]) {
        finish.run(); // the connection closed mid-body
      }
    });
    req.endHandler(v -> {
      ended[0] = true;
      if (rejected[0]) {
        return;
      }
      JsonObject json;
      try {
        json = parse(body);
      } catch (PluginError e) {
        reply(req, sub, e.httpStatus(), null, path.substring(1) + ": " + e.getMessage());
        finish.run();
        return;
      }
      Future<JsonObject> result;
      try {
        result = routes.call(route, json);
      } catch (RuntimeException e) {
        result = Future.failedFuture(e);
      }
      result.onComplete(ar -> {
        if (ar.succeeded()) {
          reply(req, sub, 200, ar.result(), null);
        } else {
          Throwable err = ar.cause();
          int status = err instanceof PluginError pe ? pe.httpStatus() : 500;
          if (!(err instanceof PluginError)) {
            LOG.log(Level.WARNING, path + " failed", err);
          } else {
            LOG.fine(path + " refused: " + err.getMessage());
          }
          reply(req, sub, status, null, String.valueOf(err.getMessage()));
        }
        finish.run();
      });
    });
  }

  /** Empty or whitespace-only bodies are Docker's way of sending no arguments. */
  static JsonObject parse(Buffer body) {
    String text = body.toString(java.nio.charset.StandardCharsets.UTF_8).strip();
    if (text.isEmpty()) {
      return new JsonObject();
    }
    if (!text.startsWith("{")) {
      throw new PluginError(400, "request body is not a JSON object");
    }
    try {
      return new JsonObject(text);
    } catch (DecodeException e) {
      throw new PluginError(400, "malformed JSON: " + jsonProblem(e.getMessage()));
    }
  }

  /** Jackson's message without its noise: "Unexpected character ... at line 1, column 2". */
  static String jsonProblem(String m) {
    if (m == null) {
      return "cannot parse";
    }
    String text = m.replaceFirst("^Failed to decode:\\s*", "").replaceAll("\\s+", " ");
    java.util.regex.Matcher lc = java.util.regex.Pattern.compile("line: (\\d+), column: (\\d+)").matcher(text);
    int cut = text.indexOf(" at [Source");
    String what = cut > 0 ? text.substring(0, cut) : text;
    if (what.length() > 160) {
      what = what.substring(0, 160) + "...";
    }
    return lc.find() ? what + " at line " + lc.group(1) + ", column " + lc.group(2) : what;
  }

  private void reply(HttpServerRequest req, Subsystem sub, int status, JsonObject ok, String error) {
    JsonObject out = ok;
    if (error != null) {
      out = new JsonObject().put(sub.errorField(), error);
      if (status != 200 && !"Err".equals(sub.errorField())) {
        out.put("Err", error); // a non-200 body is read as {"Err":...} whatever the subsystem
      }
    }
    if (req.response().ended() || req.response().closed()) {
      return;
    }
    req.response().setStatusCode(status).putHeader("Content-Type", CONTENT_TYPE).end(out.encode());
  }

  private void done() {
    inFlight--;
    if (inFlight == 0 && drained != null) {
      drained.tryComplete();
    }
  }

  @Override
  public Future<?> stop() {
    if (server == null) {
      return Future.succeededFuture();
    }
    drained = Promise.promise();
    if (inFlight == 0) {
      drained.complete();
    }
    // Close the listener first (no new calls), then wait for calls in flight to answer.
    Future<Void> wait = drained.future().timeout(5, TimeUnit.SECONDS).recover(err -> {
      LOG.warning(inFlight + " plugin calls still in flight at stop");
      return Future.succeededFuture();
    });
    return server.shutdown(5, TimeUnit.SECONDS).compose(v -> wait).andThen(ar -> {
      try {
        Files.deleteIfExists(socket);
      } catch (IOException e) {
        LOG.warning("cannot remove " + socket + ": " + e.getMessage());
      }
      LOG.info("plugin API stopped");
    });
  }
}
