package io.flannelnp.lb;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.SortedSet;
import java.util.TreeSet;

/**
 * The nftables layout of the VIP load balancer and the scripts that program it. Everything lives
 * in one table of our own, {@code table ip flannel-np-lb}, in the host network namespace; no other
 * table is ever read or written. The layout follows kube-proxy's nftables proxier (one dispatch
 * rule and a verdict map, per-connection random choice with {@code numgen}, mark-then-masquerade
 * for hairpin traffic), but with no chain per service and no anonymous set anywhere:
 *
 * <pre>
 * table ip flannel-np-lb {
 *   map service-ips { type ipv4_addr : verdict }                  VIP → goto pick-N | goto no-endpoints
 *   map backends { typeof ip daddr . numgen random mod 1 : ip daddr }   VIP . slot → task IP
 *   chain prerouting {                                             nat, dstnat (-100)
 *     ip daddr vmap @service-ips
 *   }
 *   chain output {                                                 nat output, dstnat (-100)
 *     ip daddr vmap @service-ips                                   the node's own connections
 *   }
 *   chain pick-N {                                                 one per backend count N in use
 *     meta mark set meta mark | 0x2000 dnat ip to ip daddr . numgen random mod N map @backends
 *   }
 *   chain no-endpoints {                                           a VIP without running task
 *     meta l4proto tcp reject with tcp reset
 *     reject                                                       icmp port-unreachable
 *   }
 *   chain hairpin {                                                filter, dstnat + 10 (after the DNAT)
 *     meta mark & 0x2000 == 0x2000 fib daddr . iif oif missing meta mark set meta mark & ~0x2000
 *   }
 *   chain postrouting {                                            nat, srcnat (100)
 *     meta mark & 0x2000 == 0x2000 meta mark set meta mark & ~0x2000 masquerade fully-random
 *   }
 * }
 * </pre>
 *
 * <ul>
 *   <li><b>Any port, any protocol.</b> The key is the VIP alone and DNAT keeps the port, so every
 *       TCP and UDP port of the VIP reaches the same port of a task (ICMP echo too: a ping of the
 *       VIP is answered by a task). NAT chains see only the first packet of a connection, so the
 *       choice is per connection and conntrack keeps it for the connection's life.</li>
 *   <li><b>Random choice without per-service state in rules.</b> A service with N tasks jumps to
 *       the shared chain {@code pick-N}, whose one rule draws {@code numgen random mod N} and looks
 *       up {@code VIP . slot} in the one global map. Rules are constant (one per distinct N);
 *       everything per service is a map element, so a sync is linear in elements (nft 1.0.6
 *       allocates anonymous sets quadratically per table: anchors.md §B.6).</li>
 *   <li><b>No task → refusal at once</b>: TCP gets a reset, anything else ICMP port-unreachable,
 *       so clients fail fast instead of timing out.</li>
 *   <li><b>Hairpin</b> (client and task on the same bridge of this node): the task would answer
 *       the client directly, bypassing the reverse NAT. {@code pick-N} marks every new VIP
 *       connection, the {@code hairpin} chain clears the mark again unless the DNATed destination
 *       is reached through the interface the packet came in on ({@code fib daddr . iif oif}), and
 *       only still-marked connections are masqueraded (to the bridge's gateway address). A task
 *       on another node sees the client's own address: no SNAT.</li>
 *   <li><b>The node itself</b> (its own namespace, e.g. a health check or a process on the host)
 *       reaches VIPs through the {@code output} chain. Its connections keep the mark (the
 *       {@code hairpin} chain sees only forwarded packets), so they are masqueraded to the address
 *       of the interface they leave by, to which the task's answer comes back.</li>
 * </ul>
 *
 * A full sync replaces the table in one transaction ({@code add table; delete table; table {…};
 * add element …}): the kernel switches from the old to the new ruleset at once, and conntrack
 * keeps the NAT of every existing connection. A partial sync is element deletions and additions
 * (and a new {@code pick-N} chain when a new N appears, the deletion of one no VIP needs any more)
 * in one transaction, so the table is always exactly what a full sync of the same state makes.
 * With no VIP at all there is no table ({@link #absent()}).
 */
public final class LbRules {
  private LbRules() {}

  public static final String FAMILY = "ip";
  public static final String TABLE = "flannel-np-lb";
  public static final String SERVICES = "service-ips";
  public static final String BACKENDS = "backends";
  public static final String NO_ENDPOINTS = "no-endpoints";
  public static final String PICK_PREFIX = "pick-";
  /** The packet-mark bit that asks for masquerade (hairpin); cleared again before the packet leaves. */
  public static final int HAIRPIN_MARK = 0x2000;
  /** Elements per {@code add element} command: keeps single lines of a script reasonably short. */
  static final int CHUNK = 2000;

