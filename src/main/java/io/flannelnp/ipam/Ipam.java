package io.flannelnp.ipam;

import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.Listing;
import io.flannelnp.etcd.Txn;
import io.flannelnp.ipam.IpamException.Reason;
import io.vertx.core.Future;
import io.vertx.core.json.JsonObject;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Predicate;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Address accounting in etcd. Every address has one key whose value is its {@link Owner}; keys are
 * created with create-once transactions and deleted only by a transaction that checks the owner
 * it read, so no address is ever held by two live owners and nobody frees another's address.
 * Network subnets and VNIs are reserved the same way, together with the network's config, in one
 * transaction.
 *
 * <p>The caches here are hints (which address to try next); etcd decides.
 */
public final class Ipam {
  private static final Logger LOG = Logger.getLogger(Ipam.class.getName());
  private static final int RACE_RETRIES = 10;

  /** An address and its holder; {@code existing} is true when the holder already had it. */
  public record Allocation(long address, Owner owner, boolean existing) {
    public String ip() {
      return Ipv4.format(address);
    }
  }

  /** This node's Flannel lease of a network: its block, and the etcd lease that keeps it. */
  public record NodeLease(String flannelId, Cidr block, long leaseId, String value) {}

  /**
   * How a network is cut into node blocks, from its Flannel config in etcd (SubnetLen, SubnetMin,
   * SubnetMax), so every node carves the same blocks whatever its local settings say.
   */
  public record Layout(int hostSize, Cidr subnetMin, Cidr subnetMax) {}

  /** What a global ReleasePool did: removed the network, left it for later, or ignored a rollback. */
  public enum PoolRelease { REMOVED, DEFERRED, ROLLBACK }

  private final EtcdStore etcd;
  private final EtcdSchema schema;
  private final Config config;
  private final AddressPlan plan;
  private final Map<String, NetworkRecord> networks = new ConcurrentHashMap<>();
  private final Map<String, Map<Long, Owner>> used = new ConcurrentHashMap<>();
  private final Map<String, Long> cursors = new ConcurrentHashMap<>();
  private final Map<String, NodeLease> leases = new ConcurrentHashMap<>();
  private final Map<String, EtcdStore.KeepAlive> keepAlives = new ConcurrentHashMap<>();
  private final Map<String, Future<NodeLease>> leasing = new ConcurrentHashMap<>();
  private final Map<String, Set<Long>> pending = new ConcurrentHashMap<>();
  /** flannel-id → generation of this node's lease; a re-acquisition of an older one stops. */
  private final Map<String, Long> leaseGen = new ConcurrentHashMap<>();
  private final java.util.concurrent.atomic.AtomicLong generations = new java.util.concurrent.atomic.AtomicLong();
  /**
   * Allocations whose create-once write timed out: etcd may have committed them although the
   * caller was told it failed. Key → the exact value written; settled by {@link #settleUncertain()}.
   */
  private final Map<String, String> uncertain = new ConcurrentHashMap<>();
  private final java.util.concurrent.atomic.AtomicBoolean watching = new java.util.concurrent.atomic.AtomicBoolean();
  private volatile io.flannelnp.etcd.PrefixWatch reservationWatch;

  public Ipam(EtcdStore etcd, EtcdSchema schema, Config config) {
    this.etcd = etcd;
    this.schema = schema;
    this.config = config;
    this.plan = new AddressPlan(config);
  }

  public AddressPlan plan() {
    return plan;
  }

  // ---- networks ------------------------------------------------------------------------

  /**
   * The network of {@code flannelId}, created on first request: the first free carved block (or
   * the user's --subnet when it is such a block and free), the lowest free VNI above VNI_START,
   * and Flannel's config, all reserved in one create-once transaction. Malformed reservation keys
   * are skipped (the audit reports them); they never stop a network from being created.
   */
  public Future<NetworkRecord> createNetwork(String flannelId, Optional<Cidr> wanted, Map<String, String> options) {
    return createNetwork(flannelId, wanted, options, 0);
  }

  private Future<NetworkRecord> createNetwork(String fid, Optional<Cidr> wanted, Map<String, String> options, int attempt) {
    ensureWatching();
    return etcd.get(schema.pool(fid)).compose(existing -> {
      if (existing.isPresent()) {
        NetworkRecord rec;
        try {
          rec = poolRecord(fid, existing.get().value());
        } catch (IpamException e) {
          return Future.failedFuture(e);
        }
        if (wanted.isPresent() && !wanted.get().equals(rec.subnet())) {
          return Future.failedFuture(new IpamException(Reason.CONFLICT, "flannel-id " + fid + " already names the network "
              + rec.subnet() + ", not " + wanted.get() + "; use a new flannel-id for a new network"));
        }
        networks.put(fid, rec);
        return Future.succeededFuture(rec);
      }
      if (attempt >= RACE_RETRIES) {
        return Future.failedFuture(new IpamException(Reason.CONFLICT,
            "could not reserve a subnet for flannel-id " + fid + " after " + RACE_RETRIES + " races; retry"));
      }
      return Future.all(etcd.list(schema.addressSpace()), etcd.list(schema.vnis())).compose(both -> {
        Listing spaces = both.resultAt(0);
        Listing vnis = both.resultAt(1);
        Map<Cidr, String> taken = new java.util.HashMap<>();
        for (KeyValue kv : spaces.kvs()) {
          try {
            taken.put(Cidr.fromKey(kv.key().substring(schema.addressSpace().length())), kv.value());
          } catch (IllegalArgumentException malformed) {
            LOG.fine("skipping malformed reservation key " + kv.key());
          }
        }
        Cidr subnet;
        if (wanted.isPresent()) {
          Cidr w = wanted.get();
          if (!plan.isNetworkBlock(w)) {
            return Future.failedFuture(new IpamException(Reason.BAD_REQUEST, "--subnet " + w
                + " is not one of the blocks flannel-np hands out (" + plan.networkBlocksDescription()
                + ", NETWORK_SUBNET_SIZE=" + plan.networkSize() + ")" + firstFreeHint(taken.keySet())));
          }
          if (taken.containsKey(w)) {
            return Future.failedFuture(new IpamException(Reason.IN_USE, "--subnet " + w + " is already used by network "
                + taken.get(w) + firstFreeHint(taken.keySet())));
          }
          subnet = w;
        } else {
          Optional<Cidr> free = plan.firstFreeNetwork(taken.keySet());
          if (free.isEmpty()) {
            return Future.failedFuture(new IpamException(Reason.EXHAUSTED, "no free network subnet: all "
                + plan.networkBlocksDescription() + " are in use; add blocks to AVAILABLE_SUBNETS or raise NETWORK_SUBNET_SIZE"));
          }
          subnet = free.get();
        }
        Set<Integer> usedVnis = new HashSet<>();
        for (KeyValue kv : vnis.kvs()) {
          String v = kv.key().substring(schema.vnis().length());
          if (v.matches("[0-9]{1,8}")) {
            usedVnis.add(Integer.parseInt(v));
          } else {
            LOG.fine("skipping malformed VNI key " + kv.key());
          }
        }
        long vni = config.vniStart() + 1L;
        while (usedVnis.contains((int) vni)) {
          vni++;
        }
        if (vni > Config.MAX_VNI) {
          return Future.failedFuture(new IpamException(Reason.EXHAUSTED,
              "no free VNI above VNI_START=" + config.vniStart() + "; lower VNI_START"));
        }
        NetworkRecord rec = new NetworkRecord(fid, subnet, (int) vni, Map.copyOf(options), Instant.now().toString());
        String flannelConfig = FlannelJson.networkConfig(subnet, plan.hostSize(), plan.subnetMin(subnet),
            plan.subnetMax(subnet), (int) vni);
        return etcd.txn()
            .ifAbsent(schema.addressSpace(subnet)).ifAbsent(schema.vni((int) vni)).ifAbsent(schema.pool(fid))
            .thenPut(schema.addressSpace(subnet), fid).thenPut(schema.vni((int) vni), fid)
            .thenPut(schema.pool(fid), rec.toJson()).thenPut(schema.networkConfig(fid), flannelConfig)
            .commit().compose(r -> {
              if (r.succeeded()) {
                LOG.info("network " + fid + " created: " + subnet + ", VNI " + rec.vni());
                networks.put(fid, rec);
                return Future.succeededFuture(rec);
              }
              return createNetwork(fid, wanted, options, attempt + 1); // lost a race: look again
            });
      });
    });
  }

