package io.flannelnp.docker;

import java.util.Map;

/** What the DockerVerticle publishes. Addresses: {@link io.flannelnp.bus.Addresses}. */
public sealed interface DockerMessage {

  /**
   * Docker Engine API reachability and identity: the negotiated API version, this node's Swarm
   * node ID and whether it is a manager (empty/false outside a Swarm).
   */
  record DockerStatus(boolean reachable, String apiVersion, String nodeId, boolean manager, String error)
      implements DockerMessage {}

  /** One entry of Docker's /events stream. */
  record DockerEvent(String type, String action, String id, Map<String, String> attributes, long timeNano)
      implements DockerMessage {}
}
