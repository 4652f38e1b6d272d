package io.flannelnp.model;

import io.vertx.core.json.JsonObject;

/**
 * Docker's view of one network, at {@code <P>/docker-data/networks/<docker-id>} (managers write
 * it). Every Swarm network is mirrored, flannel-np's and ordinary overlays alike, because DNS
 * scope covers both; {@code flannelId} is empty for networks of other drivers.
 */
public record DockerNetwork(String dockerId, String name, String driver, String flannelId, String subnet) {

  public boolean isFlannel() {
    return !flannelId.isEmpty();
  }

  public String toJson() {
    return new JsonObject().put("DockerID", dockerId).put("Name", name).put("Driver", driver)
        .put("FlannelID", flannelId).put("Subnet", subnet).encode();
  }

  public static DockerNetwork fromJson(String json) {
    JsonObject j = new JsonObject(json);
    return new DockerNetwork(j.getString("DockerID", ""), j.getString("Name", ""), j.getString("Driver", ""),
        j.getString("FlannelID", ""), j.getString("Subnet", ""));
  }
}
