package io.flannelnp.etcd;

import io.flannelnp.ipam.Cidr;
import java.util.Optional;

/**
 * Where everything lives in etcd, under ETCD_PREFIX ({@code <P>}). Flannel's own schema is kept
 * inside {@code <P>/networks/<flannel-id>/} so a stock flanneld pointed at that prefix can join.
 *
 * <pre>
 * &lt;P&gt;/address-space/&lt;a.b.c.d-len&gt;                  network subnet reservation → flannel-id (create-once)
 * &lt;P&gt;/vnis/&lt;vni&gt;                                   VNI reservation → flannel-id (create-once)
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/config                  Flannel network config JSON
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/subnets/&lt;a.b.c.d-len&gt;  Flannel lease of one node (on an etcd lease)
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/cluster-blocks/&lt;a.b.c.d-len&gt; a node-sized block the cluster range grew into
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/pool                    the pool's options and reference count
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/allocations/&lt;a.b.c.d&gt;  one address and its owner JSON
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/pool-refs/&lt;node&gt;       a node's reference count of its local pool
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/docker-id              Docker's network ID for this flannel-id
 * &lt;P&gt;/networks/&lt;flannel-id&gt;/freed                  Docker's FreeNetwork of that network (removal under way)
 * &lt;P&gt;/settings                                     the cluster-wide address settings (create-once)
 * &lt;P&gt;/endpoints/&lt;node&gt;/&lt;endpoint-id&gt;             endpoint state a restarted daemon needs
 * &lt;P&gt;/nodes/&lt;node&gt;                                 node record (on the node's etcd lease)
 * &lt;P&gt;/docker-data/networks/&lt;docker-id&gt;             Docker's view of a network (managers write)
 * &lt;P&gt;/docker-data/services/&lt;service-id&gt;            Docker's view of a service (managers write)
 * &lt;P&gt;/docker-data/containers/&lt;node&gt;/&lt;container-id&gt; a node's containers (on the node's lease)
 * </pre>
 */
public final class EtcdSchema {

  /** What part of the cluster state a key belongs to; watchers wake only the planes that care. */
  public enum Family {
    ADDRESS_SPACE, VNIS, NETWORK_CONFIG, SUBNET_LEASES, POOLS, ALLOCATIONS, ENDPOINTS, NODES, SETTINGS,
    DOCKER_NETWORKS, DOCKER_SERVICES, DOCKER_CONTAINERS, OTHER
  }

  private final String p;

  public EtcdSchema(String prefix) {
    this.p = prefix.endsWith("/") ? prefix.substring(0, prefix.length() - 1) : prefix;
  }

  public String root() {
    return p + "/";
  }

  public String addressSpace() {
    return p + "/address-space/";
  }

  public String addressSpace(Cidr network) {
    return addressSpace() + network.toKey();
  }

  public String vnis() {
    return p + "/vnis/";
  }

  public String vni(int vni) {
    return vnis() + vni;
  }

  public String networks() {
    return p + "/networks/";
  }

  public String network(String flannelId) {
    return networks() + flannelId + "/";
  }

  public String networkConfig(String flannelId) {
    return network(flannelId) + "config";
  }

  public String subnets(String flannelId) {
    return network(flannelId) + "subnets/";
  }

  public String subnet(String flannelId, Cidr block) {
    return subnets(flannelId) + block.toKey();
  }

  /** Blocks the network's cluster range took beyond its first range (VIPs and task placeholders). */
  public String clusterBlocks(String flannelId) {
    return network(flannelId) + "cluster-blocks/";
  }

  public String clusterBlock(String flannelId, Cidr block) {
    return clusterBlocks(flannelId) + block.toKey();
  }

  public String pool(String flannelId) {
    return network(flannelId) + "pool";
  }

  public String allocations(String flannelId) {
    return network(flannelId) + "allocations/";
  }

  public String allocation(String flannelId, String ip) {
    return allocations(flannelId) + ip;
  }

  public String poolRefs(String flannelId) {
    return network(flannelId) + "pool-refs/";
  }

  public String poolRef(String flannelId, String node) {
    return poolRefs(flannelId) + node;
  }

  public String dockerId(String flannelId) {
    return network(flannelId) + "docker-id";
  }

  /** Set by Docker's FreeNetwork: the network is being removed, not rolled back. */
  public String freed(String flannelId) {
    return network(flannelId) + "freed";
  }

  /** The settings every node must share, written by the first node that starts. */
  public String settings() {
    return p + "/settings";
  }

  public String allEndpoints() {
    return p + "/endpoints/";
  }

  public String endpoints(String node) {
    return p + "/endpoints/" + node + "/";
  }

  public String endpoint(String node, String endpointId) {
    return endpoints(node) + endpointId;
  }

  public String nodes() {
    return p + "/nodes/";
  }

  public String node(String node) {
    return nodes() + node;
  }

  public String dockerNetworks() {
    return p + "/docker-data/networks/";
  }

  public String dockerServices() {
    return p + "/docker-data/services/";
  }

  public String dockerContainers() {
    return p + "/docker-data/containers/";
  }

  public String dockerContainers(String node) {
    return dockerContainers() + node + "/";
  }

  public String dockerNetwork(String dockerId) {
    return dockerNetworks() + dockerId;
  }

  public String dockerService(String serviceId) {
    return dockerServices() + serviceId;
  }

  public String dockerContainer(String node, String containerId) {
    return dockerContainers(node) + containerId;
  }

  /** Classifies a key under this prefix. */
  public Family family(String key) {
    if (!key.startsWith(p + "/")) {
      return Family.OTHER;
    }
    String rest = key.substring(p.length() + 1);
    if (rest.startsWith("address-space/")) {
      return Family.ADDRESS_SPACE;
    }
    if (rest.startsWith("vnis/")) {
      return Family.VNIS;
    }
    if (rest.startsWith("networks/")) {
      String[] parts = rest.split("/", 4);
      if (parts.length >= 3) {
        switch (parts[2]) {
          case "config", "cluster-blocks": return Family.NETWORK_CONFIG; // both say where VIPs may be
          case "subnets": return Family.SUBNET_LEASES;
          case "pool", "pool-refs", "docker-id", "freed": return Family.POOLS;
          case "allocations": return Family.ALLOCATIONS;
          default: return Family.OTHER;
        }
      }
      return Family.OTHER;
    }
    if (rest.startsWith("endpoints/")) {
      return Family.ENDPOINTS;
    }
    if (rest.equals("settings")) {
      return Family.SETTINGS;
    }
    if (rest.startsWith("nodes/")) {
      return Family.NODES;
    }
    if (rest.startsWith("docker-data/networks/")) {
      return Family.DOCKER_NETWORKS;
    }
    if (rest.startsWith("docker-data/services/")) {
      return Family.DOCKER_SERVICES;
    }
    if (rest.startsWith("docker-data/containers/")) {
      return Family.DOCKER_CONTAINERS;
    }
    return Family.OTHER;
  }

  /** The flannel-id in a key under {@code <P>/networks/}, if it is one. */
  public Optional<String> flannelIdOf(String key) {
    String n = networks();
    if (!key.startsWith(n)) {
      return Optional.empty();
    }
    int slash = key.indexOf('/', n.length());
    return slash <= n.length() ? Optional.empty() : Optional.of(key.substring(n.length(), slash));
  }
}
