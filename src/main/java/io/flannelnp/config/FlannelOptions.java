package io.flannelnp.config;

import io.flannelnp.ipam.Ipv4;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * The flanneld flags of DEFAULT_FLANNEL_OPTIONS. There is no flanneld process: the flags that
 * mean something to an in-process data plane keep their Flannel meaning; flanneld's other flags
 * are refused by name with the reason, so a pasted flanneld command line never silently does
 * less than it says.
 *
 * <p>Interface choice, as flanneld makes it: each {@code -iface} (a name or an address, in the
 * order given; the first that exists with an IPv4 address wins), else each {@code -iface-regex}
 * (the first interface whose name or an IPv4 address matches), else {@code -iface-can-reach}
 * (the interface the kernel routes that address by), else the default route's interface.
 *
 * @param ifaces         -iface values in order (names or IPv4 addresses)
 * @param ifaceRegexes   -iface-regex values in order
 * @param ifaceCanReach  -iface-can-reach address
 * @param publicIp       -public-ip: the address peers send VXLAN to (the chosen interface's otherwise)
 * @param subnetLeaseRenewMarginMinutes renew a node's subnet lease at the latest this long before it expires
 *                       (0: not given)
 * @param ipMasq         -ip-masq as given (empty: not given)
 * @param verbosity      -v (0: not given)
 */
public record FlannelOptions(List<String> ifaces, List<String> ifaceRegexes, Optional<String> ifaceCanReach,
    Optional<String> publicIp, int subnetLeaseRenewMarginMinutes, Optional<Boolean> ipMasq, int verbosity) {

  public static final List<String> HONOURED = List.of("-iface", "-iface-regex", "-iface-can-reach", "-public-ip",
      "-subnet-lease-renew-margin", "-ip-masq", "-v");

  /** flanneld's flags flannel-np does not take, each with the reason and what to use instead. */
  static final Map<String, String> REFUSED = refused();

  private static Map<String, String> refused() {
    Map<String, String> m = new java.util.LinkedHashMap<>();
    String etcd = "flannel-np's etcd client is set by the plugin's own settings (ETCD_ENDPOINTS, ETCD_PREFIX,"
        + " ETCD_CA_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE)";
    for (String f : List.of("-etcd-endpoints", "-etcd-prefix", "-etcd-keyfile", "-etcd-certfile", "-etcd-cafile",
        "-etcd-username", "-etcd-password")) {
      m.put(f, etcd);
    }
    String kube = "flannel-np serves Docker Swarm, not Kubernetes";
    for (String f : List.of("-kube-subnet-mgr", "-kube-api-url", "-kubeconfig-file", "-kube-annotation-prefix",
        "-set-node-network-unavailable")) {
      m.put(f, kube);
    }
    String subnetFile = "no flanneld process writes a subnet file: Docker gets each container's address through"
        + " the plugin API";
    m.put("-subnet-file", subnetFile);
    m.put("-subnet-dir", subnetFile);
    m.put("-net-config-path", "each network's Flannel config is written to etcd when the network is created");
    String nft = "flannel-np keeps its rules in its own nftables tables, applied in one transaction each pass";
    m.put("-iptables-resync", nft);
    m.put("-iptables-forward-rules", nft);
    String health = "flannel-np's health endpoint is the admin server (ADMIN_LISTEN)";
    m.put("-healthz-ip", health);
    m.put("-healthz-port", health);
    String v4 = "flannel-np networks are IPv4 only";
    for (String f : List.of("-public-ipv6", "-auto-detect-ipv6", "-auto-detect-ipv4")) {
      m.put(f, v4);
    }
    String logs = "flannel-np logs to stderr (docker plugin logs); set LOG_LEVEL and LOG_FORMAT instead";
    for (String f : List.of("-log_dir", "-logtostderr", "-alsologtostderr", "-log_backtrace_at", "-stderrthreshold",
        "-vmodule", "-log_file", "-log_file_max_size", "-skip_headers", "-skip_log_headers", "-add_dir_header",
        "-one_output")) {
      m.put(f, logs);
    }
    m.put("-charon-executable-path", "flannel-np's backend is VXLAN only (the kernel has no IPsec backend here)");
    m.put("-charon-delete-sa-on-exit", "flannel-np's backend is VXLAN only (the kernel has no IPsec backend here)");
    m.put("-version", "it is a command, not a setting");
    m.put("-h", "it is a command, not a setting");
    m.put("-help", "it is a command, not a setting");
    return Map.copyOf(m);
  }

  /** Boolean flags take no separate value (Go's flag package: -ip-masq alone means true). */
  private static final List<String> BOOLEAN = List.of("-ip-masq");

  /** The first -iface value, if any (the one the start-up log names first). */
  public Optional<String> iface() {
    return ifaces.isEmpty() ? Optional.empty() : Optional.of(ifaces.get(0));
  }

  /** Whether any flag restricts which interface carries VXLAN. */
  public boolean choosesInterface() {
    return !ifaces.isEmpty() || !ifaceRegexes.isEmpty() || ifaceCanReach.isPresent();
  }

  /** The -iface-regex values compiled (each was checked at start). */
  public List<Pattern> ifacePatterns() {
    return ifaceRegexes.stream().map(Pattern::compile).toList();
  }

  /** Whether an -iface value names an address rather than an interface. */
  public static boolean isAddress(String ifaceValue) {
    return ifaceValue.matches("[0-9.]+");
  }

  public static FlannelOptions parse(String raw) {
    String var = Setting.DEFAULT_FLANNEL_OPTIONS.name();
    List<String> ifaces = new ArrayList<>();
    List<String> regexes = new ArrayList<>();
    Optional<String> canReach = Optional.empty();
    Optional<String> publicIp = Optional.empty();
    Optional<Boolean> ipMasq = Optional.empty();
    int margin = 0; // not given: the etcd keep-alive's own cadence (flanneld's 60 minutes fits only its 24 h TTL)
    int verbosity = 0;
    if (raw == null || raw.isBlank()) {
      return new FlannelOptions(List.of(), List.of(), canReach, publicIp, margin, ipMasq, verbosity);
    }
    List<String> tokens = new ArrayList<>();
    for (String t : raw.trim().split("[,\\s]+")) {
      if (!t.isEmpty()) {
        tokens.add(t);
      }
    }
    for (int i = 0; i < tokens.size(); i++) {
      String tok = tokens.get(i);
      if (!tok.startsWith("-")) {
        throw new ConfigException(var, raw, "'" + tok + "' is not a flag; expected -flag=value, one of " + HONOURED);
      }
      String name = tok.startsWith("--") ? tok.substring(1) : tok;
      int eq = name.indexOf('=');
      String bare = eq >= 0 ? name.substring(0, eq) : name;
      if (REFUSED.containsKey(bare)) {
        throw new ConfigException(var, raw, "flanneld's flag " + bare + " is not taken: " + REFUSED.get(bare)
            + "; flannel-np honours " + String.join(", ", HONOURED));
      }
      if (!HONOURED.contains(bare)) {
        throw new ConfigException(var, raw, "unknown flag " + bare + "; flannel-np honours " + String.join(", ", HONOURED));
      }
      String value;
      if (eq >= 0) {
        value = name.substring(eq + 1);
      } else if (BOOLEAN.contains(bare)) {
        value = "true";
      } else if (i + 1 < tokens.size() && !tokens.get(i + 1).startsWith("-")) {
        value = tokens.get(++i);
      } else {
        throw new ConfigException(var, raw, "flag " + bare + " needs a value");
      }
      switch (bare) {
        case "-iface" -> {
          // the rule the data plane applies to it at runtime: what passes here never fails a pass later
          if (isAddress(value) ? !Ipv4.isValid(value) : !value.matches("[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")) {
            throw new ConfigException(var, raw, "-iface '" + value + "' is not an interface name (1-15 of A-Z a-z 0-9"
                + " _ . - starting with a letter or digit; a VLAN is named by its own link, not name@parent) nor an"
                + " IPv4 address");
          }
          if (!ifaces.contains(value)) {
            ifaces.add(value);
          }
        }
        case "-iface-regex" -> {
          if (value.isEmpty()) {
            throw new ConfigException(var, raw, "-iface-regex needs a regular expression");
          }
          try {
            Pattern.compile(value);
          } catch (PatternSyntaxException e) {
            throw new ConfigException(var, raw, "-iface-regex '" + value + "' is not a regular expression: "
                + e.getDescription());
          }
          regexes.add(value);
        }
        case "-iface-can-reach" -> {
          if (!Ipv4.isValid(value)) {
            throw new ConfigException(var, raw, "-iface-can-reach '" + value + "' is not an IPv4 address");
          }
          if (canReach.isPresent() && !canReach.get().equals(value)) {
            throw new ConfigException(var, raw, "-iface-can-reach given twice with different addresses");
          }
          canReach = Optional.of(value);
        }
        case "-public-ip" -> {
          if (!Ipv4.isValid(value)) {
            throw new ConfigException(var, raw, "-public-ip '" + value + "' is not an IPv4 address");
          }
          publicIp = Optional.of(value);
        }
        case "-subnet-lease-renew-margin" -> {
          if (!value.matches("\\d{1,6}") || Integer.parseInt(value) < 1) {
            throw new ConfigException(var, raw, "-subnet-lease-renew-margin '" + value + "' must be a positive number of minutes");
          }
          margin = Integer.parseInt(value);
        }
        case "-ip-masq" -> {
          String v = value.toLowerCase(java.util.Locale.ROOT);
          if (!List.of("true", "false", "1", "0", "t", "f").contains(v)) {
            throw new ConfigException(var, raw, "-ip-masq '" + value + "' must be true or false");
          }
          ipMasq = Optional.of(v.startsWith("t") || v.equals("1"));
        }
        case "-v" -> {
          if (!value.matches("\\d{1,2}")) {
            throw new ConfigException(var, raw, "-v '" + value + "' must be a log verbosity level 0-99");
          }
          verbosity = Integer.parseInt(value);
        }
        default -> throw new ConfigException(var, raw,
            "unknown flag " + bare + "; flannel-np honours " + String.join(", ", HONOURED));
      }
    }
    return new FlannelOptions(List.copyOf(ifaces), List.copyOf(regexes), canReach, publicIp, margin, ipMasq, verbosity);
  }

  /** What the start-up log says about flags whose effect differs from flanneld's. */
  public List<String> notes() {
    List<String> out = new ArrayList<>();
    ipMasq.ifPresent(m -> out.add("DEFAULT_FLANNEL_OPTIONS -ip-masq=" + m + ": a container reaches addresses outside"
        + " its flannel-np networks through Docker's docker_gwbridge, which masquerades that traffic whatever -ip-masq"
        + " says; traffic inside a network is never masqueraded, as with flanneld's -ip-masq"));
    if (verbosity > 0) {
      out.add("DEFAULT_FLANNEL_OPTIONS -v=" + verbosity + ": log level " + logLevel("error") + " or more detailed");
    }
    return out;
  }

  /**
   * The LOG_LEVEL flanneld's -v asks for: glog's V(1) and up is flanneld's debug output, V(5)
   * and up its most detailed; never quieter than {@code level}.
   */
  public String logLevel(String level) {
    List<String> order = List.of("error", "warn", "info", "debug", "trace");
    String asked = verbosity >= 5 ? "trace" : verbosity >= 1 ? "debug" : "error";
    return order.indexOf(asked) > order.indexOf(level) ? asked : level;
  }
}
