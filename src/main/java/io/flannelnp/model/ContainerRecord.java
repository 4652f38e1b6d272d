package io.flannelnp.model;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * One container on a node, at {@code <P>/docker-data/containers/<node>/<container-id>}, written by
 * the node that runs it on that node's etcd lease (so a dead node's containers disappear). For
 * Swarm tasks {@code serviceId}, {@code taskId}, {@code taskName} ("svc.slot.taskid") are set.
 * {@code state} is "running", "stopping" (it leaves the VIP backends at once: a manager saw its
 * task's desired state turn shutdown, or a kill/stop/die event came; for a Swarm task this is
 * final, the task never runs again) or "starting" (a Swarm task whose health check has not passed
 * yet: Docker publishes a task only once healthy); only "running" containers resolve and receive
 * VIP traffic.
 */
public record ContainerRecord(String containerId, String name, String hostname, String node, String serviceId,
    String serviceName, String taskId, String taskName, String state, String sandboxKey,
    Map<String, Attachment> networks) {

  /**
   * The container on one network: its address there, its endpoint, its network aliases and, for a
   * Swarm task, the placeholder address the leader chose (flannel-np gave it {@code ip} instead).
   */
  public record Attachment(String ip, String endpointId, List<String> aliases, String placeholder) {}

  public ContainerRecord withState(String newState) {
    return new ContainerRecord(containerId, name, hostname, node, serviceId, serviceName, taskId, taskName, newState,
        sandboxKey, networks);
  }

  public boolean running() {
    return "running".equals(state);
  }

  /** The 12-character short ID Docker's DNS answers for. */
  public String shortId() {
    return containerId.length() > 12 ? containerId.substring(0, 12) : containerId;
  }

  public String toJson() {
    JsonObject nets = new JsonObject();
    new TreeMap<>(networks).forEach((id, a) -> nets.put(id, new JsonObject().put("IP", a.ip())
        .put("EndpointID", a.endpointId()).put("Aliases", new JsonArray(a.aliases())).put("Placeholder", a.placeholder())));
    return new JsonObject().put("ContainerID", containerId).put("Name", name).put("Hostname", hostname)
        .put("Node", node).put("ServiceID", serviceId).put("ServiceName", serviceName).put("TaskID", taskId)
        .put("TaskName", taskName).put("State", state).put("SandboxKey", sandboxKey).put("Networks", nets).encode();
  }

  public static ContainerRecord fromJson(String json) {
    JsonObject j = new JsonObject(json);
    Map<String, Attachment> nets = new TreeMap<>();
    j.getJsonObject("Networks", new JsonObject()).forEach(e -> {
      JsonObject a = (JsonObject) e.getValue();
      nets.put(e.getKey(), new Attachment(a.getString("IP", ""), a.getString("EndpointID", ""),
          a.getJsonArray("Aliases", new JsonArray()).stream().map(String::valueOf).toList(),
          a.getString("Placeholder", "")));
    });
    return new ContainerRecord(j.getString("ContainerID", ""), j.getString("Name", ""), j.getString("Hostname", ""),
        j.getString("Node", ""), j.getString("ServiceID", ""), j.getString("ServiceName", ""),
        j.getString("TaskID", ""), j.getString("TaskName", ""), j.getString("State", "running"),
        j.getString("SandboxKey", ""), Map.copyOf(nets));
  }
}
