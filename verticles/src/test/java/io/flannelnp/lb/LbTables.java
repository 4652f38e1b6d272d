package io.flannelnp.lb;

import io.flannelnp.testing.Netns;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** Reads the load balancer's table back ({@code nft -j list table}) into comparable form. */
final class LbTables {
  private LbTables() {}

  /**
   * The whole table: VIP → verdict, "VIP . slot" → task IP, chain → header ("type/hook/prio/policy"
   * or "-") and chain → rules (expressions as JSON, handles left out). Equal snapshots are equal
   * tables, whatever the handles and the order of listing.
   */
  record Snapshot(Map<String, String> services, Map<String, String> backends, Map<String, String> headers,
      Map<String, List<String>> rules) {
    List<String> chains() {
      return List.copyOf(headers.keySet());
    }

    boolean absent() {
      return headers.isEmpty();
    }
  }

  static final Snapshot ABSENT = new Snapshot(Map.of(), Map.of(), Map.of(), Map.of());

  static Snapshot read(String ns) {
    Netns.Result r = Netns.run("ip", "netns", "exec", ns, "nft", "-j", "list", "table", LbRules.FAMILY, LbRules.TABLE);
    if (r.exit() != 0) {
      if (r.err().contains("No such file or directory")) {
        return ABSENT;
      }
      r.ok();
    }
    Map<String, String> services = new TreeMap<>();
    Map<String, String> backends = new TreeMap<>();
    Map<String, String> headers = new TreeMap<>();
    Map<String, List<String>> rules = new TreeMap<>();
    for (Object o : new JsonObject(r.out()).getJsonArray("nftables")) {
      JsonObject e = (JsonObject) o;
      if (e.containsKey("map")) {
        JsonObject m = e.getJsonObject("map");
        JsonArray elems = m.getJsonArray("elem", new JsonArray());
        for (Object x : elems) {
          JsonArray kv = (JsonArray) x;
          Object key = kv.getValue(0);
          Object val = kv.getValue(1);
          if (LbRules.SERVICES.equals(m.getString("name"))) {
            JsonObject v = (JsonObject) val;
            String verb = v.fieldNames().iterator().next();
            services.put(String.valueOf(key), verb + " " + v.getJsonObject(verb).getString("target"));
          } else {
            JsonArray concat = ((JsonObject) key).getJsonArray("concat");
            backends.put(concat.getValue(0) + " . " + concat.getValue(1), String.valueOf(val));
          }
        }
      } else if (e.containsKey("chain")) {
        JsonObject c = e.getJsonObject("chain");
        headers.put(c.getString("name"), c.containsKey("hook")
            ? c.getString("type") + "/" + c.getString("hook") + "/" + c.getValue("prio") + "/" + c.getString("policy")
            : "-");
        rules.computeIfAbsent(c.getString("name"), k -> new ArrayList<>());
      } else if (e.containsKey("rule")) {
        JsonObject ru = e.getJsonObject("rule");
        rules.computeIfAbsent(ru.getString("chain"), k -> new ArrayList<>()).add(ru.getJsonArray("expr").encode());
      }
    }
    return new Snapshot(services, backends, headers, rules);
  }
}
