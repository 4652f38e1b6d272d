package io.flannelnp.config;

import io.flannelnp.ipam.Cidr;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.function.Supplier;

/**
 * The daemon's validated configuration, read from environment variables as a Docker managed
 * plugin passes them. Every rule is checked here, at start, so that a bad value stops the daemon
 * with one line (see {@link ConfigException}) instead of failing later inside a Docker call.
 */
public record Config(
    List<String> etcdEndpoints,
    String etcdPrefix,
    Optional<EtcdTls> etcdTls,
    FlannelOptions flannelOptions,
    List<Cidr> availableSubnets,
    int networkSubnetSize,
    int hostSubnetSize,
    int clusterSubnetSize,
    int vniStart,
    long subnetLeaseTtlSeconds,
    boolean dnsDockerCompatibilityMode,
    int dnsTtl,
    boolean hookAvailable,
    String pluginSocket,
    String dockerSocket,
    String nodeName,
    Optional<HostPort> adminListen,
    String logLevel,
    long nodeRecordsTtlSeconds,
    String adminToken,
    String logFormat,
    boolean adminInsecureLoopback,
    List<String> adminOrigins,
    int dnsQueryRate,
    long gcGraceSeconds,
    Optional<EtcdAuth> etcdAuth) {

  /** etcd's user/password authentication (ETCD_USERNAME with ETCD_PASSWORD or ETCD_PASSWORD_FILE). */
  public record EtcdAuth(String user, String password) {
    @Override
    public String toString() {
      return "EtcdAuth[user=" + user + ", password=(hidden)]";
    }
  }

  /**
   * TLS for etcd (the endpoints are https://). Without a CA file the server certificate is
   * verified against the JVM's default trust store (the system's CAs); a CA file replaces it;
   * cert+key also authenticate us.
   */
  public record EtcdTls(Optional<Path> caFile, Optional<Path> certFile, Optional<Path> keyFile) {
    /** https:// with no files: the server is verified against the system's trust store. */
    public static final EtcdTls SYSTEM_TRUST = new EtcdTls(Optional.empty(), Optional.empty(), Optional.empty());
  }

  public record HostPort(String host, int port) {
    /** A 127.0.0.0/8 address literal, [::1] or localhost: only this host can connect. */
    public boolean loopback() {
      return host.equals("localhost") || host.equals("[::1]")
          || io.flannelnp.ipam.Ipv4.isValid(host) && host.startsWith("127.");
    }

    @Override
    public String toString() {
      return host + ":" + port;
    }
  }

  /**
   * Largest VNI flannel-np uses: a VXLAN header carries 24 bits, but the device name
   * flannel.&lt;VNI&gt; must fit Linux's 15-character interface names.
   */
  public static final int MAX_VNI = 9_999_999;

  public static Config fromEnv(Map<String, String> env) {
    return fromEnv(env, Config::systemHostName);
  }

  public static Config fromEnv(Map<String, String> env, Supplier<String> hostName) {
    Reader r = new Reader(env);

    List<String> endpoints = parseEndpoints(r.get(Setting.ETCD_ENDPOINTS));
    String prefix = parsePrefix(r.get(Setting.ETCD_PREFIX));
    Optional<EtcdTls> tls = parseTls(r, endpoints);
    FlannelOptions flannel = FlannelOptions.parse(r.get(Setting.DEFAULT_FLANNEL_OPTIONS));
    List<Cidr> subnets = parseSubnets(r.get(Setting.AVAILABLE_SUBNETS));

    int netSize = r.integer(Setting.NETWORK_SUBNET_SIZE, 1, 29);
    for (Cidr c : subnets) {
      if (netSize < c.prefix()) {
        throw new ConfigException(Setting.NETWORK_SUBNET_SIZE.name(), r.get(Setting.NETWORK_SUBNET_SIZE),
            "must not be shorter than the prefix of every AVAILABLE_SUBNETS block, but " + c
                + " is a /" + c.prefix() + " (use " + c.prefix() + " or more)");
      }
    }
    int hostSize = r.integer(Setting.DEFAULT_HOST_SUBNET_SIZE, 2, 30);
    if (hostSize <= netSize) {
      throw new ConfigException(Setting.DEFAULT_HOST_SUBNET_SIZE.name(), r.get(Setting.DEFAULT_HOST_SUBNET_SIZE),
          "must be longer than NETWORK_SUBNET_SIZE (" + netSize + "), so a network holds a cluster range and node blocks");
    }
    int clusterSize = hostSize;
    if (!r.get(Setting.CLUSTER_SUBNET_SIZE).isBlank()) {
      clusterSize = r.integer(Setting.CLUSTER_SUBNET_SIZE, netSize + 1, hostSize);
    }
    int vniStart = r.integer(Setting.VNI_START, 0, MAX_VNI - 1); // flannel.<VNI> must fit 15 characters
    long ttl = r.integer(Setting.SUBNET_LEASE_TTL, 5, 30 * 86400);
    if (flannel.subnetLeaseRenewMarginMinutes() * 60L >= ttl) {
      throw new ConfigException(Setting.DEFAULT_FLANNEL_OPTIONS.name(), r.get(Setting.DEFAULT_FLANNEL_OPTIONS),
          "-subnet-lease-renew-margin=" + flannel.subnetLeaseRenewMarginMinutes() + " minutes is not shorter than"
              + " SUBNET_LEASE_TTL=" + ttl + " seconds; a lease renewed that early would be renewed without pause");
    }
    boolean compat = r.bool(Setting.DNS_DOCKER_COMPATIBILITY_MODE);
    int dnsTtl = r.integer(Setting.DNS_TTL, 0, 2_147_483_647);
    boolean hook = r.bool(Setting.IS_HOOK_AVAILABLE);
    String socket = r.socketPath(Setting.PLUGIN_SOCKET);
    String dockerSocket = r.socketPath(Setting.DOCKER_SOCKET);

    String node = r.get(Setting.NODE_NAME);
    if (node.isEmpty()) {
      node = hostName.get();
    }
    if (!node.matches("[A-Za-z0-9][A-Za-z0-9._-]{0,62}")) {
      throw new ConfigException(Setting.NODE_NAME.name(), node,
          "must be 1-63 characters of A-Z a-z 0-9 . _ - starting with a letter or digit");
    }
    Optional<HostPort> admin = parseAdmin(r.get(Setting.ADMIN_LISTEN));
    String level = r.get(Setting.LOG_LEVEL).trim().toLowerCase(Locale.ROOT);
    if (!List.of("error", "warn", "info", "debug", "trace").contains(level)) {
      throw new ConfigException(Setting.LOG_LEVEL.name(), r.get(Setting.LOG_LEVEL),
          "must be one of error, warn, info, debug, trace");
    }
    level = flannel.logLevel(level); // flanneld's -v: more detail, never less than LOG_LEVEL
    long recordsTtl = r.integer(Setting.NODE_RECORDS_TTL, 5, 3600);
    String token = r.get(Setting.ADMIN_TOKEN).trim();
    if (!token.isEmpty() && !token.matches("[\\x21-\\x7e]{16,256}")) {
      throw new ConfigException(Setting.ADMIN_TOKEN.name(), "(hidden)",
          "must be 16-256 printable ASCII characters without spaces");
    }
    if (admin.isPresent() && !admin.get().loopback() && token.isEmpty()) {
      throw new ConfigException(Setting.ADMIN_LISTEN.name(), r.get(Setting.ADMIN_LISTEN),
          "is not a loopback address, so ADMIN_TOKEN must be set (the admin server shows the whole cluster's state)");
    }
    boolean insecureLoopback = r.bool(Setting.ADMIN_INSECURE_LOOPBACK);
    if (admin.isPresent() && token.isEmpty() && !insecureLoopback) {
      // every local user and every container with host networking reaches a loopback listener
      throw new ConfigException(Setting.ADMIN_LISTEN.name(), r.get(Setting.ADMIN_LISTEN),
          "needs ADMIN_TOKEN (the admin server shows the whole cluster's state); to let every local user read it"
              + " without one, set ADMIN_INSECURE_LOOPBACK=true");
    }
    String format = r.get(Setting.LOG_FORMAT).trim().toLowerCase(Locale.ROOT);
    if (!List.of("text", "json").contains(format)) {
      throw new ConfigException(Setting.LOG_FORMAT.name(), r.get(Setting.LOG_FORMAT), "must be text or json");
    }
    List<String> origins = parseOrigins(r.get(Setting.ADMIN_ORIGINS));
    int dnsRate = r.integer(Setting.DNS_QUERY_RATE, 0, 1_000_000);
    long gcGrace = r.integer(Setting.GC_GRACE, 5, 86400);
    Optional<EtcdAuth> auth = parseAuth(r);
    return new Config(List.copyOf(endpoints), prefix, tls, flannel, List.copyOf(subnets), netSize, hostSize,
        clusterSize, vniStart, ttl, compat, dnsTtl, hook, socket, dockerSocket, node, admin, level, recordsTtl, token, format,
        insecureLoopback, origins, dnsRate, gcGrace, auth);
  }

  /**
   * How often a node's subnet lease is renewed: the etcd keep-alive's cadence (a third of
   * SUBNET_LEASE_TTL), or sooner when -subnet-lease-renew-margin asks for a renewal at the latest
   * that long before expiry.
   */
  public long subnetLeaseRenewSeconds() {
    long every = Math.max(1, subnetLeaseTtlSeconds / 3);
    int margin = flannelOptions.subnetLeaseRenewMarginMinutes();
    if (margin > 0) {
      every = Math.max(1, Math.min(every, subnetLeaseTtlSeconds - margin * 60L));
    }
    return every;
  }

  // ---- capacity -------------------------------------------------------------------------

  /** How many networks AVAILABLE_SUBNETS holds at NETWORK_SUBNET_SIZE. */
  public long networkCapacity() {
    long n = 0;
    for (Cidr c : availableSubnets) {
      n += c.count(networkSubnetSize);
    }
    return n;
  }

  /** Node blocks per network: all host-sized blocks but those of the cluster range. */
  public long nodesPerNetwork() {
    return (1L << (hostSubnetSize - networkSubnetSize)) - (1L << (hostSubnetSize - clusterSubnetSize));
  }

  /** Container addresses per node block: all but .0 (flannel.VNI), the gateway and broadcast. */
  public long addressesPerNode() {
    return (1L << (32 - hostSubnetSize)) - 3;
  }

  /** Addresses for Swarm VIPs and task placeholders in the cluster range itself (.0, .1 and the last one aside). */
  public long clusterAddresses() {
    return (1L << (32 - clusterSubnetSize)) - 3;
  }

  /**
   * Swarm tasks + VIPs one network holds while {@code nodes} nodes lease a block of it: the
   * cluster range grows into every node block no node leases.
   */
  public long clusterAddresses(long nodes) {
    return clusterAddresses() + Math.max(0, nodesPerNetwork() - nodes) * addressesPerNode();
  }

  public String capacityLine() {
    return "capacity: " + networkCapacity() + " networks of /" + networkSubnetSize + " in " + availableSubnets
        + ", " + nodesPerNetwork() + " nodes per network (/" + hostSubnetSize + " each, after a /" + clusterSubnetSize
        + " cluster range)"
        + ", " + addressesPerNode() + " container addresses per node"
        + ", Swarm tasks + VIPs per network: " + clusterAddresses() + " in the cluster range + " + addressesPerNode()
        + " per node block no node leases (" + clusterAddresses(3) + " with 3 nodes, " + clusterAddresses(10)
        + " with 10)";
  }

  // ---- parsing helpers ------------------------------------------------------------------

  private static List<String> parseEndpoints(String raw) {
    String var = Setting.ETCD_ENDPOINTS.name();
    if (raw.isBlank()) {
      throw new ConfigException(var, raw, "is required: comma-separated etcd URLs such as http://10.0.0.5:2379 (or host:port)");
    }
    List<String> out = new ArrayList<>();
    for (String part : raw.split(",", -1)) {
      String e = part.trim();
      if (e.isEmpty()) {
        throw new ConfigException(var, raw, "has an empty entry; separate URLs with single commas");
      }
      String given = e;
      if (!e.contains("://")) {
        e = "http://" + e; // host:port, as flanneld and etcdctl take it
      }
      URI u;
      try {
        u = new URI(e);
      } catch (URISyntaxException ex) {
        throw new ConfigException(var, raw, "'" + given + "' is not a URL: " + ex.getReason());
      }
      if (!"http".equals(u.getScheme()) && !"https".equals(u.getScheme())) {
        throw new ConfigException(var, raw, "'" + given + "' must start with http:// or https://");
      }
      if (u.getHost() == null || u.getPort() < 1 || u.getPort() > 65535) {
        throw new ConfigException(var, raw, "'" + given + "' must name a host and a port, e.g. http://10.0.0.5:2379");
      }
      if (u.getRawPath() != null && !u.getRawPath().isEmpty() && !u.getRawPath().equals("/")
          || u.getRawQuery() != null || u.getUserInfo() != null) {
        throw new ConfigException(var, raw, "'" + given + "' must be scheme://host:port only");
      }
      out.add(u.getScheme() + "://" + u.getHost() + ":" + u.getPort());
    }
    return out;
  }

  private static String parsePrefix(String raw) {
    String var = Setting.ETCD_PREFIX.name();
    String p = raw.trim();
    while (p.length() > 1 && p.endsWith("/")) {
      p = p.substring(0, p.length() - 1);
    }
    if (!p.startsWith("/") || p.length() < 2 || p.contains("//") || !p.matches("[A-Za-z0-9._/-]+")) {
      throw new ConfigException(var, raw, "must be an absolute key path like /flannel (characters A-Z a-z 0-9 . _ - /)");
    }
    return p;
  }

  private static Optional<EtcdTls> parseTls(Reader r, List<String> endpoints) {
    Optional<Path> ca = r.file(Setting.ETCD_CA_FILE);
    Optional<Path> cert = r.file(Setting.ETCD_CERT_FILE);
    Optional<Path> key = r.file(Setting.ETCD_KEY_FILE);
    if (cert.isPresent() != key.isPresent()) {
      Setting missing = cert.isPresent() ? Setting.ETCD_KEY_FILE : Setting.ETCD_CERT_FILE;
      throw new ConfigException(missing.name(), "", "must be set together with "
          + (cert.isPresent() ? Setting.ETCD_CERT_FILE : Setting.ETCD_KEY_FILE).name());
    }
    long https = endpoints.stream().filter(e -> e.startsWith("https://")).count();
    if (https > 0 && https < endpoints.size()) {
      // one TLS setting serves every endpoint: a mix would talk plaintext to an https:// one or TLS to an http:// one
      throw new ConfigException(Setting.ETCD_ENDPOINTS.name(), String.join(",", endpoints),
          "mixes http:// and https:// endpoints; use one scheme for all");
    }
    if (ca.isEmpty() && cert.isEmpty()) {
      // https:// alone still means TLS, verified against the system's trust store: never plaintext
      return https > 0 ? Optional.of(EtcdTls.SYSTEM_TRUST) : Optional.empty();
    }
    if (https == 0) {
      throw new ConfigException(Setting.ETCD_ENDPOINTS.name(), String.join(",", endpoints),
          "must use https:// when ETCD_CA_FILE/ETCD_CERT_FILE are set, but '" + endpoints.get(0) + "' does not");
    }
    // read now, so a file the plugin cannot use stops it at start with one line, not a TLS stack trace later
    if (ca.isPresent()) {
      pem(Setting.ETCD_CA_FILE, ca.get(), () -> io.flannelnp.etcd.PemKeys.certificates(ca.get()));
    }
    if (cert.isPresent()) {
      java.security.cert.X509Certificate c =
          pem(Setting.ETCD_CERT_FILE, cert.get(), () -> io.flannelnp.etcd.PemKeys.certificates(cert.get())).get(0);
      java.security.PrivateKey k = pem(Setting.ETCD_KEY_FILE, key.get(), () -> io.flannelnp.etcd.PemKeys.privateKey(key.get()));
      pem(Setting.ETCD_KEY_FILE, key.get(), () -> {
        io.flannelnp.etcd.PemKeys.checkPair(cert.get(), c, key.get(), k);
        return null;
      });
    }
    return Optional.of(new EtcdTls(ca, cert, key));
  }

  private interface PemRead<T> {
    T get() throws io.flannelnp.etcd.PemKeys.BadPemException;
  }

  private static <T> T pem(Setting s, Path file, PemRead<T> read) {
    try {
      return read.get();
    } catch (io.flannelnp.etcd.PemKeys.BadPemException e) {
      throw new ConfigException(s.name(), file.toString(), e.getMessage());
    }
  }

  private static Optional<EtcdAuth> parseAuth(Reader r) {
    String user = r.get(Setting.ETCD_USERNAME).trim();
    if (user.contains(":") || user.chars().anyMatch(c -> c < 0x20)) {
      throw new ConfigException(Setting.ETCD_USERNAME.name(), user, "must not contain ':' or control characters");
    }
    String password = r.get(Setting.ETCD_PASSWORD);
    Optional<Path> file = r.file(Setting.ETCD_PASSWORD_FILE);
    if (!password.isEmpty() && file.isPresent()) {
      throw new ConfigException(Setting.ETCD_PASSWORD_FILE.name(), file.get().toString(),
          "must not be set together with ETCD_PASSWORD; give the password one way");
    }
    if (user.isEmpty() && !password.isEmpty()) {
      throw new ConfigException(Setting.ETCD_PASSWORD.name(), "(hidden)", "needs ETCD_USERNAME");
    }
    if (user.isEmpty() && file.isPresent()) {
      throw new ConfigException(Setting.ETCD_PASSWORD_FILE.name(), file.get().toString(), "needs ETCD_USERNAME");
    }
    if (file.isPresent()) {
      try {
        password = Files.readString(file.get(), java.nio.charset.StandardCharsets.UTF_8).lines().findFirst().orElse("");
      } catch (java.io.IOException | java.io.UncheckedIOException e) {
        throw new ConfigException(Setting.ETCD_PASSWORD_FILE.name(), file.get().toString(), "cannot be read: " + e.getMessage());
      }
      if (password.isEmpty()) {
        throw new ConfigException(Setting.ETCD_PASSWORD_FILE.name(), file.get().toString(), "has an empty first line");
      }
    }
    if (user.isEmpty()) {
      return Optional.empty();
    }
    if (password.isEmpty()) {
      throw new ConfigException(Setting.ETCD_USERNAME.name(), user, "needs ETCD_PASSWORD or ETCD_PASSWORD_FILE");
    }
    return Optional.of(new EtcdAuth(user, password));
  }

  private static List<Cidr> parseSubnets(String raw) {
    String var = Setting.AVAILABLE_SUBNETS.name();
    if (raw.isBlank()) {
      throw new ConfigException(var, raw, "is required: comma-separated IPv4 CIDRs such as 10.1.0.0/16,10.2.0.0/16");
    }
    List<Cidr> out = new ArrayList<>();
    for (String part : raw.split(",", -1)) {
      String s = part.trim();
      if (s.isEmpty()) {
        throw new ConfigException(var, raw, "has an empty entry; separate CIDRs with single commas");
      }
      Cidr c;
      try {
        c = Cidr.parse(s);
      } catch (IllegalArgumentException e) {
        throw new ConfigException(var, raw, "'" + s + "' is not a valid IPv4 CIDR: " + e.getMessage());
      }
      for (Cidr prev : out) {
        if (prev.overlaps(c)) {
          throw new ConfigException(var, raw, c + " overlaps " + prev + "; blocks must be disjoint");
        }
      }
      out.add(c);
    }
    return out;
  }

  private static Optional<HostPort> parseAdmin(String raw) {
    String var = Setting.ADMIN_LISTEN.name();
    String s = raw.trim();
    if (s.isEmpty() || s.equalsIgnoreCase("off")) {
      return Optional.empty();
    }
    int colon = s.lastIndexOf(':');
    if (colon < 0) {
      throw new ConfigException(var, raw, "must be host:port (e.g. 127.0.0.1:9090) or :port for loopback");
    }
    String host = colon == 0 ? "127.0.0.1" : s.substring(0, colon);
    String port = s.substring(colon + 1);
    if (!port.matches("\\d{1,5}") || Integer.parseInt(port) < 1 || Integer.parseInt(port) > 65535) {
      throw new ConfigException(var, raw, "port must be 1-65535");
    }
    if (!host.matches("[A-Za-z0-9.\\-]+|\\[[0-9A-Fa-f:]+\\]")) {
      throw new ConfigException(var, raw, "host '" + host + "' is not a host name or address");
    }
    return Optional.of(new HostPort(host, Integer.parseInt(port)));
  }

  /**
   * ADMIN_ORIGINS: browser origins (scheme://host[:port]) besides the admin listener's own that
   * may open the console, e.g. a TLS reverse proxy's; normalised as browsers send them (lower
   * case, no default port).
   */
  private static List<String> parseOrigins(String raw) {
    String var = Setting.ADMIN_ORIGINS.name();
    List<String> out = new ArrayList<>();
    if (raw.isBlank()) {
      return List.of();
    }
    for (String part : raw.split(",", -1)) {
      String o = part.trim();
      String rule = "'" + o + "' must be an origin: http:// or https://, a host and an optional port, nothing after"
          + " it (e.g. https://admin.example.com)";
      URI u;
      try {
        u = new URI(o);
      } catch (URISyntaxException e) {
        throw new ConfigException(var, raw, rule);
      }
      String scheme = u.getScheme() == null ? "" : u.getScheme().toLowerCase(Locale.ROOT);
      if (!scheme.equals("http") && !scheme.equals("https") || u.getHost() == null || u.getUserInfo() != null
          || u.getRawPath() != null && !u.getRawPath().isEmpty() || u.getRawQuery() != null || u.getRawFragment() != null) {
        throw new ConfigException(var, raw, rule);
      }
      int port = u.getPort();
      boolean defaultPort = port == -1 || scheme.equals("http") && port == 80 || scheme.equals("https") && port == 443;
      out.add(scheme + "://" + u.getHost().toLowerCase(Locale.ROOT) + (defaultPort ? "" : ":" + port));
    }
    return List.copyOf(out);
  }

  static String systemHostName() {
    try {
      String h = Files.readString(Path.of("/proc/sys/kernel/hostname")).trim();
      if (!h.isEmpty()) {
        return h;
      }
    } catch (Exception ignored) {
      // fall through
    }
    String h = System.getenv("HOSTNAME");
    return h == null || h.isBlank() ? "localhost" : h;
  }

  /** Reads one setting with its default; the helpers each enforce one kind of rule. */
  private static final class Reader {
    private final Map<String, String> env;

    Reader(Map<String, String> env) {
      this.env = env;
    }

    String get(Setting s) {
      String v = env.get(s.name());
      return v == null ? s.defaultValue() : v;
    }

    int integer(Setting s, int min, int max) {
      String v = get(s).trim();
      if (!v.matches("-?\\d{1,10}")) {
        throw new ConfigException(s.name(), get(s), "must be an integer between " + min + " and " + max);
      }
      long n = Long.parseLong(v);
      if (n < min || n > max) {
        throw new ConfigException(s.name(), get(s), "must be an integer between " + min + " and " + max);
      }
      return (int) n;
    }

    boolean bool(Setting s) {
      String v = get(s).trim().toLowerCase(Locale.ROOT);
      return switch (v) {
        case "true" -> true;
        case "false" -> false;
        default -> throw new ConfigException(s.name(), get(s), "must be true or false");
      };
    }

    String socketPath(Setting s) {
      String v = get(s);
      if (!v.startsWith("/") || v.length() > 107 || v.endsWith("/") || v.chars().anyMatch(c -> c < 0x21)) {
        throw new ConfigException(s.name(), v, "must be an absolute file path of at most 107 characters without spaces");
      }
      return v;
    }

    Optional<Path> file(Setting s) {
      String v = get(s).trim();
      if (v.isEmpty()) {
        return Optional.empty();
      }
      Path p = Path.of(v);
      if (!Files.isRegularFile(p) || !Files.isReadable(p)) {
        throw new ConfigException(s.name(), v, "must name a readable file");
      }
      return Optional.of(p);
    }
  }
}
