package io.flannelnp.flannel;

import io.flannelnp.flannel.FlannelVerticle.Link;
import io.flannelnp.flannel.VxlanPlan.Own;
import io.flannelnp.flannel.VxlanPlan.Peer;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * The difference between the VXLAN state a {@link VxlanPlan} wants and what the kernel has, as
 * the batches that close it. Pure: no I/O. The batches run in this order, each line only where
 * something differs:
 *
 * <ol>
 *   <li>{@link #cleanup} ({@code ip}): our VXLAN devices of networks this node no longer uses
 *       (deleting a device takes its routes, neighbours and FDB entries along).</li>
 *   <li>{@link #links} ({@code ip}): devices created or corrected (a device whose VNI, local
 *       address, uplink, port, learning or MAC differs is re-created: those cannot change in
 *       place); then stale routes and neighbours deleted, then {@code neigh replace} per remote
 *       lease.</li>
 *   <li>{@link #fdb} ({@code bridge}): stale FDB entries deleted, then {@code fdb replace} per
 *       remote lease.</li>
 *   <li>{@link #routes} ({@code ip}): {@code route replace … onlink} per remote lease, last, so
 *       the kernel never has to resolve a remote VTEP by ARP (anchors.md §A.3).</li>
 * </ol>
 *
 * In a full pass, what the kernel has is read back with {@code ip -json} and {@code bridge -json}
 * ({@link Entries#read}) and compared ({@link #diffDevices}, {@link #diffEntries}); in a partial
 * pass, the new plan's peers are compared with those the last successful pass left
 * ({@link #peersOnly}).
 */
final class VxlanSync {
  /** Alias prefix of our VXLAN devices: the alias holds the flannel ID. */
  static final String VXLAN_ALIAS = "fnp-vxlan:";

  final List<String> cleanup = new ArrayList<>();
  final List<String> links = new ArrayList<>();
  final List<String> fdb = new ArrayList<>();
  final List<String> routes = new ArrayList<>();
  /** Devices that exist and are kept (their FDB must be read before {@link #diffEntries}). */
  final List<String> kept = new ArrayList<>();
  /** Per device of this pass: how many peers it has. */
  final Map<String, Integer> peers = new LinkedHashMap<>();

  /** The underlay interface VXLAN packets leave by (null: none found), and its MTU. */
  record Uplink(String name, int mtu) {}

  /** A route on one of our devices: its gateway, whether it is onlink. */
  record Route(String gateway, boolean onlink) {}

  /** A neighbour on one of our devices: its MAC, whether it is permanent. */
  record Neigh(String mac, boolean permanent) {}

  /**
   * Routes, neighbours and FDB entries per device, plus the deletions reading them found
   * necessary whatever the plan (a second route to a destination, a route with a metric).
   */
  record Entries(Map<String, Map<String, Route>> routes, Map<String, Map<String, Neigh>> neighs,
      Map<String, Map<String, Map<String, Boolean>>> fdb, List<String> extraDeletes) {

    /** From {@code ip -json route show}, {@code ip -json neigh show} and per device {@code bridge -json fdb show dev D}. */
    static Entries read(JsonArray routeJson, JsonArray neighJson, Map<String, JsonArray> fdbs, Set<String> devices) {
      Map<String, Map<String, Route>> routes = new HashMap<>();
      Map<String, Map<String, Neigh>> neighs = new HashMap<>();
      Map<String, Map<String, Map<String, Boolean>>> fdb = new HashMap<>();
      List<String> extra = new ArrayList<>();
      for (Object x : routeJson) {
        if (x instanceof JsonObject r && devices.contains(r.getString("dev")) && r.getString("dst") != null) {
          String dev = r.getString("dev");
          long metric = r.getLong("metric", 0L);
          String dst = norm(r.getString("dst"));
          Map<String, Route> m = routes.computeIfAbsent(dev, k -> new HashMap<>());
          if (metric != 0 || m.containsKey(dst)) {
            extra.add("route del " + dst + " dev " + dev + (metric != 0 ? " metric " + metric : ""));
          } else {
            m.put(dst, new Route(r.getString("gateway"), r.getJsonArray("flags", new JsonArray()).contains("onlink")));
          }
        }
      }
      for (Object x : neighJson) {
        if (x instanceof JsonObject n && devices.contains(n.getString("dev")) && n.getString("dst") != null
            && n.getString("dst").indexOf(':') < 0) {
          Object s = n.getValue("state");
          boolean permanent = s instanceof JsonArray a ? a.contains("PERMANENT") : "PERMANENT".equals(s);
          neighs.computeIfAbsent(n.getString("dev"), k -> new HashMap<>())
              .put(n.getString("dst"), new Neigh(n.getString("lladdr"), permanent));
        }
      }
      for (Map.Entry<String, JsonArray> e : fdbs.entrySet()) {
        for (Object x : e.getValue()) {
          if (x instanceof JsonObject f && f.getString("mac") != null && f.getString("dst") != null) {
            fdb.computeIfAbsent(e.getKey(), k -> new HashMap<>()).computeIfAbsent(f.getString("mac"), k -> new HashMap<>())
                .put(f.getString("dst"), "permanent".equals(f.getString("state")));
          }
        }
      }
      return new Entries(routes, neighs, fdb, extra);
    }

  }

  private final List<Own> own;
  private final Map<String, Link> actualLinks;
  private final String localIp;
  private final Uplink uplink;
  private final Set<String> fresh = new HashSet<>();
  /** Networks whose config cannot be used: their devices are left as they are. */
  private final Set<String> frozen;

  VxlanSync(List<Own> own, Map<String, Link> actualLinks, String localIp, Uplink uplink) {
    this(own, actualLinks, localIp, uplink, Set.of());
  }

  VxlanSync(List<Own> own, Map<String, Link> actualLinks, String localIp, Uplink uplink, Set<String> frozen) {
    this.own = own;
    this.actualLinks = actualLinks;
    this.localIp = localIp;
    this.uplink = uplink;
    this.frozen = frozen;
  }

  /** For a partial pass: the devices are known to be as the plan wants; only entries are compared. */
  static VxlanSync entriesOnly(List<Own> own) {
    VxlanSync s = new VxlanSync(own, Map.of(), null, null);
    for (Own o : own) {
      s.peers.put(o.device(), o.peers().size());
    }
    return s;
  }

  /**
   * For a partial pass: the lines that turn the peers of {@code before} (what the last successful
   * pass left) into those of {@code after}, for plans of the same shape (same devices, in the same
   * order). Compares peer records only: a pass after one lease changed formats one lease's lines.
   */
  static VxlanSync peersOnly(List<Own> before, List<Own> after) {
    VxlanSync s = entriesOnly(after);
    List<String> delRoutes = new ArrayList<>();
    List<String> delNeighs = new ArrayList<>();
    List<String> putNeighs = new ArrayList<>();
    List<String> delFdb = new ArrayList<>();
    List<String> putFdb = new ArrayList<>();
    for (int i = 0; i < after.size(); i++) {
      Own o = after.get(i);
      String dev = o.device();
      Map<io.flannelnp.ipam.Cidr, Peer> was = new HashMap<>();
      for (Peer q : before.get(i).peers()) {
        was.put(q.block(), q);
      }
      for (Peer p : o.peers()) {
        Peer q = was.remove(p.block());
        if (q == null) {
          putNeighs.add("neigh replace " + p.gateway() + " lladdr " + p.vtepMac() + " dev " + dev + " nud permanent");
          putFdb.add("fdb replace " + p.vtepMac() + " dev " + dev + " dst " + p.publicIp() + " self permanent");
          s.routes.add("route replace " + p.block() + " via " + p.gateway() + " dev " + dev + " onlink");
          continue;
        }
        if (!q.vtepMac().equals(p.vtepMac())) {
          putNeighs.add("neigh replace " + p.gateway() + " lladdr " + p.vtepMac() + " dev " + dev + " nud permanent");
        }
        if (!q.vtepMac().equals(p.vtepMac()) || !q.publicIp().equals(p.publicIp())) {
          delFdb.add("fdb del " + q.vtepMac() + " dev " + dev + " dst " + q.publicIp() + " self");
          putFdb.add("fdb replace " + p.vtepMac() + " dev " + dev + " dst " + p.publicIp() + " self permanent");
        }
      }
      for (Peer q : was.values()) {
        delRoutes.add("route del " + q.block() + " dev " + dev);
        delNeighs.add("neigh del " + q.gateway() + " dev " + dev);
        delFdb.add("fdb del " + q.vtepMac() + " dev " + dev + " dst " + q.publicIp() + " self");
      }
    }
    s.links.addAll(delRoutes);
    s.links.addAll(delNeighs);
    s.links.addAll(putNeighs);
    s.fdb.addAll(delFdb);
    s.fdb.addAll(putFdb);
    return s;
  }

  int mtu() {
    return uplink.mtu() - FlannelVerticle.VXLAN_OVERHEAD;
  }

  /** Step 1: devices. Fills {@link #cleanup}, the device part of {@link #links} and {@link #kept}. */
  void diffDevices() {
    Map<String, Own> wanted = new HashMap<>();
    for (Own o : own) {
      wanted.put(o.device(), o);
    }
    for (Link l : actualLinks.values()) {
      if ("vxlan".equals(l.kind()) && l.alias() != null && l.alias().startsWith(VXLAN_ALIAS)
          && !wanted.containsKey(l.name()) && !frozen.contains(l.alias().substring(VXLAN_ALIAS.length()))) {
        cleanup.add("link del dev " + Kernel.ifname(l.name()));
      }
    }
    int mtu = Kernel.mtu(mtu());
    for (Own o : own) {
      String dev = o.device();
      String alias = VXLAN_ALIAS + o.network().flannelId();
      Link l = actualLinks.get(dev);
      peers.put(dev, o.peers().size());
      if (l != null && !compatible(l, o)) {
        links.add("link del dev " + dev);
        l = null;
      }
      if (l == null) {
        fresh.add(dev);
        links.add("link add name " + dev + " address " + o.vtepMac() + " mtu " + mtu + " type vxlan id "
            + o.network().vni() + " local " + Kernel.ipv4(localIp)
            + (uplink.name() == null ? "" : " dev " + Kernel.ifname(uplink.name()))
            + " dstport " + o.network().port() + " nolearning");
        links.add("link set dev " + dev + " alias " + alias);
        links.add("addr replace " + o.address() + " dev " + dev);
        links.add("link set dev " + dev + " up");
        continue;
      }
      kept.add(dev);
      if (l.mtu() != mtu) {
        links.add("link set dev " + dev + " mtu " + mtu);
      }
      if (!alias.equals(l.alias())) {
        links.add("link set dev " + dev + " alias " + alias);
      }
      boolean has = false;
      List<String> others = new ArrayList<>();
      for (String a : l.ipv4()) {
        if (a.equals(o.address())) {
          has = true;
        } else {
          others.add(a);
        }
      }
      for (String a : others) {
        links.add("addr del " + a + " dev " + dev);
      }
      if (!has || !others.isEmpty()) {
        links.add("addr replace " + o.address() + " dev " + dev);
      }
      if (!l.up()) {
        links.add("link set dev " + dev + " up");
      }
    }
  }

  /** What cannot change in place: kind, VNI, local address, uplink, port, learning, MAC. */
  private boolean compatible(Link l, Own o) {
    Link.Vxlan v = l.vxlan();
    return "vxlan".equals(l.kind()) && v != null && v.id() == o.network().vni() && localIp.equals(v.local())
        && Objects.equals(uplink.name(), v.link()) && v.port() == o.network().port() && !v.learning()
        && o.vtepMac().equals(l.mac());
  }

  /**
   * Step 2: routes, neighbours and FDB entries of every device of this pass, against
   * {@code actual} (a device created in this pass has none).
   */
  void diffEntries(Entries actual) {
    List<String> delRoutes = new ArrayList<>(actual.extraDeletes());
    List<String> delNeighs = new ArrayList<>();
    List<String> putNeighs = new ArrayList<>();
    List<String> delFdb = new ArrayList<>();
    List<String> putFdb = new ArrayList<>();
    for (Own o : own) {
      String dev = o.device();
      boolean isFresh = fresh.contains(dev);
      Map<String, Route> actualRoutes = isFresh ? Map.of() : actual.routes().getOrDefault(dev, Map.of());
      Map<String, Neigh> actualNeighs = isFresh ? Map.of() : actual.neighs().getOrDefault(dev, Map.of());
      Map<String, Map<String, Boolean>> actualFdb = isFresh ? Map.of() : actual.fdb().getOrDefault(dev, Map.of());
      Set<String> byDst = new HashSet<>();
      Set<String> byGw = new HashSet<>();
      Map<String, String> byMac = new HashMap<>();
      for (Peer p : o.peers()) {
        byDst.add(p.block().toString());
        byGw.add(p.gateway());
        byMac.put(p.vtepMac(), p.publicIp());
      }
      for (String dst : actualRoutes.keySet()) {
        if (!byDst.contains(dst)) {
          delRoutes.add("route del " + dst + " dev " + dev);
        }
      }
      for (Map.Entry<String, Neigh> e : actualNeighs.entrySet()) {
        if (!byGw.contains(e.getKey()) && e.getValue().permanent()) {
          delNeighs.add("neigh del " + Kernel.ipv4(e.getKey()) + " dev " + dev);
        }
      }
      for (Map.Entry<String, Map<String, Boolean>> e : actualFdb.entrySet()) {
        String want = byMac.get(e.getKey());
        for (String dst : e.getValue().keySet()) {
          if (!dst.equals(want)) {
            delFdb.add("fdb del " + Kernel.mac(e.getKey()) + " dev " + dev + " dst " + Kernel.ipv4(dst) + " self");
          }
        }
      }
      for (Peer p : o.peers()) {
        Neigh n = actualNeighs.get(p.gateway());
        if (n == null || !p.vtepMac().equals(n.mac()) || !n.permanent()) {
          putNeighs.add("neigh replace " + p.gateway() + " lladdr " + p.vtepMac() + " dev " + dev + " nud permanent");
        }
        Boolean permanent = actualFdb.getOrDefault(p.vtepMac(), Map.of()).get(p.publicIp());
        if (permanent == null || !permanent) {
          putFdb.add("fdb replace " + p.vtepMac() + " dev " + dev + " dst " + p.publicIp() + " self permanent");
        }
        Route r = actualRoutes.get(p.block().toString());
        if (r == null || !p.gateway().equals(r.gateway()) || !r.onlink()) {
          routes.add("route replace " + p.block() + " via " + p.gateway() + " dev " + dev + " onlink");
        }
      }
    }
    links.addAll(delRoutes);
    links.addAll(delNeighs);
    links.addAll(putNeighs);
    fdb.addAll(delFdb);
    fdb.addAll(putFdb);
  }

  boolean isEmpty() {
    return cleanup.isEmpty() && links.isEmpty() && fdb.isEmpty() && routes.isEmpty();
  }

  /** "10.50.1.0/25" as is; a host route "10.50.1.7" as "10.50.1.7/32"; "default" as 0.0.0.0/0. */
  private static String norm(String dst) {
    if (dst.equals("default")) {
      return "0.0.0.0/0";
    }
    return dst.indexOf('/') < 0 ? dst + "/32" : dst;
  }
}
