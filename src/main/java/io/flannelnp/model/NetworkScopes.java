package io.flannelnp.model;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.Ipv4;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Which addresses each flannel-np network owns, from etcd alone: the subnet reserved for it
 * ({@code <P>/address-space/<subnet>} → flannel-id, written create-once with the network) and its
 * Flannel config ({@code <P>/networks/<flannel-id>/config}), whose {@code Network} must be that
 * subnet. Planes that turn a record into kernel state check addresses here, so that one record
 * (malformed, stale, or written by a compromised node) cannot make every node redirect an
 * address no network owns (an etcd member, a DNS server, SSH).
 *
 * <p>A network's <b>cluster range(s)</b> hold the addresses the Swarm leader hands out (VIPs, task
 * placeholders, its gateway): from the network's base up to Flannel's {@code SubnetMin}, the first
 * node block (docs/address-plan.md), and every block the range grew into
 * ({@code <P>/networks/<flannel-id>/cluster-blocks/<block>}, inside the network's own subnet).
 *
 * <p>Fed key by key ({@link #put}, {@link #remove}) from a snapshot or watch changes; not thread
 * safe (one plane's thread).
 */
public final class NetworkScopes {

  /** An inclusive range of IPv4 addresses (unsigned 32-bit values). */
  public record Range(long first, long last) {
    public boolean contains(long a) {
      return a >= first && a <= last;
    }

    @Override
    public String toString() {
      return Ipv4.format(first) + "-" + Ipv4.format(last);
    }
  }

  /** What one network owns: its subnet and, inside it, the ranges its VIPs come from. */
  public record Scope(String flannelId, Cidr subnet, List<Range> clusterRanges) {
    /** A service VIP: inside a cluster range, not the network address. */
    public boolean vipAllowed(long a) {
      return a != subnet.base() && clusterRanges.stream().anyMatch(r -> r.contains(a));
    }

    /** A task's address: inside the subnet, neither its network nor its broadcast address. */
    public boolean backendAllowed(long a) {
      return subnet.contains(a) && a != subnet.base() && a != subnet.last();
    }
  }

  private final String spacePrefix;
  private final String networksPrefix;
  /** address-space key → the flannel-id it reserves the subnet for. */
  private final Map<String, String> reservations = new HashMap<>();
  /** flannel-id → its config value. */
  private final Map<String, String> configs = new HashMap<>();
  /** flannel-id → the blocks its cluster range grew into (from their keys). */
  private final Map<String, java.util.Set<String>> grown = new HashMap<>();
  private final Map<String, Object> memo = new HashMap<>(); // flannel-id → Scope or the reason there is none

  public NetworkScopes(EtcdSchema schema) {
    this.spacePrefix = schema.addressSpace();
    this.networksPrefix = schema.networks();
  }

  /** Whether {@code key} is one this view reads (a reservation or a network config). */
  public boolean reads(String key) {
    return key.startsWith(spacePrefix) || configOf(key) != null || grownOf(key) != null;
  }

  /** A reservation or a config was written; other keys are ignored. */
  public void put(String key, String value) {
    if (key.startsWith(spacePrefix)) {
      reservations.put(key, value);
    } else if (grownOf(key) != null) {
      String[] g = grownOf(key);
      grown.computeIfAbsent(g[0], k -> new java.util.TreeSet<>()).add(g[1]);
    } else {
      String fid = configOf(key);
      if (fid == null) {
        return;
      }
      configs.put(fid, value);
    }
    memo.clear();
  }

  public void remove(String key) {
    if (key.startsWith(spacePrefix)) {
      reservations.remove(key);
    } else if (grownOf(key) != null) {
      String[] g = grownOf(key);
      java.util.Set<String> blocks = grown.get(g[0]);
      if (blocks != null) {
        blocks.remove(g[1]);
        if (blocks.isEmpty()) {
          grown.remove(g[0]);
        }
      }
    } else {
      String fid = configOf(key);
      if (fid == null) {
        return;
      }
      configs.remove(fid);
    }
    memo.clear();
  }

  /** The network's scope, if its reservation and config agree. */
  public Optional<Scope> scope(String flannelId) {
    Object o = memo.computeIfAbsent(flannelId, this::compute);
    return o instanceof Scope s ? Optional.of(s) : Optional.empty();
  }

  /** Why {@link #scope} is empty: names the missing or disagreeing key. */
  public String why(String flannelId) {
    Object o = memo.computeIfAbsent(flannelId, this::compute);
    return o instanceof String s ? s : "";
  }

  private Object compute(String fid) {
    String config = configs.get(fid);
    if (config == null) {
      return "network " + fid + " has no config at " + networksPrefix + fid + "/config";
    }
    Cidr subnet;
    List<Range> ranges;
    try {
      JsonObject c = new JsonObject(config);
      subnet = Cidr.parse(string(c, "Network"));
      ranges = new ArrayList<>(clusterRanges(subnet, c));
    } catch (RuntimeException e) {
      return "network " + fid + " has an unreadable config: " + e.getMessage();
    }
    String reservation = spacePrefix + subnet.toKey();
    if (!fid.equals(reservations.get(reservation))) {
      return "network " + fid + "'s subnet " + subnet + " is not reserved for it at " + reservation
          + (reservations.containsKey(reservation) ? " (it is reserved for another network)" : "");
    }
    for (String b : grown.getOrDefault(fid, java.util.Set.of())) {
      try {
        Cidr block = Cidr.fromKey(b);
        if (subnet.contains(block.base()) && subnet.contains(block.last())) {
          ranges.add(new Range(block.base(), block.last()));
        }
      } catch (IllegalArgumentException malformed) {
        // not a block: it widens nothing
      }
    }
    return new Scope(fid, subnet, List.copyOf(ranges));
  }

  /**
   * A network's cluster range(s) from its Flannel config: from the network's base up to the
   * block before {@code SubnetMin}; without SubnetMin, Flannel's default (the first block of
   * {@code SubnetLen}, 24 when absent), which is where flannel-np's default layout puts it too.
   */
  static List<Range> clusterRanges(Cidr network, JsonObject config) {
    Object len = config.getValue("SubnetLen", 24);
    if (!(len instanceof Number n) || n.intValue() < network.prefix() || n.intValue() > 32) {
      throw new IllegalArgumentException("SubnetLen " + len + " is not a prefix length inside " + network);
    }
    long end;
    if (config.getValue("SubnetMin") != null) {
      end = Ipv4.parse(string(config, "SubnetMin"));
    } else {
      end = network.base() + (1L << (32 - n.intValue()));
    }
    if (end <= network.base() || end > network.last()) {
      throw new IllegalArgumentException("SubnetMin " + Ipv4.format(end) + " is not a node block inside " + network);
    }
    List<Range> out = new ArrayList<>();
    out.add(new Range(network.base(), end - 1));
    return List.copyOf(out);
  }

  private static String string(JsonObject c, String field) {
    if (!(c.getValue(field) instanceof String s)) {
      throw new IllegalArgumentException("\"" + field + "\" is missing or not a string");
    }
    return s;
  }

  /** {flannel-id, block key} of {@code <P>/networks/<fid>/cluster-blocks/<block>}, else null. */
  private String[] grownOf(String key) {
    if (!key.startsWith(networksPrefix)) {
      return null;
    }
    String rest = key.substring(networksPrefix.length());
    int slash = rest.indexOf("/cluster-blocks/");
    if (slash <= 0 || rest.substring(0, slash).contains("/")) {
      return null;
    }
    String block = rest.substring(slash + "/cluster-blocks/".length());
    return block.isEmpty() || block.contains("/") ? null : new String[] {rest.substring(0, slash), block};
  }

  /** The flannel-id of {@code <P>/networks/<fid>/config}, else null. */
  private String configOf(String key) {
    if (!key.startsWith(networksPrefix) || !key.endsWith("/config")) {
      return null;
    }
    String fid = key.substring(networksPrefix.length(), key.length() - "/config".length());
    return fid.isEmpty() || fid.contains("/") ? null : fid;
  }
}