  /** The pool record of a network, or a refusal naming the key when it does not parse. */
  private NetworkRecord poolRecord(String fid, String json) {
    try {
      return NetworkRecord.fromJson(json);
    } catch (RuntimeException e) {
      throw new IpamException(Reason.MALFORMED, "the record " + schema.pool(fid) + " of network " + fid
          + " in etcd is not a flannel-np pool record (" + e.getMessage() + "); fix or delete that key");
    }
  }

  private String firstFreeHint(Set<Cidr> taken) {
    return plan.firstFreeNetwork(taken).map(c -> "; the first free block is " + c).orElse("; no block is free");
  }

  public Future<NetworkRecord> network(String flannelId) {
    ensureWatching();
    NetworkRecord cached = networks.get(flannelId);
    if (cached != null) {
      return Future.succeededFuture(cached);
    }
    return etcd.get(schema.pool(flannelId)).compose(kv -> {
      if (kv.isEmpty()) {
        return Future.failedFuture(new IpamException(Reason.NOT_FOUND, "no network with flannel-id " + flannelId
            + " exists in etcd (networks are created on a Swarm manager with docker network create)"));
      }
      NetworkRecord rec;
      try {
        rec = poolRecord(flannelId, kv.get().value());
      } catch (IpamException e) {
        return Future.failedFuture(e);
      }
      networks.put(flannelId, rec);
      return Future.succeededFuture(rec);
    });
  }

  /** Finds the network that owns {@code subnet}, if any. */
  public Future<Optional<String>> networkOfSubnet(Cidr subnet) {
    return etcd.get(schema.addressSpace(subnet)).map(kv -> kv.map(KeyValue::value));
  }

  /**
   * The node blocks of a network as its Flannel config in etcd describes them; the local plan when
   * the config is missing or unreadable (the audit reports that).
   */
  public Future<Layout> layout(NetworkRecord rec) {
    return etcd.get(schema.networkConfig(rec.flannelId())).map(kv -> {
      Layout local = new Layout(plan.hostSize(), plan.subnetMin(rec.subnet()), plan.subnetMax(rec.subnet()));
      if (kv.isEmpty()) {
        return local;
      }
      try {
        JsonObject c = new JsonObject(kv.get().value());
        int len = c.getInteger("SubnetLen", plan.hostSize());
        if (len <= rec.subnet().prefix() || len > 30) {
          return local;
        }
        Cidr min = c.getValue("SubnetMin") instanceof String m ? new Cidr(Ipv4.parse(m), len)
            : new Cidr(rec.subnet().base(), len);
        Cidr max = c.getValue("SubnetMax") instanceof String m ? new Cidr(Ipv4.parse(m), len)
            : Cidr.containing(rec.subnet().last(), len);
        if (!rec.subnet().contains(min.base()) || !rec.subnet().contains(max.base()) || min.base() > max.base()) {
          return local;
        }
        return new Layout(len, min, max);
      } catch (RuntimeException malformed) {
        return local;
      }
    });
  }

  /**
   * Removes everything of a network from etcd in one transaction: its subnet and VNI reservations
   * (only if they are still this network's) and every key under its prefix. Idempotent. Only for a
   * network Docker has removed: see {@link #releaseGlobalPool}.
   */
  public Future<Void> removeNetwork(String flannelId) {
    return etcd.get(schema.pool(flannelId)).compose(kv -> {
      Optional<NetworkRecord> rec = Optional.empty();
      if (kv.isPresent()) {
        try {
          rec = Optional.of(NetworkRecord.fromJson(kv.get().value()));
        } catch (RuntimeException malformed) {
          LOG.warning("the pool record of network " + flannelId + " does not parse; its reservations are left in place");
        }
      }
      Txn t = etcd.txn();
      if (rec.isPresent()) {
        t.ifValue(schema.addressSpace(rec.get().subnet()), flannelId).ifValue(schema.vni(rec.get().vni()), flannelId)
            .thenDelete(schema.addressSpace(rec.get().subnet())).thenDelete(schema.vni(rec.get().vni()));
      }
      t.thenDeletePrefix(schema.network(flannelId));
      if (rec.isEmpty()) {
        return t.commit().mapEmpty();
      }
      NetworkRecord r0 = rec.get();
      return t.commit().compose(r -> r.succeeded() ? Future.succeededFuture()
          // a reservation no longer ours: leave that one, remove the rest
          : Future.all(
              etcd.txn().ifValue(schema.addressSpace(r0.subnet()), flannelId).thenDelete(schema.addressSpace(r0.subnet())).commit(),
              etcd.txn().ifValue(schema.vni(r0.vni()), flannelId).thenDelete(schema.vni(r0.vni())).commit(),
              etcd.deletePrefix(schema.network(flannelId))).mapEmpty());
    }).onSuccess(v -> {
      forget(flannelId);
      LOG.info("network " + flannelId + " removed from etcd");
    }).mapEmpty();
  }

  // ---- which Docker network a flannel-id belongs to -----------------------------------------

  /**
   * Records that Docker network {@code dockerId} is the network of {@code flannelId} (the leader's
   * AllocateNetwork, also when a new leader allocates it again). Refused when the flannel-id already
   * belongs to another Docker network: two networks would share one subnet, VNI and bridge.
   */
  public Future<Void> claimDockerId(String flannelId, String dockerId) {
    String key = schema.dockerId(flannelId);
    return etcd.txn().ifAbsent(key).thenPut(key, dockerId).elseGet(key).elseGet(schema.freed(flannelId)).commit()
        .compose(r -> {
          if (r.succeeded()) {
            return Future.succeededFuture();
          }
          String holder = r.elseReads().stream().filter(kv -> kv.key().equals(key)).map(KeyValue::value).findFirst()
              .orElse(null);
          if (holder == null) {
            return claimDockerId(flannelId, dockerId); // deleted between compare and read
          }
          if (holder.equals(dockerId)) {
            return Future.succeededFuture();
          }
          boolean freed = r.elseReads().stream().anyMatch(kv -> kv.key().equals(schema.freed(flannelId)));
          return Future.failedFuture(new FlannelIdTaken(flannelId, holder, freed));
        });
  }

  /** A flannel-id that already belongs to another Docker network. */
  public static final class FlannelIdTaken extends IpamException {
    private final String holder;

    FlannelIdTaken(String flannelId, String holder, boolean freed) {
      super(Reason.IN_USE, "flannel-id " + flannelId + " already belongs to Docker network " + holder
          + (freed ? ", which Docker removed; its state goes once its last endpoints are gone" : "")
          + "; give each network its own flannel-id (--ipam-opt flannel-id=$(uuidgen))");
      this.holder = holder;
    }

    /** The Docker network ID that holds the flannel-id. */
    public String holder() {
      return holder;
    }
  }

