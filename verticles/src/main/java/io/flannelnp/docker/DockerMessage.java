package io.flannelnp.docker;

import java.util.List;
import java.util.Map;
import java.util.Set;

/** What the DockerVerticle publishes. Addresses: {@link io.flannelnp.bus.Addresses}. */
public sealed interface DockerMessage {

  /**
   * Docker Engine API reachability and identity: the negotiated API version, this node's Swarm
   * node ID and whether it is a manager (empty/false outside a Swarm).
   */
  record DockerStatus(boolean reachable, String apiVersion, String nodeId, boolean manager, String error)
      implements DockerMessage {}

  /** Asks for a fresh {@link DockerView} (read from Docker now, not from the mirror). */
  record ViewRequest() implements DockerMessage {}

  /**
   * What Docker has now, for the IPAM garbage collector: this node's endpoints (every container
   * with an endpoint, in any state) and, on a manager whose control API answered
   * ({@code swarmComplete}), every Swarm network and every address the Swarm holds (task
   * attachments in any state, service VIPs, network gateways).
   */
  record DockerView(String nodeId, boolean manager, boolean swarmComplete, Map<String, ViewNetwork> networks,
      List<ViewEndpoint> endpoints, Set<String> swarmAddresses) implements DockerMessage {}

  /** A network Docker lists; {@code flannelId} is empty for other drivers' networks. */
  record ViewNetwork(String name, String flannelId) implements DockerMessage {}

  /** One endpoint of a container on this node. */
  record ViewEndpoint(String networkId, String endpointId, String ip, String mac, String containerId,
      String sandboxKey) implements DockerMessage {}

  /** One entry of Docker's /events stream. */
  record DockerEvent(String type, String action, String id, Map<String, String> attributes, long timeNano)
      implements DockerMessage {}
}
