package io.flannelnp.status;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.flannel.VxlanPlan;
import io.flannelnp.gc.Garbage;
import io.flannelnp.ipam.Cidr;
import io.flannelnp.ipam.Owner;
import io.flannelnp.model.ClusterModel;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * The cluster at a glance, from one read of etcd: nodes, networks, services and what is wrong.
 * Pure: the keys under the prefix and each etcd lease's remaining and granted TTL in, the view
 * out; the planes' own rules decide what is a problem (the collector's audit of malformed
 * records, the Flannel plane's refusals), so this view and the nodes never disagree on it.
 */
public record ClusterStatus(List<Node> nodes, List<Network> networks, List<Service> services, List<String> problems) {

  /** A lease's time left and the TTL it was granted with, in seconds; left -1: expired or unknown. */
  public record Ttl(long left, long granted) {
    static final Ttl UNKNOWN = new Ttl(-1, 0);

    /** Less than a third of its TTL left: its holder missed two renewals. */
    boolean expiring() {
      return granted > 0 && left >= 0 && left * 3 < granted;
    }
  }

  /** A node: its record (written by its daemon on its own lease) or only a Flannel lease's PublicIP. */
  public record Node(String name, String publicIp, boolean manager, String version, long recordTtlLeft) {}

  /**
   * One node's block of a network, how long its lease has left, and its addresses: used (the
   * gateway's included) and free (the block's first and last address are never handed out).
   */
  public record Block(String block, String node, String publicIp, long ttlLeft, int used, long free) {}

  public record Network(String flannelId, String name, String subnet, int vni, List<Block> blocks, int nodeAddresses,
      int clusterAddresses, boolean freed) {}

  /** A service: its VIPs by network name, and its tasks per node (running, and leaving). */
  public record Service(String name, String mode, Map<String, String> vips, Map<String, Integer> running,
      Map<String, Integer> leaving) {}

