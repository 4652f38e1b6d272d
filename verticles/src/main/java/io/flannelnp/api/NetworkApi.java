package io.flannelnp.api;

import io.flannelnp.bus.Addresses;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.flannel.FlannelMessage.AttachEndpoint;
import io.flannelnp.flannel.FlannelMessage.DetachEndpoint;
import io.flannelnp.flannel.FlannelMessage.EndpointAttached;
import io.flannelnp.flannel.FlannelMessage.EnsureNetwork;
import io.flannelnp.flannel.FlannelMessage.RemoveNetwork;
import io.flannelnp.ipam.AddressPlan;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.Ipam;
import io.flannelnp.ipam.Ipv4;
import io.flannelnp.ipam.NetworkRecord;
import io.flannelnp.ipam.Owner.Kind;
import io.flannelnp.ipam.Owner.Space;
import io.vertx.core.Future;
import io.vertx.core.eventbus.DeliveryOptions;
import io.vertx.core.eventbus.EventBus;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Supplier;

/**
 * Docker's NetworkDriver calls (docker-contract.md §3). Network and endpoint facts live in etcd
 * (so a restarted daemon answers Leave/DeleteEndpoint for endpoints created before it); the
 * bridge and veth work is the FlannelVerticle's, asked over the event bus.
 */
public final class NetworkApi {
  static final String OPT_FLANNEL_ID = "io.flannel-np.flannel-id";
  static final String OPT_VNI = "io.flannel-np.vni";
  static final String GENERIC = "com.docker.network.generic";
  private static final DeliveryOptions KERNEL_CALL = new DeliveryOptions().setSendTimeout(20_000);
  /** How long Join waits for the resolver in a namespace that is already the container's (Docker 28+). */
  private static final java.time.Duration DNS_IN_JOIN = java.time.Duration.ofSeconds(5);
  private static final java.util.logging.Logger LOG = java.util.logging.Logger.getLogger(NetworkApi.class.getName());

  private final Ipam ipam;
  private final AddressPlan plan;
  private final EtcdStore etcd;
  private final EtcdSchema schema;
  private final EventBus bus;
  private final String node;
  private final Supplier<Future<String>> publicIp;
  /** Docker network ID → flannel-id, learnt from AllocateNetwork/CreateNetwork or etcd. */
  private final Map<String, String> networkIds = new ConcurrentHashMap<>();
  /**
   * The endpoint records this node wrote (only this node writes its endpoint keys), so Join,
   * Leave and DeleteEndpoint skip an etcd read on the hot path; after a restart they read etcd.
   */
  private final Map<String, String> endpoints = new ConcurrentHashMap<>();

  public NetworkApi(Ipam ipam, EtcdStore etcd, EtcdSchema schema, EventBus bus, Config config,
      Supplier<Future<String>> publicIp) {
    this.ipam = ipam;
    this.plan = ipam.plan();
    this.etcd = etcd;
    this.schema = schema;
    this.bus = bus;
    this.node = config.nodeName();
    this.publicIp = publicIp;
  }

  public void register(PluginRoutes routes) {
    routes.handle("/NetworkDriver.AllocateNetwork", true, b -> IpamApi.guard(() -> allocateNetwork(req("AllocateNetwork", b))));
    routes.handle("/NetworkDriver.FreeNetwork", true, b -> IpamApi.guard(() -> freeNetwork(req("FreeNetwork", b))));
    routes.handle("/NetworkDriver.CreateNetwork", true, b -> IpamApi.guard(() -> createNetwork(req("CreateNetwork", b))));
    routes.handle("/NetworkDriver.DeleteNetwork", true, b -> IpamApi.guard(() -> deleteNetwork(req("DeleteNetwork", b))));
    routes.handle("/NetworkDriver.CreateEndpoint", true, b -> IpamApi.guard(() -> createEndpoint(req("CreateEndpoint", b))));
    routes.handle("/NetworkDriver.EndpointOperInfo", false, b -> IpamApi.guard(() -> {
      Req r = req("EndpointOperInfo", b);
      r.id("NetworkID");
      r.id("EndpointID");
      return Future.succeededFuture(new JsonObject().put("Value", new JsonObject()));
    }));
    routes.handle("/NetworkDriver.DeleteEndpoint", true, b -> IpamApi.guard(() -> deleteEndpoint(req("DeleteEndpoint", b))));
    routes.handle("/NetworkDriver.Join", true, b -> IpamApi.guard(() -> join(req("Join", b))));
    routes.handle("/NetworkDriver.Leave", true, b -> IpamApi.guard(() -> leave(req("Leave", b))));
  }

