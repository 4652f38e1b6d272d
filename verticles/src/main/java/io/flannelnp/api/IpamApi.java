package io.flannelnp.api;

import io.flannelnp.admin.Metrics;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdUnavailableException;
import io.flannelnp.ipam.AddressPlan;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.Ipam;
import io.flannelnp.ipam.Ipam.Allocation;
import io.flannelnp.ipam.IpamException;
import io.flannelnp.ipam.Ipv4;
import io.flannelnp.ipam.NetworkRecord;
import io.flannelnp.ipam.Owner;
import io.flannelnp.ipam.Owner.Kind;
import io.flannelnp.ipam.Owner.Space;
import io.vertx.core.Future;
import io.vertx.core.json.JsonObject;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.function.Supplier;
import java.util.logging.Logger;

/**
 * Docker's IpamDriver calls (docker-contract.md §4) on top of {@link Ipam}. Two address spaces:
 * the Swarm leader's allocator asks in FlannelGlobal (subnets, its gateway, VIPs and task
 * placeholders, all in the cluster range); a node asks in FlannelLocal (its gateway and its
 * containers, all in its own block). A node's request for a leader-chosen address gets a fresh
 * address of its own block; the leader's placeholder stays held until Swarm releases it.
 */
public final class IpamApi {
  private static final Logger LOG = Logger.getLogger(IpamApi.class.getName());
  public static final String GLOBAL = "FlannelGlobal";
  public static final String LOCAL = "FlannelLocal";
  static final String FLANNEL_ID = "flannel-id";
  static final String REQUEST_TYPE = "RequestAddressType";
  static final String GATEWAY_TYPE = "com.docker.network.gateway";
  static final String MAC_OPTION = "com.docker.network.endpoint.macaddress";
  static final String SERIAL_OPTION = "com.docker.network.ipam.serial";
  static final String HOWTO = "docker network create --attachable -d flannel-np:<tag> --ipam-driver flannel-np:<tag>"
      + " --ipam-opt flannel-id=$(uuidgen) NAME";

  /** A pool as Docker names it: "FlannelGlobal/<flannel-id>" or "FlannelLocal/<flannel-id>". */
  public record PoolId(Space space, String flannelId) {
    static PoolId parse(String id, Req req) {
      int slash = id.indexOf('/');
      String space = slash < 0 ? "" : id.substring(0, slash);
      String fid = slash < 0 ? "" : id.substring(slash + 1);
      if (!validFlannelId(fid) || !(space.equals(GLOBAL) || space.equals(LOCAL))) {
        throw new PluginError("unknown pool ID '" + Req.clip(id) + "' (flannel-np pool IDs look like "
            + GLOBAL + "/<flannel-id> or " + LOCAL + "/<flannel-id>)");
      }
      return new PoolId(space.equals(GLOBAL) ? Space.GLOBAL : Space.LOCAL, fid);
    }

    @Override
    public String toString() {
      return (space == Space.GLOBAL ? GLOBAL : LOCAL) + "/" + flannelId;
    }
  }

  private final Ipam ipam;
  private final AddressPlan plan;
  private final String node;
  private final Supplier<Future<String>> publicIp;
  /** Succeeds once this node's address settings are known to be the cluster's. */
  private final Supplier<Future<Void>> settings;

  public IpamApi(Ipam ipam, Config config, Supplier<Future<String>> publicIp) {
    this(ipam, config, publicIp, Future::succeededFuture);
  }

  public IpamApi(Ipam ipam, Config config, Supplier<Future<String>> publicIp, Supplier<Future<Void>> settings) {
    this.ipam = ipam;
    this.plan = ipam.plan();
    this.node = config.nodeName();
    this.publicIp = publicIp;
    this.settings = settings;
  }

