package io.flannelnp.lb;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.WatchEvent;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.ipam.Ipv4;
import io.flannelnp.model.ClusterModel;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.NetworkScopes;
import io.flannelnp.model.ServiceRecord;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.logging.Logger;

/**
 * What the load balancer wants, computed from the whole etcd snapshot: every VIP of every
 * VIP-mode service on every flannel-np network (DockerNetwork with a flannel-id) → the addresses
 * on that network of the service's running tasks, on any node, in container-ID order.
 *
 * <p><b>Every node programs every flannel network's VIPs</b>, not only those of networks it has a
 * bridge for: a rule for a network without a bridge on this node never matches (no container
 * here can send to that VIP), VIPs are unique cluster-wide, and the set then depends on nothing
 * node-specific (no lease matching, no wake-up on lease changes, no window in which a freshly
 * leased network lacks its VIPs). The cost is elements, which are cheap (see the benchmark).
 *
 * <p>Excluded: DNSRR services; networks that are not flannel-np's or that are not (or no longer)
 * in {@code docker-data/networks}; tasks whose state is not "running" (a "stopping" task leaves
 * at once). A VIP claimed by two services goes to the smaller service ID and is reported.
 * Addresses are validated as dotted quads (a "/prefix" is dropped) before they can reach an nft
 * script.
 *
 * <p><b>Only addresses a network owns.</b> The table rewrites host traffic too (prerouting and
 * output), so a VIP is programmed only inside the cluster range of a network whose subnet is
 * reserved for it ({@link NetworkScopes}: address-space reservation and Flannel config), a backend
 * only inside that network's subnet, and a container record only from under its own node's key
 * ({@link ClusterModel#misplaced}); anything else is left out and reported. A reservation or
 * config change recomputes everything, as a network change does.
 *
 * <p><b>Incremental, yet from the whole snapshot.</b> Each pass walks every key of the snapshot,
 * but parses only keys whose mod revision changed since the last pass, and recomputes only the
 * services those keys touch (any network change recomputes all). A pass over 100,000 keys thus
 * costs a few milliseconds instead of half a second; {@link Result#changed()} names the VIPs that
 * may differ from the previous result. The result equals a computation from scratch (tested).
 *
 * <p><b>Incremental from key changes.</b> {@link #update} applies one watch batch's changes to
 * the last computation without walking the snapshot: a single-service change at 20,000 services
 * then costs microseconds. A fresh instance's {@link #compute} of a snapshot is a pure function of
 * the snapshot, and {@code compute(S)} followed by {@code update(changes)} equals
 * {@code compute(S')} of the resulting snapshot (tested). One instance is used by one thread.
 */
public final class LbDesired {
  private static final Logger LOG = Logger.getLogger(LbDesired.class.getName());

  /**
   * The outcome of one computation. {@code vips} is a read-only view that the next computation
   * changes: copy what must be kept. {@code changed}: the VIPs that may differ from the previous
   * result, or null when anything may have (the first computation, a network change).
   */
  public record Result(Map<String, List<String>> vips, Set<String> changed, SortedSet<Integer> chains, int services,
      int backends, List<String> problems) {}

  /** The record of an address-space or network-config key: its value lives in {@link #scopes}. */
  private static final Object SCOPE = new Object();

  private static final class Entry {
    long modRevision;
    Object record;
    String error;
    long seen;
  }

  private final EtcdSchema schema;
  private final String networksPrefix;
  private final String servicesPrefix;
  private final String containersPrefix;
  private final NetworkScopes scopes;
  private final Map<String, Entry> cache = new HashMap<>();
  private final Map<String, DockerNetwork> networks = new HashMap<>();
  private final Map<String, ServiceRecord> services = new HashMap<>();
  /** service ID → (container ID + etcd key → record). */
  private final Map<String, TreeMap<String, ContainerRecord>> containers = new HashMap<>();
  private final TreeMap<String, List<String>> vips = new TreeMap<>(LbDesired::compareIp);
  private final Map<String, List<String>> vipsOf = new HashMap<>();
  private final Map<String, String> owner = new HashMap<>();
  /** VIPs more than one service claims (only the smallest ID has it). */
  private final Set<String> contested = new HashSet<>();
  private final Map<Integer, Integer> perCount = new HashMap<>();
  private final Map<String, List<String>> serviceProblems = new HashMap<>();
  private final Map<String, String> recordProblems = new HashMap<>();
  private Set<String> reported = Set.of();
  private int vipServices;
  private int backendCount;
  private long pass;

