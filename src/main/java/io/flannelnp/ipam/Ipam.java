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
import java.util.HashSet;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Predicate;
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
   * and Flannel's config, all reserved in one create-once transaction.
   */
  public Future<NetworkRecord> createNetwork(String flannelId, Optional<Cidr> wanted, Map<String, String> options) {
    return createNetwork(flannelId, wanted, options, 0);
  }

  private Future<NetworkRecord> createNetwork(String fid, Optional<Cidr> wanted, Map<String, String> options, int attempt) {
    ensureWatching();
    return etcd.get(schema.pool(fid)).compose(existing -> {
      if (existing.isPresent()) {
        NetworkRecord rec = NetworkRecord.fromJson(existing.get().value());
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
          taken.put(Cidr.fromKey(kv.key().substring(schema.addressSpace().length())), kv.value());
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
          usedVnis.add(Integer.parseInt(kv.key().substring(schema.vnis().length())));
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
      NetworkRecord rec = NetworkRecord.fromJson(kv.get().value());
      networks.put(flannelId, rec);
      return Future.succeededFuture(rec);
    });
  }

  /** Finds the network that owns {@code subnet}, if any. */
  public Future<Optional<String>> networkOfSubnet(Cidr subnet) {
    return etcd.get(schema.addressSpace(subnet)).map(kv -> kv.map(KeyValue::value));
  }

  /**
   * Removes everything of a network from etcd in one transaction: its subnet and VNI reservations
   * (only if they are still this network's) and every key under its prefix. Idempotent.
   */
  public Future<Void> removeNetwork(String flannelId) {
    return etcd.get(schema.pool(flannelId)).compose(kv -> {
      Txn t = etcd.txn();
      if (kv.isPresent()) {
        NetworkRecord rec = NetworkRecord.fromJson(kv.get().value());
        t.ifValue(schema.addressSpace(rec.subnet()), flannelId).ifValue(schema.vni(rec.vni()), flannelId)
            .thenDelete(schema.addressSpace(rec.subnet())).thenDelete(schema.vni(rec.vni()));
      }
      t.thenDeletePrefix(schema.network(flannelId));
      if (kv.isEmpty()) {
        return t.commit().mapEmpty();
      }
      NetworkRecord rec = NetworkRecord.fromJson(kv.get().value());
      return t.commit().compose(r -> r.succeeded() ? Future.succeededFuture()
          // a reservation no longer ours: leave that one, remove the rest
          : Future.all(
              etcd.txn().ifValue(schema.addressSpace(rec.subnet()), flannelId).thenDelete(schema.addressSpace(rec.subnet())).commit(),
              etcd.txn().ifValue(schema.vni(rec.vni()), flannelId).thenDelete(schema.vni(rec.vni())).commit(),
              etcd.deletePrefix(schema.network(flannelId))).mapEmpty());
    }).onSuccess(v -> {
      forget(flannelId);
      LOG.info("network " + flannelId + " removed from etcd");
    }).mapEmpty();
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
    acquire(flannelId, node, publicIp, Optional.empty(), 0).onComplete(ar -> {
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
        String ip;
        try {
          ip = new JsonObject(kv.value()).getString("PublicIP", "");
        } catch (RuntimeException e) {
          continue; // not a lease value we understand; not ours to touch
        }
        if (ip.equals(publicIp)) {
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

  private Future<NodeLease> acquire(String fid, String node, String publicIp, Optional<Cidr> preferred, int attempt) {
    return network(fid).compose(rec -> etcd.list(schema.subnets(fid)).compose(listing -> {
      String value = FlannelJson.lease(publicIp, rec.vni(), FlannelJson.vtepMac(node, rec.vni()));
      Set<Cidr> taken = new HashSet<>();
      for (KeyValue kv : listing.kvs()) {
        Cidr block = Cidr.fromKey(kv.key().substring(schema.subnets(fid).length()));
        taken.add(block);
        String ip = new JsonObject(kv.value()).getString("PublicIP", "");
        if (ip.equals(publicIp)) {
          // ours from before a restart: take it back under a fresh etcd lease
          return etcd.grantLease(config.subnetLeaseTtlSeconds()).compose(lease -> etcd.txn()
              .ifModRevision(kv.key(), kv.modRevision()).thenPut(kv.key(), value, lease).commit()
              .compose(r -> r.succeeded() ? Future.succeededFuture(held(fid, node, publicIp, block, lease, value))
                  : retryAcquire(fid, node, publicIp, preferred, attempt, lease)));
        }
      }
      Optional<Cidr> block = preferred.filter(b -> !taken.contains(b));
      if (block.isEmpty()) {
        Cidr min = plan.subnetMin(rec.subnet());
        Cidr max = plan.subnetMax(rec.subnet());
        for (long b = min.base(); b <= max.base(); b += min.size()) {
          Cidr c = new Cidr(b, plan.hostSize());
          if (!taken.contains(c)) {
            block = Optional.of(c);
            break;
          }
        }
      }
      if (block.isEmpty()) {
        return Future.failedFuture(new IpamException(Reason.EXHAUSTED, "all " + config.nodesPerNetwork()
            + " node blocks of network " + rec.subnet() + " are leased; raise DEFAULT_HOST_SUBNET_SIZE or lower NETWORK_SUBNET_SIZE"));
      }
      Cidr chosen = block.get();
      String key = schema.subnet(fid, chosen);
      return etcd.grantLease(config.subnetLeaseTtlSeconds()).compose(lease -> etcd.txn().ifAbsent(key)
          .thenPut(key, value, lease).commit()
          .compose(r -> r.succeeded() ? Future.succeededFuture(held(fid, node, publicIp, chosen, lease, value))
              : retryAcquire(fid, node, publicIp, preferred, attempt, lease)));
    }));
  }

  private Future<NodeLease> retryAcquire(String fid, String node, String publicIp, Optional<Cidr> preferred, int attempt,
      long wastedLease) {
    etcd.revokeLease(wastedLease);
    if (attempt + 1 >= RACE_RETRIES) {
      return Future.failedFuture(new IpamException(Reason.CONFLICT, "could not lease a node block of network " + fid
          + " after " + RACE_RETRIES + " races; retry"));
    }
    return acquire(fid, node, publicIp, preferred, attempt + 1);
  }

  private NodeLease held(String fid, String node, String publicIp, Cidr block, long lease, String value) {
    NodeLease nl = new NodeLease(fid, block, lease, value);
    leases.put(fid, nl);
    EtcdStore.KeepAlive old = keepAlives.put(fid, etcd.keepAlive(lease, () -> {
      // The lease expired (etcd was away longer than SUBNET_LEASE_TTL): take the same block back.
      LOG.warning("lease of " + block + " in network " + fid + " was lost; re-acquiring it");
      leases.remove(fid);
      EtcdStore.KeepAlive ka = keepAlives.remove(fid);
      if (ka != null) {
        ka.close();
      }
      acquire(fid, node, publicIp, Optional.of(block), 0)
          .onFailure(e -> LOG.severe("cannot re-acquire " + block + " of network " + fid + ": " + e.getMessage()));
    }));
    if (old != null) {
      old.close();
    }
    LOG.info("node " + node + " holds " + block + " of network " + fid);
    return nl;
  }

  /** Gives up this node's lease of a network (revoking it deletes the key at once). */
  public Future<Void> releaseNodeLease(String flannelId) {
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
      int now = kv.map(k -> new JsonObject(k.value()).getInteger("Refs", 0)).orElse(0);
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
    String key = schema.allocation(flannelId, Ipv4.format(address));
    return etcd.txn().ifAbsent(key).thenPut(key, owner.toJson()).elseGet(key).commit().compose(r -> {
      if (r.succeeded()) {
        cache(flannelId).put(address, owner);
        return Future.succeededFuture(new Allocation(address, owner, false));
      }
      if (r.elseReads().isEmpty()) {
        return allocateSpecific(flannelId, address, owner); // released between compare and read
      }
      Owner holder = Owner.fromJson(r.elseReads().get(0).value());
      cache(flannelId).put(address, holder);
      if (holder.sameHolder(owner)) {
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
    return loadCache(flannelId, false).compose(c -> allocateNext(flannelId, first, last, owner, rangeName, hint, false, 0));
  }

  private Future<Allocation> allocateNext(String fid, long first, long last, Owner owner, String rangeName, String hint,
      boolean refreshed, int races) {
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
        return loadCache(fid, true).compose(x -> allocateNext(fid, first, last, owner, rangeName, hint, true, races));
      }
      return Future.failedFuture(new IpamException(Reason.EXHAUSTED,
          rangeName + " (" + Ipv4.format(first) + "-" + Ipv4.format(last) + ", " + size + " addresses) is exhausted; " + hint));
    }
    long a = candidate;
    cursors.put(cursorKey, a + 1 > last ? first : a + 1);
    String key = schema.allocation(fid, Ipv4.format(a));
    return etcd.txn().ifAbsent(key).thenPut(key, owner.toJson()).elseGet(key).commit()
        .andThen(ar -> inFlight.remove(a)).compose(r -> {
      if (r.succeeded()) {
        cache.put(a, owner);
        cursors.put(cursorKey, a + 1 > last ? first : a + 1);
        return Future.succeededFuture(new Allocation(a, owner, false));
      }
      if (!r.elseReads().isEmpty()) {
        cache.put(a, Owner.fromJson(r.elseReads().get(0).value()));
      }
      if (races > 4 * size) {
        return Future.failedFuture(new IpamException(Reason.CONFLICT, rangeName + " is contended; retry"));
      }
      return allocateNext(fid, first, last, owner, rangeName, hint, refreshed, races + 1);
    });
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
        if (test.test(e.getValue())) {
          return Optional.of(new Allocation(e.getKey(), e.getValue(), true));
        }
      }
      return Optional.empty();
    });
  }

  /** The holder of {@code address}, read from etcd. */
  public Future<Optional<Owner>> holder(String flannelId, long address) {
    return etcd.get(schema.allocation(flannelId, Ipv4.format(address))).map(kv -> kv.map(k -> Owner.fromJson(k.value())));
  }

  /**
   * Frees {@code address} if its holder passes {@code allowed}. An address that is not held, or is
   * held by someone else, is left alone (false) — never a free of someone else's address.
   */
  public Future<Boolean> release(String flannelId, long address, Predicate<Owner> allowed) {
    return release(flannelId, address, allowed, 0);
  }

  private Future<Boolean> release(String fid, long address, Predicate<Owner> allowed, int attempt) {
    String key = schema.allocation(fid, Ipv4.format(address));
    Owner cached = cache(fid).get(address);
    if (attempt == 0 && cached != null && allowed.test(cached)) {
      // One round trip when the cache knows the holder: delete only if the value is unchanged.
      return etcd.txn().ifValue(key, cached.toJson()).thenDelete(key).commit().compose(r -> {
        if (r.succeeded()) {
          cache(fid).remove(address);
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
      Owner o = Owner.fromJson(kv.get().value());
      if (!allowed.test(o)) {
        LOG.fine("release of " + Ipv4.format(address) + " in " + fid + " ignored: held by " + o.describe());
        return Future.succeededFuture(false);
      }
      return etcd.txn().ifModRevision(key, kv.get().modRevision()).thenDelete(key).commit().compose(r -> {
        if (r.succeeded()) {
          cache(fid).remove(address);
          return Future.succeededFuture(true);
        }
        return attempt < RACE_RETRIES ? release(fid, address, allowed, attempt + 1) : Future.succeededFuture(false);
      });
    });
  }

  /** Records which endpoint holds an address (after CreateEndpoint), if the holder is unchanged. */
  public Future<Void> tagEndpoint(String flannelId, long address, Owner expected, String endpointId) {
    String key = schema.allocation(flannelId, Ipv4.format(address));
    Owner tagged = expected.withEndpoint(endpointId);
    return etcd.txn().ifValue(key, expected.toJson()).thenPut(key, tagged.toJson()).commit().map(r -> {
      if (r.succeeded()) {
        cache(flannelId).put(address, tagged);
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
        fresh.put(Ipv4.parse(kv.key().substring(schema.allocations(fid).length())), Owner.fromJson(kv.value()));
      }
      used.put(fid, fresh);
      return fresh;
    });
  }
}
