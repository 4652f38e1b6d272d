package io.flannelnp.testing;

import java.util.ArrayList;
import java.util.List;

/**
 * A multi-host lab in network namespaces, the same plumbing as scripts/lab.sh and
 * ../shared/lab (nothing in the root namespace):
 *
 * <pre>
 *  netns &lt;stem&gt;-infra:  bridge br0 198.18.0.1/24   ("the outside": what egress reaches)
 *        │ veth v-hI (infra side, on br0)
 *  netns &lt;stem&gt;-hI:     eth0 198.18.0.(10+I)/24, no default route, ip_forward=1
 *                        docker_gwbridge 172.18.0.1/16 with Docker's masquerade rule
 *                        (table ip fnplab-docker), as dockerd makes it for overlay-style networks
 * </pre>
 *
 * A "container" is one more namespace: its eth0 is the veth the plugin's Join names, moved in
 * and configured from the Join answer as libnetwork does, and its eth1 sits on the host's
 * docker_gwbridge with the default route, as Docker adds it when Join returns no gateway.
 * {@link #close()} deletes every namespace, which removes every link, route and nft table in them.
 */
public final class Lab implements AutoCloseable {
  public static final String NET = "198.18.0";
  public static final String INFRA_IP = NET + ".1";
  public static final String GWBRIDGE = "docker_gwbridge";
  public static final String GWBRIDGE_IP = "172.18.0.1";

  public final Netns ns = new Netns();
  public final String infra;
  private final List<String> hosts = new ArrayList<>();

  public Lab() {
    infra = ns.add("infra");
    ns.ipBatch(infra, List.of("link add name br0 type bridge", "addr add " + INFRA_IP + "/24 dev br0",
        "link set dev br0 up")).ok();
  }

  /** The underlay address of host I. */
  public static String hostIp(int i) {
    return NET + "." + (10 + i);
  }

  /** Adds host I: its namespace, its link to the infra bridge, forwarding, docker_gwbridge. */
  public String addHost(int i) {
    String h = ns.add("h" + i);
    hosts.add(h);
    ns.ipBatch(infra, List.of("link add name v-h" + i + " type veth peer name eth0 netns " + h,
        "link set dev v-h" + i + " master br0", "link set dev v-h" + i + " up")).ok();
    ns.ipBatch(h, List.of("addr add " + hostIp(i) + "/24 dev eth0", "link set dev eth0 up",
        "link add name " + GWBRIDGE + " type bridge", "addr add " + GWBRIDGE_IP + "/16 dev " + GWBRIDGE,
        "link set dev " + GWBRIDGE + " up")).ok();
    ns.exec(h, "sysctl", "-qw", "net.ipv4.ip_forward=1").ok();
    // Docker's rule for docker_gwbridge: masquerade what leaves by any other interface
    Netns.Result r = Netns.run(List.of("ip", "netns", "exec", h, "nft", "-f", "-"),
        "table ip fnplab-docker {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n"
            + "  ip saddr 172.18.0.0/16 oifname != \"" + GWBRIDGE + "\" masquerade\n }\n}\n");
    r.ok();
    return h;
  }

  /** Deletes a host's namespace at once (a host gone for good); its infra-side veth goes with it. */
  public void removeHost(String h) {
    ns.delete(h);
    hosts.remove(h);
  }

  public List<String> hosts() {
    return List.copyOf(hosts);
  }

  /**
   * The kernel half of attaching a container the way Docker does it after Join, for many at once:
   * each {@code c} names a container namespace (already added), the host it runs on, the veth
   * Join named ({@code SrcName}), its address and the static route from the answers, and its
   * docker_gwbridge address.
   */
  public record Plug(String container, String host, String srcName, String cidr, String routeDst, String nextHop,
      String gwAddress, String gwVeth) {}

  public void plug(List<Plug> plugs) {
    java.util.Map<String, List<String>> perHost = new java.util.LinkedHashMap<>();
    for (Plug p : plugs) {
      List<String> l = perHost.computeIfAbsent(p.host(), k -> new ArrayList<>());
      l.add("link set dev " + p.srcName() + " netns " + p.container());
      l.add("link add name " + p.gwVeth() + " type veth peer name eth1 netns " + p.container());
      l.add("link set dev " + p.gwVeth() + " master " + GWBRIDGE);
      l.add("link set dev " + p.gwVeth() + " up");
    }
    perHost.forEach((h, lines) -> ns.ipBatch(h, lines).ok());
    for (Plug p : plugs) {
      ns.ipBatch(p.container(), List.of("link set dev lo up", "link set dev " + p.srcName() + " name eth0",
          "addr add " + p.cidr() + " dev eth0", "link set dev eth0 up",
          "route add " + p.routeDst() + " via " + p.nextHop() + " dev eth0",
          "addr add " + p.gwAddress() + "/16 dev eth1", "link set dev eth1 up",
          "route add default via " + GWBRIDGE_IP + " dev eth1")).ok();
    }
  }

  @Override
  public void close() {
    ns.close();
  }
}
