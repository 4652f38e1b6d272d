package io.flannelnp.docker;

import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ContainerRecord.Attachment;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Docker Engine API answers → the records flannel-np keeps in etcd. Pure functions over the JSON
 * Docker returns (tolerant of missing fields and of API 1.41 … 1.47 differences), so they are
 * tested from captured answers without a daemon.
 */
public final class DockerMirror {
  /** The IPAM option that makes a network flannel-np's (our IPAM refuses a network without it). */
  public static final String FLANNEL_ID = "flannel-id";

  static final String LABEL_SERVICE_ID = "com.docker.swarm.service.id";
  static final String LABEL_SERVICE_NAME = "com.docker.swarm.service.name";
  static final String LABEL_TASK_ID = "com.docker.swarm.task.id";
  static final String LABEL_TASK_NAME = "com.docker.swarm.task.name";

  private DockerMirror() {}

  /**
   * Whether Docker's DNS scope covers this network: Swarm-scope networks (flannel-np's, which
   * answer Scope=global, and overlays), but not the routing-mesh ingress, which carries no names.
   */
  static boolean mirrored(JsonObject net) {
    return "swarm".equals(net.getString("Scope")) && !net.getBoolean("Ingress", false);
  }

  /** Docker's own drivers: a network of theirs is never flannel-np's, whatever its options say. */
  static final Set<String> BUILTIN_DRIVERS = Set.of("overlay", "bridge", "macvlan", "ipvlan", "host", "null");

  /**
   * One entry of {@code GET /networks} → its record, or null if it is not mirrored. A network is
   * flannel-np's when a plugin driver (the plugin's install name is the user's choice, e.g.
   * {@code flannel-np:latest}) carries the {@code flannel-id} IPAM option our IPAM requires.
   */
  static DockerNetwork network(JsonObject net) {
    if (!mirrored(net)) {
      return null;
    }
    JsonObject ipam = obj(net, "IPAM");
    String fid = str(obj(ipam, "Options"), FLANNEL_ID);
    if (fid.isEmpty()) {
      fid = str(obj(net, "Options"), FLANNEL_ID); // AllocateNetwork echoes the options back
    }
    if (BUILTIN_DRIVERS.contains(str(net, "Driver"))) {
      fid = "";
    }
    JsonArray configs = arr(ipam, "Config"); // null while Swarm has not allocated it (refused by our IPAM)
    String subnet = "";
    for (Object c : configs) {
      if (c instanceof JsonObject o && !str(o, "Subnet").isEmpty() && !str(o, "Subnet").contains(":")) {
        subnet = str(o, "Subnet");
        break;
      }
    }
    return new DockerNetwork(str(net, "Id"), str(net, "Name"), str(net, "Driver"), fid, subnet);
  }

  /** {@code GET /networks} → mirrored networks by ID. */
  static Map<String, DockerNetwork> networks(JsonArray list) {
    Map<String, DockerNetwork> out = new TreeMap<>();
    for (Object o : list) {
      if (o instanceof JsonObject j) {
        DockerNetwork n = network(j);
        if (n != null && !n.dockerId().isEmpty()) {
          out.put(n.dockerId(), n);
        }
      }
    }
    return out;
  }

  /**
   * One entry of {@code GET /services} → its record. {@code nameToId} resolves a
   * TaskTemplate.Networks Target given by name (the API accepts either). VIPs and aliases are kept
   * for mirrored networks only.
   */
  static ServiceRecord service(JsonObject svc, Map<String, DockerNetwork> nets) {
    JsonObject spec = obj(svc, "Spec");
    JsonObject endpoint = obj(svc, "Endpoint");
    String mode = str(obj(spec, "EndpointSpec"), "Mode");
    if (mode.isEmpty()) {
      mode = str(obj(endpoint, "Spec"), "Mode");
    }
    Map<String, String> vips = new TreeMap<>();
    for (Object o : arr(endpoint, "VirtualIPs")) {
      if (o instanceof JsonObject v) {
        String net = str(v, "NetworkID");
        String addr = str(v, "Addr");
        int slash = addr.indexOf('/');
        if (slash >= 0) {
          addr = addr.substring(0, slash);
        }
        if (!addr.isEmpty() && nets.containsKey(net)) { // empty Addr: host network
          vips.put(net, addr);
        }
      }
    }
    Map<String, List<String>> aliases = new TreeMap<>();
    JsonArray attach = obj(spec, "TaskTemplate").getJsonArray("Networks");
    if (attach == null) {
      attach = arr(spec, "Networks"); // deprecated place, API < 1.25 clients
    }
    for (Object o : attach) {
      if (o instanceof JsonObject a) {
        String net = resolve(str(a, "Target"), nets);
        List<String> names = strings(a.getJsonArray("Aliases"));
        if (net != null && !names.isEmpty()) {
          aliases.put(net, names);
        }
      }
    }
    EndpointMode m = "dnsrr".equalsIgnoreCase(mode) ? EndpointMode.DNSRR : EndpointMode.VIP;
    return new ServiceRecord(str(svc, "ID"), str(spec, "Name"), m, Map.copyOf(vips), Map.copyOf(aliases));
  }