  public static ClusterStatus of(EtcdSchema schema, Collection<KeyValue> kvs, Map<Long, Ttl> ttls) {
    List<String> problems = new ArrayList<>();
    Map<String, Node> nodes = new TreeMap<>();
    Map<String, String> nodeByIp = new TreeMap<>();
    Map<String, String> nodeBySwarmId = new TreeMap<>();
    for (KeyValue kv : kvs) {
      if (schema.family(kv.key()) != Family.NODES) {
        continue;
      }
      String name = kv.key().substring(schema.nodes().length());
      try {
        JsonObject r = new JsonObject(kv.value());
        Ttl t = ttls.getOrDefault(kv.lease(), Ttl.UNKNOWN);
        Node n = new Node(name, r.getString("PublicIP", ""), r.getBoolean("Manager", false), r.getString("Version", ""),
            t.left());
        nodes.put(name, n);
        nodeByIp.put(n.publicIp(), name);
        nodeBySwarmId.put(r.getString("SwarmNodeID", ""), name);
        if (t.expiring()) {
          problems.add("node " + name + ": its record expires in " + t.left() + " s (TTL " + t.granted()
              + " s): is its daemon renewing?");
        }
      } catch (RuntimeException e) {
        // the collector's audit names it below
      }
    }

    // networks: what the Flannel plane accepts, with the blocks every node leased
    VxlanPlan plan = VxlanPlan.compute(schema, kvs, "");
    Map<String, DockerNetwork> dockerByFid = new TreeMap<>();
    ClusterModel model = ClusterModel.of(schema, kvs);
    model.networks().values().forEach(n -> dockerByFid.put(n.flannelId(), n));
    Map<String, List<Block>> blocks = new TreeMap<>();
    Map<String, int[]> used = new TreeMap<>();
    Set<String> freed = new LinkedHashSet<>();
    Map<String, List<Long>> local = new TreeMap<>();
    for (KeyValue kv : kvs) {
      Family f = schema.family(kv.key());
      String fid = schema.flannelIdOf(kv.key()).orElse("");
      if (f == Family.SUBNET_LEASES && plan.networks().containsKey(fid)) {
        try {
          Cidr block = Cidr.fromKey(kv.key().substring(schema.subnets(fid).length()));
          String ip = new JsonObject(kv.value()).getString("PublicIP", "");
          Ttl t = ttls.getOrDefault(kv.lease(), Ttl.UNKNOWN);
          String node = nodeByIp.getOrDefault(ip, "");
          blocks.computeIfAbsent(fid, k -> new ArrayList<>()).add(new Block(block.toString(), node, ip, t.left(), 0, 0));
          if (t.expiring()) {
            problems.add("lease " + kv.key() + " (" + (node.isEmpty() ? ip : node) + ") expires in " + t.left()
                + " s (TTL " + t.granted() + " s)");
          }
          if (node.isEmpty()) {
            problems.add("lease " + kv.key() + ": no node record names its PublicIP " + ip
                + " (a stock flanneld, or a node whose Docker does not answer)");
          }
        } catch (RuntimeException e) {
          // the Flannel plane's refusal names it below
        }
      } else if (f == Family.ALLOCATIONS) {
        Owner o = Owner.parse(kv.value());
        int[] u = used.computeIfAbsent(fid, k -> new int[2]);
        u[o.space() == Owner.Space.GLOBAL ? 1 : 0]++;
        if (o.space() == Owner.Space.LOCAL) {
          String ip = kv.key().substring(schema.allocations(fid).length());
          if (io.flannelnp.ipam.Ipv4.isValid(ip)) {
            local.computeIfAbsent(fid, k -> new ArrayList<>()).add(io.flannelnp.ipam.Ipv4.parse(ip));
          }
        }
      } else if (kv.key().equals(schema.freed(fid))) {
        freed.add(fid);
      }
    }
    List<Network> networks = new ArrayList<>();
    for (VxlanPlan.Network n : plan.networks().values()) {
      DockerNetwork d = dockerByFid.get(n.flannelId());
      List<Long> addrs = local.getOrDefault(n.flannelId(), List.of());
      List<Block> bs = blocks.getOrDefault(n.flannelId(), List.of()).stream()
          .sorted(java.util.Comparator.comparingLong(b -> Cidr.parse(b.block()).base()))
          .map(b -> {
            Cidr c = Cidr.parse(b.block());
            int u = (int) addrs.stream().filter(c::contains).count();
            return new Block(b.block(), b.node(), b.publicIp(), b.ttlLeft(), u, Math.max(0, c.size() - 2 - u));
          }).toList();
      int[] u = used.getOrDefault(n.flannelId(), new int[2]);
      networks.add(new Network(n.flannelId(), d == null ? "" : d.name(), n.subnet().toString(), n.vni(), bs, u[0], u[1],
          freed.contains(n.flannelId())));
    }
    networks.sort(java.util.Comparator.comparing(Network::name).thenComparing(Network::flannelId));

    // services: VIPs by network name, tasks per node from the nodes' container records
    Map<String, String> netName = new TreeMap<>();
    model.networks().values().forEach(n -> netName.put(n.dockerId(), n.name()));
    List<Service> services = new ArrayList<>();
    for (ServiceRecord s : model.services().values()) {
      Map<String, String> vips = new TreeMap<>();
      s.vips().forEach((net, vip) -> vips.put(netName.getOrDefault(net, net), vip));
      Map<String, Integer> running = new TreeMap<>();
      Map<String, Integer> leaving = new TreeMap<>();
      for (ContainerRecord c : model.containers()) {
        if (!c.serviceId().equals(s.serviceId())) {
          continue;
        }
        String node = nodeBySwarmId.getOrDefault(c.node(), c.node());
        if ("running".equals(c.state())) {
          running.merge(node, 1, Integer::sum);
        } else if ("stopping".equals(c.state())) {
          leaving.merge(node, 1, Integer::sum);
        }
      }
      services.add(new Service(s.name(), s.mode().json(), vips, running, leaving));
    }
    services.sort(java.util.Comparator.comparing(Service::name));

    problems.addAll(plan.problems());
    problems.addAll(Garbage.compute(schema, kvs, "", null).problems());
    return new ClusterStatus(List.copyOf(nodes.values()), List.copyOf(networks), List.copyOf(services),
        List.copyOf(new LinkedHashSet<>(problems)));
  }

