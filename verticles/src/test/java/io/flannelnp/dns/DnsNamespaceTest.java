package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.bus.Observed.ReconcileReport;
import io.flannelnp.dns.DnsMessage.EjectDns;
import io.flannelnp.dns.DnsMessage.InjectDns;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ContainerRecord.Attachment;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import io.flannelnp.testing.Netns;
import io.vertx.core.eventbus.DeliveryOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The resolver injected into real network namespaces that carry Docker's exact 127.0.0.11 rules
 * (docker-contract.md §5.2, iptables-nft and iptables-legacy, installed before or after us) and a
 * stand-in of Docker's resolver on Docker's port, queried with {@code dig} from inside, over UDP
 * and TCP. Records come from a real etcd through the EtcdWatchVerticle. Every test removes its
 * namespaces, tables, threads and etcd keys and asserts it. Needs root, iproute2, nftables,
 * iptables, nsenter, dig and etcd.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class DnsNamespaceTest extends EtcdBusTestBase {
  static final String NODE = "node-dns-test";
  static final String WEB = "dnet-web-00000000000000000000001";
  static final String INTERNAL = "dnet-int-00000000000000000000002";
  static final String CLIENT_ID = "c0ffee00000000000000000000000000000000000000000000000000000000c1";
  static final String EP1 = "e1000000000000000000000000000000000000000000000000000000000000e1";
  static final String EP2 = "e2000000000000000000000000000000000000000000000000000000000000e2";
  static final Duration UPSTREAM_TIMEOUT = Duration.ofMillis(1500);
  /** The periodic pass of the tests that wait for it. */
  static final Duration RESYNC = Duration.ofSeconds(2);

  Netns ns;
  Namespaces.Switcher switcher;
  final List<FakeDockerResolver> fakes = new ArrayList<>();
  final List<KernelBatch> batches = new CopyOnWriteArrayList<>();
  String dnsDeployment;
  DnsVerticle dns;

  @BeforeEach
  void setUp() throws Exception {
    ns = new Netns();
    startBus(ns.stem());
    vertx.eventBus().<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> batches.add(m.body()));
    switcher = new Namespaces.Switcher("test-netns");
  }

  @AfterEach
  void tearDown() throws Exception {
    try {
      if (dnsDeployment != null) {
        vertx.undeploy(dnsDeployment).await(20, TimeUnit.SECONDS);
      }
      for (FakeDockerResolver f : fakes) {
        f.close();
      }
      stopBus();
      switcher.close();
    } finally {
      ns.close();
    }
    assertThat(Netns.list()).as("namespaces left").noneMatch(n -> n.startsWith(ns.stem()));
    assertThat(Netns.run("nft", "list", "tables").ok().out()).as("the root namespace is never touched")
        .doesNotContain(DnsNat.TABLE);
  }

  // ---- the tests -------------------------------------------------------------------------------

  @Test
  void dockersIptablesNftRulesFirstThenUs() throws Exception {
    resolvesOursForwardsTheRestAndEjectHandsBackToDocker("iptables", true);
  }

  @Test
  void usFirstThenDockersIptablesNftRules() throws Exception {
    resolvesOursForwardsTheRestAndEjectHandsBackToDocker("iptables", false);
  }

  @Test
  void dockersIptablesLegacyRulesFirstThenUs() throws Exception {
    resolvesOursForwardsTheRestAndEjectHandsBackToDocker("iptables-legacy", true);
  }

  @Test
  void usFirstThenDockersIptablesLegacyRules() throws Exception {
    resolvesOursForwardsTheRestAndEjectHandsBackToDocker("iptables-legacy", false);
  }

  void resolvesOursForwardsTheRestAndEjectHandsBackToDocker(String iptables, boolean dockerFirst) throws Exception {
    String c = ns.add("c");
    String key = "/var/run/netns/" + c;
    FakeDockerResolver docker = fake(key);
    if (dockerFirst) {
      dockerRules(c, iptables, docker);
      assertThat(dig(c, "outside.example").answers()).as("Docker's resolver answers before we are there")
          .containsExactly(FakeDockerResolver.OUTSIDE);
      assertThat(dig(c, "my-name").status()).isEqualTo("NXDOMAIN");
    }
    writeCluster(key);
    deployDns();
    Ack ack = ask(Addresses.DNS_INJECT, new InjectDns(CLIENT_ID, key, EP1));
    assertThat(ack.detail()).startsWith("injected into " + key);
    if (!dockerFirst) {
      dockerRules(c, iptables, docker);
    }
    String dockerNat = natRules(c, iptables);
    assertThat(dockerNat).contains("--to-destination 127.0.0.11:" + docker.udpPort)
        .contains("--to-destination 127.0.0.11:" + docker.tcpPort);

    // our table: nat output at -150, before Docker's -100; and, as we hold 127.0.0.11:53, the
    // raw chain that keeps that traffic out of conntrack (and so out of every NAT)
    JsonObject nat = ourChain(c, "output");
    assertThat(nat.getString("type")).isEqualTo("nat");
    assertThat(nat.getString("hook")).isEqualTo("output");
    assertThat(nat.getInteger("prio")).isEqualTo(-150);
    JsonObject raw = ourChain(c, "raw-output");
    assertThat(raw.getString("type")).isEqualTo("filter");
    assertThat(raw.getString("hook")).isEqualTo("output");
    assertThat(raw.getInteger("prio")).isEqualTo(-300);
    awaitNames();

    // flannel-np's names, UDP and TCP, TTL = DNS_TTL, from 127.0.0.11:53
    Dig a = dig(c, "my-name");
    assertThat(a.status()).isEqualTo("NOERROR");
    assertThat(a.answers()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
    assertThat(a.ttls()).containsOnly(600);
    assertThat(a.flags()).contains("qr", "rd", "ra").doesNotContain("aa");
    assertThat(a.server()).isEqualTo("127.0.0.11#53(127.0.0.11)");
    assertThat(dig(c, "+tcp", "my-name.web").answers()).containsExactlyInAnyOrder("10.1.0.5", "10.1.0.2");
    assertThat(dig(c, "tasks.my-alias").answers()).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12");
    assertThat(dig(c, "MY-ALIAS.1.TASK1.").answers()).containsExactly("10.2.0.11");
    Dig aaaa = dig(c, "AAAA", "my-name");
    assertThat(aaaa.status()).isEqualTo("NOERROR");
    assertThat(aaaa.answers()).isEmpty();
    assertThat(dig(c, "-x", "10.2.0.5").answers()).containsExactly("my-name.internal.");
    assertThat(dig(c, "+tcp", "-x", "10.1.0.2").answers()).containsExactly("my-name.web.");

    // everything else goes to Docker's resolver, whose answer and RCODE come back as they are
    int before = docker.queries.get();
    assertThat(dig(c, "outside.example").answers()).containsExactly(FakeDockerResolver.OUTSIDE);
    assertThat(dig(c, "outside.example").ttls()).containsOnly(42);
    assertThat(dig(c, "+tcp", "outside.example").answers()).containsExactly(FakeDockerResolver.OUTSIDE);
    assertThat(dig(c, "nosuch.example").status()).isEqualTo("NXDOMAIN");
    assertThat(dig(c, "+tcp", "nosuch.example").status()).isEqualTo("NXDOMAIN");
    assertThat(dig(c, "TXT", "my-name").status()).as("other types of our names too").isEqualTo("NXDOMAIN");
    assertThat(dig(c, "-x", "10.2.0.99").status()).isEqualTo("NXDOMAIN");
    assertThat(docker.queries.get() - before).isEqualTo(7);
    assertThat(counted(c, "notrack")).as("queries, answers and forwards all untracked").isGreaterThan(40);
    assertThat(counted(c, "dnat")).as("nothing needed our DNAT: we hold 127.0.0.11:53").isZero();
    // no answer upstream: SERVFAIL after the timeout, never silence
    long t0 = System.nanoTime();
    Dig slow = dig(c, "slow.example");
    long ms = (System.nanoTime() - t0) / 1_000_000;
    assertThat(slow.status()).isEqualTo("SERVFAIL");
    assertThat(ms).isBetween(UPSTREAM_TIMEOUT.toMillis() - 100, UPSTREAM_TIMEOUT.toMillis() + 2500);

    // truncation: 100 task addresses don't fit 512 bytes; dig retries over TCP by itself
    Dig tc = dig(c, "+ignore", "+noedns", "tasks.big");
    assertThat(tc.flags()).contains("tc");
    assertThat(tc.answers()).hasSize(30);
    assertThat(dig(c, "tasks.big").answers()).hasSize(100);
    assertThat(dig(c, "+noedns", "tasks.big").answers()).as("after TC, over TCP").hasSize(100);

    // a second endpoint of the same container: idempotent, and Leave of one keeps it
    assertThat(this.<Ack>ask(Addresses.DNS_INJECT, new InjectDns(CLIENT_ID, key, EP2)).detail())
        .startsWith("already injected into " + key);
    assertThat(this.<Ack>ask(Addresses.DNS_EJECT, new EjectDns(key, EP2)).detail()).startsWith("kept " + key);
    assertThat(dig(c, "my-name").answers()).hasSize(2);

    // Leave of the last: our table goes, Docker's rules and resolver stay and answer again
    assertThat(this.<Ack>ask(Addresses.DNS_EJECT, new EjectDns(key, EP1)).detail()).isEqualTo("ejected from " + key);
    assertThat(tables(c)).doesNotContain(DnsNat.TABLE);
    assertThat(natRules(c, iptables)).isEqualTo(dockerNat);
    assertThat(dig(c, "my-name").status()).isEqualTo("NXDOMAIN");
    assertThat(dig(c, "outside.example").answers()).containsExactly(FakeDockerResolver.OUTSIDE);
    assertThat(dns.served()).isZero();
    // the etcd records still name the endpoint: no pass re-injects it before they catch up
    wakeAndSettle();
    assertThat(dns.served()).isZero();
    assertThat(batches).anySatisfy(b -> assertThat(b.text()).contains("dnat to 127.0.0.11:"))
        .anySatisfy(b -> assertThat(b.text()).contains("delete table ip " + DnsNat.TABLE))
        .allSatisfy(b -> assertThat(b.ok()).isTrue());
  }

  @Test
  void whenSomethingHoldsUdp53TheListenerTakesAnotherPortAndOurDnatStillBeatsDockers() throws Exception {
    String c = ns.add("c");
    String key = "/var/run/netns/" + c;
    FakeDockerResolver docker = fake(key);
    dockerRules(c, "iptables", docker);
    java.nio.channels.DatagramChannel squatter = switcher.submit(java.nio.file.Path.of(key), -1, () -> {
      java.nio.channels.DatagramChannel d = java.nio.channels.DatagramChannel.open(
          java.net.StandardProtocolFamily.INET);
      d.bind(new java.net.InetSocketAddress(DnsListener.DOCKER_DNS, 53));
      return d;
    }).get();
    try (squatter) {
      writeCluster(key);
      deployDns();
      Ack ack = ask(Addresses.DNS_INJECT, new InjectDns(CLIENT_ID, key, EP1));
      assertThat(ack.detail()).startsWith("injected into " + key).doesNotContain("udp 53,").contains("tcp 53)");
      awaitNames();
      String table = listTable(c);
      assertThat(table).containsPattern("udp dport 53 counter packets \\d+ bytes \\d+ dnat to 127\\.0\\.0\\.11:\\d+")
          .doesNotContainPattern("udp dport 53 counter packets \\d+ bytes \\d+ dnat to 127\\.0\\.0\\.11:53\\n")
          .contains("tcp dport 53 counter packets 0 bytes 0 notrack").doesNotContain("udp dport 53 counter packets 0 bytes 0 notrack");
      assertThat(dig(c, "my-name").answers()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
      assertThat(dig(c, "outside.example").answers()).containsExactly(FakeDockerResolver.OUTSIDE);
      assertThat(dig(c, "nosuch.example").status()).isEqualTo("NXDOMAIN");
      assertThat(dig(c, "+tcp", "my-name").answers()).hasSize(2);
      assertThat(counted(c, "dnat")).as("UDP went through our DNAT").isGreaterThanOrEqualTo(3);
      assertThat(this.<Ack>ask(Addresses.DNS_EJECT, new EjectDns(key, EP1)).detail()).isEqualTo("ejected from " + key);
      assertThat(dig(c, "my-name").status()).isEqualTo("NXDOMAIN");
    }
  }

  @Test
  void recordsInjectAtStartAStopHandsBackToDockerAndARestartReinjectsWithinSeconds() throws Exception {
    String c = ns.add("c");
    String key = "/var/run/netns/" + c;
    FakeDockerResolver docker = fake(key);
    dockerRules(c, "iptables", docker);
    writeCluster(key);
    // the endpoint record NetworkApi writes at Join carries the SandboxKey: no InjectDns at all
    deployDns();
    await(() -> dns.served() == 1, "injection from the records");
    assertThat(dig(c, "my-name").answers()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");

    // orderly stop: our DNAT goes, Docker's resolver answers meanwhile
    vertx.undeploy(dnsDeployment).await(20, TimeUnit.SECONDS);
    dnsDeployment = null;
    assertThat(tables(c)).doesNotContain(DnsNat.TABLE);
    assertThat(dig(c, "my-name").status()).isEqualTo("NXDOMAIN");
    assertThat(dig(c, "outside.example").answers()).containsExactly(FakeDockerResolver.OUTSIDE);

    // a crash leaves our table pointing at a listener that is gone
    DnsNat.Result r = DnsNat.nft(key, DnsNat.tableScript(53, 53));
    assertThat(r.exit()).as(r.err()).isZero();
    assertThat(dig(c, "+tries=1", "+time=1", "my-name").status()).isEqualTo("unreachable");

    long t0 = System.nanoTime();
    deployDns();
    await(() -> dns.served() == 1, "re-injection after the restart");
    await(() -> "NOERROR".equals(dig(c, "my-name").status()), "answers after the restart");
    long ms = (System.nanoTime() - t0) / 1_000_000;
    assertThat(ms).as("re-injected within seconds").isLessThan(5000);
    assertThat(dig(c, "my-name").answers()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
    assertThat(dig(c, "outside.example").answers()).containsExactly(FakeDockerResolver.OUTSIDE);
    assertThat(listTable(c)).as("one table, replaced, not added to").containsOnlyOnce("table ip")
        .containsOnlyOnce("chain output {").containsOnlyOnce("chain raw-output {");

    // Leave clears the SandboxKey in the endpoint record: the next pass ejects
    JsonObject ep = endpointRecord(EP1, key).put("SandboxKey", "");
    store.put(schema.endpoint(NODE, EP1), ep.encode()).await(5, TimeUnit.SECONDS);
    store.put(schema.dockerContainer(NODE, CLIENT_ID), client("").toJson()).await(5, TimeUnit.SECONDS);
    await(() -> dns.served() == 0, "ejection when the records say the container left");
    await(() -> !tables(c).contains(DnsNat.TABLE), "our table removed");
    assertThat(dig(c, "my-name").status()).isEqualTo("NXDOMAIN");

    // the container is gone: a namespace that disappears is ejected by the next pass
    store.put(schema.endpoint(NODE, EP1), endpointRecord(EP1, key).encode()).await(5, TimeUnit.SECONDS);
    await(() -> dns.served() == 1, "injection again");
    ns.delete(c);
    vertx.eventBus().publish(Addresses.STATE_CHANGED,
        new io.flannelnp.etcd.EtcdMessage.StateChanged(0, java.util.Set.of(), true));
    await(() -> dns.served() == 0, "ejection of a vanished namespace");
  }

  @Test
  void anEndpointRecordWithASandboxKeyBeforeItsNamespaceExistsIsInjectedWhenItAppears() throws Exception {
    String key = "/var/run/netns/" + ns.stem() + "-c";
    writeCluster(key); // what NetworkApi writes at Join, before runc mounts the namespace (Docker 20.10)
    deployDns();
    Thread.sleep(400);
    assertThat(dns.served()).isZero();
    String c = ns.add("c");
    await(() -> dns.served() == 1, "injection from the records once the namespace appeared");
    awaitNames();
    assertThat(dig(c, "my-name").answers()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
  }

  @Test
  void injectDnsBeforeTheNamespaceExistsWaitsForItAndItsLoopbackAndGivesUpAfterTheLimit() throws Exception {
    writeCluster("");
    deployDns();
    String c = ns.stem() + "-late";
    String key = "/var/run/netns/" + c;
    Ack ack = ask(Addresses.DNS_INJECT, new InjectDns(CLIENT_ID, key, EP1));
    assertThat(ack.detail()).startsWith("waiting up to 3 s for " + key);
    Thread.sleep(300);
    assertThat(dns.served()).isZero();
    // as Docker 20.10 does it: the namespace is mounted first, its loopback comes up a moment
    // later; a socket bound to 127.0.0.11 before that would answer from 127.0.0.1, which
    // connected clients (glibc, dig) drop
    Netns.run("ip", "netns", "add", c).ok();
    try {
      Thread.sleep(500);
      assertThat(dns.served()).as("not before the loopback is up").isZero();
      Netns.run("ip", "-n", c, "link", "set", "dev", "lo", "up").ok();
      await(() -> dns.served() == 1, "injection once the namespace and its loopback are there");
      awaitNames();
      Dig first = dig(c, "my-name");
      assertThat(first.answers()).as(() -> first.raw() + "\nlistener: " + dns.listener(key).stats)
          .containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
      // no Docker resolver in this namespace: forwarding fails at once with SERVFAIL
      long t0 = System.nanoTime();
      assertThat(dig(c, "outside.example").status()).isEqualTo("SERVFAIL");
      assertThat((System.nanoTime() - t0) / 1_000_000).isLessThan(UPSTREAM_TIMEOUT.toMillis());
      assertThat(this.<Ack>ask(Addresses.DNS_EJECT, new EjectDns(key, "")).detail()).isEqualTo("ejected from " + key);
    } finally {
      Netns.run("ip", "netns", "del", c);
    }

    // a namespace that never comes: given up after the limit, nothing left behind
    String never = "/var/run/netns/" + ns.stem() + "-never";
    assertThat(this.<Ack>ask(Addresses.DNS_INJECT, new InjectDns(CLIENT_ID, never, EP2)).detail())
        .startsWith("waiting");
    Thread.sleep(3500);
    assertThat(dns.listener(never)).isNull();
    assertThat(dns.served()).isZero();
  }

  @Test
  void thePeriodicPassRecreatesOurTableWhenItIsRemovedFlushedOrOutrankedAndAQuietPassChangesNothing()
      throws Exception {
    String c = ns.add("c");
    String key = "/var/run/netns/" + c;
    FakeDockerResolver docker = fake(key);
    dockerRules(c, "iptables", docker);
    writeCluster(key);
    List<ReconcileReport> periodic = periodicReports();
    List<String> warnings = new CopyOnWriteArrayList<>();
    Handler log = new Handler() {
      @Override
      public void publish(LogRecord r) {
        if (r.getLevel() == Level.WARNING) {
          warnings.add(r.getMessage());
        }
      }

      @Override
      public void flush() {}

      @Override
      public void close() {}
    };
    Logger.getLogger(DnsVerticle.class.getName()).addHandler(log);
    try {
      deployDns(TestSandboxes.options().withUpstreamTimeout(UPSTREAM_TIMEOUT).withResync(RESYNC));
      await(() -> dns.served() == 1, "injection from the records");
      awaitNames();
      assertThat(dig(c, "my-name").answers()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
      String ours = ns.exec(c, "nft", "-s", "list", "table", "ip", DnsNat.TABLE).ok().out();
      double missing = repairs("missing");
      double altered = repairs("altered");

      // an operator's or a tool's "nft delete table" in the container
      repairedWithinAPeriod(c, periodic, "1 missing, 0 altered", () -> ns.exec(c, "nft", "delete", "table", "ip", DnsNat.TABLE).ok());
      assertThat(ns.exec(c, "nft", "-s", "list", "table", "ip", DnsNat.TABLE).ok().out()).isEqualTo(ours);
      // "nft flush table": the chains stay, empty, and Docker's DNAT answers
      repairedWithinAPeriod(c, periodic, "0 missing, 1 altered", () -> ns.exec(c, "nft", "flush", "table", "ip", DnsNat.TABLE).ok());
      assertThat(ns.exec(c, "nft", "-s", "list", "table", "ip", DnsNat.TABLE).ok().out()).isEqualTo(ours);
      // our rules, but in a chain after Docker's (-100): refilling cannot move a chain, the table is replaced
      repairedWithinAPeriod(c, periodic, "0 missing, 1 altered", () -> {
        DnsNat.Result r = DnsNat.nft(key, DnsNat.removeScript() + DnsNat.tableScript(53, 53)
            .replace("priority " + DnsNat.PRIORITY + ";", "priority 0;"));
        assertThat(r.exit()).as(r.err()).isZero();
      });
      assertThat(ns.exec(c, "nft", "-s", "list", "table", "ip", DnsNat.TABLE).ok().out()).isEqualTo(ours);
      assertThat(ourChain(c, "output").getInteger("prio")).isEqualTo(DnsNat.PRIORITY);
      assertThat(warnings.stream().filter(w -> w.contains(" was missing: re-created")).count()).as("%s", warnings)
          .isEqualTo(1);
      assertThat(warnings.stream().filter(w -> w.contains(" was altered: re-created")).count()).as("%s", warnings)
          .isEqualTo(2);
      assertThat(repairs("missing") - missing).isEqualTo(1);
      assertThat(repairs("altered") - altered).isEqualTo(2);

      // nothing wrong: two more periodic passes check and change nothing (same rule handles, no nft run)
      String handles = ns.exec(c, "nft", "-a", "-s", "list", "table", "ip", DnsNat.TABLE).ok().out();
      int nfts = batches.size();
      int warned = warnings.size();
      int seen = periodic.size();
      await(() -> periodic.size() >= seen + 2, "two more periodic passes", RESYNC.multipliedBy(3));
      assertThat(periodic.subList(seen, seen + 2)).allSatisfy(r -> assertThat(r.summary())
          .contains("1 table(s) checked in ").contains(" ms, 0 re-created").doesNotContain("failed"));
      assertThat(batches).hasSize(nfts);
      assertThat(warnings).hasSize(warned);
      assertThat(ns.exec(c, "nft", "-a", "-s", "list", "table", "ip", DnsNat.TABLE).ok().out()).isEqualTo(handles);
      assertThat(dig(c, "my-name").answers()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
      assertThat(dig(c, "outside.example").answers()).containsExactly(FakeDockerResolver.OUTSIDE);
    } finally {
      Logger.getLogger(DnsVerticle.class.getName()).removeHandler(log);
    }
  }

  /** Breaks our table, then waits for a periodic pass to report the repair and dig to get our names again. */
  void repairedWithinAPeriod(String c, List<ReconcileReport> periodic, String what, ThrowingRunnable damage)
      throws Exception {
    int seen = periodic.size();
    long t0 = System.nanoTime();
    damage.run();
    await(() -> periodic.stream().skip(seen).anyMatch(r -> r.summary().contains("1 re-created (" + what)),
        "a periodic pass reporting the repair (" + what + ")", RESYNC.plusSeconds(5));
    Dig d = dig(c, "my-name");
    long ms = (System.nanoTime() - t0) / 1_000_000;
    assertThat(d.answers()).as(d.raw()).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
    assertThat(ms).as("repaired within the period").isLessThan(RESYNC.toMillis() + 3000);
  }

  @Test
  void thePeriodicCheckOfAHundredServedSandboxesWithLibnftablesChangesNothingAndTakesMilliseconds() throws Exception {
    writeCluster("");
    List<String> suffixes = new ArrayList<>();
    for (int i = 0; i < 100; i++) {
      suffixes.add("s" + i);
    }
    List<String> names = ns.addAll(suffixes);
    for (int i = 0; i < names.size(); i++) {
      String ep = String.format("e%063d", i);
      put(schema.endpoint(NODE, ep), endpointRecord(ep, "/var/run/netns/" + names.get(i)).encode());
    }
    for (String n : names) {
      ns.ip(n, "link", "set", "dev", "lo", "up").ok();
    }
    List<ReconcileReport> periodic = periodicReports();
    deployDns(TestSandboxes.options().withUpstreamTimeout(UPSTREAM_TIMEOUT).withResync(RESYNC));
    await(() -> dns.served() == 100, "injection into 100 sandboxes", Duration.ofSeconds(60));
    assertThat(TableReader.available()).as("libnftables: " + TableReader.loadError()).isTrue();
    int nfts = batches.size();
    // the first pass may have begun before the last injection: the three after it
    int seen = periodic.size() + 1;
    await(() -> periodic.size() >= seen + 3, "three periodic passes", RESYNC.multipliedBy(6));
    List<Double> ms = new ArrayList<>();
    for (ReconcileReport r : periodic.subList(seen, seen + 3)) {
      Matcher m = Pattern.compile("100 table\\(s\\) checked in ([0-9.]+) ms, 0 re-created").matcher(r.summary());
      assertThat(m.find()).as(r.summary()).isTrue();
      ms.add(Double.parseDouble(m.group(1)));
    }
    System.out.println("periodic DNS table check of 100 served sandboxes: " + ms + " ms (whole pass "
        + periodic.get(seen + 2).micros() / 1000 + " ms)");
    assertThat(batches).as("no nft transaction").hasSize(nfts);
    assertThat(ms).as("a check of 100 sandboxes").allSatisfy(t -> assertThat(t).isLessThan(2000.0));
    vertx.undeploy(dnsDeployment).await(60, TimeUnit.SECONDS);
    dnsDeployment = null;
    ns.deleteAll(names);
  }

  List<ReconcileReport> periodicReports() {
    List<ReconcileReport> periodic = new CopyOnWriteArrayList<>();
    vertx.eventBus().<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, m -> {
      if ("dns".equals(m.body().plane()) && m.body().periodic() && m.body().ok()) {
        periodic.add(m.body());
      }
    });
    return periodic;
  }

  /** fnp_dns_table_repairs{what} so far (the registry is the JVM's: compare before and after). */
  static double repairs(String what) {
    io.micrometer.core.instrument.Counter counter = io.flannelnp.admin.Metrics.REGISTRY.find("fnp_dns_table_repairs")
        .tag("what", what).counter();
    return counter == null ? 0 : counter.count();
  }

  interface ThrowingRunnable {
    void run() throws Exception;
  }

  // ---- fixtures ----------------------------------------------------------------------------------

  /** The six-examples world of DnsNamesTest, scenario 1, plus "big" (100 DNSRR tasks). */
  void writeCluster(String clientSandbox) throws Exception {
    put(schema.dockerNetwork(WEB), new DockerNetwork(WEB, "web", "flannel-np:latest", "fl-web", "10.1.0.0/24").toJson());
    put(schema.dockerNetwork(INTERNAL),
        new DockerNetwork(INTERNAL, "internal", "overlay", "", "10.2.0.0/24").toJson()); // an ordinary overlay
    put(schema.dockerService("svc-vip"), new ServiceRecord("svc-vip", "my-name", EndpointMode.VIP,
        Map.of(WEB, "10.1.0.2", INTERNAL, "10.2.0.2"), Map.of()).toJson());
    put(schema.dockerService("svc-rr"), new ServiceRecord("svc-rr", "my-alias", EndpointMode.DNSRR, Map.of(),
        Map.of()).toJson());
    put(schema.dockerService("svc-big"), new ServiceRecord("svc-big", "big", EndpointMode.DNSRR, Map.of(),
        Map.of()).toJson());
    put(schema.dockerContainer(NODE, "c-my-name"), new ContainerRecord("c-my-name", "my-name", "c-my-name", NODE, "",
        "", "", "", "running", "", Map.of(WEB, at("10.1.0.5", "my-alias"), INTERNAL, at("10.2.0.5", "my-alias")))
        .toJson());
    for (int slot = 1; slot <= 2; slot++) {
      String id = "c-rr-" + slot;
      put(schema.dockerContainer("node-2", id), new ContainerRecord(id, "my-alias." + slot + ".task" + slot, id,
          "node-2", "svc-rr", "my-alias", "task" + slot, "my-alias." + slot + ".task" + slot, "running", "",
          Map.of(WEB, at("10.1.0.1" + slot), INTERNAL, at("10.2.0.1" + slot))).toJson());
    }
    for (int i = 1; i <= 100; i++) {
      String id = "c-big-" + i;
      put(schema.dockerContainer("node-2", id), new ContainerRecord(id, "big." + i + ".t" + i, id, "node-2",
          "svc-big", "big", "t" + i, "big." + i + ".t" + i, "running", "", Map.of(INTERNAL, at("10.2.1." + i)))
          .toJson());
    }
    put(schema.dockerContainer(NODE, CLIENT_ID), client(clientSandbox).toJson());
    if (!clientSandbox.isEmpty()) {
      put(schema.endpoint(NODE, EP1), endpointRecord(EP1, clientSandbox).encode());
    }
  }

  static ContainerRecord client(String sandbox) {
    return new ContainerRecord(CLIENT_ID, "client", "client", NODE, "", "", "", "", "running", sandbox,
        Map.of(WEB, new Attachment("10.1.0.100", EP1, List.of(), ""),
            INTERNAL, new Attachment("10.2.0.100", "", List.of(), "")));
  }

  /** What NetworkApi writes at Join. */
  static JsonObject endpointRecord(String ep, String sandbox) {
    return new JsonObject().put("NetworkID", WEB).put("FlannelID", "fl-web").put("EndpointID", ep)
        .put("Address", "10.1.0.100").put("MacAddress", "").put("Node", NODE).put("SandboxKey", sandbox);
  }

  static Attachment at(String ip, String... aliases) {
    return new Attachment(ip, "", List.of(aliases), "");
  }

  void put(String key, String value) throws Exception {
    store.put(key, value).await(5, TimeUnit.SECONDS);
  }

  void deployDns() throws Exception {
    deployDns(TestSandboxes.options().withUpstreamTimeout(UPSTREAM_TIMEOUT).withNetnsWait(Duration.ofSeconds(3)));
  }

  void deployDns(DnsListener.Options o) throws Exception {
    dns = new DnsVerticle(NODE, true, 600, schema, o);
    dnsDeployment = vertx.deployVerticle(dns).await(20, TimeUnit.SECONDS);
  }

  FakeDockerResolver fake(String key) throws Exception {
    FakeDockerResolver f = FakeDockerResolver.start(switcher, key);
    fakes.add(f);
    return f;
  }

  /** Docker's rules exactly as libnetwork installs them (docker-contract.md §5.2). */
  void dockerRules(String c, String iptables, FakeDockerResolver d) {
    String u = String.valueOf(d.udpPort);
    String t = String.valueOf(d.tcpPort);
    List<List<String>> rules = List.of(
        List.of("-t", "nat", "-N", "DOCKER_OUTPUT"),
        List.of("-t", "nat", "-I", "OUTPUT", "-d", "127.0.0.11", "-j", "DOCKER_OUTPUT"),
        List.of("-t", "nat", "-N", "DOCKER_POSTROUTING"),
        List.of("-t", "nat", "-I", "POSTROUTING", "-d", "127.0.0.11", "-j", "DOCKER_POSTROUTING"),
        List.of("-t", "nat", "-I", "DOCKER_OUTPUT", "-d", "127.0.0.11", "-p", "udp", "--dport", "53", "-j", "DNAT",
            "--to-destination", "127.0.0.11:" + u),
        List.of("-t", "nat", "-I", "DOCKER_POSTROUTING", "-s", "127.0.0.11", "-p", "udp", "--sport", u, "-j", "SNAT",
            "--to-source", ":53"),
        List.of("-t", "nat", "-I", "DOCKER_OUTPUT", "-d", "127.0.0.11", "-p", "tcp", "--dport", "53", "-j", "DNAT",
            "--to-destination", "127.0.0.11:" + t),
        List.of("-t", "nat", "-I", "DOCKER_POSTROUTING", "-s", "127.0.0.11", "-p", "tcp", "--sport", t, "-j", "SNAT",
            "--to-source", ":53"));
    for (List<String> r : rules) {
      List<String> argv = new ArrayList<>(List.of("ip", "netns", "exec", c, iptables));
      argv.addAll(r);
      Netns.run(argv).ok();
    }
  }

  String natRules(String c, String iptables) {
    return Netns.run("ip", "netns", "exec", c, iptables + "-save", "-t", "nat").ok().out().lines()
        .filter(l -> l.startsWith("-A ")).reduce("", (a, b) -> a + b + "\n");
  }

  String tables(String c) {
    return ns.exec(c, "nft", "list", "tables").ok().out();
  }

  String listTable(String c) {
    return ns.exec(c, "nft", "list", "table", "ip", DnsNat.TABLE).ok().out();
  }

  JsonObject ourChain(String c, String name) {
    JsonArray items = new JsonObject(ns.exec(c, "nft", "-j", "list", "table", "ip", DnsNat.TABLE).ok().out())
        .getJsonArray("nftables");
    for (Object o : items) {
      JsonObject chain = ((JsonObject) o).getJsonObject("chain");
      if (chain != null && name.equals(chain.getString("name"))) {
        return chain;
      }
    }
    throw new AssertionError("no chain " + name + " in our table");
  }

  /** Packets counted by the rules of our table that end in {@code verdict} ("notrack", "dnat"). */
  long counted(String c, String verdict) {
    long n = 0;
    for (Object o : new JsonObject(ns.exec(c, "nft", "-j", "list", "table", "ip", DnsNat.TABLE).ok().out())
        .getJsonArray("nftables")) {
      JsonObject rule = ((JsonObject) o).getJsonObject("rule");
      if (rule == null || !rule.encode().contains("\"" + verdict + "\"")) {
        continue;
      }
      for (Object e : rule.getJsonArray("expr")) {
        JsonObject counter = ((JsonObject) e).getJsonObject("counter");
        if (counter != null) {
          n += counter.getLong("packets");
        }
      }
    }
    return n;
  }

  /** Until the listener sees every record written (the watch delivers them one by one). */
  void awaitNames() throws InterruptedException {
    await(() -> {
      DnsListener l = dns.listener(dnsKeyOfOnlyEntry());
      return l != null && l.view.names().resolve("tasks.big", l.view.scope(), false).length == 100;
    }, "every record in the listener's view");
  }

  List<String> scope() {
    DnsListener l = dns.listener(dnsKeyOfOnlyEntry());
    return l == null ? List.of() : l.view.scope().networkIds();
  }

  String dnsKeyOfOnlyEntry() {
    for (String n : Netns.list()) {
      if (n.startsWith(ns.stem()) && dns.listener("/var/run/netns/" + n) != null) {
        return "/var/run/netns/" + n;
      }
    }
    return "";
  }

  void wakeAndSettle() throws InterruptedException {
    vertx.eventBus().publish(Addresses.STATE_CHANGED,
        new io.flannelnp.etcd.EtcdMessage.StateChanged(0, java.util.Set.of(), true));
    Thread.sleep(500);
  }

  @SuppressWarnings("unchecked")
  <T> T ask(String address, Object body) throws Exception {
    return (T) vertx.eventBus().request(address, body, new DeliveryOptions().setSendTimeout(30_000))
        .await(35, TimeUnit.SECONDS).body();
  }

  static void await(BooleanSupplier cond, String what) throws InterruptedException {
    await(cond, what, Duration.ofSeconds(10));
  }

  static void await(BooleanSupplier cond, String what, Duration limit) throws InterruptedException {
    long deadline = System.nanoTime() + limit.toNanos();
    while (!cond.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("timed out waiting for " + what);
      }
      Thread.sleep(20);
    }
  }

  /** One dig run: status (or "unreachable"), flags, answer data and TTLs, the server line. */
  record Dig(String status, List<String> flags, List<String> answers, List<Integer> ttls, String server, String raw) {}

  private static final Pattern STATUS = Pattern.compile("status: (\\w+),");
  private static final Pattern FLAGS = Pattern.compile(";; flags: ([a-z ]+);");
  private static final Pattern SERVER = Pattern.compile(";; SERVER: (\\S+)");

  Dig dig(String c, String... args) {
    List<String> argv = new ArrayList<>(List.of("ip", "netns", "exec", c, "dig", "@127.0.0.11", "+time=5",
        "+tries=1"));
    argv.addAll(List.of(args));
    Netns.Result r = Netns.run(argv);
    String out = r.out();
    Matcher m = STATUS.matcher(out);
    if (!m.find()) {
      return new Dig("unreachable", List.of(), List.of(), List.of(), "", out + r.err());
    }
    String status = m.group(1);
    Matcher f = FLAGS.matcher(out);
    List<String> flags = f.find() ? List.of(f.group(1).trim().split(" ")) : List.of();
    Matcher s = SERVER.matcher(out);
    String server = s.find() ? s.group(1) : "";
    List<String> answers = new ArrayList<>();
    List<Integer> ttls = new ArrayList<>();
    boolean inAnswer = false;
    for (String line : out.split("\n")) {
      if (line.startsWith(";; ANSWER SECTION:")) {
        inAnswer = true;
        continue;
      }
      if (inAnswer) {
        if (line.isBlank() || line.startsWith(";")) {
          inAnswer = false;
          continue;
        }
        String[] p = line.trim().split("\\s+");
        ttls.add(Integer.parseInt(p[1]));
        answers.add(p[p.length - 1]);
      }
    }
    return new Dig(status, flags, answers, ttls, server, out);
  }
}
