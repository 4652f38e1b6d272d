package io.flannelnp.dns;

import io.flannelnp.model.ClusterModel;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The names Docker's embedded DNS answers, computed from the cluster model: per Docker network,
 * a map of lower-case name → IPv4 addresses, and address → PTR name. Immutable once built; one
 * instance serves every injected container (a container only sees the networks of its
 * {@link Scope}).
 *
 * <p>Per network (docker-contract.md §5.3), for running containers only (a stopping task has
 * left the records, as in Docker):
 * <ul>
 *   <li>container name, task name ({@code <service>.<slot>.<task id>}), hostname, network aliases,
 *       12-character short ID → the container's address on that network; PTR of that address →
 *       {@code <primary name>.<network name>} (the primary name is the task name for a task);</li>
 *   <li>service name and service aliases → the VIP (VIP mode, when the service has one on the
 *       network) or all running task addresses (DNSRR, or VIP mode without a VIP there);</li>
 *   <li>{@code tasks.<service>}, {@code tasks.<alias>} → all running task addresses, both modes;</li>
 *   <li>PTR of a VIP → {@code <service>.<network name>}.</li>
 * </ul>
 * Nothing is registered on an ingress network (Docker: {@code if n.ingress { return }}).
 *
 * <p>Lookup ({@link #resolve}): a name {@code a.b.c} is tried as {@code a.b.c} on every network
 * of the scope, then {@code a.b} on network {@code c}, then {@code a} on network {@code b.c};
 * the first variation with an answer wins. Within a variation, compatibility mode stops at the
 * first network (in scope order: network name, ingress last) with an answer, as Docker does;
 * otherwise the answers of every network are merged.
 */
public final class DnsNames {
  /** No names at all. */
  public static final DnsNames EMPTY = new DnsNames(Map.of());

  private static final int[] NONE = new int[0];

  /** One Docker network's records. */
  static final class Net {
    final String id;
    final String name;
    final String lowerName;
    final boolean ingress;
    final Map<String, int[]> names;
    final Map<Integer, String> ptr;

    Net(String id, String name, boolean ingress, Map<String, int[]> names, Map<Integer, String> ptr) {
      this.id = id;
      this.name = name;
      this.lowerName = name.toLowerCase(Locale.ROOT);
      this.ingress = ingress;
      this.names = names;
      this.ptr = ptr;
    }
  }

  /**
   * The networks one container resolves in, in Docker's order: by network name, networks
   * without a known name after the named ones, ingress last.
   */
  public record Scope(List<String> networkIds) {
    public static final Scope NONE = new Scope(List.of());

    public Scope {
      networkIds = List.copyOf(networkIds);
    }
  }

  private final Map<String, Net> nets;

  private DnsNames(Map<String, Net> nets) {
    this.nets = nets;
  }

  /** Builds the records of every network from the model. */
  public static DnsNames of(ClusterModel model) {
    Map<String, Builder> b = new HashMap<>();
    for (DockerNetwork n : model.networks().values()) {
      b.put(n.dockerId(), new Builder(n.dockerId(), n.name(), isIngress(n)));
    }
    // running task addresses per service and network, in container-ID order (the model's order)
    Map<String, Map<String, List<Integer>>> tasks = new HashMap<>();
    for (ContainerRecord c : model.containers()) {
      if (!c.running()) {
        continue;
      }
      String primary = !c.taskName().isEmpty() ? c.taskName() : bare(c.name());
      for (Map.Entry<String, ContainerRecord.Attachment> e : c.networks().entrySet()) {
        int ip = Ipv4.parse(e.getValue().ip());
        if (ip == Ipv4.INVALID) {
          continue;
        }
        Builder n = b.computeIfAbsent(e.getKey(), id -> new Builder(id, "", false));
        if (!c.serviceId().isEmpty()) {
          tasks.computeIfAbsent(c.serviceId(), k -> new HashMap<>())
              .computeIfAbsent(e.getKey(), k -> new ArrayList<>()).add(ip);
        }
        if (n.ingress) {
          continue;
        }
        n.add(primary, ip);
        n.add(bare(c.name()), ip);
        n.add(c.hostname(), ip);
        n.add(c.shortId(), ip);
        for (String alias : e.getValue().aliases()) {
          n.add(alias, ip);
        }
        if (!primary.isEmpty()) {
          n.ptr.putIfAbsent(ip, primary + "." + n.displayName());
        }
      }
    }
    for (ServiceRecord s : model.services().values()) {
      Map<String, List<Integer>> byNet = tasks.getOrDefault(s.serviceId(), Map.of());
      Set<String> netIds = new LinkedHashSet<>();
      if (s.mode() == ServiceRecord.EndpointMode.VIP) {
        netIds.addAll(s.vips().keySet());
      }
      netIds.addAll(s.aliases().keySet());
      netIds.addAll(byNet.keySet());
      for (String netId : netIds) {
        Builder n = b.computeIfAbsent(netId, id -> new Builder(id, "", false));
        if (n.ingress) {
          continue;
        }
        List<Integer> taskIps = byNet.getOrDefault(netId, List.of());
        int vip = s.mode() == ServiceRecord.EndpointMode.VIP ? Ipv4.parse(s.vips().getOrDefault(netId, ""))
            : Ipv4.INVALID;
        List<Integer> svcIps = vip != Ipv4.INVALID ? List.of(vip) : taskIps;
        List<String> names = new ArrayList<>();
        names.add(s.name());
        names.addAll(s.aliases().getOrDefault(netId, List.of()));
        for (String name : names) {
          if (name.isEmpty()) {
            continue;
          }
          svcIps.forEach(ip -> n.add(name, ip));
          taskIps.forEach(ip -> n.add("tasks." + name, ip));
        }
        if (vip != Ipv4.INVALID && !s.name().isEmpty()) {
          n.ptr.putIfAbsent(vip, s.name() + "." + n.displayName());
        }
      }
    }
    Map<String, Net> nets = new HashMap<>();
    b.forEach((id, bb) -> nets.put(id, bb.build()));
    return new DnsNames(Map.copyOf(nets));
  }

  /**
   * Docker registers no names on the ingress network. The Docker mirror already leaves it out by
   * Docker's own Ingress flag, whatever its name (DockerMirror.mirrored: no network record, no
   * attachment to it in a container record); this guard only keeps records written by hand or by
   * an older mirror, where the default ingress is the overlay called "ingress", from adding names.
   */
  static boolean isIngress(DockerNetwork n) {
    return "ingress".equals(n.name()) && "overlay".equals(n.driver());
  }

  /** Docker's container names may carry the API's leading slash. */
  private static String bare(String name) {
    return name.startsWith("/") ? name.substring(1) : name;
  }

  /** The scope of a container attached to these networks, ordered as Docker orders them. */
  public Scope scope(Collection<String> networkIds) {
    List<String> ids = new ArrayList<>(new LinkedHashSet<>(networkIds));
    ids.sort(Comparator.<String>comparingInt(id -> rank(nets.get(id)))
        .thenComparing(id -> nets.containsKey(id) ? nets.get(id).name : "")
        .thenComparing(Comparator.naturalOrder()));
    return new Scope(ids);
  }

  private static int rank(Net n) {
    if (n == null || n.name.isEmpty()) {
      return 1;
    }
    return n.ingress ? 2 : 0;
  }

  /** The networks this index knows, by ID. */
  public Set<String> networkIds() {
    return nets.keySet();
  }

  /** The name of a network, "" when unknown. */
  public String networkName(String id) {
    Net n = nets.get(id);
    return n == null ? "" : n.name;
  }

  /**
   * The addresses of a name (lower case, no trailing dot) as the container with this scope sees
   * them, before shuffling; an empty array when the name is unknown there.
   */
  public int[] resolve(String name, Scope scope, boolean compat) {
    if (name.isEmpty() || scope.networkIds().isEmpty()) {
      return NONE;
    }
    // variation 0: the whole name on every network
    int[] r = lookup(name, null, scope, compat);
    if (r.length > 0) {
      return r;
    }
    for (int dot = name.lastIndexOf('.'); dot > 0; dot = name.lastIndexOf('.', dot - 1)) {
      String host = name.substring(0, dot);
      String network = name.substring(dot + 1);
      if (network.isEmpty()) {
        continue;
      }
      r = lookup(host, network, scope, compat);
      if (r.length > 0) {
        return r;
      }
    }
    return NONE;
  }

  private int[] lookup(String name, String network, Scope scope, boolean compat) {
    int[] first = null;
    LinkedHashSet<Integer> merged = null;
    for (String id : scope.networkIds()) {
      Net n = nets.get(id);
      if (n == null || n.ingress || (network != null && !network.equals(n.lowerName))) {
        continue;
      }
      int[] ips = n.names.get(name);
      if (ips == null) {
        continue;
      }
      if (compat) {
        return ips;
      }
      if (first == null) {
        first = ips;
      } else {
        if (merged == null) {
          merged = new LinkedHashSet<>();
          for (int ip : first) {
            merged.add(ip);
          }
        }
        for (int ip : ips) {
          merged.add(ip);
        }
      }
    }
    if (merged != null) {
      return merged.stream().mapToInt(Integer::intValue).toArray();
    }
    return first == null ? NONE : first;
  }

  /**
   * {@link #resolve} for a name as a client writes it (any case, with or without the trailing
   * dot), as dotted quads: for tests and logs.
   */
  public List<String> resolveText(String name, Scope scope, boolean compat) {
    String n = name.toLowerCase(Locale.ROOT);
    if (n.endsWith(".")) {
      n = n.substring(0, n.length() - 1);
    }
    return Arrays.stream(resolve(n, scope, compat)).mapToObj(Ipv4::format).toList();
  }

  /**
   * PTR names (without the trailing dot) of an address on the scope's networks: compatibility
   * mode gives the first network's, otherwise every network's.
   */
  public List<String> reverse(int ip, Scope scope, boolean compat) {
    List<String> out = new ArrayList<>(1);
    for (String id : scope.networkIds()) {
      Net n = nets.get(id);
      if (n == null || n.ingress) {
        continue;
      }
      String name = n.ptr.get(ip);
      if (name != null && !out.contains(name)) {
        out.add(name);
        if (compat) {
          break;
        }
      }
    }
    return out;
  }

  /** Every record as "network name A ip" and "network ip PTR name", sorted (for replay's diffs). */
  public java.util.SortedSet<String> records() {
    java.util.SortedSet<String> out = new java.util.TreeSet<>();
    for (Net n : nets.values()) {
      n.names.forEach((name, ips) -> {
        for (int ip : ips) {
          out.add(n.name + " " + name + " A " + Ipv4.format(ip));
        }
      });
      n.ptr.forEach((ip, name) -> out.add(n.name + " " + Ipv4.format(ip) + " PTR " + name));
    }
    return out;
  }

  /** Number of names over all networks, for reports. */
  public int size() {
    return nets.values().stream().mapToInt(n -> n.names.size()).sum();
  }

  private static final class Builder {
    final String id;
    final String name;
    final boolean ingress;
    final Map<String, LinkedHashSet<Integer>> names = new LinkedHashMap<>();
    final Map<Integer, String> ptr = new HashMap<>();

    Builder(String id, String name, boolean ingress) {
      this.id = id;
      this.name = name;
      this.ingress = ingress;
    }

    /** Docker answers PTR with the network's name; an unnamed network (no record yet) with its ID. */
    String displayName() {
      return name.isEmpty() ? id : name;
    }

    void add(String name, int ip) {
      if (name == null || name.isEmpty()) {
        return;
      }
      String key = name.toLowerCase(Locale.ROOT);
      if (key.endsWith(".")) {
        key = key.substring(0, key.length() - 1);
      }
      if (!key.isEmpty()) {
        names.computeIfAbsent(key, k -> new LinkedHashSet<>()).add(ip);
      }
    }

    Net build() {
      Map<String, int[]> n = new HashMap<>(names.size() * 2);
      names.forEach((k, v) -> n.put(k, v.stream().mapToInt(Integer::intValue).toArray()));
      Map<Integer, String> p = Map.copyOf(ptr);
      return new Net(id, name, ingress, n, p);
    }
  }

  /** IPv4 addresses as ints (big-endian value of the dotted quad). */
  static final class Ipv4 {
    static final int INVALID = 0;

    private Ipv4() {}

    /** The address, or {@link #INVALID} (0.0.0.0 is never a record's address). */
    static int parse(String s) {
      if (s == null || s.isEmpty() || s.length() > 15) {
        return INVALID;
      }
      int v = 0;
      int part = 0;
      int digits = 0;
      int dots = 0;
      for (int i = 0; i < s.length(); i++) {
        char c = s.charAt(i);
        if (c == '.') {
          if (digits == 0 || ++dots > 3) {
            return INVALID;
          }
          v = (v << 8) | part;
          part = 0;
          digits = 0;
        } else if (c >= '0' && c <= '9') {
          part = part * 10 + (c - '0');
          if (++digits > 3 || part > 255) {
            return INVALID;
          }
        } else {
          return INVALID;
        }
      }
      if (dots != 3 || digits == 0) {
        return INVALID;
      }
      return (v << 8) | part;
    }

    static String format(int ip) {
      return ((ip >>> 24) & 0xff) + "." + ((ip >>> 16) & 0xff) + "." + ((ip >>> 8) & 0xff) + "." + (ip & 0xff);
    }
  }
}