  /** One line: how many nodes, networks, services and problems. */
  public String summary() {
    return nodes.size() + " nodes, " + networks.size() + " networks, " + services.size() + " services, "
        + problems.size() + " problems";
  }

  /** What `flannel-np status` prints: one section per kind, as `weave status` does. */
  public String text() {
    StringBuilder s = new StringBuilder();
    s.append("Nodes (").append(nodes.size()).append(")\n");
    for (Node n : nodes) {
      s.append(String.format("  %-20s %-15s %-8s %-24s record %s%n", n.name(), n.publicIp(),
          n.manager() ? "manager" : "worker", n.version().isEmpty() ? "-" : n.version(), left(n.recordTtlLeft())));
    }
    s.append("Networks (").append(networks.size()).append(")\n");
    for (Network n : networks) {
      s.append(String.format("  %-20s %s VNI %d  flannel-id %s  addresses: %d on nodes, %d cluster-wide%s%n",
          n.name().isEmpty() ? "(not in Docker)" : n.name(), n.subnet(), n.vni(), n.flannelId(), n.nodeAddresses(),
          n.clusterAddresses(), n.freed() ? "  (being removed)" : ""));
      for (Block b : n.blocks()) {
        s.append(String.format("    %-18s %-20s %-15s %3d used, %3d free  lease %s%n", b.block(),
            b.node().isEmpty() ? "?" : b.node(), b.publicIp(), b.used(), b.free(), left(b.ttlLeft())));
      }
    }
    s.append("Services (").append(services.size()).append(")\n");
    for (Service v : services) {
      s.append(String.format("  %-20s %-6s %s  tasks %s%s%n", v.name(), v.mode(),
          v.vips().isEmpty() ? "-" : v.vips().toString(), v.running(),
          v.leaving().isEmpty() ? "" : "  leaving " + v.leaving()));
    }
    s.append("Problems (").append(problems.size()).append(")\n");
    for (String p : problems) {
      s.append("  ").append(Garbage.printable(p)).append('\n');
    }
    return s.toString();
  }

  private static String left(long seconds) {
    return seconds < 0 ? "expired or unknown" : seconds + " s left";
  }

  public JsonObject json() {
    JsonArray ns = new JsonArray();
    nodes.forEach(n -> ns.add(new JsonObject().put("name", n.name()).put("publicIp", n.publicIp())
        .put("manager", n.manager()).put("version", n.version()).put("recordTtlLeft", n.recordTtlLeft())));
    JsonArray nets = new JsonArray();
    for (Network n : networks) {
      JsonArray bs = new JsonArray();
      n.blocks().forEach(b -> bs.add(new JsonObject().put("block", b.block()).put("node", b.node())
          .put("publicIp", b.publicIp()).put("ttlLeft", b.ttlLeft()).put("used", b.used()).put("free", b.free())));
      nets.add(new JsonObject().put("flannelId", n.flannelId()).put("name", n.name()).put("subnet", n.subnet())
          .put("vni", n.vni()).put("blocks", bs).put("nodeAddresses", n.nodeAddresses())
          .put("clusterAddresses", n.clusterAddresses()).put("freed", n.freed()));
    }
    JsonArray svcs = new JsonArray();
    services.forEach(v -> svcs.add(new JsonObject().put("name", v.name()).put("mode", v.mode())
        .put("vips", new JsonObject(new TreeMap<>(v.vips()))).put("running", new JsonObject(new TreeMap<>(v.running())))
        .put("leaving", new JsonObject(new TreeMap<>(v.leaving())))));
    return new JsonObject().put("nodes", ns).put("networks", nets).put("services", svcs)
        .put("problems", new JsonArray(problems));
  }
}
