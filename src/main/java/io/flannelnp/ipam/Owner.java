package io.flannelnp.ipam;

import io.vertx.core.json.JsonObject;
import java.time.Instant;

/**
 * Who holds an address; stored as the value of the address's etcd key. The Swarm leader's
 * requests (space "global") carry no node: any leader may replay them, so the node that asked is
 * kept only for the record. Node-side requests (space "local") belong to their node.
 *
 * @param placeholder for a container: the leader-chosen address it stands in for, if any
 */
public record Owner(Kind kind, Space space, String node, String mac, String endpoint, String placeholder,
    String requestedBy, String at) {

  /** Kind of a record that does not parse: held by someone, never handed out, never freed by us. */
  private static final String UNREADABLE_NODE = "\u0000unreadable";

  public enum Kind {
    GATEWAY, VIP, PLACEHOLDER, CONTAINER;

    public String json() {
      return name().toLowerCase(java.util.Locale.ROOT);
    }
  }

  /** The Docker address space the request came in: the leader's allocator or a node. */
  public enum Space {
    GLOBAL, LOCAL;

    public String json() {
      return name().toLowerCase(java.util.Locale.ROOT);
    }
  }

  public static Owner leader(Kind kind, String requestedBy) {
    return new Owner(kind, Space.GLOBAL, "", "", "", "", requestedBy, Instant.now().toString());
  }

  public static Owner nodeGateway(String node) {
    return new Owner(Kind.GATEWAY, Space.LOCAL, node, "", "", "", node, Instant.now().toString());
  }

  public static Owner container(String node, String mac, String placeholder) {
    return new Owner(Kind.CONTAINER, Space.LOCAL, node, mac, "", placeholder, node, Instant.now().toString());
  }

  /**
   * The same owner asking again (a replay after a leader election, a daemon restart, a retried
   * call): same kind of holder, same space, same node, and for containers the same MAC and
   * placeholder. Times and the requesting node do not matter.
   */
  public boolean sameHolder(Owner o) {
    if (!readable() || !o.readable()) {
      return false;
    }
    boolean kindsMatch = kind == o.kind
        || (space == Space.GLOBAL && o.space == Space.GLOBAL && kind != Kind.GATEWAY && o.kind != Kind.GATEWAY);
    return kindsMatch && space == o.space && node.equals(o.node)
        && (kind != Kind.CONTAINER || (mac.equals(o.mac) && placeholder.equals(o.placeholder)));
  }

  public String describe() {
    if (!readable()) {
      return "an unreadable record (" + at + ")";
    }
    StringBuilder sb = new StringBuilder(kind.json());
    if (space == Space.GLOBAL) {
      sb.append(" of the Swarm leader");
    } else {
      sb.append(" on node ").append(node);
    }
    if (!mac.isEmpty()) {
      sb.append(" (MAC ").append(mac).append(')');
    }
    if (!endpoint.isEmpty()) {
      sb.append(" (endpoint ").append(endpoint, 0, Math.min(12, endpoint.length())).append(')');
    }
    return sb.toString();
  }

  public String toJson() {
    return new JsonObject()
        .put("Kind", kind.json()).put("Space", space.json()).put("Node", node).put("Mac", mac)
        .put("Endpoint", endpoint).put("Placeholder", placeholder).put("RequestedBy", requestedBy).put("At", at)
        .encode();
  }

  /**
   * The owner a stored value names, or an unreadable owner (see {@link #readable()}) when the value
   * is not an owner record: the address stays taken, and the record is reported, not freed.
   */
  public static Owner parse(String json) {
    try {
      return fromJson(json);
    } catch (RuntimeException e) {
      String why = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
      return new Owner(Kind.PLACEHOLDER, Space.GLOBAL, UNREADABLE_NODE, "", "", "", "", why);
    }
  }

  /** False for a stored value that is not an owner record ({@link #at()} then says why). */
  public boolean readable() {
    return !UNREADABLE_NODE.equals(node);
  }

  public static Owner fromJson(String json) {
    JsonObject j = new JsonObject(json);
    return new Owner(Kind.valueOf(j.getString("Kind", "placeholder").toUpperCase(java.util.Locale.ROOT)),
        Space.valueOf(j.getString("Space", "global").toUpperCase(java.util.Locale.ROOT)),
        j.getString("Node", ""), j.getString("Mac", ""), j.getString("Endpoint", ""),
        j.getString("Placeholder", ""), j.getString("RequestedBy", ""), j.getString("At", ""));
  }

  public Owner withEndpoint(String endpointId) {
    return new Owner(kind, space, node, mac, endpointId, placeholder, requestedBy, at);
  }
}
