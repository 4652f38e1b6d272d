package io.flannelnp.gc;

import io.flannelnp.docker.DockerMessage.DockerView;
import io.flannelnp.docker.DockerMessage.ViewEndpoint;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.FlannelJson;
import io.flannelnp.ipam.Ipv4;
import io.flannelnp.ipam.NetworkRecord;
import io.flannelnp.ipam.Owner;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * What the IPAM state in etcd holds that Docker does not (garbage), what Docker holds that etcd
 * lost (to restore), and every record that does not parse (problems). Pure: the etcd state and a
 * fresh read of Docker in, decisions out; {@link GcVerticle} applies them after a grace period.
 *
 * <p>Who decides what (Docker > etcd): a node judges its own containers' addresses and endpoint
 * records against its own Docker; a manager whose Swarm lists answered judges the leader's
 * addresses (task attachments, VIPs, gateways) and networks against the Swarm, and a dead node's
 * records (a node with no node record and no Flannel lease left) against nothing but time; that
 * is left to one node, the live node with the lowest name, so the cluster does it once.
 */
public record Garbage(List<Reclaim> reclaims, List<Restore> restores, List<Removal> removals, List<String> problems) {

  /** A key to delete exactly as read; {@code guardAbsent}: only while that key does not exist. */
  public record Reclaim(String key, long modRevision, String guardAbsent, String why, String flannelId,
      String endpointId) {}

  /**
   * A record Docker's state says must exist: an allocation ({@code owner} set) or an endpoint
   * record ({@code json} set), written create-once.
   */
  public record Restore(String key, String flannelId, long address, Owner owner, String json, String why) {}

  /** A network whose state goes: Docker freed it ({@code freed}) or no longer knows it. */
  public record Removal(String flannelId, boolean freed, String why) {}

  /**
   * @param me this node's NODE_NAME (the owner of its allocations and endpoint records)
   * @param view Docker now, or null when Docker did not answer (then nothing is judged against it)
   */
  public static Garbage compute(EtcdSchema schema, Collection<KeyValue> kvs, String me, DockerView view) {
    State st = State.read(schema, kvs);
    List<Reclaim> reclaims = new ArrayList<>();
    List<Restore> restores = new ArrayList<>();
    List<Removal> removals = new ArrayList<>();
    List<String> problems = new ArrayList<>(st.problems);

    if (view != null) {
      mine(schema, st, me, view, reclaims, restores, problems);
      if (view.manager() && view.swarmComplete()) {
        swarm(schema, st, view, reclaims, removals);
      }
    }
    if (st.judgesTheDead(me)) {
      deadNodes(schema, st, me, reclaims);
      for (String fid : st.pools.keySet()) {
        if (st.freed(fid) && st.endpointsOf(fid) == 0) {
          removals.add(new Removal(fid, true, "Docker freed network " + fid + " and no endpoint is left"));
        }
      }
    }
    return new Garbage(List.copyOf(reclaims), List.copyOf(restores), List.copyOf(removals), List.copyOf(problems));
  }

