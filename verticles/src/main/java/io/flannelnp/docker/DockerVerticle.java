package io.flannelnp.docker;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed.ReconcileReport;
import io.flannelnp.config.Config;
import io.flannelnp.docker.DockerMessage.DockerEvent;
import io.flannelnp.docker.DockerMessage.DockerStatus;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.vertx.core.Future;
import io.vertx.core.VerticleBase;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpClientResponse;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.core.net.SocketAddress;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Mirrors Docker's state into etcd, level-triggered: Docker's {@code /events} stream only wakes a
 * pass, and a pass lists what Docker has now, computes the records, and converges etcd's keys to
 * them. After every (re)connect of the stream the pass starts from scratch (no inspect cache), so
 * events missed while disconnected lose nothing.
 *
 * <p>Every node writes its own running containers on mirrored networks under
 * {@code docker-data/containers/<node>/} on an etcd lease of NODE_RECORDS_TTL seconds, so a dead
 * node's containers leave DNS and the VIP backends when the lease expires. The node key is the
 * Swarm node ID (NODE_NAME outside a Swarm). Managers also write {@code docker-data/networks/} and
 * {@code docker-data/services/}: every manager does, not only the leader, because leadership can
 * move without an event the plugin sees and a leader-only writer would leave a gap at each
 * election; the managers read the same Raft store and every write is compare-before-write guarded
 * by the revision read, so N managers cost N reads but one write per change.
 *
 * <p>A task leaving (scale down, update, service rm) is taken out of DNS and the VIP backends when
 * the orchestrator sets its desired state to shutdown, as Docker's executor takes it out of its own
 * 2 s before it signals the container: managers poll the tasks of a service for a while after its
 * update/remove event (longer while a rolling update runs) and rewrite such a task's record as
 * "stopping" in place; its node keeps it so. Without a manager's help a node marks it at the
 * container's kill/stop/die event.
 *
 * <p>Only the list and inspect endpoints are used, and only from this verticle's event loop, never
 * from a plugin call: Docker holds a starting container's lock during driver calls.
 */
public final class DockerVerticle extends VerticleBase {
  private static final Logger LOG = Logger.getLogger(DockerVerticle.class.getName());
  /** Newest Engine API version this code speaks. */
  static final String MAX_API = "1.47";
  static final String EVENT_FILTERS = "{\"type\":[\"container\",\"network\",\"service\",\"node\"]}";
  /** Events arriving together (a service scale is dozens) cost one pass. */
  private static final long DEBOUNCE_MS = 50;
  private static final long RESYNC_MS = 30_000;
  /**
   * How long after a service update/remove event a manager looks for tasks being shut down: the
   * orchestrator sets their desired state a little after the spec changes, and no task events
   * exist in Docker 20.10.
   */
  private static final long DRAIN_WINDOW_MS = 1500;
  /** Pause between two task polls of the drain window (a poll starts only after the last ended). */
  private static final long DRAIN_POLL_MS = 100;
  /** One task poll answers within this or is given up (the next poll asks again). */
  private static final long DRAIN_POLL_TIMEOUT_MS = 2000;

  private final String socketPath;
  private final EtcdStore etcd;
  private final EtcdSchema schema;
  private final String nodeName;
  private final long ttlSeconds;

  private HttpClient client;
  private HttpClient streamClient;
  private String api = "";
  private DockerStatus last = new DockerStatus(false, "", "", false, "not probed yet");
  private boolean stopped;

  // the event stream
  private long streamGeneration;
  private long streamBackoffMs = 250;

  // the node's lease
  private long lease;
  private String leaseOwner = "";
  private EtcdStore.KeepAlive keepAlive;

  // the reconciler
  private boolean running;
  private boolean again;
  private boolean fromScratch = true;
  private boolean periodicPending;
  private long passTimer = -1;
  private long periodic = -1;
  private long failBackoffMs = 500;
  private String lastFailure = "";
  /** Containers a kill/stop/die event said are going away, until they leave the list. */
  private final Set<String> stopping = new HashSet<>();
  /** Inspect answers by container ID, with the list entry they were taken for. */
  private final Map<String, String[]> inspectFingerprint = new HashMap<>();
  private final Map<String, JsonObject> inspectCache = new HashMap<>();
  private String identity = "";

