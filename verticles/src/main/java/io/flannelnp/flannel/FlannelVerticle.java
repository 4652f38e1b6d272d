package io.flannelnp.flannel;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Failure;
import io.flannelnp.bus.Observed;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.flannel.FlannelMessage.AttachEndpoint;
import io.flannelnp.flannel.FlannelMessage.DetachEndpoint;
import io.flannelnp.flannel.FlannelMessage.EndpointAttached;
import io.flannelnp.flannel.FlannelMessage.EnsureNetwork;
import io.flannelnp.flannel.FlannelMessage.NetworkReady;
import io.flannelnp.flannel.FlannelMessage.RemoveNetwork;
import io.flannelnp.flannel.Kernel.Applied;
import io.flannelnp.flannel.Kernel.KernelException;
import io.vertx.core.Future;
import io.vertx.core.eventbus.Message;
import io.vertx.core.json.DecodeException;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.function.Function;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The data plane between hosts: Flannel leases, the flannel.&lt;VNI&gt; devices, bridges and veths,
 * and per remote lease one neighbour, one FDB entry and one route. This build reads the leases
 * and networks in its reconcile pass; the bridge and veth requests of {@link FlannelMessage} are
 * served for real:
 *
 * <ul>
 *   <li>{@link EnsureNetwork}: bridge {@link Names#bridge} (stp off, MTU = uplink MTU − 50, the
 *       gateway address as its only IPv4 address, up), changing only what differs.</li>
 *   <li>{@link AttachEndpoint}: one veth pair in one {@code ip -batch}; a failed batch is undone.</li>
 *   <li>{@link DetachEndpoint}, {@link RemoveNetwork}: deletions; what is missing is success.</li>
 * </ul>
 *
 * Kernel work runs in {@code vertx.executeBlocking(…, ordered=true)}, so requests are applied one
 * at a time in arrival order; every batch given to a tool is published as
 * {@link Observed.KernelBatch} on {@link Addresses#KERNEL_BATCH}.
 */
public final class FlannelVerticle extends ReconcilerVerticle {
  private static final Logger LOG = Logger.getLogger(FlannelVerticle.class.getName());

  /** VXLAN's overhead (outer Ethernet, IPv4, UDP and VXLAN headers), as Flannel subtracts it. */
  static final int VXLAN_OVERHEAD = 50;
  /** The uplink MTU assumed when there is no -iface and no default route. */
  static final int DEFAULT_UPLINK_MTU = 1500;
  /** Bridge alias prefix: the alias holds the flannel ID, so `ip link` tells which network it is. */
  static final String BRIDGE_ALIAS = "fnp-net:";
  /** Host-side veth alias prefix: the alias holds the full endpoint ID. */
  static final String VETH_ALIAS = "fnp-ep:";
  /** Request-driven batches are not computed from an etcd revision. */
  private static final long NO_REVISION = 0;

  private final Config config;
  private final EtcdSchema schema;
  private final Kernel kernel;

  public FlannelVerticle(Config config, EtcdSchema schema) {
    this(config, schema, Kernel.current());
  }

  public FlannelVerticle(Config config, EtcdSchema schema, Kernel kernel) {
    this.config = config;
    this.schema = schema;
    this.kernel = kernel;
  }

  @Override
  protected String plane() {
    return "flannel";
  }

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.NETWORK_CONFIG, Family.SUBNET_LEASES);
  }

  @Override
  protected Future<?> startPlane() {
    vertx.eventBus().<EnsureNetwork>consumer(Addresses.FLANNEL_NETWORK_ENSURE,
        m -> serve(m, EnsureNetwork.class, this::ensureNetwork));
    vertx.eventBus().<AttachEndpoint>consumer(Addresses.FLANNEL_ENDPOINT_ATTACH,
        m -> serve(m, AttachEndpoint.class, this::attachEndpoint));
    vertx.eventBus().<DetachEndpoint>consumer(Addresses.FLANNEL_ENDPOINT_DETACH,
        m -> serve(m, DetachEndpoint.class, this::detachEndpoint));
    vertx.eventBus().<RemoveNetwork>consumer(Addresses.FLANNEL_NETWORK_REMOVE,
        m -> serve(m, RemoveNetwork.class, this::removeNetwork));
    return Future.succeededFuture();
  }

  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    long networks = state.kvs().keySet().stream().filter(k -> schema.family(k) == Family.NETWORK_CONFIG).count();
    long leases = state.kvs().keySet().stream().filter(k -> schema.family(k) == Family.SUBNET_LEASES).count();
    return Future.succeededFuture(networks + " networks, " + leases + " subnet leases in etcd (node "
        + config.nodeName() + "); no kernel changes");
  }

  // ---- request plumbing ------------------------------------------------------------------------

  /** A request refused with a {@link Failure} code and a text for the user. */
  static final class Refused extends RuntimeException {
    final int code;

    Refused(int code, String message) {
      super(message, null, false, false);
      this.code = code;
    }
  }

  /**
   * Validates the request on the event loop (cheap, no I/O), then runs its kernel work on a worker,
   * ordered with every other request of this verticle.
   */
  private <T> void serve(Message<T> m, Class<T> type, Function<T, Callable<Object>> plan) {
    Callable<Object> work;
    try {
      Object body = m.body();
      if (!type.isInstance(body)) {
        m.fail(Failure.BAD_REQUEST, "expected a " + type.getSimpleName() + " body, got "
            + (body == null ? "none" : body.getClass().getSimpleName()));
        return;
      }
      work = plan.apply(type.cast(body));
    } catch (Refused r) {
      m.fail(r.code, r.getMessage());
      return;
    } catch (IllegalArgumentException e) {
      m.fail(Failure.BAD_REQUEST, e.getMessage());
      return;
    }
    vertx.executeBlocking(work, true).onComplete(ar -> {
      if (ar.succeeded()) {
        m.reply(ar.result());
        return;
      }
      Throwable t = ar.cause();
      if (t instanceof Refused r) {
        m.fail(r.code, r.getMessage());
      } else if (t instanceof KernelException k) {
        m.fail(k.unavailable() ? Failure.UNAVAILABLE : Failure.INTERNAL, k.getMessage());
      } else {
        LOG.log(Level.WARNING, "flannel request " + type.getSimpleName() + " failed", t);
        m.fail(Failure.INTERNAL, type.getSimpleName() + " failed: " + t);
      }
    });
  }

  // ---- EnsureNetwork ---------------------------------------------------------------------------

  private Callable<Object> ensureNetwork(EnsureNetwork req) {
    String bridge = Names.bridge(req.flannelId());
    String gateway = Kernel.ipv4Cidr(req.gatewayCidr());
    if (req.vni() < 0 || req.vni() > Config.MAX_VNI) {
      throw new IllegalArgumentException("invalid VNI " + req.vni() + ": expected 0-" + Config.MAX_VNI);
    }
    return () -> {
      Map<String, Link> links = links();
      int mtu = uplinkMtu(links) - VXLAN_OVERHEAD;
      if (mtu < 68) {
        throw new Refused(Failure.INTERNAL, "the uplink's MTU " + (mtu + VXLAN_OVERHEAD)
            + " leaves no room for VXLAN's " + VXLAN_OVERHEAD + " bytes");
      }
      String alias = BRIDGE_ALIAS + req.flannelId();
      Link b = links.get(bridge);
      List<String> lines = new ArrayList<>();
      if (b == null) {
        lines.add("link add name " + bridge + " address " + bridgeMac(req.flannelId()) + " mtu " + mtu
            + " type bridge stp_state 0");
        lines.add("link set dev " + bridge + " alias " + alias); // the kernel ignores an alias in link add
        lines.add("addr replace " + gateway + " dev " + bridge);
        lines.add("link set dev " + bridge + " up");
        try {
          apply(lines);
        } catch (KernelException e) {
          undo(List.of(bridge));
          throw e;
        }
        return new NetworkReady(req.flannelId(), bridge, mtu);
      }
      if (!"bridge".equals(b.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + bridge + " exists in " + kernel.where() + " but is "
            + b.describeKind() + ", not the bridge of network " + req.flannelId() + "; remove it first");
      }
      if (b.alias() != null && b.alias().startsWith(BRIDGE_ALIAS) && !b.alias().equals(alias)) {
        throw new Refused(Failure.CONFLICT, "bridge " + bridge + " belongs to network "
            + b.alias().substring(BRIDGE_ALIAS.length()) + ", not " + req.flannelId());
      }
      if (b.stpState() != 0) {
        lines.add("link set dev " + bridge + " type bridge stp_state 0");
      }
      if (b.mtu() != mtu) {
        lines.add("link set dev " + bridge + " mtu " + Kernel.mtu(mtu));
      }
      if (!alias.equals(b.alias())) {
        lines.add("link set dev " + bridge + " alias " + alias);
      }
      List<String> others = new ArrayList<>();
      boolean has = false;
      for (String a : ipv4Addresses(bridge)) {
        if (a.equals(gateway)) {
          has = true;
        } else {
          others.add(a);
        }
      }
      for (String a : others) {
        lines.add("addr del " + a + " dev " + bridge);
      }
      // after deletions always (re)add: deleting a primary address can take secondaries with it
      if (!has || !others.isEmpty()) {
        lines.add("addr replace " + gateway + " dev " + bridge);
      }
      if (!b.up()) {
        lines.add("link set dev " + bridge + " up");
      }
      if (!lines.isEmpty()) {
        apply(lines);
      }
      return new NetworkReady(req.flannelId(), bridge, mtu);
    };
  }

  /**
   * The uplink's MTU: -iface (a name or an address of this node) if given, else the device of the
   * default route with the lowest metric, else {@value #DEFAULT_UPLINK_MTU}.
   */
  private int uplinkMtu(Map<String, Link> links) throws KernelException {
    Optional<String> iface = config.flannelOptions().iface();
    if (iface.isPresent()) {
      String v = iface.get();
      String name = v;
      if (v.matches("[0-9.]+")) {
        String ip;
        try {
          ip = Kernel.ipv4(v);
        } catch (IllegalArgumentException e) {
          throw new Refused(Failure.UNAVAILABLE, "-iface " + v + " (DEFAULT_FLANNEL_OPTIONS) is neither an interface"
              + " name nor an IPv4 address");
        }
        name = interfaceHolding(ip).orElseThrow(() -> new Refused(Failure.UNAVAILABLE,
            "-iface " + v + " (DEFAULT_FLANNEL_OPTIONS): no interface in " + kernel.where() + " holds that address"));
      }
      Link l = links.get(name);
      if (l == null) {
        throw new Refused(Failure.UNAVAILABLE, "-iface " + v + " (DEFAULT_FLANNEL_OPTIONS): no such interface in "
            + kernel.where());
      }
      return l.mtu();
    }
    JsonArray routes = parse(kernel.ipJson("route", "show", "default"), "ip route show default");
    List<JsonObject> defaults = new ArrayList<>();
    for (Object o : routes) {
      if (o instanceof JsonObject r) {
        defaults.add(r);
      }
    }
    defaults.sort(Comparator.comparingLong(r -> r.getLong("metric", 0L)));
    for (JsonObject r : defaults) {
      String dev = r.getString("dev");
      if (dev == null && r.getJsonArray("nexthops") != null && !r.getJsonArray("nexthops").isEmpty()) {
        dev = r.getJsonArray("nexthops").getJsonObject(0).getString("dev");
      }
      Link l = dev == null ? null : links.get(dev);
      if (l != null) {
        return l.mtu();
      }
    }
    return DEFAULT_UPLINK_MTU;
  }

  private Optional<String> interfaceHolding(String address) throws KernelException {
    for (Object o : parse(kernel.ipJson("addr", "show"), "ip addr show")) {
      if (o instanceof JsonObject l) {
        JsonArray infos = l.getJsonArray("addr_info", new JsonArray());
        for (Object i : infos) {
          if (i instanceof JsonObject a && "inet".equals(a.getString("family")) && address.equals(a.getString("local"))) {
            return Optional.ofNullable(l.getString("ifname"));
          }
        }
      }
    }
    return Optional.empty();
  }

  /** The IPv4 addresses of a link as "a.b.c.d/len". */
  private List<String> ipv4Addresses(String dev) throws KernelException {
    List<String> out = new ArrayList<>();
    for (Object o : parse(kernel.ipJson("addr", "show", "dev", Kernel.ifname(dev)), "ip addr show dev " + dev)) {
      if (o instanceof JsonObject l) {
        for (Object i : l.getJsonArray("addr_info", new JsonArray())) {
          if (i instanceof JsonObject a && "inet".equals(a.getString("family"))) {
            out.add(Kernel.ipv4(a.getString("local")) + "/" + a.getInteger("prefixlen"));
          }
        }
      }
    }
    return out;
  }

  /**
   * A fixed, locally administered MAC for the bridge, derived from node and network. Without one
   * a Linux bridge takes the lowest MAC of its ports and changes it as containers come and go,
   * which leaves stale gateway entries in the containers' ARP caches (Docker sets one for the
   * same reason); derived rather than random so a re-created bridge keeps its MAC.
   */
  private String bridgeMac(String flannelId) {
    try {
      byte[] h = MessageDigest.getInstance("SHA-1")
          .digest((config.nodeName() + "/" + flannelId).getBytes(StandardCharsets.UTF_8));
      h[0] = (byte) ((h[0] & 0xfe) | 0x02);
      StringBuilder b = new StringBuilder();
      for (int i = 0; i < 6; i++) {
        b.append(i == 0 ? "" : ":").append(String.format("%02x", h[i] & 0xff));
      }
      return Kernel.mac(b.toString());
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  // ---- AttachEndpoint --------------------------------------------------------------------------

  private Callable<Object> attachEndpoint(AttachEndpoint req) {
    String bridge = Names.bridge(req.flannelId());
    String host = Names.hostVeth(req.endpointId());
    String cont = Names.containerVeth(req.endpointId());
    String mac = req.macAddress() == null || req.macAddress().isEmpty() ? null : Kernel.mac(req.macAddress());
    String alias = VETH_ALIAS + req.endpointId();
    return () -> {
      Map<String, Link> links = links();
      Link b = links.get(bridge);
      if (b == null) {
        throw new Refused(Failure.NOT_FOUND, "network " + req.flannelId()
            + " is not set up on this node (EnsureNetwork first)");
      }
      if (!"bridge".equals(b.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + bridge + " of network " + req.flannelId() + " is "
            + b.describeKind() + ", not a bridge");
      }
      int mtu = Kernel.mtu(b.mtu());
      Link h = links.get(host);
      Link c = links.get(cont);
      if (h != null) {
        return existingPair(req, bridge, h, c, mac, alias, mtu);
      }
      List<String> lines = new ArrayList<>();
      if (c != null) {
        // a leftover container side without its host side is no pair of ours any more
        lines.add("link del dev " + cont);
      }
      lines.add("link add name " + host + " mtu " + mtu + " type veth peer name " + cont
          + " mtu " + mtu + (mac == null ? "" : " address " + mac));
      lines.add("link set dev " + host + " alias " + alias);
      lines.add("link set dev " + host + " master " + bridge);
      lines.add("link set dev " + host + " up");
      try {
        apply(lines);
      } catch (KernelException e) {
        undo(List.of(host, cont));
        throw new Refused(Failure.INTERNAL, "could not create the veth pair of endpoint " + req.endpointId()
            + " (" + host + "/" + cont + "); nothing was left behind: " + e.getMessage());
      }
      return new EndpointAttached(req.endpointId(), host, cont, mtu);
    };
  }

  /** Docker retried: the pair exists. Fix what differs and answer as the first time. */
  private Object existingPair(AttachEndpoint req, String bridge, Link h, Link c, String mac, String alias, int mtu)
      throws KernelException {
    String host = h.name();
    String cont = Names.containerVeth(req.endpointId());
    if (!"veth".equals(h.kind())) {
      throw new Refused(Failure.CONFLICT, "link " + host + " exists but is " + h.describeKind()
          + ", not the veth of endpoint " + req.endpointId() + "; remove it first");
    }
    if (h.alias() != null && h.alias().startsWith(VETH_ALIAS) && !h.alias().equals(alias)) {
      throw new Refused(Failure.CONFLICT, "veth " + host + " belongs to endpoint "
          + h.alias().substring(VETH_ALIAS.length()) + ", whose ID starts like " + req.endpointId()
          + "; the two cannot be on one node at once");
    }
    if (h.master() != null && !h.master().equals(bridge)) {
      throw new Refused(Failure.CONFLICT, "veth " + host + " of endpoint " + req.endpointId() + " is on "
          + h.master() + ", not on " + bridge + " of network " + req.flannelId());
    }
    if (h.peerElsewhere() || c == null || !cont.equals(h.peer())) {
      throw new Refused(Failure.CONFLICT, "endpoint " + req.endpointId() + " is in use: the container side of "
          + host + " is no longer in " + kernel.where() + " (a container holds it); detach it first");
    }
    List<String> lines = new ArrayList<>();
    if (h.mtu() != mtu) {
      lines.add("link set dev " + host + " mtu " + mtu);
    }
    if (c.mtu() != mtu) {
      lines.add("link set dev " + cont + " mtu " + mtu);
    }
    if (mac != null && !mac.equals(c.mac())) {
      lines.add("link set dev " + cont + " address " + mac);
    }
    if (!alias.equals(h.alias())) {
      lines.add("link set dev " + host + " alias " + alias);
    }
    if (h.master() == null) {
      lines.add("link set dev " + host + " master " + bridge);
    }
    if (!h.up()) {
      lines.add("link set dev " + host + " up");
    }
    if (!lines.isEmpty()) {
      try {
        apply(lines);
      } catch (KernelException e) {
        undo(List.of(host, cont));
        throw new Refused(Failure.INTERNAL, "could not repair the veth pair of endpoint " + req.endpointId()
            + "; it was removed: " + e.getMessage());
      }
    }
    return new EndpointAttached(req.endpointId(), host, cont, mtu);
  }

  // ---- DetachEndpoint --------------------------------------------------------------------------

  private Callable<Object> detachEndpoint(DetachEndpoint req) {
    // the names come from the endpoint ID alone; the API sends "" when it no longer knows the network
    if (req.flannelId() != null && !req.flannelId().isEmpty()) {
      Names.requireFlannelId(req.flannelId());
    }
    String host = Names.hostVeth(req.endpointId());
    String cont = Names.containerVeth(req.endpointId());
    String alias = VETH_ALIAS + req.endpointId();
    return () -> {
      Map<String, Link> links = links();
      Link h = links.get(host);
      Link c = links.get(cont);
      if (h != null && !"veth".equals(h.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + host + " is " + h.describeKind() + ", not the veth of endpoint "
            + req.endpointId() + "; left alone");
      }
      if (h != null && h.alias() != null && h.alias().startsWith(VETH_ALIAS) && !h.alias().equals(alias)) {
        throw new Refused(Failure.CONFLICT, "veth " + host + " belongs to endpoint "
            + h.alias().substring(VETH_ALIAS.length()) + ", not " + req.endpointId() + "; left alone");
      }
      List<String> lines = new ArrayList<>();
      if (h != null) {
        lines.add("link del dev " + host); // takes its peer along, wherever it is
      }
      if (c != null && (h == null || !cont.equals(h.peer()))) {
        lines.add("link del dev " + cont);
      }
      if (lines.isEmpty()) {
        return new Ack("endpoint " + req.endpointId() + " has no veth pair on this node");
      }
      deleteAll(lines, List.of(host, cont));
      return new Ack("deleted the veth pair " + host + "/" + cont + " of endpoint " + req.endpointId());
    };
  }

  // ---- RemoveNetwork ---------------------------------------------------------------------------

  private Callable<Object> removeNetwork(RemoveNetwork req) {
    String bridge = Names.bridge(req.flannelId());
    return () -> {
      Map<String, Link> links = links();
      Link b = links.get(bridge);
      if (b == null) {
        return new Ack("network " + req.flannelId() + " has no bridge on this node");
      }
      if (!"bridge".equals(b.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + bridge + " is " + b.describeKind()
            + ", not the bridge of network " + req.flannelId() + "; left alone");
      }
      List<String> lines = new ArrayList<>();
      List<String> names = new ArrayList<>();
      for (Link l : links.values()) {
        if (bridge.equals(l.master()) && Names.isHostVeth(l.name())) {
          lines.add("link del dev " + Kernel.ifname(l.name()));
          names.add(l.name());
        }
      }
      lines.add("link del dev " + bridge);
      names.add(bridge);
      deleteAll(lines, names);
      return new Ack("deleted bridge " + bridge + (names.size() > 1 ? " and " + (names.size() - 1) + " veths" : ""));
    };
  }

  // ---- kernel helpers --------------------------------------------------------------------------

  /** Deletes with -force; a failure only counts if some of the links are still there afterwards. */
  private void deleteAll(List<String> lines, List<String> names) throws KernelException {
    try {
      apply(lines, true);
    } catch (KernelException e) {
      Map<String, Link> after = links();
      if (names.stream().anyMatch(after::containsKey)) {
        throw e;
      }
    }
  }

  /** Best-effort clean-up after a failed batch: deletes whichever of these links exist now. */
  private void undo(List<String> names) {
    try {
      Map<String, Link> now = links();
      List<String> lines = new ArrayList<>();
      for (String n : names) {
        if (now.containsKey(n)) {
          lines.add("link del dev " + n);
        }
      }
      if (!lines.isEmpty()) {
        apply(lines, true);
      }
    } catch (KernelException | RuntimeException e) {
      LOG.log(Level.WARNING, "clean-up of " + names + " in " + kernel.where() + " failed: " + e.getMessage());
    }
  }

  private Applied apply(List<String> lines) throws KernelException {
    return apply(lines, false);
  }

  /** Runs one {@code ip} batch and publishes it, applied or failed, as a KernelBatch. */
  private Applied apply(List<String> lines, boolean force) throws KernelException {
    try {
      Applied a = kernel.ipBatch(lines, force);
      publish(new Observed.KernelBatch(plane(), a.tool(), a.text(), true, "", a.micros(), NO_REVISION));
      return a;
    } catch (KernelException e) {
      publish(new Observed.KernelBatch(plane(), e.tool(), e.text(), false, e.getMessage(), e.micros(), NO_REVISION));
      throw e;
    }
  }

  private void publish(Observed.KernelBatch batch) {
    LOG.log(batch.ok() ? Level.FINE : Level.WARNING, () -> "flannel " + batch.tool() + " batch in " + kernel.where()
        + (batch.ok() ? " applied" : " failed: " + batch.error()) + "\n" + batch.text());
    vertx.eventBus().publish(Addresses.KERNEL_BATCH, batch);
  }

  /** Every link of the namespace by name, with what these requests look at. */
  private Map<String, Link> links() throws KernelException {
    Map<String, Link> out = new LinkedHashMap<>();
    for (Object o : parse(kernel.ipJson("-d", "link", "show"), "ip -d link show")) {
      if (o instanceof JsonObject j && j.getString("ifname") != null) {
        Link l = Link.of(j);
        out.put(l.name(), l);
      }
    }
    return out;
  }

  private static JsonArray parse(String json, String what) {
    try {
      return new JsonArray(json);
    } catch (DecodeException e) {
      throw new IllegalStateException("cannot read the JSON of `" + what + "`: " + e.getMessage());
    }
  }

  /** One link as `ip -d -json link show` describes it. */
  record Link(String name, String kind, String master, int mtu, boolean up, String mac, String alias, String peer,
      boolean peerElsewhere, int stpState) {

    static Link of(JsonObject j) {
      JsonObject info = j.getJsonObject("linkinfo", new JsonObject());
      JsonObject data = info.getJsonObject("info_data", new JsonObject());
      JsonArray flags = j.getJsonArray("flags", new JsonArray());
      return new Link(j.getString("ifname"), info.getString("info_kind"), j.getString("master"),
          j.getInteger("mtu", 0), flags.contains("UP"), j.getString("address"), j.getString("ifalias"),
          j.getString("link"), j.containsKey("link_netnsid"), data.getInteger("stp_state", 0));
    }

    String describeKind() {
      return kind == null ? "a device of no particular kind" : "a " + kind + " device";
    }
  }
}
