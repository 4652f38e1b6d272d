package io.flannelnp.flannel;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.FlannelJson;
import io.flannelnp.ipam.Ipv4;
import io.vertx.core.json.DecodeException;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Predicate;

/**
 * What the VXLAN data plane of one node should look like, computed from the etcd state alone (no
 * kernel, no I/O): every flannel-np network with its Flannel config, and for the networks this
 * node holds a lease in (a lease whose {@code PublicIP} is this node's), the node's own block and
 * VTEP MAC and one {@link Peer} per remote vxlan lease.
 *
 * <p>Flannel's JSON is read the way flanneld (Go's encoding/json) reads it: field names match
 * case-insensitively; a missing VNI means 1, a missing or zero Port means the kernel default 8472
 * (anchors.md §A.1). Leases whose BackendType is not {@code vxlan} are ignored, as flanneld's
 * vxlan backend ignores them; malformed ones are skipped and named in {@link #problems()}.
 *
 * <p>A network is gone only when its config key (or its address-space reservation) is deleted. A
 * config that exists but cannot be used (it does not parse, its Network is not a carved block
 * reserved for this flannel-id, its VNI is another network's) is reported and replaced by the
 * network's last good config, or else by what its reservations say (subnet and VNI); with
 * neither, the network is {@link #frozen()}: the kernel state it has is left as it is.
 */
public record VxlanPlan(Map<String, Network> networks, List<Own> own, List<String> problems, Set<String> frozen) {

  /** A network whose config is in etcd (every node's isolation rules know all of them). */
  public record Network(String flannelId, Cidr subnet, int vni, int port, boolean vxlan, int subnetLen,
      boolean directRouting) {
    /** With Flannel's default SubnetLen: 24, or two more than a Network smaller than a /22. */
    public Network(String flannelId, Cidr subnet, int vni, int port, boolean vxlan) {
      this(flannelId, subnet, vni, port, vxlan, defaultSubnetLen(subnet));
    }

    /** Without Backend.DirectRouting (flanneld's default). */
    public Network(String flannelId, Cidr subnet, int vni, int port, boolean vxlan, int subnetLen) {
      this(flannelId, subnet, vni, port, vxlan, subnetLen, false);
    }

    static int defaultSubnetLen(Cidr subnet) {
      return subnet.prefix() > 22 ? Math.min(30, subnet.prefix() + 2) : 24;
    }

    /** The VXLAN device name, or null when the VNI has none (more than 15 characters). */
    public String device() {
      try {
        return Names.vxlan(vni);
      } catch (IllegalArgumentException e) {
        return null;
      }
    }

    public String bridge() {
      return Names.bridge(flannelId);
    }
  }

  /** A remote node's lease: its block, its underlay address and its VTEP MAC. */
  public record Peer(Cidr block, String publicIp, String vtepMac, String key) {
    /** The remote VTEP's address on the overlay: the block's network address (.0). */
    public String gateway() {
      return Ipv4.format(block.base());
    }
  }

  /** A network this node is part of: the device it needs and the peers to program on it. */
  public record Own(Network network, Cidr block, String vtepMac, List<Peer> peers) {
    public String device() {
      return network.device();
    }

    /** The device's address: the own block's network address /32, as flanneld sets it. */
    public String address() {
      return Ipv4.format(block.base()) + "/32";
    }
  }

  /**
   * The plan for the node whose underlay address is {@code publicIp} ({@code null} when it is not
   * known: then no network is this node's, and {@link #own()} is empty).
   */
  public static VxlanPlan compute(EtcdSchema schema, Collection<KeyValue> kvs, String publicIp) {
    return compute(schema, kvs, publicIp, new Cache(), c -> true);
  }

  /**
   * Parsed lease values by key, kept from one computation to the next so that a pass after one
   * lease changed parses one value, not all of them. Not thread-safe (a plane's passes run one at
   * a time).
   */
  public static final class Cache {
    private Map<String, Parsed> byKey = new java.util.HashMap<>();
    /** The last config of each network that was usable, in case a later one is not. */
    private final Map<String, Network> lastGood = new java.util.HashMap<>();
  }