  static boolean validFlannelId(String fid) {
    return fid.matches("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
  }

  public void register(PluginRoutes routes) {
    routes.handle("/IpamDriver.RequestPool", true, b -> guard(() -> Metrics.ipam("pool", requestPool(new Req("IpamDriver.RequestPool", b)))));
    routes.handle("/IpamDriver.ReleasePool", true, b -> guard(() -> releasePool(new Req("IpamDriver.ReleasePool", b))));
    routes.handle("/IpamDriver.RequestAddress", true,
        b -> guard(() -> Metrics.ipam("address", requestAddress(new Req("IpamDriver.RequestAddress", b)))));
    routes.handle("/IpamDriver.ReleaseAddress", true,
        b -> guard(() -> releaseAddress(new Req("IpamDriver.ReleaseAddress", b))));
  }

  /** Runs a handler; validation errors thrown synchronously and IPAM refusals become PluginErrors. */
  static Future<JsonObject> guard(Supplier<Future<JsonObject>> h) {
    Future<JsonObject> f;
    try {
      f = h.get();
    } catch (RuntimeException e) {
      f = Future.failedFuture(e);
    }
    return f.recover(err -> Future.failedFuture(toPluginError(err)));
  }

  static Throwable toPluginError(Throwable err) {
    if (err instanceof PluginError) {
      return err;
    }
    if (err instanceof IpamException || err instanceof EtcdUnavailableException
        || err instanceof io.flannelnp.ipam.ClusterSettings.Disagreement) {
      return new PluginError(err.getMessage());
    }
    if (err instanceof io.vertx.core.eventbus.ReplyException re) {
      return new PluginError(re.getMessage());
    }
    return err;
  }

  // ---- RequestPool / ReleasePool ------------------------------------------------------------

  Future<JsonObject> requestPool(Req r) {
    String space = r.string("AddressSpace");
    String pool = r.optString("Pool");
    String subPool = r.optString("SubPool");
    Map<String, String> opts = r.stringMap("Options");
    if (r.optBool("V6")) {
      throw new PluginError("flannel-np allocates IPv4 only; create the network without --ipv6");
    }
    if (!space.equals(GLOBAL) && !space.equals(LOCAL)) {
      throw new PluginError("unknown address space '" + Req.clip(space) + "' (flannel-np has " + GLOBAL + " and " + LOCAL + ")");
    }
    String fid = opts.get(FLANNEL_ID);
    if (fid == null || fid.isBlank()) {
      throw new PluginError("flannel-np needs a flannel-id IPAM option: " + HOWTO);
    }
    if (!validFlannelId(fid)) {
      throw new PluginError("flannel-id '" + Req.clip(fid) + "' must be 1-64 characters of A-Z a-z 0-9 _ . - (e.g. $(uuidgen))");
    }
    if (!subPool.isEmpty()) {
      throw new PluginError("--ip-range is not supported: flannel-np gives each node its own block of the network");
    }
    Optional<Cidr> wanted = Optional.empty();
    if (!pool.isEmpty()) {
      try {
        wanted = Optional.of(Cidr.parse(pool));
      } catch (IllegalArgumentException e) {
        throw new PluginError("Pool '" + Req.clip(pool) + "' is not an IPv4 subnet: " + e.getMessage());
      }
    }
    Map<String, String> remembered = new TreeMap<>(opts);
    remembered.remove(SERIAL_OPTION); // the allocator's own marker, not the user's
    // the request is valid: from here on addresses are handed out, so only with the cluster's settings
    if (space.equals(GLOBAL)) {
      Optional<Cidr> w = wanted;
      return settings.get().compose(v -> ipam.createNetwork(fid, w, remembered))
          .map(rec -> poolAnswer(new PoolId(Space.GLOBAL, fid), rec));
    }
    Optional<Cidr> w = wanted;
    return settings.get().compose(v -> ipam.network(fid)).compose(rec -> {
      if (w.isPresent() && !w.get().equals(rec.subnet())) {
        return Future.failedFuture(new PluginError("pool " + w.get() + " does not match the subnet " + rec.subnet()
            + " of network " + fid));
      }
      return ipam.addPoolRef(fid, node)
          .compose(refs -> publicIp.get())
          .compose(ip -> ipam.ensureNodeLease(fid, node, ip))
          .map(lease -> poolAnswer(new PoolId(Space.LOCAL, fid), rec));
    });
  }

  private static JsonObject poolAnswer(PoolId id, NetworkRecord rec) {
    return new JsonObject().put("PoolID", id.toString()).put("Pool", rec.subnet().toString()).put("Data", new JsonObject());
  }

  Future<JsonObject> releasePool(Req r) {
    PoolId id = PoolId.parse(r.string("PoolID"), r);
    if (id.space() == Space.GLOBAL) {
      // Also a rollback of a failed allocation (Swarm, a new leader): Ipam removes the network
      // only after Docker's FreeNetwork for it.
      return ipam.releaseGlobalPool(id.flannelId()).map(outcome -> {
        Metrics.poolRelease(outcome.name().toLowerCase(Locale.ROOT));
        return new JsonObject();
      });
    }
    return ipam.dropPoolRef(id.flannelId(), node).compose(refs -> {
      if (refs > 0) {
        return Future.succeededFuture(new JsonObject());
      }
      Optional<Ipam.NodeLease> lease = ipam.heldLease(id.flannelId());
      if (lease.isEmpty()) {
        return Future.succeededFuture(new JsonObject());
      }
      long gw = AddressPlan.nodeGateway(lease.get().block());
      return ipam.release(id.flannelId(), gw, o -> o.kind() == Kind.GATEWAY && o.space() == Space.LOCAL
          && o.node().equals(node)).map(x -> new JsonObject());
    });
  }

  // ---- RequestAddress / ReleaseAddress ------------------------------------------------------

  Future<JsonObject> requestAddress(Req r) {
    PoolId id = PoolId.parse(r.string("PoolID"), r);
    String addressText = r.optString("Address");
    Map<String, String> opts = r.stringMap("Options");
    Optional<Long> wanted = Optional.empty();
    if (!addressText.isEmpty()) {
      if (!Ipv4.isValid(addressText)) {
        throw r.bad("Address '" + Req.clip(addressText) + "' is not an IPv4 address");
      }
      wanted = Optional.of(Ipv4.parse(addressText));
    }
    boolean gateway = GATEWAY_TYPE.equals(opts.get(REQUEST_TYPE));
    String mac = opts.getOrDefault(MAC_OPTION, "").toLowerCase(Locale.ROOT);
    if (!mac.isEmpty() && !mac.matches("([0-9a-f]{2}:){5}[0-9a-f]{2}")) {
      throw r.bad("option " + MAC_OPTION + " '" + Req.clip(mac) + "' is not a MAC address");
    }
    Optional<Long> want = wanted;
    return settings.get().compose(v -> ipam.network(id.flannelId())).compose(rec -> {
      if (want.isPresent() && !rec.subnet().contains(want.get())) {
        return Future.failedFuture(new PluginError("address " + Ipv4.format(want.get()) + " is outside the subnet "
            + rec.subnet() + " of network " + id.flannelId()));
      }
      Future<Allocation> a = id.space() == Space.GLOBAL ? leaderAddress(rec, want, gateway)
          : nodeAddress(rec, want, gateway, mac);
      return a.map(al -> new JsonObject().put("Address", plan.withHostPrefix(al.address())).put("Data", new JsonObject()));
    });
  }

  /** The leader's requests: its gateway, VIPs and task placeholders, all in the cluster range (grown as needed). */
  private Future<Allocation> leaderAddress(NetworkRecord rec, Optional<Long> want, boolean gateway) {
    Cidr net = rec.subnet();
    String fid = rec.flannelId();
    if (gateway) {
      long gw = plan.clusterGateway(net);
      if (want.isPresent() && want.get() != gw) {
        return Future.failedFuture(new PluginError("flannel-np sets the network's gateway itself (" + Ipv4.format(gw)
            + "); create the network without --gateway"));
      }
      return ipam.allocateSpecific(fid, gw, Owner.leader(Kind.GATEWAY, node));
    }
    if (want.isPresent()) {
      long a = want.get();
      if (reserved(net, a)) {
        return Future.failedFuture(new PluginError("address " + Ipv4.format(a) + " is reserved in " + net
            + " (a network, gateway, VTEP or broadcast address)"));
      }
      return ipam.allocateSpecificCluster(rec, a, Owner.leader(Kind.PLACEHOLDER, node));
    }
    // the cluster range, growing into the network's free node blocks when it is full
    return ipam.allocateCluster(rec, Owner.leader(Kind.PLACEHOLDER, node));
  }

  /** A node's requests: its gateway and its containers, all in its own block. */
  private Future<Allocation> nodeAddress(NetworkRecord rec, Optional<Long> want, boolean gateway, String mac) {
    Cidr net = rec.subnet();
    String fid = rec.flannelId();
    return publicIp.get().compose(ip -> ipam.ensureNodeLease(fid, node, ip)).compose(lease -> {
      Cidr block = lease.block();
      if (gateway) {
        // Docker passes the leader's gateway; on this node the gateway is the node's own.
        return ipam.allocateSpecific(fid, AddressPlan.nodeGateway(block), Owner.nodeGateway(node));
      }
      String hint = "give nodes bigger blocks with a shorter DEFAULT_HOST_SUBNET_SIZE (now /" + block.prefix() + ")";
      String blockName = "this node's block " + block + " of network " + fid;
      if (want.isEmpty()) {
        // the same request again (Docker retrying one that timed out) gets the address it got then
        return untagged(fid, mac, "").compose(found -> found.isPresent() ? Future.succeededFuture(found.get())
            : ipam.allocateNext(fid, AddressPlan.nodeFirst(block), AddressPlan.nodeLast(block),
                Owner.container(node, mac, ""), blockName, hint));
      }
      long a = want.get();
      if (block.contains(a)) {
        if (a == block.base() || a == AddressPlan.nodeGateway(block) || a == block.last()) {
          return Future.failedFuture(new PluginError("address " + Ipv4.format(a) + " is reserved in " + block
              + " (the VTEP, gateway or broadcast address)"));
        }
        return ipam.allocateSpecific(fid, a, Owner.container(node, mac, ""));
      }
      return ipam.isClusterAddress(rec, a).compose(leaderChosen -> {
        if (leaderChosen) {
          // A leader-chosen task address: this node gives the container one of its own. A retry
          // for the same placeholder (and MAC, if Docker names one) gets the same address back.
          String ph = Ipv4.format(a);
          return untagged(fid, mac, ph).compose(found -> found.isPresent() ? Future.succeededFuture(found.get())
              : ipam.allocateNext(fid, AddressPlan.nodeFirst(block), AddressPlan.nodeLast(block),
                  Owner.container(node, mac, ph), blockName, hint));
        }
        Cidr other = Cidr.containing(a, block.prefix());
        return Future.failedFuture(new PluginError("address " + Ipv4.format(a) + " is in node block " + other
            + ", not in this node's block " + block + "; a container on this node can only have an address of " + block));
      });
    });
  }

  /**
   * This node's container address for the same request: the same MAC and placeholder (one
   * container), or without a MAC the same placeholder on an address no endpoint has claimed yet.
   * A request that names neither always gets a new address.
   */
  private Future<Optional<Allocation>> untagged(String fid, String mac, String placeholder) {
    if (mac.isEmpty() && placeholder.isEmpty()) {
      return Future.succeededFuture(Optional.empty());
    }
    return ipam.find(fid, o -> o.kind() == Kind.CONTAINER && o.space() == Space.LOCAL && o.node().equals(node)
        && (!mac.isEmpty() || o.endpoint().isEmpty()) && o.mac().equals(mac) && o.placeholder().equals(placeholder),
        false);
  }

  /** Network, cluster gateway, and every node block's VTEP, gateway and broadcast addresses. */
  private boolean reserved(Cidr net, long a) {
    if (a == net.base() || a == plan.clusterGateway(net) || a == net.last()) {
      return true;
    }
    if (plan.clusterRange(net).contains(a)) {
      return a == plan.clusterRange(net).last();
    }
    Cidr block = Cidr.containing(a, plan.hostSize());
    return a == block.base() || a == AddressPlan.nodeGateway(block) || a == block.last();
  }

  /**
   * The leader's release. Its gateway goes only when Docker freed the network: Swarm also releases
   * it to roll back a failed allocation, which must leave the network as it was.
   */
  private Future<Boolean> releaseGlobal(String fid, long a) {
    return ipam.network(fid).compose(rec -> {
      if (a != plan.clusterGateway(rec.subnet())) {
        return ipam.releaseCluster(rec, a, o -> o.space() == Space.GLOBAL);
      }
      return ipam.freed(fid).compose(freed -> {
        if (!freed) {
          LOG.info("ReleaseAddress of the gateway of network " + fid + " without FreeNetwork: a rollback; kept");
          return Future.succeededFuture(false);
        }
        return ipam.release(fid, a, o -> o.space() == Space.GLOBAL);
      });
    }, err -> err instanceof IpamException e && e.reason() == IpamException.Reason.NOT_FOUND
        ? Future.succeededFuture(false) : Future.failedFuture(err));
  }

  Future<JsonObject> releaseAddress(Req r) {
    PoolId id = PoolId.parse(r.string("PoolID"), r);
    String addressText = r.string("Address");
    String bare = addressText.contains("/") ? addressText.substring(0, addressText.indexOf('/')) : addressText;
    if (!Ipv4.isValid(bare)) {
      throw r.bad("Address '" + Req.clip(addressText) + "' is not an IPv4 address");
    }
    long a = Ipv4.parse(bare);
    String fid = id.flannelId();
    Future<Boolean> done = id.space() == Space.GLOBAL
        ? releaseGlobal(fid, a)
        : ipam.release(fid, a, o -> o.space() == Space.LOCAL && o.node().equals(node));
    return done.map(released -> {
      if (!released) {
        LOG.fine("ReleaseAddress " + bare + " in " + id + ": not held by this pool; nothing freed");
      }
      return new JsonObject();
    });
  }
}