  // the drain of leaving tasks (managers)
  /** Service ID → when its drain window ends (System.nanoTime()). */
  private final Map<String, Long> drainUntil = new HashMap<>();
  private boolean draining;

  public DockerVerticle(Config config, EtcdStore etcd, EtcdSchema schema) {
    this.socketPath = config.dockerSocket();
    this.etcd = etcd;
    this.schema = schema;
    this.nodeName = config.nodeName();
    this.ttlSeconds = config.nodeRecordsTtlSeconds();
  }

  @Override
  public Future<?> start() {
    client = vertx.createHttpClient(new HttpClientOptions().setConnectTimeout(2000));
    // its own client: the stream holds a connection for its whole life
    streamClient = vertx.createHttpClient(new HttpClientOptions().setConnectTimeout(2000));
    connectEvents();
    vertx.eventBus().<DockerMessage.ViewRequest>consumer(Addresses.DOCKER_VIEW, m -> view().onComplete(ar -> {
      if (ar.succeeded()) {
        m.reply(ar.result());
      } else {
        m.fail(io.flannelnp.bus.Failure.UNAVAILABLE, "Docker API at " + socketPath + ": " + ar.cause().getMessage());
      }
    }));
    periodic = vertx.setPeriodic(RESYNC_MS, t -> {
      periodicPending = true;
      wake(false);
    });
    return Future.succeededFuture();
  }

  @Override
  public Future<?> stop() {
    stopped = true;
    vertx.cancelTimer(periodic);
    if (passTimer >= 0) {
      vertx.cancelTimer(passTimer);
    }
    // The lease is not revoked: a restarting plugin must not take its node's containers out of
    // DNS; it rewrites them on a new lease at start, and a node that stays down loses them at TTL.
    if (keepAlive != null) {
      keepAlive.close();
    }
    return Future.join(client.close(), streamClient.close());
  }

  /** The node key of the records this node writes ("" until Docker answered once). */
  String identity() {
    return identity;
  }

  // ---- API version ------------------------------------------------------------------------

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

  private Future<String> apiVersion() {
    if (!api.isEmpty()) {
      return Future.succeededFuture(api);
    }
    return getJson("/version").map(v -> {
      api = negotiate(v.getString("ApiVersion", "1.41"), v.getString("MinAPIVersion", ""));
      return api;
    });
  }

  // ---- Engine API -------------------------------------------------------------------------

  private RequestOptions request(String uri) {
    return new RequestOptions().setMethod(HttpMethod.GET).setServer(SocketAddress.domainSocketAddress(socketPath))
        .setHost("localhost").setURI(uri);
  }

  /** GET of a JSON answer; null for 404 (the object is gone, which a pass treats as absent). */
  private Future<Object> get(String uri) {
    return get(uri, 10_000);
  }

  private Future<Object> get(String uri, long idleTimeoutMs) {
    return client.request(request(uri).setIdleTimeout(idleTimeoutMs)).compose(req -> req.send()).compose(resp -> {
      if (resp.statusCode() == 404) {
        return resp.body().map(b -> null);
      }
      if (resp.statusCode() != 200) {
        return resp.body().compose(b -> Future.failedFuture("GET " + uri + " answered " + resp.statusCode() + ": "
            + b.toString().strip()));
      }
      return resp.body().map(Buffer::toJsonValue);
    });
  }

  private Future<JsonObject> getJson(String uri) {
    return get(uri).compose(o -> o instanceof JsonObject j ? Future.succeededFuture(j)
        : Future.failedFuture("GET " + uri + ": not a JSON object"));
  }

  private Future<JsonArray> getArray(String uri) {
    return get(uri).compose(o -> o instanceof JsonArray a ? Future.succeededFuture(a)
        : Future.failedFuture("GET " + uri + ": not a JSON array"));
  }

  // ---- the event stream -------------------------------------------------------------------