  /**
   * Docker's FreeNetwork for {@code dockerId}: marks its network as removed by Docker, which is what
   * lets the leader's following ReleasePool delete it. Returns the flannel-id, if the Docker network
   * is one of ours.
   */
  public Future<Optional<String>> markFreed(String flannelId, String dockerId) {
    String mark = new JsonObject().put("DockerID", dockerId).put("At", Instant.now().toString()).encode();
    return etcd.txn().ifValue(schema.dockerId(flannelId), dockerId).thenPut(schema.freed(flannelId), mark).commit()
        .map(r -> {
          if (r.succeeded()) {
            LOG.info("network " + flannelId + " (Docker network " + dockerId + ") freed by Docker");
            return Optional.of(flannelId);
          }
          return Optional.empty();
        });
  }

  /** Whether Docker freed the network (FreeNetwork for the Docker network recorded for it). */
  public Future<Boolean> freed(String flannelId) {
    return Future.all(etcd.get(schema.freed(flannelId)), etcd.get(schema.dockerId(flannelId))).map(cf -> {
      Optional<KeyValue> mark = cf.resultAt(0);
      Optional<KeyValue> docker = cf.resultAt(1);
      if (mark.isEmpty()) {
        return false;
      }
      try {
        String id = new JsonObject(mark.get().value()).getString("DockerID", "");
        return docker.isEmpty() || docker.get().value().equals(id);
      } catch (RuntimeException malformed) {
        return false;
      }
    });
  }

  /**
   * The leader's ReleasePool of a network. Swarm also calls it to roll back an allocation that
   * failed (and a new leader allocates every network again), so it removes the network only when
   * Docker freed it first (FreeNetwork) and no node has an endpoint on it any more; freed with
   * endpoints left, the removal is deferred to the garbage collector; not freed, it is a rollback
   * and nothing changes.
   */
  public Future<PoolRelease> releaseGlobalPool(String flannelId) {
    return freed(flannelId).compose(freed -> {
      if (!freed) {
        LOG.info("ReleasePool of network " + flannelId + " without FreeNetwork: Swarm rolled back an allocation;"
            + " the network is kept");
        return Future.succeededFuture(PoolRelease.ROLLBACK);
      }
      return endpointsLeft(flannelId).compose(left -> {
        if (left > 0) {
          LOG.info("network " + flannelId + " was removed by Docker; its state goes once its last " + left
              + " endpoint(s) are gone");
          return Future.succeededFuture(PoolRelease.DEFERRED);
        }
        return removeNetwork(flannelId).map(v -> PoolRelease.REMOVED);
      });
    });
  }

  /** How many endpoint records (on any node) name the network. */
  public Future<Integer> endpointsLeft(String flannelId) {
    return etcd.list(schema.allEndpoints()).map(l -> {
      int n = 0;
      for (KeyValue kv : l.kvs()) {
        try {
          if (flannelId.equals(new JsonObject(kv.value()).getString("FlannelID"))) {
            n++;
          }
        } catch (RuntimeException malformed) {
          // not an endpoint of any network we can name
        }
      }
      return n;
    });
  }

  /**
   * Another daemon (the leader) removes networks: watch the subnet reservations, one key per
   * network, and forget a network's cached record, allocations and lease as soon as its
   * reservation goes, so a re-created network with the same flannel-id is never served from a
   * stale cache.
   */
  private void ensureWatching() {
    if (watching.compareAndSet(false, true)) {
      reservationWatch = etcd.listAndWatch(schema.addressSpace(), batch -> {
        for (io.flannelnp.etcd.WatchEvent e : batch.events()) {
          if (e.type() == io.flannelnp.etcd.WatchEvent.Type.DELETE && e.prev() != null) {
            forget(e.prev().value());
          }
        }
      });
    }
  }

  /** Drops everything cached about a network and stops renewing this node's lease of it. */
  public void forget(String flannelId) {
    networks.remove(flannelId);
    used.remove(flannelId);
    cursors.keySet().removeIf(k -> k.startsWith(flannelId + "/"));
    leaseGen.remove(flannelId);
    NodeLease nl = leases.remove(flannelId);
    EtcdStore.KeepAlive ka = keepAlives.remove(flannelId);
    if (ka != null) {
      ka.close();
    }
    if (nl != null) {
      etcd.revokeLease(nl.leaseId()); // its key went with the network; the etcd lease need not linger
    }
  }

  // ---- node leases (Flannel subnets/) -------------------------------------------------

  /**
   * This node's block of the network: the lease it already holds (same PublicIP, as flanneld
   * matches), else the first free block from SubnetMin, created on an etcd lease of
   * SUBNET_LEASE_TTL and kept alive. Concurrent calls share one acquisition.
   */
  public Future<NodeLease> ensureNodeLease(String flannelId, String node, String publicIp) {
    NodeLease held = leases.get(flannelId);
    if (held != null) {
      return Future.succeededFuture(held);
    }
    ensureWatching();
    Future<NodeLease> inFlight = leasing.get(flannelId);
    if (inFlight != null) {
      return inFlight;
    }
    // Not computeIfAbsent: the acquisition may complete synchronously (a closed client), and its
    // cleanup must not run inside the map's own update.
    io.vertx.core.Promise<NodeLease> p = io.vertx.core.Promise.promise();
    Future<NodeLease> mine = p.future();
    Future<NodeLease> raced = leasing.putIfAbsent(flannelId, mine);
    if (raced != null) {
      return raced;
    }
    long gen = generations.incrementAndGet();
    leaseGen.put(flannelId, gen);
    acquire(flannelId, node, publicIp, Optional.empty(), 0, gen).onComplete(ar -> {
      leasing.remove(flannelId, mine);
      p.handle(ar);
    });
    return mine;
  }

  /**
   * At start: every lease in etcd with this node's PublicIP is this node's from before a restart.
   * Take each back under a fresh etcd lease and keep it alive, so a restarted daemon keeps its
   * blocks (and every peer its routes) without waiting for a Docker call.
   */
  public Future<java.util.List<NodeLease>> adoptLeases(String node, String publicIp) {
    return etcd.list(schema.networks()).compose(l -> {
      java.util.List<Future<NodeLease>> adopted = new java.util.ArrayList<>();
      for (KeyValue kv : l.kvs()) {
        if (schema.family(kv.key()) != io.flannelnp.etcd.EtcdSchema.Family.SUBNET_LEASES) {
          continue;
        }
        if (publicIp.equals(leasePublicIp(kv.value()))) {
          schema.flannelIdOf(kv.key()).ifPresent(fid -> adopted.add(ensureNodeLease(fid, node, publicIp)));
        }
      }
      return Future.join(adopted).map(cf -> {
        java.util.List<NodeLease> out = new java.util.ArrayList<>();
        for (int i = 0; i < adopted.size(); i++) {
          if (cf.succeeded(i)) {
            out.add(cf.resultAt(i));
          }
        }
        return out;
      });
    });
  }

  public Optional<NodeLease> heldLease(String flannelId) {
    return Optional.ofNullable(leases.get(flannelId));
  }

  /** A lease value's PublicIP; "" when the value is not a lease a node could be matched by. */
  private static String leasePublicIp(String value) {
    try {
      return new JsonObject(value).getValue("PublicIP") instanceof String s ? s : "";
    } catch (RuntimeException malformed) {
      return "";
    }
  }

  /**
   * The block of a lease key's rest ("a.b.c.d-len", or flanneld's dual-stack
   * "a.b.c.d-len&ipv6-len"), empty when it is not one.
   */
  static Optional<Cidr> leaseBlock(String rest) {
    int amp = rest.indexOf('&');
    try {
      return Optional.of(Cidr.fromKey(amp >= 0 ? rest.substring(0, amp) : rest));
    } catch (IllegalArgumentException malformed) {
      return Optional.empty();
    }
  }