  /** A lease value as parsed (or why it could not be): independent of its network. */
  private record Parsed(String value, Lease lease, String error) {}

  /**
   * As {@link #compute(EtcdSchema, Collection, String)}, reusing what {@code cache} parsed before;
   * {@code carved} tells the network blocks the cluster's settings hand out.
   */
  public static VxlanPlan compute(EtcdSchema schema, Collection<KeyValue> kvs, String publicIp, Cache cache,
      Predicate<Cidr> carved) {
    Map<String, Parsed> parsed = new java.util.HashMap<>();
    List<String> problems = new ArrayList<>();
    Map<String, Network> networks = new TreeMap<>();
    Map<String, List<KeyValue>> leases = new TreeMap<>();
    Map<String, String> reservedSubnets = new java.util.HashMap<>(); // address-space key → flannel-id
    Map<Integer, String> reservedVnis = new java.util.HashMap<>();
    Map<String, String> configs = new TreeMap<>();
    for (KeyValue kv : kvs) {
      Family f = schema.family(kv.key());
      if (f == Family.ADDRESS_SPACE) {
        reservedSubnets.put(kv.key(), kv.value());
        continue;
      }
      if (f == Family.VNIS) {
        String v = kv.key().substring(schema.vnis().length());
        if (v.matches("[0-9]{1,8}")) {
          reservedVnis.put(Integer.parseInt(v), kv.value());
        }
        continue;
      }
      if (f != Family.NETWORK_CONFIG && f != Family.SUBNET_LEASES) {
        continue;
      }
      Optional<String> fid = schema.flannelIdOf(kv.key());
      if (fid.isEmpty()) {
        continue;
      }
      if (f == Family.NETWORK_CONFIG) {
        if (kv.key().equals(schema.networkConfig(fid.get()))) {
          configs.put(fid.get(), kv.value());
        }
      } else {
        leases.computeIfAbsent(fid.get(), k -> new ArrayList<>()).add(kv);
      }
    }
    java.util.Set<String> frozen = new java.util.TreeSet<>();
    for (Map.Entry<String, String> c : configs.entrySet()) {
      String fid = c.getKey();
      Network prev = cache.lastGood.get(fid);
      String rejected;
      try {
        Names.requireFlannelId(fid);
        Network n = network(fid, c.getValue());
        String holder = reservedSubnets.get(schema.addressSpace(n.subnet()));
        String vniHolder = reservedVnis.get(n.vni());
        if (holder == null && prev != null && prev.subnet().equals(n.subnet())) {
          cache.lastGood.remove(fid); // its reservation was deleted: the network is gone
          continue;
        }
        if (!carved.test(n.subnet())) {
          rejected = "Network " + n.subnet() + " is not a block the cluster's AVAILABLE_SUBNETS and NETWORK_SUBNET_SIZE hand out";
        } else if (holder == null) {
          rejected = "no address-space reservation of " + n.subnet() + " names it";
        } else if (!holder.equals(fid)) {
          rejected = "Network " + n.subnet() + " is reserved for network " + holder;
        } else if (vniHolder != null && !vniHolder.equals(fid)) {
          rejected = "VNI " + n.vni() + " is reserved for network " + vniHolder;
        } else {
          networks.put(fid, n);
          cache.lastGood.put(fid, n);
          problems.addAll(unsupported(fid, c.getValue()));
          continue;
        }
      } catch (IllegalArgumentException | DecodeException | ClassCastException e) {
        rejected = e.getMessage();
      }
      Network fallback = prev != null && fid.equals(reservedSubnets.get(schema.addressSpace(prev.subnet()))) ? prev
          : fromReservations(schema, fid, reservedSubnets, reservedVnis, leases.getOrDefault(fid, List.of()));
      if (fallback != null) {
        networks.put(fid, fallback);
        problems.add("network " + fid + ": config rejected (" + rejected + "); kept as " + fallback.subnet() + " VNI "
            + fallback.vni() + (fallback == prev ? " (its last good config)" : " (from its reservations)"));
      } else {
        frozen.add(fid);
        problems.add("network " + fid + ": config rejected (" + rejected + "); its kernel state is left as it is");
      }
    }
    cache.lastGood.keySet().retainAll(configs.keySet());
    List<Own> own = new ArrayList<>();
    for (Network n : networks.values()) {
      List<KeyValue> ls = new ArrayList<>(leases.getOrDefault(n.flannelId(), List.of()));
      ls.sort(Comparator.comparing(KeyValue::key)); // etcd's listing order, as Ipam picks its own lease
      if (publicIp == null || !n.vxlan()) {
        continue;
      }
      Own mine = null;
      List<Peer> peers = new ArrayList<>();
      String prefix = schema.subnets(n.flannelId());
      for (KeyValue kv : ls) {
        Parsed pv = cache.byKey.get(kv.key());
        if (pv == null || !pv.value().equals(kv.value())) {
          try {
            pv = new Parsed(kv.value(), lease(kv.key().substring(prefix.length()), kv.value()), null);
          } catch (IllegalArgumentException | DecodeException | ClassCastException e) {
            pv = new Parsed(kv.value(), null, e.getMessage());
          }
        }
        parsed.put(kv.key(), pv);
        if (pv.lease() == null) {
          problems.add("lease " + kv.key() + " ignored: " + pv.error());
          continue;
        }
        Lease l = pv.lease();
        if (!n.subnet().contains(l.block())) {
          problems.add("lease " + kv.key() + " ignored: " + l.block() + " is outside the network " + n.subnet());
          continue;
        }
        if (l.block().prefix() != n.subnetLen()) {
          // flanneld leases SubnetLen blocks only: anything else overlaps real nodes' blocks
          problems.add("lease " + kv.key() + " ignored: a /" + l.block().prefix() + " is not a block of the network's"
              + " SubnetLen /" + n.subnetLen());
          continue;
        }
        if (!"vxlan".equals(l.backendType())) {
          continue; // flanneld's vxlan backend ignores other backends' leases too
        }
        if (publicIp.equals(l.publicIp())) {
          if (mine == null) {
            mine = new Own(n, l.block(), l.vtepMac(), peers);
          } else {
            problems.add("lease " + kv.key() + " also has this node's PublicIP " + publicIp + "; "
                + mine.block() + " is used");
          }
          continue;
        }
        peers.add(new Peer(l.block(), l.publicIp(), l.vtepMac(), kv.key()));
      }
      if (mine == null) {
        continue;
      }
      if (mine.device() == null) {
        problems.add("network " + n.flannelId() + ": VNI " + n.vni() + " has no device name (flannel." + n.vni()
            + " is longer than 15 characters)");
        continue;
      }
      List<Peer> usable = new ArrayList<>();
      Map<String, Peer> byMac = new java.util.HashMap<>();
      for (Peer p : peers) {
        Peer twin = byMac.putIfAbsent(p.vtepMac(), p);
        if (twin != null) {
          problems.add("lease " + p.key() + " has the VtepMAC " + p.vtepMac() + " of " + twin.key() + "; ignored");
        } else if (p.block().overlaps(mine.block())) {
          problems.add("lease " + p.key() + " overlaps this node's block " + mine.block() + "; ignored");
        } else if (p.vtepMac().equals(mine.vtepMac())) {
          problems.add("lease " + p.key() + " has this node's VtepMAC " + p.vtepMac() + "; ignored");
        } else {
          usable.add(p);
        }
      }
      own.add(new Own(n, mine.block(), mine.vtepMac(), List.copyOf(usable)));
    }
    cache.byKey = parsed;
    return new VxlanPlan(Map.copyOf(networks), List.copyOf(own), List.copyOf(problems), Set.copyOf(frozen));
  }

