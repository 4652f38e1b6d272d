package io.flannelnp.lb;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.flannel.Kernel;
import io.flannelnp.testing.Netns;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The table layout and the partial-sync diff, against a real nftables in a namespace of its own:
 * the full script loads, every element says what it should, and a partial sync from any state to
 * any other leaves exactly the table a full sync of the new state would (random walks through
 * add/remove/scale/move changes, both through libnftables and the nft tool).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LoadBalancerRulesTest {
  static Netns ns;
  static String host;

  @BeforeAll
  static void up() {
    ns = new Netns();
    host = ns.add("rules");
  }

  @AfterAll
  static void down() {
    ns.close();
    assertThat(Netns.list()).noneMatch(n -> n.startsWith(ns.stem()));
  }

  @Test
  void theFullScriptLoadsAndHoldsOneElementPerVipAndSlotAndOneChainPerBackendCount() throws Exception {
    Map<String, List<String>> want = new TreeMap<>(LbDesired::compareIp);
    want.put("10.50.0.4", List.of("10.50.0.131", "10.50.1.2", "10.50.1.130"));
    want.put("10.50.0.5", List.of());
    want.put("10.50.0.6", List.of("10.50.0.140"));
    want.put("10.50.0.7", List.of("10.50.0.141", "10.50.0.142", "10.50.0.143"));
    try (NftRunner r = NftRunner.start(Kernel.inNetns(host), NftRunner.Mode.AUTO)) {
      assertThat(r.how()).as("libnftables is installed with nftables").isEqualTo("libnftables");
      r.submit(() -> run(r, LbRules.full(want))).join();
      LbTables.Snapshot s = LbTables.read(host);
      assertThat(s.services()).containsExactlyInAnyOrderEntriesOf(Map.of("10.50.0.4", "goto pick-3",
          "10.50.0.5", "goto no-endpoints", "10.50.0.6", "goto pick-1", "10.50.0.7", "goto pick-3"));
      assertThat(s.backends()).hasSize(7).containsEntry("10.50.0.4 . 0", "10.50.0.131")
          .containsEntry("10.50.0.4 . 2", "10.50.1.130").containsEntry("10.50.0.7 . 1", "10.50.0.142");
      assertThat(s.maps()).as("each VIP's slots in the map of its task count").containsEntry("10.50.0.4 . 2", 3)
          .containsEntry("10.50.0.6 . 0", 1).containsEntry("10.50.0.7 . 0", 3);
      // pick-1..pick-3: every count up to the largest, so a count change never adds a chain
      assertThat(s.chains()).containsExactlyInAnyOrder("prerouting", "output", "services", "no-endpoints", "pick-1",
          "pick-2", "pick-3", "hairpin", "postrouting");
      String text = ns.exec(host, "nft", "list", "table", "ip", LbRules.TABLE).ok().out();
      assertThat(text).contains("type nat hook prerouting priority dstnat; policy accept;")
          .contains("type nat hook output priority -100; policy accept;")
          .contains("ip daddr @service-ips jump services")
          .contains("ip daddr @service-ips goto no-endpoints")
          .contains("jump pick-1\n\t\tjump pick-2\n\t\tjump pick-3\n")
          .contains("dnat to ip daddr . numgen random mod 3 map @backends-3")
          .doesNotContain(": goto") // no verdict element: adding one re-validates the whole table
          .contains("reject with tcp reset")
          .contains("fib daddr . iif oif missing")
          .contains("masquerade fully-random")
          .doesNotContain("elements = { 0 :"); // no anonymous map anywhere
      // a second full sync replaces the table with an equal one
      r.submit(() -> run(r, LbRules.full(want))).join();
      assertThat(LbTables.read(host)).isEqualTo(s);
      ns.exec(host, "nft", "delete", "table", "ip", LbRules.TABLE).ok();
    }
  }

  @Test
  void aDeltaChangesOnlyWhatDiffersAndReplacesChangedSlotsInOneTransaction() {
    Map<String, List<String>> a = Map.of("10.0.0.1", List.of("10.1.0.1", "10.1.0.2", "10.1.0.3"),
        "10.0.0.2", List.of("10.1.0.9"), "10.0.0.3", List.of());
    Map<String, List<String>> b = Map.of("10.0.0.1", List.of("10.1.0.1", "10.1.0.3"),
        "10.0.0.3", List.of("10.1.0.7"), "10.0.0.4", List.of("10.1.0.8", "10.1.0.9"));
    LbRules.Delta d = LbRules.delta(a, Set.of(1, 3), b);
    assertThat(d.deleteServices()).as("only a VIP that goes leaves the set").containsExactly("10.0.0.2");
    assertThat(d.addServices()).containsExactly("10.0.0.4");
    // 10.0.0.1 went from 3 tasks to 2: its slots move from backends-3 to backends-2
    assertThat(d.deleteBackends()).containsOnlyKeys(1, 3);
    assertThat(d.deleteBackends().get(1)).containsExactly("10.0.0.2 . 0");
    assertThat(d.deleteBackends().get(3)).containsExactly("10.0.0.1 . 0", "10.0.0.1 . 1", "10.0.0.1 . 2");
    assertThat(d.addBackends()).containsOnlyKeys(1, 2);
    assertThat(d.addBackends().get(1)).containsExactly("10.0.0.3 . 0 : 10.1.0.7");
    assertThat(d.addBackends().get(2)).containsExactlyInAnyOrder("10.0.0.1 . 0 : 10.1.0.1", "10.0.0.1 . 1 : 10.1.0.3",
        "10.0.0.4 . 0 : 10.1.0.8", "10.0.0.4 . 1 : 10.1.0.9");
    assertThat(d.newChains()).containsExactly(2);
    assertThat(d.deleteChains()).as("no VIP has 3 tasks any more").containsExactly(3);
    String script = d.script();
    assertThat(script.indexOf("delete element")).isLessThan(script.indexOf("add map"));
    assertThat(script.indexOf("add rule")).isLessThan(script.indexOf("add element"));
    assertThat(script).contains("flush chain ip flannel-np-lb services\n"
        + "add rule ip flannel-np-lb services jump pick-1\nadd rule ip flannel-np-lb services jump pick-2\n");
    assertThat(script).endsWith("delete chain ip flannel-np-lb pick-3\ndelete map ip flannel-np-lb backends-3\n");
    // a task replaced: one slot, in place; no set, map, chain or rule touched
    LbRules.Delta r = LbRules.delta(Map.of("10.0.0.1", b.get("10.0.0.1")), Set.of(1, 2),
        Map.of("10.0.0.1", List.of("10.1.0.1", "10.1.0.4")), Set.of(1, 2));
    assertThat(r.script()).isEqualTo("delete element ip flannel-np-lb backends-2 { 10.0.0.1 . 1 }\n"
        + "add element ip flannel-np-lb backends-2 { 10.0.0.1 . 1 : 10.1.0.4 }\n");
    assertThat(LbRules.delta(b, Set.of(1, 2), b).isEmpty()).isTrue();
    assertThatThrownBy(() -> LbRules.pickChain(0)).isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void partialSyncsFromAnyStateEndInTheTableAFullSyncMakes() throws Exception {
    for (NftRunner.Mode mode : List.of(NftRunner.Mode.AUTO, NftRunner.Mode.PROCESS)) {
      Random rnd = new Random(42 + mode.ordinal());
      try (NftRunner r = NftRunner.start(Kernel.inNetns(host), mode)) {
        Map<String, List<String>> actual = randomState(rnd, Map.of());
        r.submit(() -> run(r, LbRules.full(actual))).join();
        Set<Integer> chains = new java.util.TreeSet<>(LbRules.chainsFor(actual.values()));
        Map<String, List<String>> cur = actual;
        int steps = mode == NftRunner.Mode.PROCESS ? 4 : 12;
        for (int step = 0; step < steps; step++) {
          Map<String, List<String>> next = randomState(rnd, cur);
          LbRules.Delta d = LbRules.delta(cur, chains, next);
          if (!d.isEmpty()) {
            r.submit(() -> run(r, d.script())).join();
          }
          chains.addAll(d.newChains());
          d.deleteChains().forEach(chains::remove);
          LbTables.Snapshot partial = LbTables.read(host);
          r.submit(() -> run(r, LbRules.full(next))).join();
          LbTables.Snapshot full = LbTables.read(host);
          assertThat(partial.services()).as(mode + " step " + step).isEqualTo(full.services());
          assertThat(partial).as(mode + " step " + step + ": the whole table").isEqualTo(full);
          chains = new java.util.TreeSet<>(LbRules.chainsFor(next.values()));
          cur = next;
        }
      }
    }
    ns.exec(host, "nft", "delete", "table", "ip", LbRules.TABLE).ok();
  }

  @Test
  void aFailedTransactionChangesNothing() throws Exception {
    Map<String, List<String>> want = Map.of("10.60.0.4", List.of("10.60.0.130"));
    try (NftRunner r = NftRunner.start(Kernel.inNetns(host), NftRunner.Mode.AUTO)) {
      r.submit(() -> run(r, LbRules.full(want))).join();
      LbTables.Snapshot before = LbTables.read(host);
      String bad = "add element ip flannel-np-lb service-ips { 10.60.0.9 }\n"
          + "delete element ip flannel-np-lb backends-1 { 10.60.0.99 . 0 }\n"; // no such element
      var f = r.submit(() -> {
        try {
          r.run(bad);
          return null;
        } catch (NftRunner.NftException e) {
          return e.getMessage();
        }
      }).join();
      assertThat(f).isNotNull().contains("No such file or directory");
      assertThat(LbTables.read(host)).isEqualTo(before);
      ns.exec(host, "nft", "delete", "table", "ip", LbRules.TABLE).ok();
    }
  }

  static Void run(NftRunner r, String script) {
    try {
      r.run(script);
      return null;
    } catch (NftRunner.NftException e) {
      throw new AssertionError(e.getMessage() + "\n" + script, e);
    }
  }

  /** A random next state: VIPs added, removed, scaled up and down, tasks replaced. */
  static Map<String, List<String>> randomState(Random rnd, Map<String, List<String>> from) {
    Map<String, List<String>> next = new LinkedHashMap<>();
    for (Map.Entry<String, List<String>> e : from.entrySet()) {
      int roll = rnd.nextInt(10);
      if (roll == 0) {
        continue; // removed
      }
      List<String> l = new ArrayList<>(e.getValue());
      if (roll <= 3) {
        if (!l.isEmpty()) {
          l.remove(rnd.nextInt(l.size()));
        }
      } else if (roll <= 5) {
        l.add(task(rnd));
      } else if (roll == 6 && !l.isEmpty()) {
        l.set(rnd.nextInt(l.size()), task(rnd));
      }
      next.put(e.getKey(), List.copyOf(new java.util.LinkedHashSet<>(l)));
    }
    int add = 3 + rnd.nextInt(6);
    for (int i = 0; i < add; i++) {
      String vip = "10.60." + rnd.nextInt(2) + "." + (2 + rnd.nextInt(120));
      List<String> l = new ArrayList<>();
      int n = rnd.nextInt(6);
      for (int k = 0; k < n; k++) {
        l.add(task(rnd));
      }
      next.put(vip, List.copyOf(new java.util.LinkedHashSet<>(l)));
    }
    return next;
  }

  static String task(Random rnd) {
    return "10.61." + rnd.nextInt(16) + "." + (1 + rnd.nextInt(250));
  }
}