  private Future<NodeLease> acquire(String fid, String node, String publicIp, Optional<Cidr> preferred, int attempt,
      long gen) {
    return network(fid).compose(rec -> layout(rec).compose(lay -> Future.all(etcd.list(schema.subnets(fid)),
        clusterBlocks(fid)).compose(both -> {
      Listing listing = both.resultAt(0);
      java.util.TreeMap<Cidr, String> clusterBlocks = both.resultAt(1);
      String value = FlannelJson.lease(publicIp, rec.vni(), FlannelJson.vtepMac(node, rec.vni()));
      Set<Cidr> taken = new HashSet<>(clusterBlocks.keySet()); // the cluster range grew into them
      for (KeyValue kv : listing.kvs()) {
        Optional<Cidr> parsed = leaseBlock(kv.key().substring(schema.subnets(fid).length()));
        if (parsed.isEmpty()) {
          continue; // not a lease key; the audit reports it
        }
        Cidr block = parsed.get();
        for (long b = block.base(); b <= block.last(); b += Math.min(block.size(), 1L << (32 - lay.hostSize()))) {
          taken.add(Cidr.containing(b, lay.hostSize()));
        }
        if (publicIp.equals(leasePublicIp(kv.value())) && block.prefix() == lay.hostSize() && kv.key().indexOf('&') < 0) {
          // ours from before a restart: take it back under a fresh etcd lease
          return etcd.grantLease(config.subnetLeaseTtlSeconds()).compose(lease -> etcd.txn()
              .ifModRevision(kv.key(), kv.modRevision()).thenPut(kv.key(), value, lease).commit()
              .compose(r -> r.succeeded() ? Future.succeededFuture(held(fid, node, publicIp, block, lease, value, gen))
                  : retryAcquire(fid, node, publicIp, preferred, attempt, lease, gen)));
        }
      }
      Optional<Cidr> block = preferred.filter(b -> !taken.contains(b) && b.prefix() == lay.hostSize());
      if (block.isEmpty()) {
        for (long b = lay.subnetMin().base(); b <= lay.subnetMax().base(); b += lay.subnetMin().size()) {
          Cidr c = new Cidr(b, lay.hostSize());
          if (!taken.contains(c)) {
            block = Optional.of(c);
            break;
          }
        }
      }
      if (block.isEmpty() && !clusterBlocks.isEmpty() && attempt == 0) {
        // a grown block whose addresses the garbage collector freed is never released by the
        // leader: give back the empty ones, then look again
        return giveBackEmpty(fid, clusterBlocks).compose(n -> n > 0
            ? acquire(fid, node, publicIp, preferred, attempt + 1, gen)
            : acquire(fid, node, publicIp, preferred, RACE_RETRIES, gen));
      }
      if (block.isEmpty()) {
        long count = (lay.subnetMax().base() - lay.subnetMin().base()) / lay.subnetMin().size() + 1;
        return Future.failedFuture(new IpamException(Reason.EXHAUSTED, "all " + count + " node blocks of network "
            + rec.subnet() + " (" + lay.subnetMin() + " to " + lay.subnetMax() + ") are leased"
            + (clusterBlocks.isEmpty() ? "" : " (" + clusterBlocks.size() + " of them hold Swarm VIPs and tasks)")
            + "; raise DEFAULT_HOST_SUBNET_SIZE or lower NETWORK_SUBNET_SIZE"));
      }
      Cidr chosen = block.get();
      String key = schema.subnet(fid, chosen);
      return reclaimBlock(fid, chosen, key, node).compose(v -> etcd.grantLease(config.subnetLeaseTtlSeconds()))
          .compose(lease -> etcd.txn().ifAbsent(key).ifAbsent(schema.clusterBlock(fid, chosen))
              .thenPut(key, value, lease).commit()
              .compose(r -> r.succeeded() ? Future.succeededFuture(held(fid, node, publicIp, chosen, lease, value, gen))
                  : retryAcquire(fid, node, publicIp, preferred, attempt, lease, gen)));
    })));
  }

  /**
   * Before taking a block nobody leases: free the addresses other nodes still hold in it. They are
   * left by a node whose lease expired (it died, or was cut off longer than SUBNET_LEASE_TTL):
   * its gateway would refuse this node's, and its containers' addresses would be lost for good.
   * Each delete is guarded by the block's lease being absent, so a node that takes the block
   * first keeps what it has. This node's own addresses stay (its containers may still run).
   */
  private Future<Void> reclaimBlock(String fid, Cidr block, String leaseKey, String node) {
    return etcd.list(schema.allocations(fid)).compose(l -> {
      List<KeyValue> stale = new ArrayList<>();
      for (KeyValue kv : l.kvs()) {
        String ip = kv.key().substring(schema.allocations(fid).length());
        if (!Ipv4.isValid(ip) || !block.contains(Ipv4.parse(ip))) {
          continue;
        }
        Owner o = Owner.parse(kv.value());
        if (o.readable() && o.space() == Owner.Space.LOCAL && !o.node().equals(node)) {
          stale.add(kv);
        }
      }
      if (stale.isEmpty()) {
        return Future.succeededFuture();
      }
      List<Future<Txn.Result>> txns = new ArrayList<>();
      for (int i = 0; i < stale.size(); i += 60) {
        Txn t = etcd.txn().ifAbsent(leaseKey);
        for (KeyValue kv : stale.subList(i, Math.min(stale.size(), i + 60))) {
          t.ifModRevision(kv.key(), kv.modRevision()).thenDelete(kv.key());
        }
        txns.add(t.commit());
      }
      return Future.all(txns).map(cf -> {
        Map<Long, Owner> c = used.get(fid);
        for (int i = 0; i < txns.size(); i++) {
          if (txns.get(i).result().succeeded()) {
            for (KeyValue kv : stale.subList(i * 60, Math.min(stale.size(), i * 60 + 60))) {
              if (c != null) {
                c.remove(Ipv4.parse(kv.key().substring(schema.allocations(fid).length())));
              }
            }
          }
        }
        LOG.warning("node block " + block + " of network " + fid + " was leased by a node that is gone: freed "
            + stale.size() + " address(es) it still held (" + stale.stream().map(kv -> Owner.parse(kv.value()).node())
                .distinct().sorted().reduce((a, b) -> a + ", " + b).orElse("") + ")");
        return (Void) null;
      });
    });
  }

  private Future<NodeLease> retryAcquire(String fid, String node, String publicIp, Optional<Cidr> preferred, int attempt,
      long wastedLease, long gen) {
    etcd.revokeLease(wastedLease);
    if (attempt + 1 >= RACE_RETRIES) {
      return Future.failedFuture(new IpamException(Reason.CONFLICT, "could not lease a node block of network " + fid
          + " after " + RACE_RETRIES + " races; retry"));
    }
    return acquire(fid, node, publicIp, preferred, attempt + 1, gen);
  }

  private NodeLease held(String fid, String node, String publicIp, Cidr block, long lease, String value, long gen) {
    if (leaseGen.getOrDefault(fid, -1L) != gen) {
      // the network was forgotten or the lease given up while this acquisition ran
      etcd.revokeLease(lease);
      throw new IpamException(Reason.NOT_FOUND, "network " + fid + " was removed while its lease was taken");
    }
    NodeLease nl = new NodeLease(fid, block, lease, value);
    NodeLease before = leases.put(fid, nl);
    EtcdStore.KeepAlive old = keepAlives.put(fid, keepAlive(lease, () -> leaseLost(fid, node, publicIp, nl)));
    if (old != null) {
      old.close();
    }
    if (before != null && !before.block().equals(block)) {
      LOG.severe("node " + node + " lost its block " + before.block() + " of network " + fid
          + " to another node; it holds " + block + " now (containers of the old block are unreachable)");
    }
    LOG.info("node " + node + " holds " + block + " of network " + fid);
    return nl;
  }