  /** The network as its reservations name it (one subnet, one VNI), or null. */
  private static Network fromReservations(EtcdSchema schema, String fid, Map<String, String> subnets,
      Map<Integer, String> vnis, List<KeyValue> leases) {
    List<Cidr> mine = new ArrayList<>();
    subnets.forEach((key, holder) -> {
      if (holder.equals(fid)) {
        try {
          mine.add(Cidr.fromKey(key.substring(schema.addressSpace().length())));
        } catch (IllegalArgumentException malformed) {
          // not a reservation key
        }
      }
    });
    List<Integer> myVnis = vnis.entrySet().stream().filter(e -> e.getValue().equals(fid)).map(Map.Entry::getKey).toList();
    if (mine.size() != 1 || myVnis.size() != 1) {
      return null;
    }
    // SubnetLen: what most of its leases are (they were cut by the config that is now broken)
    Map<Integer, Integer> lens = new java.util.HashMap<>();
    for (KeyValue kv : leases) {
      String rest = kv.key().substring(kv.key().lastIndexOf('/') + 1);
      int amp = rest.indexOf('&');
      try {
        lens.merge(Cidr.fromKey(amp >= 0 ? rest.substring(0, amp) : rest).prefix(), 1, Integer::sum);
      } catch (IllegalArgumentException malformed) {
        // not a lease key
      }
    }
    int len = lens.entrySet().stream().max(Map.Entry.comparingByValue()).map(Map.Entry::getKey)
        .orElse(Network.defaultSubnetLen(mine.get(0)));
    return new Network(fid, mine.get(0), myVnis.get(0), FlannelJson.VXLAN_PORT, true, len);
  }

