package io.flannelnp.ipam;

/**
 * Flannel's etcd values, byte for byte as flanneld writes them (anchors.md §A.1, §A.2), so a stock
 * flanneld pointed at {@code <ETCD_PREFIX>/networks/<flannel-id>} reads our config and our leases
 * and we read its.
 */
public final class FlannelJson {
  private FlannelJson() {}

  /** Kernel default VXLAN port, which flanneld uses when Backend.Port is 0. */
  public static final int VXLAN_PORT = 8472;

  public static String networkConfig(Cidr network, int subnetLen, Cidr subnetMin, Cidr subnetMax, int vni) {
    return "{\"Network\":\"" + network + "\",\"SubnetLen\":" + subnetLen + ",\"SubnetMin\":\""
        + subnetMin.baseAddress() + "\",\"SubnetMax\":\"" + subnetMax.baseAddress()
        + "\",\"Backend\":{\"Type\":\"vxlan\",\"VNI\":" + vni + ",\"Port\":" + VXLAN_PORT + "}}";
  }

  /** A vxlan lease value: {"PublicIP":..,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{..}}. */
  public static String lease(String publicIp, int vni, String vtepMac) {
    return "{\"PublicIP\":\"" + publicIp + "\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":"
        + vni + ",\"VtepMAC\":\"" + vtepMac + "\"}}";
  }

  /**
   * A locally administered unicast MAC for this node's VTEP on this VNI, stable across restarts
   * so the lease value (and every peer's FDB entry) survives a restart unchanged.
   */
  public static String vtepMac(String node, int vni) {
    try {
      byte[] h = java.security.MessageDigest.getInstance("SHA-1")
          .digest((node + "/" + vni).getBytes(java.nio.charset.StandardCharsets.UTF_8));
      return String.format("0e:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4]);
    } catch (java.security.NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