  /** This node's own addresses and endpoint records against its Docker, both ways. */
  private static void mine(EtcdSchema schema, State st, String me, DockerView view, List<Reclaim> reclaims,
      List<Restore> restores, List<String> problems) {
    Set<String> dockerIps = new HashSet<>();
    Set<String> dockerEps = new HashSet<>();
    for (ViewEndpoint e : view.endpoints()) {
      dockerIps.add(e.ip());
      dockerEps.add(e.endpointId());
    }
    for (Alloc a : st.allocations) {
      Owner o = a.owner;
      if (o.readable() && o.space() == Owner.Space.LOCAL && o.kind() == Owner.Kind.CONTAINER && o.node().equals(me)
          && !dockerIps.contains(a.ip) && (o.endpoint().isEmpty() || !dockerEps.contains(o.endpoint()))) {
        reclaims.add(new Reclaim(a.key, a.modRevision, null, "address " + a.ip + " of network " + a.fid
            + ": no container of this node has it" + (o.endpoint().isEmpty() ? "" : " (endpoint "
            + short12(o.endpoint()) + ")"), a.fid, ""));
      }
    }
    for (Endpoint e : st.endpoints) {
      if (e.node.equals(me) && !dockerEps.contains(e.endpointId)) {
        reclaims.add(new Reclaim(e.key, e.modRevision, null, "endpoint record " + short12(e.endpointId)
            + ": Docker has no such endpoint on this node", e.flannelId, e.endpointId));
      }
    }
    Set<String> recordedEps = new HashSet<>();
    st.endpoints.stream().filter(e -> e.node.equals(me)).forEach(e -> recordedEps.add(e.endpointId));
    for (ViewEndpoint e : view.endpoints()) {
      String fid = st.flannelIdOf(e.networkId(), view);
      if (fid.isEmpty() || !Ipv4.isValid(e.ip())) {
        continue; // not a flannel-np network
      }
      long ip = Ipv4.parse(e.ip());
      Alloc held = st.allocation(fid, e.ip());
      if (held == null) {
        if (st.myBlock(fid, me).filter(b -> b.contains(ip)).isPresent()) {
          Owner o = Owner.container(me, e.mac(), "").withEndpoint(e.endpointId());
          restores.add(new Restore(schema.allocation(fid, e.ip()), fid, ip, o, null, "address " + e.ip()
              + " of network " + fid + " is used by container " + short12(e.containerId())
              + " but etcd has no allocation for it"));
        } else {
          problems.add("address " + e.ip() + " of container " + short12(e.containerId()) + " on network " + fid
              + " is outside this node's block and not allocated in etcd");
        }
      } else if (held.owner.readable() && !(held.owner.space() == Owner.Space.LOCAL
          && held.owner.node().equals(me))) {
        problems.add("address " + e.ip() + " of network " + fid + " has two owners: container "
            + short12(e.containerId()) + " on " + me + " and " + held.owner.describe());
      }
      if (!recordedEps.contains(e.endpointId())) {
        JsonObject rec = new JsonObject().put("NetworkID", e.networkId()).put("FlannelID", fid)
            .put("EndpointID", e.endpointId()).put("Address", e.ip()).put("MacAddress", e.mac()).put("Node", me)
            .put("SandboxKey", e.sandboxKey());
        restores.add(new Restore(schema.endpoint(me, e.endpointId()), fid, ip, null, rec.encode(), "endpoint "
            + short12(e.endpointId()) + " of container " + short12(e.containerId()) + " has no record in etcd"));
      }
    }
  }

  /** The leader's addresses and the networks against the Swarm (a manager whose lists answered). */
  private static void swarm(EtcdSchema schema, State st, DockerView view, List<Reclaim> reclaims,
      List<Removal> removals) {
    for (Alloc a : st.allocations) {
      Owner o = a.owner;
      if (o.readable() && o.space() == Owner.Space.GLOBAL && o.kind() != Owner.Kind.GATEWAY
          && !view.swarmAddresses().contains(a.ip)) {
        reclaims.add(new Reclaim(a.key, a.modRevision, null, "cluster address " + a.ip + " of network " + a.fid
            + ": no task, service or network of the Swarm holds it", a.fid, ""));
      }
    }
    for (String fid : st.pools.keySet()) {
      if (st.endpointsOf(fid) > 0 || st.freed(fid)) {
        continue;
      }
      String dockerId = st.dockerIds.get(fid);
      boolean known = view.networks().values().stream().anyMatch(n -> n.flannelId().equals(fid))
          || (dockerId != null && view.networks().containsKey(dockerId));
      if (!known) {
        removals.add(new Removal(fid, false, "no Docker network uses flannel-id " + fid
            + (dockerId == null ? "" : " (its network " + dockerId + " is gone)") + " and no endpoint is left"));
      }
    }
  }

  /**
   * Records of nodes that are gone: no node record (it lives on the node's lease) and no Flannel
   * lease in any network. Deleted only while the node record is still absent.
   */
  private static void deadNodes(EtcdSchema schema, State st, String me, List<Reclaim> reclaims) {
    for (String n : st.named()) {
      if (n.equals(me) || st.nodes.contains(n) || st.holdsLease(n)) {
        continue;
      }
      String guard = schema.node(n);
      for (Alloc a : st.allocations) {
        if (a.owner.readable() && a.owner.space() == Owner.Space.LOCAL && a.owner.node().equals(n)) {
          reclaims.add(new Reclaim(a.key, a.modRevision, guard, "address " + a.ip + " of network " + a.fid
              + " held by node " + n + ", which is gone (no node record, no lease)", a.fid, ""));
        }
      }
      for (Endpoint e : st.endpoints) {
        if (e.node.equals(n)) {
          reclaims.add(new Reclaim(e.key, e.modRevision, guard, "endpoint record " + short12(e.endpointId)
              + " of node " + n + ", which is gone", e.flannelId, ""));
        }
      }
      for (PoolRef r : st.poolRefs) {
        if (r.node.equals(n)) {
          reclaims.add(new Reclaim(r.key, r.modRevision, guard, "pool reference of node " + n + " in network "
              + r.fid + ", which is gone", r.fid, ""));
        }
      }
    }
  }

