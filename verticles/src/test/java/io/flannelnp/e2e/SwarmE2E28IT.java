package io.flannelnp.e2e;

/**
 * {@link SwarmE2ESuite} on a Swarm of Docker 28 only (Debian sid's docker.io on every node, no OCI
 * hook anywhere): the leader, the second manager that takes over and every worker on 28, and the
 * VXLAN, VIPs and DNS between two 28 nodes, which the mixed Swarm has only one of.
 */
class SwarmE2E28IT extends SwarmE2ESuite {
  SwarmE2E28IT() {
    super(System.getProperty("flannelnp.e2e.docker28", "28,28,28"), "fnf", "198.18.10");
  }

  /** The upgrade, refused-setting and stack tests run once, on the mixed Swarm of SwarmE2EIT. */
  @Override
  boolean operatorTests() {
    return false;
  }
}