  /**
   * The etcd keep-alive stream renews at a third of SUBNET_LEASE_TTL; -subnet-lease-renew-margin
   * may ask for renewals sooner (a renewal at the latest that margin before expiry), which a
   * timer adds. A failed extra renewal is left to the stream, which reports a real loss.
   */
  private EtcdStore.KeepAlive keepAlive(long lease, Runnable onLost) {
    EtcdStore.KeepAlive stream = etcd.keepAlive(lease, onLost);
    long every = config.subnetLeaseRenewSeconds();
    if (every >= config.subnetLeaseTtlSeconds() / 3) {
      return stream;
    }
    long timer = etcd.vertx().setPeriodic(every * 1000, t -> etcd.renewLease(lease)
        .onFailure(e -> LOG.fine("renewing lease " + Long.toHexString(lease) + " early failed: " + e.getMessage())));
    return () -> {
      etcd.vertx().cancelTimer(timer);
      stream.close();
    };
  }

  /**
   * etcd says the lease of this node's block is gone (etcd was away longer than SUBNET_LEASE_TTL,
   * or someone revoked it). The node keeps answering with its block while it takes the same block
   * back, retrying with backoff until etcd lets it.
   */
  private void leaseLost(String fid, String node, String publicIp, NodeLease lost) {
    if (leases.get(fid) != lost) {
      return; // already replaced
    }
    LOG.warning("lease of " + lost.block() + " in network " + fid + " was lost; taking the same block back");
    EtcdStore.KeepAlive ka = keepAlives.remove(fid);
    if (ka != null) {
      ka.close();
    }
    reacquire(fid, node, publicIp, lost, 0);
  }

  private void reacquire(String fid, String node, String publicIp, NodeLease lost, int attempt) {
    Long gen = leaseGen.get(fid);
    if (gen == null || leases.get(fid) != lost) {
      return;
    }
    acquire(fid, node, publicIp, Optional.of(lost.block()), 0, gen).onComplete(ar -> {
      if (ar.succeeded()) {
        if (attempt > 0) {
          LOG.info("took " + ar.result().block() + " of network " + fid + " back after " + attempt + " failed attempt(s)");
        }
        return;
      }
      if (ar.cause() instanceof IpamException e && e.reason() == Reason.NOT_FOUND) {
        forget(fid);
        return;
      }
      long delay = Math.min(30_000, 500L << Math.min(attempt, 6));
      Level level = attempt == 0 || attempt % 10 == 9 ? Level.SEVERE : Level.FINE;
      LOG.log(level, "cannot take " + lost.block() + " of network " + fid + " back yet (" + ar.cause().getMessage()
          + "); retrying in " + delay + " ms");
      etcd.vertx().setTimer(delay, t -> reacquire(fid, node, publicIp, lost, attempt + 1));
    });
  }

  /** Gives up this node's lease of a network (revoking it deletes the key at once). */
  public Future<Void> releaseNodeLease(String flannelId) {
    leaseGen.remove(flannelId);
    NodeLease nl = leases.remove(flannelId);
    EtcdStore.KeepAlive ka = keepAlives.remove(flannelId);
    if (ka != null) {
      ka.close();
    }
    return nl == null ? Future.succeededFuture() : etcd.revokeLease(nl.leaseId());
  }

  /** Stops renewing leases without revoking them: a restarted daemon takes them back. */
  public void detach() {
    io.flannelnp.etcd.PrefixWatch w = reservationWatch;
    if (w != null) {
      w.close();
    }
    leaseGen.clear();
    keepAlives.values().forEach(EtcdStore.KeepAlive::close);
    keepAlives.clear();
    leases.clear();
  }

  // ---- pool references ------------------------------------------------------------------

  /** Adds one reference of {@code node} to its local pool of the network; returns the new count. */
  public Future<Integer> addPoolRef(String flannelId, String node) {
    return changePoolRef(flannelId, node, +1, 0);
  }

  /** Drops one reference; at zero the record goes. Returns the new count (never below 0). */
  public Future<Integer> dropPoolRef(String flannelId, String node) {
    return changePoolRef(flannelId, node, -1, 0);
  }

  private Future<Integer> changePoolRef(String fid, String node, int delta, int attempt) {
    String key = schema.poolRef(fid, node);
    return etcd.get(key).compose(kv -> {
      int now = kv.map(k -> {
        try {
          return new JsonObject(k.value()).getInteger("Refs", 0);
        } catch (RuntimeException malformed) {
          return 1; // unreadable: counted as one reference, rewritten below
        }
      }).orElse(0);
      int next = Math.max(0, now + delta);
      Txn t = etcd.txn().ifModRevision(key, kv.map(KeyValue::modRevision).orElse(0L));
      if (next == 0) {
        if (kv.isEmpty()) {
          return Future.succeededFuture(0);
        }
        t.thenDelete(key);
      } else {
        t.thenPut(key, new JsonObject().put("Refs", next).encode());
      }
      return t.commit().compose(r -> r.succeeded() ? Future.succeededFuture(next)
          : attempt < RACE_RETRIES ? changePoolRef(fid, node, delta, attempt + 1)
          : Future.failedFuture(new IpamException(Reason.CONFLICT, "pool reference of " + fid + " kept changing; retry")));
    });
  }

  // ---- addresses --------------------------------------------------------------------------

  /** Claims exactly {@code address} for {@code owner}; succeeds if the same holder already has it. */
  public Future<Allocation> allocateSpecific(String flannelId, long address, Owner owner) {
    return allocateSpecific(flannelId, address, owner, null);
  }

  private Future<Allocation> allocateSpecific(String flannelId, long address, Owner owner, Guard guard) {
    String key = schema.allocation(flannelId, Ipv4.format(address));
    String value = owner.toJson();
    return uncertainOnTimeout(key, value, guarded(etcd.txn().ifAbsent(key), guard).thenPut(key, value).elseGet(key)
        .commit()).compose(r -> {
      if (r.succeeded()) {
        cache(flannelId).put(address, owner);
        return Future.succeededFuture(new Allocation(address, owner, false));
      }
      Optional<KeyValue> read = read(r, key);
      if (read.isEmpty()) {
        if (guard != null && !guard.holds(r)) {
          return Future.failedFuture(new BlockGone(guard.key()));
        }
        return allocateSpecific(flannelId, address, owner, guard); // released between compare and read
      }
      Owner holder = Owner.parse(read.get().value());
      cache(flannelId).put(address, holder);
      if (holder.sameHolder(owner)) {
        uncertain.remove(key); // a retry of a write that timed out: the caller has it now
        return Future.succeededFuture(new Allocation(address, holder, true));
      }
      return Future.failedFuture(new IpamException(Reason.IN_USE,
          "address " + Ipv4.format(address) + " is already in use by " + holder.describe()));
    });
  }

  /**
   * Claims the next free address in [first, last] for {@code owner}, in order after the last one
   * handed out from that range (Swarm asks for serial allocation: a freed address is not reused
   * at once).
   */
  public Future<Allocation> allocateNext(String flannelId, long first, long last, Owner owner, String rangeName,
      String hint) {
    return loadCache(flannelId, false).compose(c -> allocateNext(flannelId, first, last, owner, rangeName, hint, false, 0,
        null));
  }