  static String short12(String id) {
    return id.length() > 12 ? id.substring(0, 12) : id;
  }

  private record Alloc(String key, String fid, String ip, Owner owner, long modRevision) {}

  private record Endpoint(String key, String node, String endpointId, String flannelId, long modRevision) {}

  private record PoolRef(String key, String fid, String node, long modRevision) {}

  private record Lease(Cidr block, String vtepMac) {}

  /** The IPAM families of the etcd state, parsed record by record; what does not parse is a problem. */
  private static final class State {
    final Map<String, NetworkRecord> pools = new TreeMap<>();
    final Map<String, String> dockerIds = new HashMap<>();
    final Map<String, String> freedMarks = new HashMap<>();
    final List<Alloc> allocations = new ArrayList<>();
    final Map<String, Map<String, Alloc>> allocByIp = new HashMap<>();
    final Map<String, List<Lease>> leases = new HashMap<>();
    final List<Endpoint> endpoints = new ArrayList<>();
    final List<PoolRef> poolRefs = new ArrayList<>();
    final Set<String> nodes = new HashSet<>();
    final List<String> problems = new ArrayList<>();

    static State read(EtcdSchema schema, Collection<KeyValue> kvs) {
      State st = new State();
      for (KeyValue kv : kvs) {
        String key = kv.key();
        Family f = schema.family(key);
        try {
          switch (f) {
            case ADDRESS_SPACE -> {
              String rest = key.substring(schema.addressSpace().length());
              if (!rest.isEmpty()) {
                Cidr.fromKey(rest);
              }
            }
            case VNIS -> {
              String rest = key.substring(schema.vnis().length());
              if (!rest.isEmpty() && !rest.matches("[0-9]{1,8}")) {
                throw new IllegalArgumentException("'" + rest + "' is not a VNI");
              }
            }
            case POOLS -> st.pool(schema, kv);
            case ALLOCATIONS -> st.allocation(schema, kv);
            case SUBNET_LEASES -> st.lease(schema, kv);
            case ENDPOINTS -> st.endpoint(schema, kv);
            case NODES -> {
              String n = key.substring(schema.nodes().length());
              if (!n.isEmpty()) {
                st.nodes.add(n);
              }
            }
            case SETTINGS -> new JsonObject(kv.value());
            case DOCKER_NETWORKS -> DockerNetwork.fromJson(kv.value());
            case DOCKER_SERVICES -> ServiceRecord.fromJson(kv.value());
            case DOCKER_CONTAINERS -> ContainerRecord.fromJson(kv.value());
            default -> { }
          }
        } catch (RuntimeException e) {
          st.problems.add("malformed record " + printable(key) + ": " + printable(String.valueOf(e.getMessage())));
        }
      }
      return st;
    }

    private void pool(EtcdSchema schema, KeyValue kv) {
      Optional<String> fid = schema.flannelIdOf(kv.key());
      if (fid.isEmpty()) {
        return;
      }
      String rest = kv.key().substring(schema.network(fid.get()).length());
      if (rest.equals("pool")) {
        pools.put(fid.get(), NetworkRecord.fromJson(kv.value()));
      } else if (rest.equals("docker-id")) {
        dockerIds.put(fid.get(), kv.value());
      } else if (rest.equals("freed")) {
        freedMarks.put(fid.get(), new JsonObject(kv.value()).getString("DockerID", ""));
      } else if (rest.startsWith("pool-refs/")) {
        new JsonObject(kv.value());
        poolRefs.add(new PoolRef(kv.key(), fid.get(), rest.substring("pool-refs/".length()), kv.modRevision()));
      }
    }

    private void allocation(EtcdSchema schema, KeyValue kv) {
      Optional<String> fid = schema.flannelIdOf(kv.key());
      if (fid.isEmpty()) {
        return;
      }
      String ip = kv.key().substring(schema.allocations(fid.get()).length());
      if (ip.isEmpty()) {
        return;
      }
      if (!Ipv4.isValid(ip)) {
        throw new IllegalArgumentException("'" + ip + "' is not an IPv4 address");
      }
      Owner o = Owner.parse(kv.value());
      if (!o.readable()) {
        problems.add("malformed record " + printable(kv.key()) + ": " + printable(o.at())
            + " (the address stays taken)");
      }
      Alloc a = new Alloc(kv.key(), fid.get(), ip, o, kv.modRevision());
      allocations.add(a);
      allocByIp.computeIfAbsent(fid.get(), k -> new HashMap<>()).put(ip, a);
    }