  private static Req req(String call, JsonObject b) {
    return new Req("NetworkDriver." + call, b);
  }

  // ---- networks -----------------------------------------------------------------------------

  /** The leader: echo the user's options plus ours; they come back in every node's CreateNetwork. */
  Future<JsonObject> allocateNetwork(Req r) {
    String netId = r.id("NetworkID");
    Map<String, String> opts = r.stringMap("Options");
    Optional<Cidr> pool = firstPool(r);
    return flannelIdOf(opts.get(OPT_FLANNEL_ID), pool, "AllocateNetwork").compose(fid -> ipam.network(fid)
        .compose(rec -> ipam.claimDockerId(fid, netId).recover(err -> err instanceof Ipam.FlannelIdTaken t
            ? dockerNetworkName(t.holder()).compose(name -> {
              String msg = t.getMessage().replace("Docker network " + t.holder(),
                  name.map(n -> "network '" + n + "' (" + t.holder() + ")").orElse("Docker network " + t.holder()));
              LOG.warning("AllocateNetwork of Docker network " + netId + " refused: " + msg);
              return Future.failedFuture(new PluginError(msg));
            })
            : Future.failedFuture(err)).map(v -> {
          networkIds.put(netId, fid);
          JsonObject out = new JsonObject();
          opts.forEach(out::put);
          out.put(OPT_FLANNEL_ID, fid).put(OPT_VNI, Integer.toString(rec.vni()));
          return new JsonObject().put("Options", out);
        })));
  }

  /** A Docker network's name from the managers' mirror, if they wrote it. */
  private Future<Optional<String>> dockerNetworkName(String dockerId) {
    return etcd.get(schema.dockerNetwork(dockerId)).map(kv -> kv.flatMap(k -> {
      try {
        return Optional.ofNullable(io.flannelnp.model.DockerNetwork.fromJson(k.value()).name()).filter(n -> !n.isEmpty());
      } catch (RuntimeException malformed) {
        return Optional.empty();
      }
    })).recover(err -> Future.succeededFuture(Optional.empty()));
  }

  /**
   * The leader's FreeNetwork: Docker removes the network. Marked in etcd, so the ReleasePool that
   * follows removes the network's state (a ReleasePool without it is a rollback and changes nothing).
   */
  Future<JsonObject> freeNetwork(Req r) {
    String netId = r.id("NetworkID");
    return lookupNetwork(netId).compose(fid -> {
      networkIds.remove(netId);
      if (fid.isEmpty()) {
        LOG.fine("FreeNetwork of " + netId + ": not a network flannel-np knows; nothing to do");
        return Future.succeededFuture(new JsonObject());
      }
      return ipam.markFreed(fid.get(), netId).map(x -> new JsonObject());
    });
  }

  Future<JsonObject> createNetwork(Req r) {
    String netId = r.id("NetworkID");
    JsonObject options = r.optObject("Options");
    Object generic = options.getValue(GENERIC);
    String fromOpts = generic instanceof JsonObject g && g.getValue(OPT_FLANNEL_ID) instanceof String s ? s : null;
    Optional<Cidr> pool = firstPool(r);
    return flannelIdOf(fromOpts, pool, "CreateNetwork").compose(fid -> ipam.network(fid).compose(rec -> {
      networkIds.put(netId, fid);
      return ensureBridge(rec).map(v -> new JsonObject());
    }));
  }