  /**
   * As {@link #allocateNext(String, long, long, Owner, String, String)}; {@code refreshed} true
   * trusts the cache (no re-read of etcd when the range looks full), {@code guard} is a key whose
   * value the write requires (a cluster block still active).
   */
  private Future<Allocation> allocateNext(String fid, long first, long last, Owner owner, String rangeName, String hint,
      boolean refreshed, int races, Guard guard) {
    Map<Long, Owner> cache = cache(fid);
    Set<Long> inFlight = pending.computeIfAbsent(fid, k -> ConcurrentHashMap.newKeySet());
    String cursorKey = fid + "/" + first;
    long start = cursors.getOrDefault(cursorKey, first);
    long size = last - first + 1;
    long candidate = -1;
    for (long i = 0; i < size; i++) {
      long a = first + ((start - first + i) % size);
      // skip addresses another request of this process is claiming right now
      if (!cache.containsKey(a) && inFlight.add(a)) {
        candidate = a;
        break;
      }
    }
    if (candidate < 0) {
      if (!refreshed) {
        return loadCache(fid, true).compose(x -> allocateNext(fid, first, last, owner, rangeName, hint, true, races, guard));
      }
      return Future.failedFuture(new IpamException(Reason.EXHAUSTED,
          rangeName + " (" + Ipv4.format(first) + "-" + Ipv4.format(last) + ", " + size + " addresses) is exhausted; " + hint));
    }
    long a = candidate;
    cursors.put(cursorKey, a + 1 > last ? first : a + 1);
    String key = schema.allocation(fid, Ipv4.format(a));
    String value = owner.toJson();
    return uncertainOnTimeout(key, value, guarded(etcd.txn().ifAbsent(key), guard).thenPut(key, value).elseGet(key)
        .commit()).andThen(ar -> inFlight.remove(a)).compose(r -> {
      if (r.succeeded()) {
        cache.put(a, owner);
        cursors.put(cursorKey, a + 1 > last ? first : a + 1);
        return Future.succeededFuture(new Allocation(a, owner, false));
      }
      Optional<KeyValue> read = read(r, key);
      read.ifPresent(kv -> cache.put(a, Owner.parse(kv.value())));
      if (read.isEmpty() && guard != null && !guard.holds(r)) {
        return Future.failedFuture(new BlockGone(guard.key()));
      }
      if (races > 4 * size) {
        return Future.failedFuture(new IpamException(Reason.CONFLICT, rangeName + " is contended; retry"));
      }
      return allocateNext(fid, first, last, owner, rangeName, hint, refreshed, races + 1, guard);
    });
  }

  // ---- the cluster range and the blocks it grows into ------------------------------------

  /** A key and the value a write requires it to have. */
  private record Guard(String key, String value) {
    /** Whether a failed transaction's reads show the guard still holding. */
    boolean holds(Txn.Result r) {
      return read(r, key).map(kv -> kv.value().equals(value)).orElse(false);
    }
  }

  /** A cluster block stopped being active (it is being given back) while an address in it was claimed. */
  private static final class BlockGone extends IpamException {
    BlockGone(String key) {
      super(Reason.CONFLICT, "cluster block " + key + " is being given back");
    }
  }

  private static Txn guarded(Txn t, Guard g) {
    return g == null ? t : t.ifValue(g.key(), g.value()).elseGet(g.key());
  }

  private static Optional<KeyValue> read(Txn.Result r, String key) {
    return r.elseReads().stream().filter(kv -> kv.key().equals(key)).findFirst();
  }

  /** The value of a cluster block addresses may be claimed in. */
  static final String BLOCK_ACTIVE = "{\"State\":\"active\"}";
  /** The value of a cluster block being given back: no claim in it commits any more. */
  static final String BLOCK_DRAINING = "{\"State\":\"draining\"}";

  /**
   * The next free address for the Swarm leader (a VIP or a task placeholder): in the network's
   * cluster range, else in a block the range grew into, else in a further block the range takes
   * now (the highest block no node leases; nodes lease from the lowest). The range thus grows to
   * whatever the network's free blocks hold, and {@link #releaseCluster} gives a block back when
   * its last address goes. A block is taken and given back with create-once / compare-and-set
   * transactions that also check no node leased it, and every claim in it requires it to be
   * active, so a block being given back never loses an address to the node that leases it next.
   */
  public Future<Allocation> allocateCluster(NetworkRecord rec, Owner owner) {
    return loadCache(rec.flannelId(), false).compose(c -> allocateCluster(rec, owner, false));
  }

  /** {@code refreshed}: the cache was re-read from etcd in this request; next, the range grows. */
  private Future<Allocation> allocateCluster(NetworkRecord rec, Owner owner, boolean refreshed) {
    String fid = rec.flannelId();
    Cidr net = rec.subnet();
    String name = "the cluster range " + plan.clusterRange(net) + " of network " + fid;
    return allocateNext(fid, plan.clusterFirst(net), plan.clusterLast(net), owner, name, "", true, 0, null)
        .recover(err -> isExhausted(err) ? inClusterBlocks(rec, owner, refreshed) : Future.failedFuture(err));
  }

  private static boolean isExhausted(Throwable err) {
    return err instanceof BlockGone || err instanceof IpamException e && e.reason() == Reason.EXHAUSTED;
  }

  private Future<Allocation> inClusterBlocks(NetworkRecord rec, Owner owner, boolean refreshed) {
    String fid = rec.flannelId();
    return clusterBlocks(fid).compose(blocks -> {
      List<Cidr> active = new ArrayList<>();
      List<Future<Boolean>> settling = new ArrayList<>();
      for (Map.Entry<Cidr, String> b : blocks.entrySet()) {
        if (BLOCK_ACTIVE.equals(b.getValue())) {
          active.add(b.getKey());
        } else {
          settling.add(settleBlock(fid, b.getKey())); // a give-back that was cut off
        }
      }
      return Future.join(settling).transform(x -> tryBlocks(rec, owner, active, 0, refreshed));
    });
  }

  private Future<Allocation> tryBlocks(NetworkRecord rec, Owner owner, List<Cidr> active, int i, boolean refreshed) {
    String fid = rec.flannelId();
    if (i >= active.size()) {
      if (!refreshed) {
        // the cache may hold addresses freed behind this process's back (the garbage collector)
        return loadCache(fid, true).compose(c -> allocateCluster(rec, owner, true));
      }
      return grow(rec).compose(b -> tryBlocks(rec, owner, List.of(b), 0, true));
    }
    Cidr b = active.get(i);
    return allocateNext(fid, AddressPlan.nodeFirst(b), AddressPlan.nodeLast(b), owner, "cluster block " + b, "", true, 0,
        new Guard(schema.clusterBlock(fid, b), BLOCK_ACTIVE))
        .recover(err -> isExhausted(err) ? tryBlocks(rec, owner, active, i + 1, refreshed) : Future.failedFuture(err));
  }

  /** The blocks the cluster range grew into, and their state. Malformed keys are skipped. */
  public Future<java.util.TreeMap<Cidr, String>> clusterBlocks(String fid) {
    return etcd.list(schema.clusterBlocks(fid)).map(l -> {
      java.util.TreeMap<Cidr, String> out = new java.util.TreeMap<>(java.util.Comparator.comparingLong(Cidr::base));
      for (KeyValue kv : l.kvs()) {
        try {
          out.put(Cidr.fromKey(kv.key().substring(schema.clusterBlocks(fid).length())), kv.value());
        } catch (IllegalArgumentException malformed) {
          LOG.fine("skipping malformed cluster block key " + kv.key());
        }
      }
      return out;
    });
  }

