package io.flannelnp.flannel;

/**
 * Requests the FlannelVerticle answers: the bridge and veth work behind the plugin's CreateNetwork,
 * Join and DeleteEndpoint. Addresses: {@link io.flannelnp.bus.Addresses}.
 */
public sealed interface FlannelMessage {

  /**
   * Make sure this node's bridge for the network exists, holds {@code gatewayCidr} (the node
   * block's first address with the block's prefix, e.g. "10.50.0.129/25") and is up (idempotent).
   */
  record EnsureNetwork(String flannelId, int vni, String gatewayCidr) implements FlannelMessage {}

  /** Reply to {@link EnsureNetwork}. */
  record NetworkReady(String flannelId, String bridge, int mtu) implements FlannelMessage {}

  /**
   * Create the veth pair of an endpoint: the host side on the network's bridge, the container side
   * with {@code macAddress} (may be empty) and the network's MTU, left in the host namespace for
   * Docker to move (idempotent per endpoint).
   */
  record AttachEndpoint(String flannelId, String endpointId, String macAddress) implements FlannelMessage {}

  /** Reply to {@link AttachEndpoint}: Docker moves {@code containerVeth} (Join's SrcName). */
  record EndpointAttached(String endpointId, String hostVeth, String containerVeth, int mtu) implements FlannelMessage {}

  /** Remove an endpoint's veth pair (idempotent: a missing pair is success). */
  record DetachEndpoint(String flannelId, String endpointId) implements FlannelMessage {}

  /** Remove this node's bridge of a network and anything left on it (idempotent). */
  record RemoveNetwork(String flannelId) implements FlannelMessage {}
}