  private static final String T = FAMILY + " " + TABLE;

  public static String pickChain(int n) {
    if (n < 1) {
      throw new IllegalArgumentException("a pick chain needs at least one backend, not " + n);
    }
    return PICK_PREFIX + n;
  }

  static String pickRule(int n) {
    return "meta mark set meta mark | " + hex(HAIRPIN_MARK) + " dnat ip to ip daddr . numgen random mod " + n
        + " map @" + BACKENDS;
  }

  static String hex(int v) {
    return String.format("0x%08x", v);
  }

  /** The verdict of a VIP with {@code n} running tasks. */
  static String verdict(int n) {
    return n == 0 ? "goto " + NO_ENDPOINTS : "goto " + pickChain(n);
  }

  /**
   * The pick chains the table keeps: one per backend count from 1 to the largest in use, so a
   * service whose task count changes only moves its VIP to another existing chain (adding a chain
   * whose rule names the backends map makes nft reload that whole map: 10-50 ms at 80,000 elements).
   */
  public static SortedSet<Integer> chainsFor(Collection<List<String>> backends) {
    int max = 0;
    for (List<String> b : backends) {
      max = Math.max(max, b.size());
    }
    return upTo(max);
  }

  /** 1..max. */
  public static SortedSet<Integer> upTo(int max) {
    SortedSet<Integer> out = new TreeSet<>();
    for (int n = 1; n <= max; n++) {
      out.add(n);
    }
    return out;
  }

  /**
   * The whole table for {@code desired} (VIP → task IPs, in slot order), replacing whatever table
   * of that name exists, in one transaction.
   */
  public static String full(Map<String, List<String>> desired) {
    StringBuilder b = new StringBuilder(64 + desired.size() * 96);
    b.append("add table ").append(T).append('\n');
    b.append("delete table ").append(T).append('\n');
    b.append("table ").append(T).append(" {\n");
    b.append("  map ").append(SERVICES).append(" {\n    type ipv4_addr : verdict\n  }\n");
    b.append("  map ").append(BACKENDS).append(" {\n    typeof ip daddr . numgen random mod 1 : ip daddr\n  }\n");
    b.append("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n")
        .append("    ip daddr vmap @").append(SERVICES).append("\n  }\n");
    // nft 1.0.6 takes the name dstnat only for prerouting; -100 is its value
    b.append("  chain output {\n    type nat hook output priority -100; policy accept;\n")
        .append("    ip daddr vmap @").append(SERVICES).append("\n  }\n");
    b.append("  chain ").append(NO_ENDPOINTS).append(" {\n    meta l4proto tcp reject with tcp reset\n    reject\n  }\n");
    for (int n : chainsFor(desired.values())) {
      b.append("  chain ").append(pickChain(n)).append(" {\n    ").append(pickRule(n)).append("\n  }\n");
    }
    b.append("  chain hairpin {\n    type filter hook prerouting priority dstnat + 10; policy accept;\n")
        .append("    meta mark & ").append(hex(HAIRPIN_MARK)).append(" == ").append(hex(HAIRPIN_MARK))
        .append(" fib daddr . iif oif missing meta mark set meta mark & ").append(hex(~HAIRPIN_MARK)).append("\n  }\n");
    b.append("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n")
        .append("    meta mark & ").append(hex(HAIRPIN_MARK)).append(" == ").append(hex(HAIRPIN_MARK))
        .append(" meta mark set meta mark & ").append(hex(~HAIRPIN_MARK)).append(" masquerade fully-random\n  }\n");
    b.append("}\n");
    List<String> services = new ArrayList<>(desired.size());
    List<String> backends = new ArrayList<>(desired.size() * 3);
    desired.forEach((vip, tasks) -> {
      services.add(vip + " : " + verdict(tasks.size()));
      for (int i = 0; i < tasks.size(); i++) {
        backends.add(vip + " . " + i + " : " + tasks.get(i));
      }
    });
    elements(b, "add", BACKENDS, backends);
    elements(b, "add", SERVICES, services);
    return b.toString();
  }

  /** No table at all (nothing wanted): removes ours if it exists, in one transaction. */
  public static String absent() {
    return "add table " + T + "\ndelete table " + T + "\n";
  }