  public LbDesired(EtcdSchema schema) {
    this.schema = schema;
    this.networksPrefix = schema.dockerNetworks();
    this.servicesPrefix = schema.dockerServices();
    this.containersPrefix = schema.dockerContainers();
    this.scopes = new NetworkScopes(schema);
  }

  /** Everything wanted by the snapshot {@code kvs} (keys of other families are ignored). */
  public Result compute(Collection<KeyValue> kvs) {
    pass++;
    boolean all = pass == 1;
    Set<String> dirty = new HashSet<>();
    int live = 0;
    for (KeyValue kv : kvs) {
      Family f = family(kv.key());
      if (f == null) {
        continue;
      }
      live++;
      Entry e = cache.get(kv.key());
      if (e != null && e.modRevision == kv.modRevision()) {
        e.seen = pass;
        continue;
      }
      all |= put(kv, f, e, dirty);
    }
    // keys gone from the snapshot (only looked for when the cache holds more keys than it has)
    for (Iterator<Map.Entry<String, Entry>> it = cache.size() == live ? java.util.Collections.emptyIterator()
        : cache.entrySet().iterator(); it.hasNext();) {
      Map.Entry<String, Entry> me = it.next();
      if (me.getValue().seen != pass) {
        it.remove();
        recordProblems.remove(me.getKey());
        all |= forget(me.getKey(), me.getValue(), dirty);
      }
    }
    return finish(all, dirty);
  }

  /**
   * The result after these key changes (one or more watch batches, in order), applied to the last
   * {@link #compute} or {@code update}: only the services they touch are recomputed. Before any
   * compute it is one from the changes alone, which is only right if they start from nothing.
   */
  public Result update(List<WatchEvent> events) {
    pass++;
    boolean all = pass == 1;
    Set<String> dirty = new HashSet<>();
    for (WatchEvent ev : events) {
      Family f = family(ev.key());
      if (f == null) {
        continue;
      }
      Entry e = cache.get(ev.key());
      if (ev.type() == WatchEvent.Type.PUT) {
        if (e != null && e.modRevision == ev.kv().modRevision()) {
          e.seen = pass;
          continue;
        }
        all |= put(ev.kv(), f, e, dirty);
      } else if (e != null) {
        cache.remove(ev.key());
        recordProblems.remove(ev.key());
        all |= forget(ev.key(), e, dirty);
      }
    }
    // untouched entries keep an older "seen": compute only compares it with its own pass
    return finish(all, dirty);
  }

  /** The families this computation reads; address-space keys count as NETWORK_CONFIG here. */
  private Family family(String k) {
    if (k.startsWith(containersPrefix)) {
      return Family.DOCKER_CONTAINERS;
    } else if (k.startsWith(servicesPrefix)) {
      return Family.DOCKER_SERVICES;
    } else if (k.startsWith(networksPrefix)) {
      return Family.DOCKER_NETWORKS;
    } else if (scopes.reads(k)) {
      return Family.NETWORK_CONFIG;
    }
    return null;
  }

  /** A key left the snapshot; true if everything must be recomputed. */
  private boolean forget(String key, Entry e, Set<String> dirty) {
    if (e.record == SCOPE) {
      scopes.remove(key);
      return true;
    }
    return apply(key, e.record, null, dirty);
  }