  private void connectEvents() {
    if (stopped) {
      return;
    }
    long gen = ++streamGeneration;
    apiVersion().compose(v -> streamClient.request(request("/v" + v + "/events?filters="
        + URLEncoder.encode(EVENT_FILTERS, StandardCharsets.UTF_8)))).compose(req -> req.send()).onComplete(ar -> {
          if (ar.failed() || ar.result().statusCode() != 200) {
            String why = ar.failed() ? ar.cause().getMessage() : "status " + ar.result().statusCode();
            if (ar.succeeded()) {
              ar.result().request().connection().close();
            }
            api = ""; // the daemon may have been replaced by another version
            status(new DockerStatus(false, "", "", false, "Docker API at " + socketPath + ": " + why));
            streamLost(gen, why);
            return;
          }
          HttpClientResponse resp = ar.result();
          streamBackoffMs = 250;
          StringBuilder partial = new StringBuilder();
          resp.handler(buf -> {
            partial.append(buf.toString(StandardCharsets.UTF_8));
            int nl;
            while ((nl = partial.indexOf("\n")) >= 0) {
              String line = partial.substring(0, nl).strip();
              partial.delete(0, nl + 1);
              if (!line.isEmpty()) {
                onEvent(line);
              }
            }
          });
          resp.exceptionHandler(e -> streamLost(gen, e.getMessage()));
          resp.endHandler(v -> streamLost(gen, "the daemon closed the stream"));
          LOG.fine("Docker event stream connected; re-listing everything");
          wake(true); // whatever happened while we were not listening
        });
  }

  private void streamLost(long gen, String why) {
    if (gen != streamGeneration || stopped) {
      return; // an older stream's late callback
    }
    streamGeneration++;
    LOG.log(last.reachable() ? Level.INFO : Level.FINE, "Docker event stream lost (" + why + "); reconnecting in "
        + streamBackoffMs + " ms");
    long delay = streamBackoffMs;
    streamBackoffMs = Math.min(10_000, streamBackoffMs * 2);
    vertx.setTimer(delay, t -> connectEvents());
  }

  private void onEvent(String line) {
    JsonObject e;
    try {
      e = new JsonObject(line);
    } catch (RuntimeException ex) {
      LOG.fine("unreadable Docker event of " + line.length() + " characters"); // its text may hold a command line
      return;
    }
    String type = e.getString("Type", "");
    String action = e.getString("Action", e.getString("status", ""));
    JsonObject actor = DockerMirror.obj(e, "Actor");
    String id = actor.getString("ID", e.getString("id", ""));
    if (type.equals("container") && carriesCommand(action)) {
      return; // nothing a record shows, and never published: the bus feeds the log and the console
    }
    Map<String, String> attrs = new TreeMap<>();
    DockerMirror.obj(actor, "Attributes").forEach(a -> attrs.put(a.getKey(), String.valueOf(a.getValue())));
    vertx.eventBus().publish(Addresses.DOCKER_EVENTS,
        new DockerEvent(type, verb(action), id, Map.copyOf(attrs), e.getLong("timeNano", 0L)));
    switch (type) {
      case "container" -> {
        forget(id);
        if (goingAway(action, attrs.getOrDefault("signal", ""))) {
          stopping.add(id);
        }
      }
      case "network" -> forget(attrs.getOrDefault("container", ""));
      case "service" -> {
        if ((action.equals("update") || action.equals("remove")) && last.manager() && !id.isEmpty()) {
          drain(id);
        }
      }
      default -> { }
    }
    wake(false);
  }

  /**
   * Container actions that carry what runs inside a container, not its lifecycle: Docker names
   * {@code exec_create: <command line>} and {@code exec_start: <command line>} after the whole
   * command of every {@code docker exec} and every health-check probe (with whatever secrets
   * they are given), and top, resize and attach come with every interactive session.
   */
  static boolean carriesCommand(String action) {
    return action.startsWith("exec_") || action.equals("top") || action.equals("resize") || action.equals("attach")
        || action.equals("commit") || action.equals("export");
  }

  /**
   * The action as published: Docker appends free text after a colon to some actions (a command
   * line, a health status); only {@code health_status}'s one-word status is kept with its verb.
   */
  static String verb(String action) {
    int colon = action.indexOf(':');
    if (colon < 0) {
      return action;
    }
    String head = action.substring(0, colon);
    String rest = action.substring(colon + 1).strip();
    return head.equals("health_status") && rest.matches("[a-z]{1,16}") ? head + ": " + rest : head;
  }

