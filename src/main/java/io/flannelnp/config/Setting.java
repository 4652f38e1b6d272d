package io.flannelnp.config;

/**
 * Every environment variable the daemon reads, with its default and what it does. This is the
 * single list the README's settings table and plugin-bundle/config.json are checked against
 * (see SettingsDocumentedTest).
 */
public enum Setting {
  ETCD_ENDPOINTS("", "Comma-separated etcd client URLs (http:// or https://; a bare host:port means http://). Required."),
  ETCD_PREFIX("/flannel", "Root of every etcd key flannel-np reads or writes."),
  ETCD_CA_FILE("", "CA bundle that verifies etcd's server certificate (enables TLS)."),
  ETCD_CERT_FILE("", "Client certificate for etcd (with ETCD_KEY_FILE)."),
  ETCD_KEY_FILE("", "Private key of ETCD_CERT_FILE (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC; unencrypted)."),
  ETCD_USERNAME("", "etcd user for etcd's authentication (with ETCD_PASSWORD or ETCD_PASSWORD_FILE)."),
  ETCD_PASSWORD("", "Password of ETCD_USERNAME (visible in docker plugin inspect: prefer ETCD_PASSWORD_FILE)."),
  ETCD_PASSWORD_FILE("", "File holding the password of ETCD_USERNAME (its first line), e.g. /etc/flannel-np/etcd-password."),
  DEFAULT_FLANNEL_OPTIONS("", "flanneld flags, separated by ',' or spaces: -iface=NAME|ADDR (repeatable, first found wins), -iface-regex=RE (repeatable), -iface-can-reach=ADDR, -public-ip=ADDR, -subnet-lease-renew-margin=MINUTES, -ip-masq, -v=N; flanneld's other flags stop the daemon, naming why."),
  AVAILABLE_SUBNETS("", "Comma-separated IPv4 blocks that networks are carved from. Required."),
  NETWORK_SUBNET_SIZE("20", "Prefix length of each network's subnet."),
  DEFAULT_HOST_SUBNET_SIZE("25", "Prefix length of each node's block inside a network (Flannel SubnetLen)."),
  CLUSTER_SUBNET_SIZE("", "Prefix length of each network's cluster range (Swarm VIPs, task placeholders, the leader's gateway) at the start of the network; default: DEFAULT_HOST_SUBNET_SIZE."),
  VNI_START("6514", "VNIs are allocated from VNI_START+1 upwards, one per network, unique in the cluster."),
  SUBNET_LEASE_TTL("86400", "Seconds a node's Flannel subnet lease lives without renewal (Flannel: 24 h)."),
  DNS_DOCKER_COMPATIBILITY_MODE("true", "true: Docker's first-network-wins answer order; false: merge all networks."),
  DNS_TTL("600", "TTL in seconds of the DNS answers flannel-np gives (Docker uses 600)."),
  DNS_QUERY_RATE("2000", "Queries per second each container may send to its resolver (bursts up to one second's worth); beyond it the resolver stops reading that container's queries until its budget refills, so one container cannot slow the others or the plugin API; 0: no limit."),
  IS_HOOK_AVAILABLE("false", "true when the OCI createContainer hook (hook/) is installed on the host: each new container then waits (at most ~2 s) until flannel-np's resolver serves it (handshake socket flannel-np-hook.sock beside PLUGIN_SOCKET)."),
  PLUGIN_SOCKET("/run/docker/plugins/flannel-np.sock", "Unix socket the Docker plugin API listens on."),
  DOCKER_SOCKET("/run/docker.sock", "Unix socket of the Docker Engine API."),
  NODE_NAME("", "Name of this node in logs, subnet leases and address owners; must be unique per node (Swarm does not enforce unique host names); default: the host name."),
  NODE_RECORDS_TTL("30", "Seconds a dead node's container records stay in etcd (the TTL of the node's etcd lease; 5-3600)."),
  GC_GRACE("120", "Seconds a record stays after Docker stopped holding it (a container's address or endpoint, a leader's address, a gone node's records, a network Docker forgot) before it is freed (5-86400)."),
  ADMIN_LISTEN("", "host:port of the admin server (health, metrics, console); empty: off."),
  ADMIN_TOKEN("", "Bearer token the admin server demands (header Authorization: Bearer T, or ?token=T once, which sets a cookie); required unless ADMIN_INSECURE_LOOPBACK=true."),
  ADMIN_INSECURE_LOOPBACK("false", "true: a loopback ADMIN_LISTEN runs without ADMIN_TOKEN; every local user and every container with host networking can then read the admin server (the cluster's whole state)."),
  ADMIN_ORIGINS("", "Comma-separated browser origins (scheme://host[:port]) besides the admin server's own address that may open the console, e.g. a TLS reverse proxy's https://admin.example.com."),
  LOG_LEVEL("info", "error, warn, info, debug or trace."),
  LOG_FORMAT("text", "text (one line per event) or json (one JSON object per line).");

  private final String defaultValue;
  private final String description;

  Setting(String defaultValue, String description) {
    this.defaultValue = defaultValue;
    this.description = description;
  }

  public String defaultValue() {
    return defaultValue;
  }

  public String description() {
    return description;
  }
}