  static Map<String, ServiceRecord> services(JsonArray list, Map<String, DockerNetwork> nets) {
    Map<String, ServiceRecord> out = new TreeMap<>();
    for (Object o : list) {
      if (o instanceof JsonObject j) {
        ServiceRecord s = service(j, nets);
        if (!s.serviceId().isEmpty()) {
          out.put(s.serviceId(), s);
        }
      }
    }
    return out;
  }

  private static String resolve(String target, Map<String, DockerNetwork> nets) {
    if (nets.containsKey(target)) {
      return target;
    }
    for (DockerNetwork n : nets.values()) {
      if (n.name().equals(target) || (target.length() >= 12 && n.dockerId().startsWith(target))) {
        return n.dockerId();
      }
    }
    return null;
  }

  /**
   * {@code GET /containers/{id}/json} → the record of a running container, or null when it has no
   * address on a mirrored network (nothing to resolve or balance to).
   *
   * @param nets the mirrored networks this node knows (from its own {@code GET /networks})
   * @param stopping whether a kill/stop/die event said it is going away
   */
  static ContainerRecord container(JsonObject inspect, Set<String> nets, String node, boolean stopping) {
    JsonObject state = obj(inspect, "State");
    if (!state.getBoolean("Running", false)) {
      return null;
    }
    String id = str(inspect, "Id");
    String shortId = id.length() > 12 ? id.substring(0, 12) : id;
    JsonObject cfg = obj(inspect, "Config");
    JsonObject labels = obj(cfg, "Labels");
    JsonObject settings = obj(inspect, "NetworkSettings");
    Map<String, Attachment> attachments = new TreeMap<>();
    JsonObject networks = obj(settings, "Networks");
    for (String name : networks.fieldNames()) {
      JsonObject ep = obj(networks, name);
      String netId = str(ep, "NetworkID");
      String ip = str(ep, "IPAddress");
      if (!nets.contains(netId) || ip.isEmpty()) {
        continue;
      }
      // API ≤ 1.44 lists the short ID among the aliases, 1.45+ does not; DNSNames (1.44+) adds the
      // name and hostname. The record keeps the user's aliases only (DNS adds the short ID itself).
      Set<String> names = new LinkedHashSet<>(strings(ep.getJsonArray("Aliases")));
      names.remove(shortId);
      names.remove(id);
      // The address the Swarm leader chose arrives as the endpoint's IPAM config; flannel-np's IPAM
      // may have given another one (the "placeholder" bookkeeping of the protocol).
      String requested = str(obj(ep, "IPAMConfig"), "IPv4Address");
      String placeholder = !requested.isEmpty() && !requested.equals(ip) ? requested : "";
      attachments.put(netId, new Attachment(ip, str(ep, "EndpointID"), List.copyOf(names), placeholder));
    }
    if (attachments.isEmpty()) {
      return null;
    }
    String taskId = str(labels, LABEL_TASK_ID);
    String health = str(obj(state, "Health"), "Status");
    // A Swarm task enters Docker's DNS and VIP only once healthy (activateServiceBinding); do the same.
    String st = stopping ? "stopping"
        : !taskId.isEmpty() && !health.isEmpty() && !"healthy".equals(health) ? "starting" : "running";
    String name = str(inspect, "Name");
    if (name.startsWith("/")) {
      name = name.substring(1);
    }
    return new ContainerRecord(id, name, str(cfg, "Hostname"), node, str(labels, LABEL_SERVICE_ID),
        str(labels, LABEL_SERVICE_NAME), taskId, str(labels, LABEL_TASK_NAME), st,
        str(settings, "SandboxKey"), Map.copyOf(attachments));
  }

