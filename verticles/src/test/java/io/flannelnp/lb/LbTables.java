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
   * The whole table: VIP → what it does ("goto pick-N" when its N slots are all in
   * {@code backends-N}, "goto no-endpoints" when it has none, "inconsistent …" otherwise),
   * "VIP . slot" → task IP, "VIP . slot" → the N of the map holding it, chain → header
   * ("type/hook/prio/policy" or "-") and chain → rules (expressions as JSON, handles left out).
   * Equal snapshots are equal tables, whatever the handles and the order of listing.
   */
  record Snapshot(Map<String, String> services, Map<String, String> backends, Map<String, Integer> maps,
      Map<String, String> headers, Map<String, List<String>> rules) {
    List<String> chains() {
      return List.copyOf(headers.keySet());
    }

    boolean absent() {
      return headers.isEmpty();
    }
  }

  static final Snapshot ABSENT = new Snapshot(Map.of(), Map.of(), Map.of(), Map.of(), Map.of());

  static Snapshot read(String ns) {
    Netns.Result r = Netns.run("ip", "netns", "exec", ns, "nft", "-j", "list", "table", LbRules.FAMILY, LbRules.TABLE);
    if (r.exit() != 0) {
      if (r.err().contains("No such file or directory")) {
        return ABSENT;
      }
      r.ok();
    }
    List<String> vips = new ArrayList<>();
    Map<String, String> backends = new TreeMap<>();
    Map<String, Integer> maps = new TreeMap<>();
    Map<String, String> headers = new TreeMap<>();
    Map<String, List<String>> rules = new TreeMap<>();
    for (Object o : new JsonObject(r.out()).getJsonArray("nftables")) {
      JsonObject e = (JsonObject) o;
      if (e.containsKey("set") && LbRules.SERVICES.equals(e.getJsonObject("set").getString("name"))) {
        for (Object x : e.getJsonObject("set").getJsonArray("elem", new JsonArray())) {
          vips.add(String.valueOf(x));
        }
      } else if (e.containsKey("map")) {
        JsonObject m = e.getJsonObject("map");
        int n = Integer.parseInt(m.getString("name").substring(LbRules.BACKENDS_PREFIX.length()));
        for (Object x : m.getJsonArray("elem", new JsonArray())) {
          JsonArray kv = (JsonArray) x;
          JsonArray concat = ((JsonObject) kv.getValue(0)).getJsonArray("concat");
          String key = concat.getValue(0) + " . " + concat.getValue(1);
          backends.put(key, String.valueOf(kv.getValue(1)));
          maps.put(key, n);
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
    Map<String, String> services = new TreeMap<>();
    for (String vip : vips) {
      List<Integer> in = maps.entrySet().stream().filter(x -> x.getKey().startsWith(vip + " . "))
          .map(Map.Entry::getValue).toList();
      boolean whole = !in.isEmpty() && in.stream().allMatch(n -> n == in.size());
      services.put(vip, in.isEmpty() ? "goto " + LbRules.NO_ENDPOINTS
          : whole ? "goto " + LbRules.pickChain(in.size()) : "inconsistent slots in maps " + in);
    }
    return new Snapshot(services, backends, maps, headers, rules);
  }
}