  /** Takes the highest node block nobody leases for the cluster range. */
  private Future<Cidr> grow(NetworkRecord rec) {
    return grow(rec, 0);
  }

  private Future<Cidr> grow(NetworkRecord rec, int attempt) {
    String fid = rec.flannelId();
    return layout(rec).compose(lay -> Future.all(etcd.list(schema.subnets(fid)), clusterBlocks(fid)).compose(cf -> {
      Listing leases = cf.resultAt(0);
      java.util.TreeMap<Cidr, String> blocks = cf.resultAt(1);
      Set<Cidr> taken = leasedBlocks(fid, leases, lay.hostSize());
      taken.addAll(blocks.keySet());
      Cidr free = null;
      for (long b = lay.subnetMax().base(); b >= lay.subnetMin().base(); b -= lay.subnetMin().size()) {
        Cidr c = new Cidr(b, lay.hostSize());
        if (!taken.contains(c)) {
          free = c;
          break;
        }
      }
      if (free == null) {
        long count = (lay.subnetMax().base() - lay.subnetMin().base()) / lay.subnetMin().size() + 1;
        return Future.failedFuture(new IpamException(Reason.EXHAUSTED, "network " + fid + " (" + rec.subnet()
            + ") has no address left for Swarm VIPs and tasks: its cluster range " + plan.clusterRange(rec.subnet())
            + " and the " + blocks.size() + " block(s) it grew into are full, and the other " + (count - blocks.size())
            + " of its " + count + " /" + lay.hostSize() + " node blocks are leased by nodes; give networks more room"
            + " with a shorter NETWORK_SUBNET_SIZE (now /" + rec.subnet().prefix() + "), or a shorter"
            + " CLUSTER_SUBNET_SIZE (now /" + plan.clusterSize() + ")"));
      }
      Cidr chosen = free;
      String key = schema.clusterBlock(fid, chosen);
      return etcd.txn().ifAbsent(schema.subnet(fid, chosen)).ifAbsent(key).thenPut(key, BLOCK_ACTIVE).commit()
          .compose(r -> {
            if (r.succeeded()) {
              LOG.info("the cluster range of network " + fid + " grew into " + chosen + " (" + (blocks.size() + 1)
                  + " block(s) beyond " + plan.clusterRange(rec.subnet()) + ")");
              return Future.succeededFuture(chosen);
            }
            if (attempt + 1 >= RACE_RETRIES) {
              return Future.failedFuture(new IpamException(Reason.CONFLICT, "could not take a block of network " + fid
                  + " for its cluster range after " + RACE_RETRIES + " races; retry"));
            }
            return grow(rec, attempt + 1);
          });
    }));
  }

  /** The node blocks a lease listing covers (a lease of another SubnetLen covers several or part of one). */
  private Set<Cidr> leasedBlocks(String fid, Listing listing, int hostSize) {
    Set<Cidr> taken = new HashSet<>();
    for (KeyValue kv : listing.kvs()) {
      Optional<Cidr> parsed = leaseBlock(kv.key().substring(schema.subnets(fid).length()));
      if (parsed.isEmpty()) {
        continue;
      }
      Cidr block = parsed.get();
      for (long b = block.base(); b <= block.last(); b += Math.min(block.size(), 1L << (32 - hostSize))) {
        taken.add(Cidr.containing(b, hostSize));
      }
    }
    return taken;
  }

  /**
   * Whether {@code address} is one the Swarm leader hands out: in the cluster range or in a block
   * it grew into (a task's placeholder a node replaces with an address of its own block).
   */
  public Future<Boolean> isClusterAddress(NetworkRecord rec, long address) {
    if (plan.clusterRange(rec.subnet()).contains(address)) {
      return Future.succeededFuture(true);
    }
    if (!rec.subnet().contains(address)) {
      return Future.succeededFuture(false);
    }
    return layout(rec).compose(lay -> etcd.get(schema.clusterBlock(rec.flannelId(),
        Cidr.containing(address, lay.hostSize()))).map(Optional::isPresent));
  }

  /**
   * The leader's release of {@code address}; when it was the last address of a block the cluster
   * range grew into, the block is given back (nodes may lease it again).
   */
  public Future<Boolean> releaseCluster(NetworkRecord rec, long address, Predicate<Owner> allowed) {
    String fid = rec.flannelId();
    return release(fid, address, allowed).compose(released -> {
      if (!released || plan.clusterRange(rec.subnet()).contains(address)) {
        return Future.succeededFuture(released);
      }
      return layout(rec).compose(lay -> {
        Cidr b = Cidr.containing(address, lay.hostSize());
        Map<Long, Owner> c = used.get(fid);
        if (c != null && c.keySet().stream().anyMatch(b::contains)) {
          return Future.succeededFuture(released); // not the last one (as far as this process knows)
        }
        String key = schema.clusterBlock(fid, b);
        return etcd.txn().ifValue(key, BLOCK_ACTIVE).thenPut(key, BLOCK_DRAINING).commit()
            .compose(r -> r.succeeded() ? settleBlock(fid, b) : Future.succeededFuture(false))
            .map(v -> released);
      });
    });
  }

  /** Gives back every grown block without an address; returns how many went. */
  private Future<Integer> giveBackEmpty(String fid, Map<Cidr, String> blocks) {
    return etcd.list(schema.allocations(fid)).compose(l -> {
      List<Future<Boolean>> done = new ArrayList<>();
      for (Cidr b : blocks.keySet()) {
        boolean held = l.kvs().stream().map(kv -> kv.key().substring(schema.allocations(fid).length()))
            .anyMatch(ip -> Ipv4.isValid(ip) && b.contains(Ipv4.parse(ip)));
        if (held) {
          continue;
        }
        String key = schema.clusterBlock(fid, b);
        done.add(etcd.txn().ifValue(key, BLOCK_ACTIVE).thenPut(key, BLOCK_DRAINING).commit()
            .compose(r -> BLOCK_DRAINING.equals(blocks.get(b)) || r.succeeded() ? settleBlock(fid, b)
                : Future.succeededFuture(false)));
      }
      return Future.join(done).map(cf -> (int) done.stream().filter(f -> f.succeeded() && f.result()).count());
    });
  }

  /**
   * Ends a give-back: a draining block accepts no claim, so once it is draining a fresh read of
   * its addresses is final. Empty, it goes; else it is active again.
   */
  private Future<Boolean> settleBlock(String fid, Cidr b) {
    String key = schema.clusterBlock(fid, b);
    return etcd.list(schema.allocations(fid)).compose(l -> {
      long held = l.kvs().stream().map(kv -> kv.key().substring(schema.allocations(fid).length()))
          .filter(Ipv4::isValid).filter(ip -> b.contains(Ipv4.parse(ip))).count();
      Txn t = etcd.txn().ifValue(key, BLOCK_DRAINING);
      t = held == 0 ? t.thenDelete(key) : t.thenPut(key, BLOCK_ACTIVE);
      return t.commit().map(r -> {
        if (r.succeeded() && held == 0) {
          LOG.info("the cluster range of network " + fid + " gave " + b + " back (it holds no address)");
        }
        return r.succeeded() && held == 0;
      });
    });
  }