  /** Parses a new or changed key into the cache; true if everything must be recomputed. */
  private boolean put(KeyValue kv, Family f, Entry e, Set<String> dirty) {
    String k = kv.key();
    Object old = e == null ? null : e.record;
    if (e == null) {
      e = new Entry();
      cache.put(k, e);
    }
    e.modRevision = kv.modRevision();
    e.seen = pass;
    e.error = null;
    if (f == Family.NETWORK_CONFIG) {
      scopes.put(k, kv.value()); // parsed when a VIP asks: a bad one is reported there
      e.record = SCOPE;
      return true;
    }
    try {
      e.record = switch (f) {
        case DOCKER_NETWORKS -> DockerNetwork.fromJson(kv.value());
        case DOCKER_SERVICES -> ServiceRecord.fromJson(kv.value());
        default -> ContainerRecord.fromJson(kv.value());
      };
      if (e.record instanceof ContainerRecord c && ClusterModel.misplaced(schema, k, c) != null) {
        throw new IllegalArgumentException("it is not under its own node's key (it names node '" + c.node()
            + "' and container '" + c.containerId() + "')");
      }
      recordProblems.remove(k);
    } catch (RuntimeException ex) {
      e.record = null;
      e.error = "skipping unreadable record " + k + ": " + ex.getMessage();
      recordProblems.put(k, e.error);
    }
    return apply(k, old, e.record, dirty);
  }

  /** Re-places the dirty services (or all of them) and builds the result. */
  private Result finish(boolean all, Set<String> dirty) {
    Set<String> changed = new HashSet<>();
    if (!all) {
      List<String> ids = new ArrayList<>(dirty);
      Collections.sort(ids);
      for (String id : ids) {
        all |= !unplace(id, changed);
      }
      for (String id : all ? List.<String>of() : ids) {
        if (!place(id, changed)) {
          all = true; // a VIP moves between services: do it the simple way
          break;
        }
      }
    }
    if (all) {
      vips.clear();
      vipsOf.clear();
      owner.clear();
      contested.clear();
      perCount.clear();
      serviceProblems.clear();
      vipServices = 0;
      backendCount = 0;
      List<String> ids = new ArrayList<>(services.keySet());
      Collections.sort(ids);
      for (String id : ids) {
        place(id, changed);
      }
    }

    List<String> problems = new ArrayList<>(recordProblems.values());
    serviceProblems.values().forEach(problems::addAll);
    Set<String> now = new HashSet<>(problems);
    for (String p : problems) {
      if (!reported.contains(p)) {
        LOG.warning(p);
      }
    }
    reported = now;
    int max = 0;
    for (Map.Entry<Integer, Integer> e : perCount.entrySet()) {
      if (e.getKey() > 0 && e.getValue() > 0) {
        max = Math.max(max, e.getKey());
      }
    }
    SortedSet<Integer> chains = LbRules.upTo(max); // as LbRules.chainsFor: 1..max
    return new Result(Collections.unmodifiableMap(vips), all ? null : changed, chains, vipServices, backendCount,
        List.copyOf(problems));
  }

  /** Records one key's change; true if everything must be recomputed (a network changed). */
  private boolean apply(String key, Object old, Object now, Set<String> dirty) {
    if (old instanceof DockerNetwork n) {
      networks.remove(n.dockerId());
    }
    if (old instanceof ServiceRecord s) {
      services.remove(s.serviceId());
      dirty.add(s.serviceId());
    }
    if (old instanceof ContainerRecord c) {
      TreeMap<String, ContainerRecord> m = containers.get(c.serviceId());
      if (m != null) {
        m.remove(c.containerId() + "\0" + key);
        if (m.isEmpty()) {
          containers.remove(c.serviceId());
        }
      }
      dirty.add(c.serviceId());
    }
    if (now instanceof DockerNetwork n) {
      networks.put(n.dockerId(), n);
    }
    if (now instanceof ServiceRecord s) {
      services.put(s.serviceId(), s);
      dirty.add(s.serviceId());
    }
    if (now instanceof ContainerRecord c) {
      containers.computeIfAbsent(c.serviceId(), x -> new TreeMap<>()).put(c.containerId() + "\0" + key, c);
      dirty.add(c.serviceId());
    }
    return old instanceof DockerNetwork || now instanceof DockerNetwork;
  }

  /** Takes a service's VIPs out; false if one of them is contested (another service may get it). */
  private boolean unplace(String serviceId, Set<String> changed) {
    serviceProblems.remove(serviceId);
    List<String> mine = vipsOf.remove(serviceId);
    if (mine == null) {
      return true;
    }
    boolean clean = true;
    for (String vip : mine) {
      clean &= !contested.contains(vip);
      List<String> old = vips.remove(vip);
      owner.remove(vip);
      perCount.merge(old.size(), -1, Integer::sum);
      backendCount -= old.size();
      changed.add(vip);
    }
    if (!mine.isEmpty()) {
      vipServices--;
    }
    return clean;
  }

