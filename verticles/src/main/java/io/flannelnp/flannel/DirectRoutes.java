package io.flannelnp.flannel;

import io.flannelnp.flannel.VxlanPlan.Own;
import io.flannelnp.flannel.VxlanPlan.Peer;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.Ipv4;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Flannel's Backend.DirectRouting: a peer whose PublicIP is on the uplink's own subnet (the same
 * L2 segment) is reached by a plain route to its block via that address on the uplink, not
 * through VXLAN (no neighbour, FDB entry or route on flannel.VNI for it); every other peer keeps
 * VXLAN. The direct routes carry route protocol {@value #PROTO}, which is how a pass finds its own
 * again (and no other route of the uplink is ever touched).
 */
final class DirectRoutes {
  private DirectRoutes() {}

  /** The route protocol number of flannel-np's direct routes. */
  static final String PROTO = "250";

  /** The plan's networks with direct peers taken out, and the direct routes (block → via) they need. */
  record Split(List<Own> viaVxlan, Map<String, String> direct) {}

  /**
   * @param uplinkCidrs the uplink's IPv4 addresses as a.b.c.d/len (empty: no uplink, nothing is direct)
   */
  static Split split(List<Own> own, List<String> uplinkCidrs) {
    List<Cidr> onLink = new ArrayList<>();
    for (String a : uplinkCidrs) {
      int slash = a.indexOf('/');
      onLink.add(Cidr.containing(Ipv4.parse(a.substring(0, slash)), Integer.parseInt(a.substring(slash + 1))));
    }
    List<Own> vxlan = new ArrayList<>();
    Map<String, String> direct = new TreeMap<>();
    for (Own o : own) {
      if (!o.network().directRouting() || onLink.isEmpty()) {
        vxlan.add(o);
        continue;
      }
      List<Peer> keep = new ArrayList<>();
      for (Peer p : o.peers()) {
        long ip = Ipv4.parse(p.publicIp());
        if (onLink.stream().anyMatch(c -> c.contains(ip) && ip != c.base() && ip != c.last())) {
          direct.put(p.block().toString(), p.publicIp());
        } else {
          keep.add(p);
        }
      }
      vxlan.add(new Own(o.network(), o.block(), o.vtepMac(), List.copyOf(keep)));
    }
    return new Split(List.copyOf(vxlan), Map.copyOf(direct));
  }

  /**
   * The {@code ip} lines that make the kernel's direct routes (from {@code ip -json route show},
   * those of protocol {@value #PROTO}) exactly {@code want} on {@code uplink}: stale ones deleted
   * first, then missing or different ones replaced.
   */
  static List<String> diff(Map<String, String> want, String uplink, JsonArray routes) {
    List<String> del = new ArrayList<>();
    List<String> add = new ArrayList<>();
    Map<String, JsonObject> have = new TreeMap<>();
    for (Object o : routes) {
      if (o instanceof JsonObject r && PROTO.equals(r.getString("protocol")) && r.getString("dst") != null) {
        have.put(r.getString("dst"), r);
      }
    }
    for (Map.Entry<String, JsonObject> h : have.entrySet()) {
      String via = want.get(h.getKey());
      JsonObject r = h.getValue();
      if (via == null || !via.equals(r.getString("gateway")) || !uplink.equals(r.getString("dev"))) {
        String dst = h.getKey().contains("/") ? h.getKey() : h.getKey() + "/32"; // a host route is listed bare
        del.add("route del " + Cidr.parse(dst) + " proto " + PROTO
            + (r.getString("dev") == null ? "" : " dev " + Kernel.ifname(r.getString("dev"))));
      }
    }
    for (Map.Entry<String, String> w : want.entrySet()) {
      JsonObject r = have.get(w.getKey());
      if (r == null || !w.getValue().equals(r.getString("gateway")) || !uplink.equals(r.getString("dev"))) {
        add.add("route replace " + w.getKey() + " via " + Kernel.ipv4(w.getValue()) + " dev " + Kernel.ifname(uplink)
            + " proto " + PROTO);
      }
    }
    del.addAll(add);
    return del;
  }
}