  private record Lease(Cidr block, String publicIp, String backendType, String vtepMac) {}

  /** Flannel's network config: Network, Backend {Type, VNI, Port}, field names in any case. */
  static Network network(String fid, String json) {
    JsonObject c = new JsonObject(json);
    Object net = field(c, "Network");
    if (!(net instanceof String s)) {
      throw new IllegalArgumentException("no Network");
    }
    Cidr subnet = Cidr.parse(s);
    Object b = field(c, "Backend");
    JsonObject backend = b instanceof JsonObject o ? o : new JsonObject();
    Object type = field(backend, "Type");
    // flanneld: Backend.Type missing means "udp"
    boolean vxlan = type instanceof String t && t.equals("vxlan");
    long vni = number(field(backend, "VNI"), 1, "Backend.VNI");
    long port = number(field(backend, "Port"), 0, "Backend.Port");
    if (vni < 0 || vni > 16_777_215) {
      throw new IllegalArgumentException("Backend.VNI " + vni + " is not a 24-bit VNI");
    }
    if (port < 0 || port > 65535) {
      throw new IllegalArgumentException("Backend.Port " + port + " is not a UDP port");
    }
    long len = number(field(c, "SubnetLen"), Network.defaultSubnetLen(subnet), "SubnetLen");
    if (len <= subnet.prefix() || len > 30) {
      throw new IllegalArgumentException("SubnetLen " + len + " does not fit the Network " + subnet);
    }
    // Backend.DirectRouting: a peer on the uplink's own subnet is routed to directly, not through VXLAN
    boolean direct = Boolean.TRUE.equals(field(backend, "DirectRouting"));
    return new Network(fid, subnet, (int) vni, port == 0 ? FlannelJson.VXLAN_PORT : (int) port, vxlan, (int) len,
        direct);
  }

  /** Flannel config keys flannel-np follows (SubnetMin and SubnetMax through the IPAM's node blocks). */
  static final List<String> HONOURED_KEYS = List.of("Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend");
  static final List<String> HONOURED_BACKEND_KEYS = List.of("Type", "VNI", "Port", "DirectRouting");