  /**
   * Whether a container event means it is leaving: stop and die do; kill does unless its signal
   * is one programs use to reload (a `docker kill -s HUP` leaves the container running).
   */
  static boolean goingAway(String action, String signal) {
    return switch (action) {
      case "die", "stop", "oom" -> true;
      case "kill" -> !Set.of("1", "10", "12", "28", "SIGHUP", "HUP", "SIGUSR1", "USR1", "SIGUSR2", "USR2",
          "SIGWINCH", "WINCH").contains(signal);
      default -> false;
    };
  }

  private void forget(String containerId) {
    inspectCache.remove(containerId);
    inspectFingerprint.remove(containerId);
  }

  // ---- leaving tasks (managers) -------------------------------------------------------------

  /**
   * Opens (or extends) the drain window of a service: until it ends, its tasks are polled and every
   * task being shut down whose container still runs gets its record marked "stopping" in place, so
   * it leaves our DNS and VIP backends as Docker's executor takes it out of its own, 2 s before
   * the container is signalled (which is when the node's own mirror would notice).
   */
  private void drain(String serviceId) {
    drainUntil.put(serviceId, System.nanoTime() + DRAIN_WINDOW_MS * 1_000_000);
    if (!draining) {
      draining = true;
      drainPoll();
    }
  }

  private void drainPoll() {
    long now = System.nanoTime();
    drainUntil.values().removeIf(end -> end - now < 0);
    if (stopped || drainUntil.isEmpty() || !last.manager() || api.isEmpty()) {
      drainUntil.clear();
      draining = false;
      return;
    }
    List<Future<Integer>> polls = new ArrayList<>();
    for (String svc : List.copyOf(drainUntil.keySet())) {
      polls.add(drainService(svc).recover(e -> {
        LOG.fine("drain poll of service " + svc + " failed: " + e.getMessage());
        return Future.succeededFuture(0);
      }));
    }
    Future.join(polls).onComplete(ar -> {
      if (!stopped) {
        vertx.setTimer(DRAIN_POLL_MS, t -> drainPoll());
      } else {
        draining = false;
      }
    });
  }

  /**
   * One poll of a service's tasks; the result counts the records marked stopping. While the
   * service is in a rolling update its window stays open, so every step's leaving tasks are seen.
   */
  private Future<Integer> drainService(String serviceId) {
    String filter = new JsonObject().put("service", new JsonArray().add(serviceId)).encode();
    String v = "/v" + api;
    Future<Object> svc = get(v + "/services/" + URLEncoder.encode(serviceId, StandardCharsets.UTF_8),
        DRAIN_POLL_TIMEOUT_MS).onSuccess(o -> {
          if (o instanceof JsonObject j && DockerMirror.updating(j) && drainUntil.containsKey(serviceId)) {
            drainUntil.put(serviceId, System.nanoTime() + DRAIN_WINDOW_MS * 1_000_000);
          }
        });
    // a removed service is unknown to the filter (404): its tasks are still listed unfiltered
    return get(v + "/tasks?filters=" + URLEncoder.encode(filter, StandardCharsets.UTF_8), DRAIN_POLL_TIMEOUT_MS)
        .compose(o -> o == null ? get(v + "/tasks", DRAIN_POLL_TIMEOUT_MS) : Future.succeededFuture(o))
        .compose(o -> {
          if (!(o instanceof JsonArray tasks)) {
            return Future.failedFuture("GET /tasks: not a JSON array");
          }
          List<Future<Boolean>> marks = new ArrayList<>();
          DockerMirror.leavingTasks(tasks, serviceId).forEach(t -> marks.add(markStopping(t)));
          return Future.all(marks).map(x -> (int) marks.stream().filter(Future::result).count());
        }).compose(n -> svc.map(n));
  }

