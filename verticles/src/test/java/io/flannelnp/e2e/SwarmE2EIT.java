package io.flannelnp.e2e;

/**
 * {@link SwarmE2ESuite} on a mixed Swarm: node 1 (the leader until the leadership moves) on Docker
 * 28, node 2 on this machine's engine (Debian 12: 20.10), node 3 on Docker 26, the OCI hook on the
 * two older ones. `-Dflannelnp.e2e.docker=…` picks other engines (the first one leads).
 */
class SwarmE2EIT extends SwarmE2ESuite {
  SwarmE2EIT() {
    super(System.getProperty("flannelnp.e2e.docker", "28,host,26"), System.getProperty("flannelnp.e2e.prefix", "fne"),
        System.getProperty("flannelnp.e2e.net", "198.18.8"));
  }
}