  /**
   * What a network's Flannel config asks for that this data plane does not do, one line each, so
   * an operator's edit (or a config written for a stock flanneld) is reported, never silently
   * ignored. Keys are matched in any case, as flanneld reads them; a key set to its flanneld
   * default (false, 0, an IPv4-only value) asks for nothing and is not reported.
   */
  static List<String> unsupported(String fid, String json) {
    List<String> out = new ArrayList<>();
    JsonObject c;
    try {
      c = new JsonObject(json);
    } catch (RuntimeException e) {
      return out; // reported as a rejected config
    }
    String where = "network " + fid + ": Flannel config ";
    for (String k : c.fieldNames()) {
      if (HONOURED_KEYS.stream().anyMatch(k::equalsIgnoreCase)) {
        continue;
      }
      Object v = c.getValue(k);
      if (k.equalsIgnoreCase("EnableIPv4") && !Boolean.FALSE.equals(v)
          || k.equalsIgnoreCase("EnableIPv6") && !Boolean.TRUE.equals(v)
          || k.equalsIgnoreCase("EnableNFTables")) {
        continue; // IPv4 on is what flannel-np does; nftables is what it uses
      }
      out.add(where + k + "=" + v + " is not supported (" + (k.toLowerCase(java.util.Locale.ROOT).contains("ipv6")
          || k.equalsIgnoreCase("EnableIPv4") ? "flannel-np networks are IPv4 only" : "flannel-np does not read it")
          + "); ignored");
    }
    Object b = field(c, "Backend");
    if (b instanceof JsonObject backend) {
      Object type = field(backend, "Type");
      if (!"vxlan".equals(type)) {
        out.add(where + "Backend.Type=" + type + " is not supported (flannel-np's data plane is VXLAN); the network's"
            + " subnet is isolated, but no device, route or peer is set up for it");
        return out;
      }
      for (String k : backend.fieldNames()) {
        if (HONOURED_BACKEND_KEYS.stream().anyMatch(k::equalsIgnoreCase)) {
          continue;
        }
        Object v = backend.getValue(k);
        if (Boolean.FALSE.equals(v) || v instanceof Number n && n.longValue() == 0 || v == null) {
          continue; // flanneld's default: asks for nothing
        }
        String why = switch (k.toLowerCase(java.util.Locale.ROOT)) {
          case "learning" -> "flannel-np programs every peer's FDB entry, VXLAN learning stays off";
          case "gbp" -> "group-based policy is not set on the VXLAN device";
          case "mtu" -> "the MTU is the uplink's less 50";
          case "macprefix" -> "the VTEP MAC is derived from node and VNI";
          default -> "flannel-np does not read it";
        };
        out.add(where + "Backend." + k + "=" + v + " is not supported (" + why + "); ignored");
      }
    }
    return out;
  }

  /** A lease: its key's block and its value {"PublicIP":..,"BackendType":"vxlan","BackendData":{..}}. */
  private static Lease lease(String rest, String value) {
    int amp = rest.indexOf('&'); // dual-stack keys add &<ipv6>-<len>; flannel-np is IPv4 only
    Cidr block = Cidr.fromKey(amp >= 0 ? rest.substring(0, amp) : rest);
    if (block.prefix() > 30) {
      throw new IllegalArgumentException(block + " is too small to hold a VTEP and hosts");
    }
    JsonObject v = new JsonObject(value);
    Object type = field(v, "BackendType");
    String backendType = type instanceof String t ? t : "";
    Object ip = field(v, "PublicIP");
    if (!(ip instanceof String publicIp) || !Ipv4.isValid(publicIp)) {
      throw new IllegalArgumentException("PublicIP " + ip + " is not an IPv4 address");
    }
    String mac = null;
    if ("vxlan".equals(backendType)) {
      Object d = field(v, "BackendData");
      Object m = d instanceof JsonObject data ? field(data, "VtepMAC") : null;
      if (!(m instanceof String s)) {
        throw new IllegalArgumentException("no BackendData.VtepMAC");
      }
      mac = Kernel.mac(s);
    }
    return new Lease(block, publicIp, backendType, mac);
  }

  /** A field by name, matched case-insensitively as Go's encoding/json does (exact match first). */
  static Object field(JsonObject o, String name) {
    if (o.containsKey(name)) {
      return o.getValue(name);
    }
    for (String k : o.fieldNames()) {
      if (k.equalsIgnoreCase(name)) {
        return o.getValue(k);
      }
    }
    return null;
  }

  private static long number(Object v, long absent, String what) {
    if (v == null) {
      return absent;
    }
    if (v instanceof Number n && n.doubleValue() == Math.rint(n.doubleValue())) {
      return n.longValue();
    }
    throw new IllegalArgumentException(what + " " + v + " is not a whole number");
  }
}
