package io.flannelnp.model;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Docker's view of one Swarm service, at {@code <P>/docker-data/services/<service-id>} (managers
 * write it). {@code vips} maps a Docker network ID to the service's virtual IP on it (VIP mode
 * only; empty for DNSRR); {@code aliases} maps a network ID to the service's extra DNS names there.
 */
public record ServiceRecord(String serviceId, String name, EndpointMode mode, Map<String, String> vips,
    Map<String, List<String>> aliases) {

  public enum EndpointMode {
    VIP, DNSRR;

    public String json() {
      return name().toLowerCase(java.util.Locale.ROOT);
    }
  }

  public String toJson() {
    JsonObject v = new JsonObject();
    new TreeMap<>(vips).forEach(v::put);
    JsonObject a = new JsonObject();
    new TreeMap<>(aliases).forEach((k, l) -> a.put(k, new JsonArray(l)));
    return new JsonObject().put("ServiceID", serviceId).put("Name", name).put("EndpointMode", mode.json())
        .put("VIPs", v).put("Aliases", a).encode();
  }

  public static ServiceRecord fromJson(String json) {
    JsonObject j = new JsonObject(json);
    Map<String, String> vips = new TreeMap<>();
    j.getJsonObject("VIPs", new JsonObject()).forEach(e -> vips.put(e.getKey(), String.valueOf(e.getValue())));
    Map<String, List<String>> aliases = new TreeMap<>();
    j.getJsonObject("Aliases", new JsonObject()).forEach(e -> aliases.put(e.getKey(),
        ((JsonArray) e.getValue()).stream().map(String::valueOf).toList()));
    String mode = j.getString("EndpointMode", "vip");
    return new ServiceRecord(j.getString("ServiceID", ""), j.getString("Name", ""),
        "dnsrr".equalsIgnoreCase(mode) ? EndpointMode.DNSRR : EndpointMode.VIP, Map.copyOf(vips), Map.copyOf(aliases));
  }
}