  private Future<Void> ensureBridge(NetworkRecord rec) {
    return publicIp.get().compose(ip -> ipam.ensureNodeLease(rec.flannelId(), node, ip)).compose(lease -> {
      String gw = Ipv4.format(AddressPlan.nodeGateway(lease.block())) + "/" + plan.hostSize();
      return bus.request(Addresses.FLANNEL_NETWORK_ENSURE, new EnsureNetwork(rec.flannelId(), rec.vni(), gw), KERNEL_CALL)
          .mapEmpty();
    });
  }

  Future<JsonObject> deleteNetwork(Req r) {
    String netId = r.id("NetworkID");
    return lookupNetwork(netId).compose(fid -> {
      networkIds.remove(netId);
      if (fid.isEmpty()) {
        return Future.succeededFuture(new JsonObject());
      }
      return bus.request(Addresses.FLANNEL_NETWORK_REMOVE, new RemoveNetwork(fid.get()), KERNEL_CALL)
          .map(m -> new JsonObject());
    });
  }

  private Optional<Cidr> firstPool(Req r) {
    JsonArray data = r.optArray("IPv4Data");
    if (data.isEmpty()) {
      return Optional.empty();
    }
    if (!(data.getValue(0) instanceof JsonObject d) || !(d.getValue("Pool") instanceof String p)) {
      throw r.bad("IPv4Data[0].Pool must be a subnet string");
    }
    try {
      return Optional.of(Cidr.parse(p));
    } catch (IllegalArgumentException e) {
      throw r.bad("IPv4Data[0].Pool '" + Req.clip(p) + "' is not an IPv4 subnet");
    }
  }

  /** The flannel-id from our own option if Docker echoed it, else from the subnet's reservation. */
  private Future<String> flannelIdOf(String fromOptions, Optional<Cidr> pool, String call) {
    if (fromOptions != null && IpamApi.validFlannelId(fromOptions)) {
      return Future.succeededFuture(fromOptions);
    }
    if (pool.isEmpty()) {
      return Future.failedFuture(new PluginError(call + ": no IPv4 pool; flannel-np networks need --ipam-driver flannel-np: "
          + IpamApi.HOWTO));
    }
    return ipam.networkOfSubnet(pool.get()).compose(fid -> fid.isPresent() ? Future.succeededFuture(fid.get())
        : Future.failedFuture(new PluginError(call + ": no flannel-np network holds " + pool.get()
            + "; create the network with flannel-np as IPAM driver: " + IpamApi.HOWTO)));
  }

  /** Docker network ID → flannel-id, from memory or (after a restart) from etcd. */
  private Future<Optional<String>> lookupNetwork(String netId) {
    String fid = networkIds.get(netId);
    if (fid != null) {
      return Future.succeededFuture(Optional.of(fid));
    }
    return etcd.list(schema.networks()).map(l -> l.kvs().stream()
        .filter(kv -> kv.key().endsWith("/docker-id") && kv.value().equals(netId))
        .map(kv -> schema.flannelIdOf(kv.key()).orElseThrow()).findFirst())
        .onSuccess(f -> f.ifPresent(x -> networkIds.put(netId, x)));
  }

  // ---- endpoints ----------------------------------------------------------------------------