  /**
   * Rewrites a leaving task's record as "stopping", on the lease the record already has (its
   * node's: a dead node's records must still expire) and guarded by the revision read, so a
   * concurrent write of the node or another manager wins and the next poll looks again.
   */
  private Future<Boolean> markStopping(DockerMirror.LeavingTask t) {
    String key = schema.dockerContainer(t.nodeId(), t.containerId());
    return etcd.get(key).compose(o -> {
      if (o.isEmpty() || o.get().lease() == 0) {
        return Future.succeededFuture(false); // not written yet, already gone, or not a node's record
      }
      KeyValue kv = o.get();
      ContainerRecord stored;
      try {
        stored = ContainerRecord.fromJson(kv.value());
      } catch (RuntimeException e) {
        return Future.succeededFuture(false);
      }
      ContainerRecord marked = DockerMirror.markStopping(stored, t);
      if (marked == null) {
        return Future.succeededFuture(false);
      }
      return etcd.txn().ifModRevision(key, kv.modRevision()).thenPut(key, marked.toJson(), kv.lease()).commit()
          .map(r -> {
            if (r.succeeded()) {
              LOG.fine("task " + t.taskId() + " of node " + t.nodeId() + " is being shut down: its container "
                  + stored.shortId() + " leaves the backends now");
            }
            return r.succeeded();
          });
    });
  }

  // ---- the reconciler ---------------------------------------------------------------------

  /** Asks for a pass (coalesced); {@code scratch}: throw away cached inspects first. */
  private void wake(boolean scratch) {
    fromScratch |= scratch;
    if (stopped) {
      return;
    }
    if (running) {
      again = true;
    } else if (passTimer < 0) {
      passTimer = vertx.setTimer(DEBOUNCE_MS, t -> {
        passTimer = -1;
        pass();
      });
    }
  }

  private void pass() {
    if (stopped) {
      return;
    }
    running = true;
    again = false;
    boolean periodicPass = periodicPending;
    periodicPending = false;
    long t0 = System.nanoTime();
    if (fromScratch) {
      inspectCache.clear();
      inspectFingerprint.clear();
      fromScratch = false;
    }
    int[] conflicts = {0};
    reconcile(conflicts).onComplete(ar -> {
      running = false;
      vertx.eventBus().publish(Addresses.RECONCILE_REPORT, new ReconcileReport("docker", etcd.lastRevision(),
          ar.succeeded(), ar.succeeded() ? ar.result() + " record change(s), " + conflicts[0] + " conflict(s)"
              : String.valueOf(ar.cause().getMessage()), (System.nanoTime() - t0) / 1000, periodicPass));
      if (ar.succeeded()) {
        failBackoffMs = 500;
        if (!lastFailure.isEmpty()) {
          LOG.info("Docker mirror working again");
          lastFailure = "";
        }
        if (ar.result() > 0) {
          LOG.fine("Docker mirror: " + ar.result() + " record change(s) written");
        }
        if (again || conflicts[0] > 0) {
          wake(false);
        }
      } else {
        String why = String.valueOf(ar.cause().getMessage());
        if (!why.equals(lastFailure)) {
          LOG.warning("Docker mirror pass failed: " + why + "; retrying");
          lastFailure = why;
        }
        long delay = failBackoffMs;
        failBackoffMs = Math.min(10_000, failBackoffMs * 2);
        if (!stopped) {
          vertx.setTimer(delay, t -> wake(false));
        }
      }
    });
  }

  /** One pass: Docker's state now → records → etcd. The result counts the keys written/deleted. */
  private Future<Integer> reconcile(int[] conflicts) {
    return apiVersion().compose(v -> getJson("/v" + v + "/info").recover(err -> {
      status(new DockerStatus(false, "", "", false, "Docker API at " + socketPath + ": " + err.getMessage()));
      api = "";
      return Future.failedFuture(err);
    })).compose(info -> {
      JsonObject swarm = DockerMirror.obj(info, "Swarm");
      String nodeId = swarm.getString("NodeID", "");
      boolean manager = swarm.getBoolean("ControlAvailable", false);
      status(new DockerStatus(true, api, nodeId, manager, ""));
      identity = nodeId.isEmpty() ? nodeName : nodeId;
      return ensureLease(identity).compose(l -> listDocker(manager).compose(d -> write(d, l, manager, conflicts)));
    });
  }

  /** {@code managerError}: why the manager's lists failed (networks and services then untouched). */
  private record DockerState(Map<String, DockerNetwork> networks, Map<String, ServiceRecord> services,
      List<ContainerRecord> containers, Throwable managerError) {}

