package io.flannelnp.api;

import io.flannelnp.etcd.EtcdStore;
import io.vertx.core.Future;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Function;

/**
 * Docker's plugin protocol (docker-contract.md §1, §3, §4): every path Docker may call, whether it
 * needs etcd, and its handler. Capability and activation calls answer at once from constants, so
 * Docker can enable the plugin while etcd is still unreachable.
 */
public final class PluginRoutes {

  /** Which error field Docker reads: NetworkDriver "Err", IpamDriver "Error". */
  public enum Subsystem {
    PLUGIN("Err"), NETWORK("Err"), IPAM("Error");

    final String errorField;

    Subsystem(String errorField) {
      this.errorField = errorField;
    }

    public String errorField() {
      return errorField;
    }
  }

  /** One endpoint: state-changing ones first pass the etcd gate. */
  public record Route(Subsystem subsystem, boolean needsEtcd, Function<JsonObject, Future<JsonObject>> handler) {}

  public static final JsonObject ACTIVATE = new JsonObject().put("Implements", new JsonArray().add("IpamDriver").add("NetworkDriver"));
  public static final JsonObject NETWORK_CAPABILITIES = new JsonObject().put("Scope", "global").put("ConnectivityScope", "global");
  public static final JsonObject IPAM_CAPABILITIES = new JsonObject().put("RequiresMACAddress", true);
  public static final JsonObject ADDRESS_SPACES = new JsonObject()
      .put("LocalDefaultAddressSpace", "FlannelLocal").put("GlobalDefaultAddressSpace", "FlannelGlobal");

  private final Map<String, Route> routes = new LinkedHashMap<>();
  private final EtcdStore etcd;

  public PluginRoutes(EtcdStore etcd) {
    this.etcd = etcd;
    constant("/Plugin.Activate", Subsystem.PLUGIN, ACTIVATE);
    constant("/NetworkDriver.GetCapabilities", Subsystem.NETWORK, NETWORK_CAPABILITIES);
    constant("/IpamDriver.GetCapabilities", Subsystem.IPAM, IPAM_CAPABILITIES);
    constant("/IpamDriver.GetDefaultAddressSpaces", Subsystem.IPAM, ADDRESS_SPACES);
    // Calls with nothing to keep: gossip discovery is not used (etcd is the truth), external
    // connectivity is docker_gwbridge's job.
    constant("/NetworkDriver.DiscoverNew", Subsystem.NETWORK, new JsonObject());
    constant("/NetworkDriver.DiscoverDelete", Subsystem.NETWORK, new JsonObject());
    constant("/NetworkDriver.ProgramExternalConnectivity", Subsystem.NETWORK, new JsonObject());
    constant("/NetworkDriver.RevokeExternalConnectivity", Subsystem.NETWORK, new JsonObject());
    for (String m : new String[] {"RequestPool", "ReleasePool", "RequestAddress", "ReleaseAddress"}) {
      pending("/IpamDriver." + m, Subsystem.IPAM);
    }
    for (String m : new String[] {"AllocateNetwork", "FreeNetwork", "CreateNetwork", "DeleteNetwork",
        "CreateEndpoint", "EndpointOperInfo", "DeleteEndpoint", "Join", "Leave"}) {
      pending("/NetworkDriver." + m, Subsystem.NETWORK);
    }
  }

  private void constant(String path, Subsystem s, JsonObject answer) {
    routes.put(path, new Route(s, false, body -> Future.succeededFuture(answer.copy())));
  }

  /** Registered so Docker gets a clear answer (not a 404) until the handler is replaced. */
  private void pending(String path, Subsystem s) {
    routes.put(path, new Route(s, true, body ->
        Future.failedFuture(new PluginError("flannel-np: " + path.substring(1) + " is not implemented in this build"))));
  }

  /** Replaces a path's handler (the protocol planes plug in here). */
  public void handle(String path, boolean needsEtcd, Function<JsonObject, Future<JsonObject>> handler) {
    Route old = routes.get(path);
    if (old == null) {
      throw new IllegalArgumentException("unknown plugin path " + path);
    }
    routes.put(path, new Route(old.subsystem(), needsEtcd, handler));
  }

  public Route route(String path) {
    return routes.get(path);
  }

  public static Subsystem subsystemOf(String path) {
    if (path.startsWith("/IpamDriver.")) {
      return Subsystem.IPAM;
    }
    return path.startsWith("/NetworkDriver.") ? Subsystem.NETWORK : Subsystem.PLUGIN;
  }

  /**
   * Every call answers within this bound, well inside Docker's 30 s client timeout. A call cut
   * off here may still finish its etcd work; handlers are idempotent for the same requester, so
   * Docker's retry gets the same answer.
   */
  public static final long CALL_TIMEOUT_MS = 20_000;

  /** Runs a route: the etcd gate first for state-changing calls, so they fail fast and clearly. */
  public Future<JsonObject> call(Route r, JsonObject body) {
    if (!r.needsEtcd()) {
      return r.handler().apply(body);
    }
    return etcd.ping().recover(err -> Future.failedFuture(new PluginError(err.getMessage())))
        .compose(v -> r.handler().apply(body))
        .timeout(CALL_TIMEOUT_MS, java.util.concurrent.TimeUnit.MILLISECONDS)
        .recover(err -> Future.failedFuture(err instanceof java.util.concurrent.TimeoutException
            ? new PluginError("no answer within " + CALL_TIMEOUT_MS / 1000 + " s: etcd ("
                + String.join(", ", etcd.endpoints()) + ") or the kernel is too slow; Docker may retry")
            : err));
  }
}