    private void lease(EtcdSchema schema, KeyValue kv) {
      Optional<String> fid = schema.flannelIdOf(kv.key());
      if (fid.isEmpty()) {
        return;
      }
      String rest = kv.key().substring(schema.subnets(fid.get()).length());
      if (rest.isEmpty()) {
        return;
      }
      int amp = rest.indexOf('&');
      Cidr block = Cidr.fromKey(amp >= 0 ? rest.substring(0, amp) : rest);
      JsonObject v = new JsonObject(kv.value());
      String mac = v.getValue("BackendData") instanceof JsonObject d && d.getValue("VtepMAC") instanceof String m ? m : "";
      if (!(v.getValue("PublicIP") instanceof String ip) || !Ipv4.isValid(ip)) {
        throw new IllegalArgumentException("PublicIP " + v.getValue("PublicIP") + " is not an IPv4 address");
      }
      leases.computeIfAbsent(fid.get(), k -> new ArrayList<>()).add(new Lease(block, mac));
    }

    private void endpoint(EtcdSchema schema, KeyValue kv) {
      String rest = kv.key().substring(schema.allEndpoints().length());
      int slash = rest.indexOf('/');
      if (slash <= 0 || slash == rest.length() - 1) {
        return;
      }
      JsonObject j = new JsonObject(kv.value());
      endpoints.add(new Endpoint(kv.key(), rest.substring(0, slash), rest.substring(slash + 1),
          j.getValue("FlannelID") instanceof String s ? s : "", kv.modRevision()));
    }

    boolean freed(String fid) {
      String mark = freedMarks.get(fid);
      return mark != null && (!dockerIds.containsKey(fid) || dockerIds.get(fid).equals(mark));
    }

    int endpointsOf(String fid) {
      return (int) endpoints.stream().filter(e -> e.flannelId.equals(fid)).count();
    }

    Alloc allocation(String fid, String ip) {
      return allocByIp.getOrDefault(fid, Map.of()).get(ip);
    }

    /** The flannel-id of a Docker network: from Docker's own options, else from our docker-id record. */
    String flannelIdOf(String dockerNetworkId, DockerView view) {
      var n = view.networks().get(dockerNetworkId);
      if (n != null && !n.flannelId().isEmpty()) {
        return n.flannelId();
      }
      for (Map.Entry<String, String> e : dockerIds.entrySet()) {
        if (e.getValue().equals(dockerNetworkId)) {
          return e.getKey();
        }
      }
      return "";
    }

    /** The block {@code node} leases in the network (its VTEP MAC is derived from its name). */
    Optional<Cidr> myBlock(String fid, String node) {
      NetworkRecord rec = pools.get(fid);
      if (rec == null) {
        return Optional.empty();
      }
      String mac = FlannelJson.vtepMac(node, rec.vni());
      return leases.getOrDefault(fid, List.of()).stream().filter(l -> l.vtepMac.equals(mac)).map(l -> l.block)
          .findFirst();
    }

    /** Every node name a record mentions: allocation owners, endpoint records, pool references. */
    Set<String> named() {
      Set<String> out = new TreeSet<>();
      allocations.stream().filter(a -> a.owner.readable() && a.owner.space() == Owner.Space.LOCAL)
          .forEach(a -> out.add(a.owner.node()));
      endpoints.forEach(e -> out.add(e.node));
      poolRefs.forEach(r -> out.add(r.node));
      out.remove("");
      return out;
    }

    /**
     * Whether {@code me} is the node that frees gone nodes' records: of the live nodes (those with
     * a node record or a Flannel lease) the one whose name sorts first.
     */
    boolean judgesTheDead(String me) {
      Set<String> candidates = new TreeSet<>(named());
      candidates.addAll(nodes);
      candidates.add(me);
      return candidates.stream().filter(n -> nodes.contains(n) || holdsLease(n)).findFirst().filter(me::equals)
          .isPresent();
    }

    boolean holdsLease(String node) {
      for (Map.Entry<String, NetworkRecord> p : pools.entrySet()) {
        if (myBlock(p.getKey(), node).isPresent()) {
          return true;
        }
      }
      return false;
    }
  }

  /** A key or message from etcd as one printable line (a key may hold any bytes). */
  public static String printable(String s) {
    StringBuilder b = new StringBuilder(Math.min(s.length(), 200));
    for (int i = 0; i < s.length() && b.length() < 200; i++) {
      char c = s.charAt(i);
      b.append(c < 0x20 || c == 0x7f ? '?' : c);
    }
    return b.toString();
  }
}