  private Future<DockerState> listDocker(boolean manager) {
    String v = "/v" + api;
    Future<JsonArray> nets = getArray(v + "/networks");
    Future<JsonArray> ctrs = getArray(v + "/containers/json");
    // A manager without Raft quorum answers 503 to /services: its own containers must still be kept
    // current, so that failure is carried to the end of the pass instead of stopping it.
    Throwable[] managerError = {null};
    Future<JsonArray> svcs = !manager ? Future.succeededFuture(new JsonArray())
        : getArray(v + "/services").recover(e -> {
          managerError[0] = e;
          return Future.succeededFuture(new JsonArray());
        });
    return Future.all(nets, ctrs, svcs).compose(x -> {
      Map<String, DockerNetwork> networks = DockerMirror.networks(nets.result());
      Set<String> netIds = networks.keySet();
      List<Future<JsonObject>> inspects = new ArrayList<>();
      Set<String> present = new HashSet<>();
      for (Object o : ctrs.result()) {
        if (!(o instanceof JsonObject c)) {
          continue;
        }
        String id = c.getString("Id", "");
        present.add(id);
        if (!onMirrored(c, netIds)) {
          continue;
        }
        inspects.add(inspect(id, fingerprint(c)));
      }
      stopping.retainAll(present);
      inspectCache.keySet().retainAll(present);
      inspectFingerprint.keySet().retainAll(present);
      return Future.all(inspects).map(y -> {
        List<ContainerRecord> records = new ArrayList<>();
        for (Future<JsonObject> f : inspects) {
          if (f.result() != null) {
            String id = f.result().getString("Id", "");
            ContainerRecord r = DockerMirror.container(f.result(), netIds, identity, stopping.contains(id));
            if (r != null) {
              records.add(r);
            }
          }
        }
        Map<String, ServiceRecord> services = manager ? DockerMirror.services(svcs.result(), networks) : Map.of();
        return new DockerState(networks, services, records, managerError[0]);
      });
    });
  }

  private static boolean onMirrored(JsonObject listEntry, Set<String> netIds) {
    JsonObject nets = DockerMirror.obj(DockerMirror.obj(listEntry, "NetworkSettings"), "Networks");
    for (String name : nets.fieldNames()) {
      if (netIds.contains(DockerMirror.str(DockerMirror.obj(nets, name), "NetworkID"))) {
        return true;
      }
    }
    return false;
  }

  /** What in a list entry tells that a cached inspect is stale: its networks, state and health. */
  private static String fingerprint(JsonObject listEntry) {
    String status = listEntry.getString("Status", "");
    int paren = status.indexOf('(');
    return DockerMirror.obj(listEntry, "NetworkSettings").encode() + "|" + listEntry.getString("State", "")
        + "|" + (paren >= 0 ? status.substring(paren) : "");
  }

  private Future<JsonObject> inspect(String id, String fingerprint) {
    String[] fp = inspectFingerprint.get(id);
    if (fp != null && fp[0].equals(fingerprint) && inspectCache.containsKey(id)) {
      return Future.succeededFuture(inspectCache.get(id));
    }
    return get("/v" + api + "/containers/" + URLEncoder.encode(id, StandardCharsets.UTF_8) + "/json").map(o -> {
      JsonObject j = o instanceof JsonObject x ? x : null;
      if (j != null) {
        inspectCache.put(id, j);
        inspectFingerprint.put(id, new String[] {fingerprint});
      }
      return j;
    });
  }

