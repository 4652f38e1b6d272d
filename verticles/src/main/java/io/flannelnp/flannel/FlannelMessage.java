package io.flannelnp.flannel;

/**
 * Requests the FlannelVerticle answers: the veth/bridge work of Join and DeleteEndpoint, and the
 * per-network data plane. Addresses: {@link io.flannelnp.bus.Addresses}.
 */
public sealed interface FlannelMessage {

  /** Make sure this node leases its block of the network and has its device and bridge. */
  record EnsureNetwork(String flannelId) implements FlannelMessage {}

  /** Reply to {@link EnsureNetwork}. */
  record NetworkReady(String flannelId, int vni, String nodeBlock, String gateway, String bridge, int mtu)
      implements FlannelMessage {}

  /** Create the veth pair of an endpoint with its host side on the network's bridge. */
  record AttachEndpoint(String flannelId, String endpointId, String macAddress, String addressCidr)
      implements FlannelMessage {}

  /** Reply to {@link AttachEndpoint}: Docker moves {@code containerVeth} into the container. */
  record EndpointAttached(String endpointId, String hostVeth, String containerVeth, int mtu) implements FlannelMessage {}

  /** Remove an endpoint's veth pair (idempotent). */
  record DetachEndpoint(String flannelId, String endpointId) implements FlannelMessage {}
}