  /** Adds a service's VIPs; false if a VIP it should win belongs to another service. */
  private boolean place(String serviceId, Set<String> changed) {
    ServiceRecord s = services.get(serviceId);
    if (s == null || s.mode() != ServiceRecord.EndpointMode.VIP) {
      return true;
    }
    List<String> problems = new ArrayList<>();
    List<String> mine = new ArrayList<>();
    TreeMap<String, ContainerRecord> tasks = containers.getOrDefault(serviceId, new TreeMap<>());
    for (Map.Entry<String, String> e : new TreeMap<>(s.vips()).entrySet()) {
      DockerNetwork n = networks.get(e.getKey());
      if (n == null || !n.isFlannel()) {
        continue;
      }
      String vip = address(e.getValue());
      if (vip == null) {
        problems.add("service " + serviceId + " has an invalid VIP " + e.getValue() + " on network " + e.getKey());
        continue;
      }
      java.util.Optional<NetworkScopes.Scope> scope = scopes.scope(n.flannelId());
      if (scope.isEmpty()) {
        problems.add("service " + serviceId + "'s VIP " + vip + " on network " + e.getKey() + " is not programmed: "
            + scopes.why(n.flannelId()));
        continue;
      }
      if (!scope.get().vipAllowed(Ipv4.parse(vip))) {
        problems.add("service " + serviceId + "'s VIP " + vip + " on network " + e.getKey() + " is not programmed: it is"
            + " outside the network's cluster range " + scope.get().clusterRanges());
        continue;
      }
      String other = owner.get(vip);
      if (other != null) {
        if (other.compareTo(serviceId) < 0) {
          contested.add(vip);
          problems.add("VIP " + vip + " is claimed by services " + other + " and " + serviceId + "; " + other
              + " keeps it");
          continue;
        }
        return false;
      }
      LinkedHashSet<String> ips = new LinkedHashSet<>();
      for (ContainerRecord c : tasks.values()) {
        ContainerRecord.Attachment a = c.networks().get(e.getKey());
        if (!c.running() || a == null || a.ip().isEmpty()) {
          continue;
        }
        String ip = address(a.ip());
        if (ip == null) {
          problems.add("container " + c.containerId() + " has an invalid address " + a.ip());
        } else if (!scope.get().backendAllowed(Ipv4.parse(ip))) {
          problems.add("container " + c.containerId() + "'s address " + ip + " is outside subnet " + scope.get().subnet()
              + " of network " + e.getKey() + "; it is no backend of VIP " + vip);
        } else {
          ips.add(ip);
        }
      }
      List<String> list = List.copyOf(ips);
      vips.put(vip, list);
      owner.put(vip, serviceId);
      perCount.merge(list.size(), 1, Integer::sum);
      backendCount += list.size();
      mine.add(vip);
      changed.add(vip);
    }
    if (!mine.isEmpty()) {
      vipsOf.put(serviceId, mine);
      vipServices++;
    }
    if (!problems.isEmpty()) {
      serviceProblems.put(serviceId, problems);
    }
    return true;
  }

  /** The dotted quad of "a.b.c.d" or "a.b.c.d/len"; null if it is not one. */
  static String address(String s) {
    if (s == null || s.isEmpty()) {
      return null;
    }
    int slash = s.indexOf('/');
    String a = slash >= 0 ? s.substring(0, slash) : s;
    try {
      return Kernel.ipv4(a);
    } catch (IllegalArgumentException e) {
      return null;
    }
  }

  /** Numeric order of dotted quads (scripts and listings read naturally). */
  static int compareIp(String a, String b) {
    return Long.compare(value(a), value(b));
  }

  private static long value(String ip) {
    long v = 0;
    int part = 0;
    for (int i = 0; i < ip.length(); i++) {
      char ch = ip.charAt(i);
      if (ch == '.') {
        v = (v << 8) | part;
        part = 0;
      } else {
        part = part * 10 + (ch - '0');
      }
    }
    return (v << 8) | part;
  }
}
