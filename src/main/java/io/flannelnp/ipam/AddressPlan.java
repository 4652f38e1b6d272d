package io.flannelnp.ipam;

import io.flannelnp.config.Config;
import java.util.Optional;
import java.util.Set;

/**
 * How addresses are laid out (docs/address-plan.md has the diagram):
 *
 * <pre>
 * AVAILABLE_SUBNETS ─ carved in order into network subnets of NETWORK_SUBNET_SIZE
 *   network 10.50.0.0/20
 *   ├─ cluster range 10.50.0.0/25 (CLUSTER_SUBNET_SIZE): .0 network, .1 the leader's gateway,
 *   │                             .2-.126 VIPs and task placeholders the Swarm leader asks for
 *   ├─ node block 10.50.0.128/25 (DEFAULT_HOST_SUBNET_SIZE, one Flannel lease per node):
 *   │        .128 flannel.VNI address, .129 the node's gateway (bridge), .130-.254 containers
 *   ├─ node block 10.50.1.0/25 ...
 *   └─ ... up to 10.50.15.128/25 (Flannel SubnetMin = first block after the cluster range)
 * </pre>
 * When the cluster range is full it grows into the highest node blocks no node leases
 * ({@code cluster-blocks/} in etcd, .2 to the last but one of each), and gives a block back when
 * its last address is released (Ipam#allocateCluster); nodes lease from SubnetMin upwards and
 * never a block the range holds.
 * Every address is handed out with the node-block prefix, so a container's only on-link block is
 * its own node's; everything else in the network goes through the node's gateway.
 */
public final class AddressPlan {
  private final Config config;

  public AddressPlan(Config config) {
    this.config = config;
  }

  public int networkSize() {
    return config.networkSubnetSize();
  }

  public int hostSize() {
    return config.hostSubnetSize();
  }

  public int clusterSize() {
    return config.clusterSubnetSize();
  }

  /** Whether {@code c} is one of the blocks AVAILABLE_SUBNETS is carved into. */
  public boolean isNetworkBlock(Cidr c) {
    if (c.prefix() != config.networkSubnetSize()) {
      return false;
    }
    return config.availableSubnets().stream().anyMatch(a -> a.contains(c));
  }

  /** The first carved block not in {@code used}, in AVAILABLE_SUBNETS order. */
  public Optional<Cidr> firstFreeNetwork(Set<Cidr> used) {
    for (Cidr a : config.availableSubnets()) {
      long n = a.count(config.networkSubnetSize());
      for (long i = 0; i < n; i++) {
        Cidr c = a.subnet(config.networkSubnetSize(), i);
        if (!used.contains(c)) {
          return Optional.of(c);
        }
      }
    }
    return Optional.empty();
  }

  public String networkBlocksDescription() {
    return "/" + config.networkSubnetSize() + " blocks of " + config.availableSubnets();
  }

  public Cidr clusterRange(Cidr network) {
    return new Cidr(network.base(), config.clusterSubnetSize());
  }

  /** The gateway Docker records for the network (the leader's gateway request). */
  public long clusterGateway(Cidr network) {
    return network.base() + 1;
  }

  /** First address a VIP or placeholder may take: after the network address and the gateway. */
  public long clusterFirst(Cidr network) {
    return network.base() + 2;
  }

  public long clusterLast(Cidr network) {
    return clusterRange(network).last() - 1;
  }

  /** Flannel's SubnetMin: the first node block after the cluster range. */
  public Cidr subnetMin(Cidr network) {
    return new Cidr(clusterRange(network).last() + 1, config.hostSubnetSize());
  }

  /** Flannel's SubnetMax: the last node block. */
  public Cidr subnetMax(Cidr network) {
    return Cidr.containing(network.last(), config.hostSubnetSize());
  }

  /** The node block that holds {@code address}, if the address is in a node block of {@code network}. */
  public Optional<Cidr> nodeBlockOf(Cidr network, long address) {
    if (!network.contains(address) || clusterRange(network).contains(address)) {
      return Optional.empty();
    }
    return Optional.of(Cidr.containing(address, config.hostSubnetSize()));
  }

  /** The node's gateway: the block's first host address (the block's .0 is the VTEP's). */
  public static long nodeGateway(Cidr block) {
    return block.base() + 1;
  }

  public static long nodeFirst(Cidr block) {
    return block.base() + 2;
  }

  public static long nodeLast(Cidr block) {
    return block.last() - 1;
  }

  /** "a.b.c.d/len" with the node-block prefix, as every address is answered. */
  public String withHostPrefix(long address) {
    return Ipv4.format(address) + "/" + config.hostSubnetSize();
  }
}
