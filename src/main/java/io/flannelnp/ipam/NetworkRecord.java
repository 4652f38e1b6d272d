package io.flannelnp.ipam;

import io.vertx.core.json.JsonObject;
import java.util.Map;
import java.util.TreeMap;

/** A network as the leader created it: its subnet, VNI and the user's --ipam-opt options. */
public record NetworkRecord(String flannelId, Cidr subnet, int vni, Map<String, String> options, String createdAt) {

  public String toJson() {
    JsonObject o = new JsonObject();
    new TreeMap<>(options).forEach(o::put);
    return new JsonObject().put("FlannelID", flannelId).put("Subnet", subnet.toString()).put("VNI", vni)
        .put("Options", o).put("CreatedAt", createdAt).encode();
  }

  public static NetworkRecord fromJson(String json) {
    JsonObject j = new JsonObject(json);
    Map<String, String> opts = new TreeMap<>();
    j.getJsonObject("Options", new JsonObject()).forEach(e -> opts.put(e.getKey(), String.valueOf(e.getValue())));
    return new NetworkRecord(j.getString("FlannelID"), Cidr.parse(j.getString("Subnet")), j.getInteger("VNI"),
        Map.copyOf(opts), j.getString("CreatedAt", ""));
  }
}