  Future<JsonObject> createEndpoint(Req r) {
    String netId = r.id("NetworkID");
    String epId = r.id("EndpointID");
    JsonObject iface = r.optObject("Interface");
    Object addrObj = iface.getValue("Address");
    if (!(addrObj instanceof String addressCidr) || addressCidr.isEmpty()) {
      throw r.bad("Interface.Address is required (flannel-np is the IPAM driver of its networks)");
    }
    String bare = addressCidr.contains("/") ? addressCidr.substring(0, addressCidr.indexOf('/')) : addressCidr;
    if (!Ipv4.isValid(bare)) {
      throw r.bad("Interface.Address '" + Req.clip(addressCidr) + "' is not an IPv4 address");
    }
    String sentMac = iface.getValue("MacAddress") instanceof String m ? m.toLowerCase() : "";
    if (!sentMac.isEmpty() && !sentMac.matches("([0-9a-f]{2}:){5}[0-9a-f]{2}")) {
      throw r.bad("Interface.MacAddress '" + Req.clip(sentMac) + "' is not a MAC address");
    }
    long address = Ipv4.parse(bare);
    return lookupNetwork(netId).compose(fid -> {
      if (fid.isEmpty()) {
        return Future.failedFuture(new PluginError("network " + netId + " is not a flannel-np network on this node"
            + " (CreateNetwork was not called for it)"));
      }
      return ipam.holder(fid.get(), address).compose(holder -> {
        if (holder.isEmpty() || holder.get().kind() != Kind.CONTAINER || holder.get().space() != Space.LOCAL
            || !holder.get().node().equals(node)) {
          return Future.failedFuture(new PluginError("address " + bare + " was not allocated to this node by flannel-np"
              + holder.map(h -> " (it is held by " + h.describe() + ")").orElse("")));
        }
        String mac = sentMac.isEmpty() ? holder.get().mac() : sentMac;
        JsonObject ep = new JsonObject().put("NetworkID", netId).put("FlannelID", fid.get()).put("EndpointID", epId)
            .put("Address", bare).put("MacAddress", mac).put("Node", node).put("SandboxKey", "");
        return etcd.put(schema.endpoint(node, epId), ep.encode())
            .onSuccess(rev -> endpoints.put(epId, ep.encode()))
            .compose(rev -> ipam.tagEndpoint(fid.get(), address, holder.get(), epId))
            .map(v -> sentMac.isEmpty() && !mac.isEmpty()
                // return only what Docker did not send (an Address it sent must not come back)
                ? new JsonObject().put("Interface", new JsonObject().put("MacAddress", mac))
                : new JsonObject());
      });
    });
  }

  private Future<Optional<JsonObject>> endpoint(String epId) {
    String known = endpoints.get(epId);
    if (known != null) {
      return Future.succeededFuture(Optional.of(new JsonObject(known)));
    }
    return etcd.get(schema.endpoint(node, epId)).map(kv -> kv.map(k -> new JsonObject(k.value())));
  }

  /** Writes this node's endpoint record and remembers what was written. */
  private Future<Long> putEndpoint(String epId, JsonObject e) {
    String json = e.encode();
    return etcd.put(schema.endpoint(node, epId), json).onSuccess(rev -> endpoints.put(epId, json))
        .onFailure(err -> endpoints.remove(epId));
  }

  Future<JsonObject> join(Req r) {
    r.id("NetworkID");
    String epId = r.id("EndpointID");
    String sandbox = r.optString("SandboxKey");
    if (sandbox.length() > 4096 || sandbox.chars().anyMatch(c -> c < 0x20)) {
      throw r.bad("SandboxKey is not a path");
    }
    return endpoint(epId).compose(ep -> {
      if (ep.isEmpty()) {
        return Future.failedFuture(new PluginError("unknown endpoint " + epId + " (CreateEndpoint was not called for it)"));
      }
      JsonObject e = ep.get();
      String fid = e.getString("FlannelID");
      AttachEndpoint attach = new AttachEndpoint(fid, epId, e.getString("MacAddress", ""));
      JsonObject before = e.copy();
      // The veth names follow from the endpoint ID, so the record is written while the kernel
      // creates the pair (one etcd round trip off Join's latency); put back if the pair fails.
      e.put("SandboxKey", sandbox).put("HostVeth", io.flannelnp.flannel.Names.hostVeth(epId))
          .put("ContainerVeth", io.flannelnp.flannel.Names.containerVeth(epId));
      return ipam.network(fid).compose(rec -> {
        Future<Long> recorded = putEndpoint(epId, e);
        Future<EndpointAttached> attached = bus.<EndpointAttached>request(Addresses.FLANNEL_ENDPOINT_ATTACH, attach,
                KERNEL_CALL)
            // the bridge is set up at CreateNetwork; if it went missing since, set it up and retry once
            .recover(err -> err instanceof io.vertx.core.eventbus.ReplyException re
                && re.failureCode() == io.flannelnp.bus.Failure.NOT_FOUND
                ? ensureBridge(rec).compose(v -> bus.<EndpointAttached>request(Addresses.FLANNEL_ENDPOINT_ATTACH, attach,
                    KERNEL_CALL))
                : Future.failedFuture(err))
            .map(m -> m.body());
        return Future.all(recorded, attached).recover(err -> {
          if (attached.failed() && recorded.succeeded()) {
            return putEndpoint(epId, before).transform(x -> Future.failedFuture(attached.cause()));
          }
          return Future.failedFuture(attached.failed() ? attached.cause() : recorded.cause());
        }).compose(all -> publicIp.get().compose(ip -> ipam.ensureNodeLease(fid, node, ip))).compose(lease -> {
          EndpointAttached at = attached.result();
          long gw = AddressPlan.nodeGateway(lease.block());
          return injectDns(sandbox, epId).map(v -> new JsonObject()
              .put("InterfaceName", new JsonObject().put("SrcName", at.containerVeth()).put("DstPrefix", "eth"))
              .put("StaticRoutes", new JsonArray().add(new JsonObject().put("Destination", rec.subnet().toString())
                  .put("RouteType", 0).put("NextHop", Ipv4.format(gw))))
              // no Gateway: Docker adds docker_gwbridge for egress, as for the overlay driver
              .put("DisableGatewayService", false));
        });
      });
    });
  }

