package io.flannelnp.flannel;

import io.flannelnp.flannel.VxlanPlan.Network;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Network isolation in flannel-np's own nftables table, {@code table inet flannel-np} (no other
 * table is ever read or written):
 *
 * <pre>
 * table inet flannel-np {
 *   set networks { type ipv4_addr; flags interval; elements = { every flannel-np network subnet } }
 *   chain forward {
 *     type filter hook forward priority filter - 5; policy accept;
 *     ip daddr @networks jump isolate
 *   }
 *   chain isolate {
 *     iifname "fnp…" ip saddr N ip daddr N accept         # N's bridge, per network N
 *     iifname "flannel.V" ip saddr N ip daddr N accept    # N's VXLAN device
 *     counter drop
 *   }
 * }
 * </pre>
 *
 * A forwarded packet to an address of any flannel-np network passes only if it comes from the
 * same network through that network's own bridge or VXLAN device. Everything else to such an
 * address is dropped on every host: traffic from another network's bridge, from
 * docker_gwbridge (where a container's default route leads), from the underlay. Traffic to any
 * other destination is not looked at, so egress through docker_gwbridge keeps working. The
 * rules depend only on the network configs in etcd (every node knows every network), not on
 * which networks the node uses.
 *
 * <p>A sync replaces the whole table in one {@code nft -f -} transaction
 * ({@link #script(Collection)}); {@link #actual(String)} and {@link #desired(Collection)} give
 * comparable forms of what the kernel has and what is wanted, so nothing is applied when they
 * agree.
 */
final class Isolation {
  private Isolation() {}

  static final String FAMILY = "inet";
  static final String TABLE = "flannel-np";
  static final int PRIORITY = -5;

  /** The normalised content of our table: set elements and each chain's header and rules. */
  record Model(List<String> elements, Map<String, String> chains, Map<String, List<String>> rules) {
    static final Model ABSENT = new Model(List.of(), Map.of(), Map.of());

    boolean absent() {
      return chains.isEmpty() && elements.isEmpty();
    }
  }

  /** What the table should hold; {@link Model#ABSENT} when there is no network. */
  static Model desired(Collection<Network> networks) {
    return desired(networks, null);
  }

  /**
   * As {@link #desired(Collection)}; a network with Backend.DirectRouting also accepts its own
   * traffic from {@code uplink}, where directly routed peers' packets arrive.
   */
  static Model desired(Collection<Network> networks, String uplink) {
    List<Network> ns = sorted(networks);
    if (ns.isEmpty()) {
      return Model.ABSENT;
    }
    List<String> elements = new ArrayList<>();
    List<String> isolate = new ArrayList<>();
    for (Network n : ns) {
      elements.add(n.subnet().toString());
      for (String dev : devices(n, uplink)) {
        isolate.add("meta:iifname==" + dev + " ip.saddr==" + n.subnet() + " ip.daddr==" + n.subnet() + " accept");
      }
    }
    elements.sort(String::compareTo);
    isolate.add("counter drop");
    Map<String, String> chains = new TreeMap<>();
    chains.put("forward", "filter/forward/" + PRIORITY + "/accept");
    chains.put("isolate", "-");
    Map<String, List<String>> rules = new TreeMap<>();
    rules.put("forward", List.of("ip.daddr==@networks jump isolate"));
    rules.put("isolate", isolate);
    return new Model(elements, chains, rules);
  }

  /**
   * The {@code nft -f -} script that makes the table exactly {@link #desired}: create-if-absent,
   * delete, re-create, in one transaction, so stale rules go and nobody ever sees a half table.
   * With no network it only deletes the table.
   */
  static String script(Collection<Network> networks) {
    return script(networks, null);
  }

  static String script(Collection<Network> networks, String uplink) {
    List<Network> ns = sorted(networks);
    StringBuilder b = new StringBuilder();
    b.append("table ").append(FAMILY).append(' ').append(TABLE).append(" {}\n");
    b.append("delete table ").append(FAMILY).append(' ').append(TABLE).append('\n');
    if (ns.isEmpty()) {
      return b.toString();
    }
    b.append("table ").append(FAMILY).append(' ').append(TABLE).append(" {\n");
    b.append("\tset networks {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { ");
    List<String> elements = new ArrayList<>();
    for (Network n : ns) {
      elements.add(n.subnet().toString());
    }
    elements.sort(String::compareTo);
    b.append(String.join(", ", elements)).append(" }\n\t}\n");
    b.append("\tchain forward {\n\t\ttype filter hook forward priority filter - ").append(-PRIORITY)
        .append("; policy accept;\n");
    b.append("\t\tip daddr @networks jump isolate comment \"to a flannel-np network\"\n\t}\n");
    b.append("\tchain isolate {\n");
    for (Network n : ns) {
      for (String dev : devices(n, uplink)) {
        b.append("\t\tiifname \"").append(dev).append("\" ip saddr ").append(n.subnet()).append(" ip daddr ")
            .append(n.subnet()).append(" accept comment \"").append(comment(n, dev)).append("\"\n");
      }
    }
    b.append("\t\tcounter drop comment \"to a flannel-np network from elsewhere\"\n\t}\n}\n");
    return b.toString();
  }

  /** The command line that lists our table (fails with "No such file or directory" when absent). */
  static String[] listArgs() {
    return new String[] {"list", "table", FAMILY, TABLE};
  }

  /** Whether a failed listing only means the table does not exist. */
  static boolean isAbsence(Kernel.KernelException e) {
    return e.stderr().contains("No such file or directory");
  }

  /** The normalised form of {@code nft -j list table inet flannel-np}. */
  static Model actual(String json) {
    JsonArray items = new JsonObject(json).getJsonArray("nftables", new JsonArray());
    List<String> elements = new ArrayList<>();
    Map<String, String> chains = new TreeMap<>();
    Map<String, List<String>> rules = new TreeMap<>();
    List<String> otherSets = new ArrayList<>();
    for (Object o : items) {
      if (!(o instanceof JsonObject item)) {
        continue;
      }
      if (item.getJsonObject("set") != null) {
        JsonObject s = item.getJsonObject("set");
        if (!"networks".equals(s.getString("name")) || !"ipv4_addr".equals(s.getValue("type"))) {
          otherSets.add(s.getString("name"));
          continue;
        }
        for (Object e : s.getJsonArray("elem", new JsonArray())) {
          elements.add(value(e));
        }
      } else if (item.getJsonObject("chain") != null) {
        JsonObject c = item.getJsonObject("chain");
        String header = c.getString("hook") == null ? "-"
            : c.getString("type") + "/" + c.getString("hook") + "/" + c.getValue("prio") + "/" + c.getString("policy");
        chains.put(c.getString("name"), header);
        rules.putIfAbsent(c.getString("name"), new ArrayList<>());
      } else if (item.getJsonObject("rule") != null) {
        JsonObject r = item.getJsonObject("rule");
        rules.computeIfAbsent(r.getString("chain"), k -> new ArrayList<>()).add(rule(r.getJsonArray("expr", new JsonArray())));
      }
    }
    if (!otherSets.isEmpty()) {
      chains.put("(sets " + otherSets + ")", "?"); // never what we want: forces a rewrite
    }
    elements.sort(String::compareTo);
    return new Model(elements, chains, rules);
  }

  private static String rule(JsonArray expr) {
    List<String> parts = new ArrayList<>();
    for (Object o : expr) {
      if (!(o instanceof JsonObject e)) {
        parts.add(String.valueOf(o));
        continue;
      }
      if (e.getJsonObject("match") != null) {
        JsonObject m = e.getJsonObject("match");
        parts.add(left(m.getValue("left")) + m.getString("op", "==") + value(m.getValue("right")));
      } else if (e.containsKey("jump")) {
        parts.add("jump " + e.getJsonObject("jump").getString("target"));
      } else if (e.containsKey("accept")) {
        parts.add("accept");
      } else if (e.containsKey("drop")) {
        parts.add("drop");
      } else if (e.containsKey("counter")) {
        parts.add("counter");
      } else {
        parts.add(e.encode());
      }
    }
    return String.join(" ", parts);
  }

  private static String left(Object l) {
    if (l instanceof JsonObject j) {
      if (j.getJsonObject("meta") != null) {
        return "meta:" + j.getJsonObject("meta").getString("key");
      }
      if (j.getJsonObject("payload") != null) {
        JsonObject p = j.getJsonObject("payload");
        return p.getString("protocol") + "." + p.getString("field");
      }
      return j.encode();
    }
    return String.valueOf(l);
  }

  private static String value(Object v) {
    if (v instanceof JsonObject j && j.getJsonObject("prefix") != null) {
      JsonObject p = j.getJsonObject("prefix");
      return p.getString("addr") + "/" + p.getValue("len");
    }
    if (v instanceof JsonObject j && j.getJsonObject("elem") != null) {
      return value(j.getJsonObject("elem").getValue("val"));
    }
    if (v instanceof JsonObject j && j.getJsonArray("range") != null) {
      return j.getJsonArray("range").getValue(0) + "-" + j.getJsonArray("range").getValue(1);
    }
    if (v instanceof String s && s.matches("[0-9.]+")) {
      return s + "/32";
    }
    return v instanceof JsonObject j ? j.encode() : String.valueOf(v);
  }

  /** The devices whose traffic may reach network n: its bridge, and its VXLAN device. */
  private static List<String> devices(Network n, String uplink) {
    List<String> out = new ArrayList<>();
    out.add(n.bridge());
    if (n.device() != null) {
      out.add(n.device());
    }
    if (n.directRouting() && uplink != null) {
      out.add(uplink);
    }
    return out;
  }

  private static String comment(Network n, String dev) {
    String fid = n.flannelId().length() > 64 ? n.flannelId().substring(0, 64) + "..." : n.flannelId();
    return "network " + fid + (dev.startsWith(Names.VXLAN_PREFIX) ? " from its VXLAN device"
        : Names.isBridge(dev) ? " from its bridge" : " from directly routed peers");
  }

  private static List<Network> sorted(Collection<Network> networks) {
    List<Network> ns = new ArrayList<>(networks);
    ns.sort(Comparator.comparing(Network::flannelId));
    return ns;
  }
}