  /** A task's container the managers mark "stopping" before its node sees anything happen. */
  record LeavingTask(String nodeId, String containerId, String taskId) {}

  /**
   * {@code GET /tasks} → the tasks of {@code serviceId} the orchestrator is shutting down (desired
   * state shutdown or remove) whose container still runs. Docker's executor takes such a task out
   * of its own DNS and load balancer at once and stops the container 2 s later
   * (defaultGossipConvergeDelay); these are the ones to take out of ours in that window.
   */
  static List<LeavingTask> leavingTasks(JsonArray tasks, String serviceId) {
    List<LeavingTask> out = new ArrayList<>();
    for (Object o : tasks) {
      if (!(o instanceof JsonObject t) || !serviceId.equals(str(t, "ServiceID"))) {
        continue;
      }
      String desired = str(t, "DesiredState");
      JsonObject status = obj(t, "Status");
      String cid = str(obj(status, "ContainerStatus"), "ContainerID");
      String node = str(t, "NodeID");
      if (("shutdown".equals(desired) || "remove".equals(desired)) && "running".equals(str(status, "State"))
          && !cid.isEmpty() && !node.isEmpty()) {
        out.add(new LeavingTask(node, cid, str(t, "ID")));
      }
    }
    return out;
  }

  /**
   * Whether a {@code GET /services/{id}} answer shows a rolling update (or its rollback) in
   * progress: its later tasks are shut down one step at a time (UpdateConfig.Delay apart), long
   * after the service's own update event, which comes only at the start and the end.
   */
  static boolean updating(JsonObject svc) {
    String state = str(obj(svc, "UpdateStatus"), "State");
    return "updating".equals(state) || "rollback_started".equals(state);
  }

  /**
   * The record a node writes for one of its containers, given what etcd holds for it: a Swarm task
   * a manager marked "stopping" stays so (a task never runs again, a new task is a new container),
   * so the node's own pass, which only sees a still-running container, does not put it back among
   * the backends.
   */
  static ContainerRecord keepStopping(ContainerRecord fresh, ContainerRecord stored) {
    if (stored != null && "stopping".equals(stored.state()) && !fresh.taskId().isEmpty()
        && fresh.taskId().equals(stored.taskId()) && fresh.containerId().equals(stored.containerId())) {
      return fresh.withState("stopping");
    }
    return fresh;
  }

  /** The record of a leaving task marked stopping, or null if {@code stored} is not that task's or already stopping. */
  static ContainerRecord markStopping(ContainerRecord stored, LeavingTask t) {
    if (stored == null || stored.taskId().isEmpty() || !stored.taskId().equals(t.taskId())
        || !stored.containerId().equals(t.containerId()) || "stopping".equals(stored.state())) {
      return null;
    }
    return stored.withState("stopping");
  }

  // ---- tolerant JSON access ---------------------------------------------------------------

  static JsonObject obj(JsonObject j, String key) {
    Object v = j == null ? null : j.getValue(key);
    return v instanceof JsonObject o ? o : new JsonObject();
  }

  /** The array at key; empty when absent or JSON null (getJsonArray's default covers only absent). */
  static JsonArray arr(JsonObject j, String key) {
    Object v = j == null ? null : j.getValue(key);
    return v instanceof JsonArray a ? a : new JsonArray();
  }

  static String str(JsonObject j, String key) {
    Object v = j == null ? null : j.getValue(key);
    return v == null ? "" : String.valueOf(v);
  }

  static List<String> strings(JsonArray a) {
    List<String> out = new ArrayList<>();
    if (a != null) {
      for (Object o : a) {
        if (o != null && !String.valueOf(o).isEmpty()) {
          out.add(String.valueOf(o));
        }
      }
    }
    return out;
  }
}