  /** What a partial sync changes; {@link #script()} is empty when nothing does. */
  public record Delta(List<String> deleteServices, List<String> deleteBackends, List<Integer> newChains,
      List<String> addBackends, List<String> addServices, List<Integer> deleteChains) {
    public boolean isEmpty() {
      return deleteServices.isEmpty() && deleteBackends.isEmpty() && newChains.isEmpty() && addBackends.isEmpty()
          && addServices.isEmpty() && deleteChains.isEmpty();
    }

    /** Elements touched (deleted plus added). */
    public int size() {
      return deleteServices.size() + deleteBackends.size() + addBackends.size() + addServices.size();
    }

    public String script() {
      StringBuilder b = new StringBuilder();
      elements(b, "delete", SERVICES, deleteServices);
      elements(b, "delete", BACKENDS, deleteBackends);
      for (int n : newChains) {
        b.append("add chain ").append(T).append(' ').append(pickChain(n)).append('\n');
        b.append("add rule ").append(T).append(' ').append(pickChain(n)).append(' ').append(pickRule(n)).append('\n');
      }
      elements(b, "add", BACKENDS, addBackends);
      elements(b, "add", SERVICES, addServices);
      // last: the elements that pointed at them are gone by now, in this same transaction
      for (int n : deleteChains) {
        b.append("delete chain ").append(T).append(' ').append(pickChain(n)).append('\n');
      }
      return b.toString();
    }

    public String summary() {
      return "-" + (deleteServices.size() + deleteBackends.size()) + "/+" + (addServices.size() + addBackends.size())
          + " elements" + (newChains.isEmpty() ? "" : ", new chains " + newChains)
          + (deleteChains.isEmpty() ? "" : ", chains gone " + deleteChains);
    }
  }

  /**
   * The element changes that turn {@code actual} into {@code desired} (both VIP → task IPs in
   * slot order); {@code chains} are the pick chains the table already has. A changed slot is a
   * deletion and an addition of the same key in the same transaction (nft 1.0.6 cannot replace a
   * map value); a changed backend count re-points the VIP's verdict. A pick chain no VIP needs any
   * more is deleted in the same transaction that removes its last reference, so the table stays
   * exactly what a full sync would make (kernels before 6.2 may refuse that, kube-proxy's
   * proxier.go notes; the failed transaction is then followed by a full sync, which is correct).
   */
  public static Delta delta(Map<String, List<String>> actual, Collection<Integer> chains,
      Map<String, List<String>> desired) {
    return delta(actual, chains, desired, chainsFor(desired.values()));
  }

  /**
   * As {@link #delta(Map, Collection, Map)} for a part of the table: {@code actual} and
   * {@code desired} hold only the VIPs that may have changed, {@code wanted} is the set of pick
   * chains the whole desired table needs.
   */
  public static Delta delta(Map<String, List<String>> actual, Collection<Integer> chains,
      Map<String, List<String>> desired, Collection<Integer> wanted) {
    List<String> delS = new ArrayList<>();
    List<String> delB = new ArrayList<>();
    List<String> addB = new ArrayList<>();
    List<String> addS = new ArrayList<>();
    SortedSet<Integer> newChains = new TreeSet<>();
    actual.forEach((vip, old) -> {
      if (!desired.containsKey(vip)) {
        delS.add(vip);
        for (int i = 0; i < old.size(); i++) {
          delB.add(vip + " . " + i);
        }
      }
    });
    desired.forEach((vip, now) -> {
      List<String> old = actual.get(vip);
      if (old == null) {
        addS.add(vip + " : " + verdict(now.size()));
        for (int i = 0; i < now.size(); i++) {
          addB.add(vip + " . " + i + " : " + now.get(i));
        }
      } else if (!old.equals(now)) {
        for (int i = 0; i < Math.max(old.size(), now.size()); i++) {
          String o = i < old.size() ? old.get(i) : null;
          String n = i < now.size() ? now.get(i) : null;
          if (o != null && !o.equals(n)) {
            delB.add(vip + " . " + i);
          }
          if (n != null && !n.equals(o)) {
            addB.add(vip + " . " + i + " : " + n);
          }
        }
        if (old.size() != now.size()) {
          delS.add(vip);
          addS.add(vip + " : " + verdict(now.size()));
        }
      }
      if (!now.isEmpty() && !chains.contains(now.size())) {
        newChains.add(now.size());
      }
    });
    for (int n : wanted) {
      if (!chains.contains(n)) {
        newChains.add(n);
      }
    }
    List<Integer> gone = chains.stream().filter(n -> !wanted.contains(n)).sorted().toList();
    return new Delta(delS, delB, List.copyOf(newChains), addB, addS, gone);
  }

  private static void elements(StringBuilder b, String verb, String map, List<String> elems) {
    for (int i = 0; i < elems.size(); i += CHUNK) {
      b.append(verb).append(" element ").append(T).append(' ').append(map).append(" { ");
      List<String> part = elems.subList(i, Math.min(elems.size(), i + CHUNK));
      for (int j = 0; j < part.size(); j++) {
        if (j > 0) {
          b.append(", ");
        }
        b.append(part.get(j));
      }
      b.append(" }\n");
    }
  }
}