  private Future<Integer> write(DockerState d, long leaseId, boolean manager, int[] conflicts) {
    String mine = schema.dockerContainers(identity);
    Future<Integer> n = etcd.list(mine).compose(l -> {
      Map<String, ContainerRecord> stored = new HashMap<>();
      for (KeyValue kv : l.kvs()) {
        try {
          stored.put(kv.key(), ContainerRecord.fromJson(kv.value()));
        } catch (RuntimeException unreadable) {
          // rewritten below from what Docker has
        }
      }
      Map<String, String> ctrs = new TreeMap<>();
      d.containers().forEach(c -> {
        String key = schema.dockerContainer(identity, c.containerId());
        ctrs.put(key, DockerMirror.keepStopping(c, stored.get(key)).toJson());
      });
      return RecordSync.apply(etcd, RecordSync.diff(ctrs, l.kvs(), leaseId), leaseId, conflicts);
    });
    if (!manager) {
      return n;
    }
    if (d.managerError() != null) {
      return n.compose(a -> Future.failedFuture("listing services as a manager: " + d.managerError().getMessage()));
    }
    Map<String, String> nets = new TreeMap<>();
    d.networks().forEach((id, r) -> nets.put(schema.dockerNetwork(id), r.toJson()));
    Map<String, String> svcs = new TreeMap<>();
    d.services().forEach((id, r) -> svcs.put(schema.dockerService(id), r.toJson()));
    return n.compose(a -> etcd.list(schema.dockerNetworks())
            .compose(l -> confirmGone(RecordSync.diff(nets, l.kvs(), 0)))
            .compose(changes -> RecordSync.apply(etcd, changes, 0, conflicts)).map(b -> a + b))
        .compose(a -> etcd.list(schema.dockerServices()).compose(l ->
            RecordSync.apply(etcd, RecordSync.diff(svcs, l.kvs(), 0), 0, conflicts)).map(b -> a + b));
  }

  /**
   * Drops the deletions of network records whose network Docker still answers for. A manager's
   * network list silently leaves out the Swarm networks when its control API fails (no quorum), and
   * such a list must not take every network out of every node's DNS.
   */
  private Future<List<RecordSync.Change>> confirmGone(List<RecordSync.Change> changes) {
    List<Future<RecordSync.Change>> checked = new ArrayList<>();
    for (RecordSync.Change c : changes) {
      if (c.value() != null) {
        checked.add(Future.succeededFuture(c));
        continue;
      }
      String id = c.key().substring(schema.dockerNetworks().length());
      checked.add(get("/v" + api + "/networks/" + URLEncoder.encode(id, StandardCharsets.UTF_8))
          .map(o -> o == null ? c : null));
    }
    return Future.all(checked).map(x -> {
      List<RecordSync.Change> out = new ArrayList<>();
      checked.forEach(f -> {
        if (f.result() != null) {
          out.add(f.result());
        }
      });
      return out;
    });
  }

  // ---- Docker's view for the garbage collector ----------------------------------------------

  /**
   * Reads Docker now: every container of this node with its endpoints (all states: a container
   * that has an endpoint holds its address whatever it is doing), and on a manager the Swarm's
   * networks, tasks and services. The Swarm part counts as complete only if every list answered.
   */
  private Future<DockerMessage.DockerView> view() {
    return apiVersion().compose(v -> getJson("/v" + v + "/info")).compose(info -> {
      String v = "/v" + api;
      JsonObject swarm = DockerMirror.obj(info, "Swarm");
      String nodeId = swarm.getString("NodeID", "");
      boolean manager = swarm.getBoolean("ControlAvailable", false);
      Future<JsonArray> nets = getArray(v + "/networks");
      Future<JsonArray> ctrs = getArray(v + "/containers/json?all=1");
      Future<JsonArray> tasks = manager ? getArray(v + "/tasks") : Future.succeededFuture(new JsonArray());
      Future<JsonArray> svcs = manager ? getArray(v + "/services") : Future.succeededFuture(new JsonArray());
      return Future.join(nets, ctrs, tasks, svcs).transform(x -> {
        if (nets.failed() || ctrs.failed()) {
          return Future.failedFuture(nets.failed() ? nets.cause() : ctrs.cause());
        }
        boolean complete = manager && tasks.succeeded() && svcs.succeeded();
        Map<String, DockerMessage.ViewNetwork> networks = new TreeMap<>();
        Set<String> held = new HashSet<>();
        for (Object o : nets.result()) {
          if (o instanceof JsonObject n) {
            DockerNetwork d = DockerMirror.network(n);
            String id = n.getString("Id", "");
            networks.put(id, new DockerMessage.ViewNetwork(n.getString("Name", ""), d == null ? "" : d.flannelId()));
            for (Object c : DockerMirror.arr(DockerMirror.obj(n, "IPAM"), "Config")) {
              if (c instanceof JsonObject cfg) {
                addAddress(held, DockerMirror.str(cfg, "Gateway"));
              }
            }
          }
        }
        if (complete) {
          for (Object o : tasks.result()) {
            if (o instanceof JsonObject t) {
              for (Object a : DockerMirror.arr(t, "NetworksAttachments")) {
                if (a instanceof JsonObject att) {
                  for (Object addr : DockerMirror.arr(att, "Addresses")) {
                    addAddress(held, String.valueOf(addr));
                  }
                }
              }
            }
          }
          for (Object o : svcs.result()) {
            if (o instanceof JsonObject svc) {
              for (Object vip : DockerMirror.arr(DockerMirror.obj(svc, "Endpoint"), "VirtualIPs")) {
                if (vip instanceof JsonObject vj) {
                  addAddress(held, DockerMirror.str(vj, "Addr"));
                }
              }
            }
          }
        }
        List<DockerMessage.ViewEndpoint> endpoints = new ArrayList<>();
        for (Object o : ctrs.result()) {
          if (!(o instanceof JsonObject c)) {
            continue;
          }
          String cid = c.getString("Id", "");
          JsonObject inspected = inspectCache.get(cid);
          String sandbox = inspected == null ? ""
              : DockerMirror.str(DockerMirror.obj(inspected, "NetworkSettings"), "SandboxKey");
          JsonObject ns = DockerMirror.obj(DockerMirror.obj(c, "NetworkSettings"), "Networks");
          for (String name : ns.fieldNames()) {
            JsonObject e = DockerMirror.obj(ns, name);
            String ep = DockerMirror.str(e, "EndpointID");
            if (!ep.isEmpty()) {
              endpoints.add(new DockerMessage.ViewEndpoint(DockerMirror.str(e, "NetworkID"), ep,
                  DockerMirror.str(e, "IPAddress"), DockerMirror.str(e, "MacAddress"), cid, sandbox));
            }
          }
        }
        return Future.succeededFuture(new DockerMessage.DockerView(nodeId, manager, complete, Map.copyOf(networks),
            List.copyOf(endpoints), Set.copyOf(held)));
      });
    });
  }