  /**
   * Puts flannel-np's resolver into the container's namespace and waits (bounded) for the DNS
   * plane's answer. Docker 28 and later call Join when the namespace already is the container's
   * and start the container right after: the plane injects before answering, so the container's
   * first query is ours. Docker 27 and earlier make the namespace only after Join returns: the
   * plane answers at once that it waits for it. A DNS problem never fails the attachment.
   */
  private Future<Void> injectDns(String sandbox, String epId) {
    if (sandbox.isEmpty()) {
      return Future.succeededFuture();
    }
    return bus.request(Addresses.DNS_INJECT, new io.flannelnp.dns.DnsMessage.InjectDns("", sandbox, epId),
            new DeliveryOptions().setSendTimeout(DNS_IN_JOIN.toMillis()))
        .<Void>map(m -> null)
        .recover(err -> {
          LOG.warning("DNS injection for endpoint " + epId + " did not finish within Join: " + err.getMessage());
          return Future.succeededFuture();
        });
  }

  Future<JsonObject> leave(Req r) {
    r.id("NetworkID");
    String epId = r.id("EndpointID");
    return endpoint(epId).compose(ep -> {
      if (ep.isEmpty()) {
        return Future.succeededFuture(new JsonObject());
      }
      String sandbox = ep.get().getString("SandboxKey", "");
      JsonObject e = ep.get().put("SandboxKey", "");
      return putEndpoint(epId, e).map(rev -> {
        if (!sandbox.isEmpty()) {
          // Docker's resolver answers again once ours is gone; never hold up Leave for it
          bus.request(Addresses.DNS_EJECT, new io.flannelnp.dns.DnsMessage.EjectDns(sandbox, epId), KERNEL_CALL)
              .onFailure(err -> LOG.fine("EjectDns for " + epId + ": " + err.getMessage()));
        }
        return new JsonObject();
      });
    });
  }

  Future<JsonObject> deleteEndpoint(Req r) {
    String netId = r.id("NetworkID");
    String epId = r.id("EndpointID");
    return endpoint(epId).compose(ep -> {
      Future<Optional<String>> fid = ep.isPresent() ? Future.succeededFuture(Optional.of(ep.get().getString("FlannelID")))
          : lookupNetwork(netId);
      return fid.compose(f -> bus.request(Addresses.FLANNEL_ENDPOINT_DETACH, new DetachEndpoint(f.orElse(""), epId), KERNEL_CALL))
          .compose(m -> etcd.delete(schema.endpoint(node, epId)).onComplete(ar -> endpoints.remove(epId)))
          .map(rev -> new JsonObject());
    });
  }
}