  /**
   * A leader's request for a specific address in a block the cluster range grew into (a new
   * leader re-allocating what Swarm holds): claimed only while the block is active.
   */
  public Future<Allocation> allocateSpecificCluster(NetworkRecord rec, long address, Owner owner) {
    if (plan.clusterRange(rec.subnet()).contains(address)) {
      return allocateSpecific(rec.flannelId(), address, owner);
    }
    return layout(rec).compose(lay -> {
      Cidr b = Cidr.containing(address, lay.hostSize());
      String key = schema.clusterBlock(rec.flannelId(), b);
      return etcd.get(key).compose(kv -> kv.isPresent() && BLOCK_ACTIVE.equals(kv.get().value())
          ? allocateSpecific(rec.flannelId(), address, owner, new Guard(key, BLOCK_ACTIVE))
          : allocateSpecific(rec.flannelId(), address, owner));
    });
  }

  /**
   * A create-once write that failed without an answer (a deadline, a broken connection) may still
   * have been committed: remember it (the caller is told it failed, so an address it created must
   * be freed again), and make the next search read etcd instead of the cache.
   */
  private Future<Txn.Result> uncertainOnTimeout(String key, String value, Future<Txn.Result> write) {
    return write.onFailure(err -> {
      uncertain.put(key, value);
      schema.flannelIdOf(key).ifPresent(used::remove);
    });
  }

  /**
   * Frees the allocations whose write timed out but was committed (the value is still exactly the
   * one written: nobody took it since); forgets those that were not. Returns how many it freed.
   */
  public Future<Integer> settleUncertain() {
    List<Future<Boolean>> done = new ArrayList<>();
    for (Map.Entry<String, String> e : Map.copyOf(uncertain).entrySet()) {
      done.add(etcd.txn().ifValue(e.getKey(), e.getValue()).thenDelete(e.getKey()).commit().map(r -> {
        uncertain.remove(e.getKey(), e.getValue());
        if (r.succeeded()) {
          schema.flannelIdOf(e.getKey()).ifPresent(used::remove);
          LOG.warning("freed " + e.getKey() + ": its allocation timed out (the caller was told it failed) but etcd"
              + " had committed it");
        }
        return r.succeeded();
      }));
    }
    return Future.join(done).map(cf -> (int) done.stream().filter(f -> f.succeeded() && f.result()).count());
  }

  /** How many allocations wait for {@link #settleUncertain()}. */
  public int uncertainCount() {
    return uncertain.size();
  }

  /** An address held by a holder matching {@code test}, from a fresh read of the network's allocations. */
  public Future<Optional<Allocation>> find(String flannelId, Predicate<Owner> test) {
    return find(flannelId, test, true);
  }

  /**
   * As {@link #find(String, Predicate)}; with {@code refresh} false it searches the cache, which is
   * exact for what this process wrote itself (a node's own block is written only by that node).
   */
  public Future<Optional<Allocation>> find(String flannelId, Predicate<Owner> test, boolean refresh) {
    return loadCache(flannelId, refresh).map(c -> {
      for (Map.Entry<Long, Owner> e : c.entrySet()) {
        if (e.getValue().readable() && test.test(e.getValue())) {
          uncertain.remove(schema.allocation(flannelId, Ipv4.format(e.getKey())));
          return Optional.of(new Allocation(e.getKey(), e.getValue(), true));
        }
      }
      return Optional.empty();
    });
  }

  /** The holder of {@code address}, read from etcd. */
  public Future<Optional<Owner>> holder(String flannelId, long address) {
    return etcd.get(schema.allocation(flannelId, Ipv4.format(address))).map(kv -> kv.map(k -> Owner.parse(k.value())));
  }

  /**
   * Frees {@code address} if its holder passes {@code allowed}. An address that is not held, or is
   * held by someone else, is left alone (false) — never a free of someone else's address. A record
   * that does not parse is never freed here (the audit reports it).
   */
  public Future<Boolean> release(String flannelId, long address, Predicate<Owner> allowed) {
    return release(flannelId, address, allowed, 0);
  }

  private Future<Boolean> release(String fid, long address, Predicate<Owner> allowed, int attempt) {
    String key = schema.allocation(fid, Ipv4.format(address));
    Owner cached = cache(fid).get(address);
    if (attempt == 0 && cached != null && cached.readable() && allowed.test(cached)) {
      // One round trip when the cache knows the holder: delete only if the value is unchanged.
      return etcd.txn().ifValue(key, cached.toJson()).thenDelete(key).commit().compose(r -> {
        if (r.succeeded()) {
          cache(fid).remove(address);
          uncertain.remove(key);
          return Future.succeededFuture(true);
        }
        return release(fid, address, allowed, 1);
      });
    }
    return etcd.get(key).compose(kv -> {
      if (kv.isEmpty()) {
        cache(fid).remove(address);
        LOG.fine("release of " + Ipv4.format(address) + " in " + fid + ": not held; nothing to do");
        return Future.succeededFuture(false);
      }
      Owner o = Owner.parse(kv.get().value());
      if (!o.readable() || !allowed.test(o)) {
        LOG.fine("release of " + Ipv4.format(address) + " in " + fid + " ignored: held by " + o.describe());
        return Future.succeededFuture(false);
      }
      return etcd.txn().ifModRevision(key, kv.get().modRevision()).thenDelete(key).commit().compose(r -> {
        if (r.succeeded()) {
          cache(fid).remove(address);
          uncertain.remove(key);
          return Future.succeededFuture(true);
        }
        return attempt < RACE_RETRIES ? release(fid, address, allowed, attempt + 1) : Future.succeededFuture(false);
      });
    });
  }

  /**
   * Writes an allocation Docker holds but etcd lost (create-once): the address of a running
   * endpoint must never be handed to someone else. Fails with IN_USE naming the other holder.
   */
  public Future<Allocation> restore(String flannelId, long address, Owner owner) {
    return allocateSpecific(flannelId, address, owner);
  }

  /** Forgets what the cache says of an allocation key that was deleted behind this class's back. */
  public void forgetCached(String key) {
    Optional<String> fid = schema.flannelIdOf(key);
    if (fid.isEmpty() || !key.startsWith(schema.allocations(fid.get()))) {
      return;
    }
    String ip = key.substring(schema.allocations(fid.get()).length());
    Map<Long, Owner> c = used.get(fid.get());
    if (c != null && Ipv4.isValid(ip)) {
      c.remove(Ipv4.parse(ip));
    }
  }

  /** Records which endpoint holds an address (after CreateEndpoint), if the holder is unchanged. */
  public Future<Void> tagEndpoint(String flannelId, long address, Owner expected, String endpointId) {
    String key = schema.allocation(flannelId, Ipv4.format(address));
    Owner tagged = expected.withEndpoint(endpointId);
    return etcd.txn().ifValue(key, expected.toJson()).thenPut(key, tagged.toJson()).commit().map(r -> {
      if (r.succeeded()) {
        cache(flannelId).put(address, tagged);
        uncertain.remove(key);
      }
      return (Void) null;
    });
  }

  private Map<Long, Owner> cache(String fid) {
    return used.computeIfAbsent(fid, k -> new ConcurrentHashMap<>());
  }

  private Future<Map<Long, Owner>> loadCache(String fid, boolean refresh) {
    Map<Long, Owner> c = used.get(fid);
    if (c != null && !refresh) {
      return Future.succeededFuture(c);
    }
    return etcd.list(schema.allocations(fid)).map(l -> {
      Map<Long, Owner> fresh = new ConcurrentHashMap<>();
      for (KeyValue kv : l.kvs()) {
        String ip = kv.key().substring(schema.allocations(fid).length());
        if (Ipv4.isValid(ip)) {
          // an unreadable value still holds its address: never handed out, reported by the audit
          fresh.put(Ipv4.parse(ip), Owner.parse(kv.value()));
        }
      }
      used.put(fid, fresh);
      return fresh;
    });
  }
}