  private static void addAddress(Set<String> out, String cidr) {
    if (cidr == null || cidr.isEmpty()) {
      return;
    }
    int slash = cidr.indexOf('/');
    out.add(slash >= 0 ? cidr.substring(0, slash) : cidr);
  }

  // ---- the node's lease -------------------------------------------------------------------

  /**
   * The lease the node's container records live on. A new identity (the node joined or left a
   * Swarm) gets a new lease and the old one is revoked, which drops the records kept under the
   * old node key.
   */
  private Future<Long> ensureLease(String owner) {
    if (lease != 0 && owner.equals(leaseOwner)) {
      return Future.succeededFuture(lease);
    }
    long old = lease;
    if (keepAlive != null) {
      keepAlive.close();
      keepAlive = null;
    }
    lease = 0;
    Future<Void> revoked = old == 0 ? Future.succeededFuture()
        : etcd.revokeLease(old).recover(e -> Future.succeededFuture());
    return revoked.compose(v -> etcd.grantLease(ttlSeconds)).map(id -> {
      if (stopped) {
        return id;
      }
      lease = id;
      leaseOwner = owner;
      keepAlive = etcd.keepAlive(id, () -> {
        if (lease == id) {
          LOG.warning("etcd lease of node " + owner + "'s container records lost; re-creating them");
          lease = 0;
          if (keepAlive != null) {
            keepAlive.close();
            keepAlive = null;
          }
          wake(false);
        }
      });
      LOG.fine("container records of node " + owner + " on lease " + Long.toHexString(id) + " (TTL " + ttlSeconds + " s)");
      return id;
    });
  }

  // ---- status -----------------------------------------------------------------------------

  private void status(DockerStatus s) {
    if (s.equals(last)) {
      return;
    }
    if (s.reachable()) {
      LOG.info("Docker API reachable: version " + s.apiVersion() + ", swarm node "
          + (s.nodeId().isEmpty() ? "(none)" : s.nodeId()) + (s.manager() ? " (manager)" : ""));
    } else if (last.reachable() || !s.error().equals(last.error())) {
      LOG.info("Docker API not reachable: " + s.error() + "; retrying");
    }
    last = s;
    vertx.eventBus().publish(Addresses.DOCKER_STATUS, s);
  }
}
