package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.model.ClusterModel;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.ContainerRecord.Attachment;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;

/**
 * Docker's name semantics (docker-contract.md §5.3) and the six examples of the old plugin's
 * DNS_DOCKER_COMPATIBILITY_MODE comment (seed-impl.md §6.6), each in both modes, on the pure
 * resolver: no sockets, no etcd.
 *
 * <p>The scenarios of the comment: networks "web" and "internal"; the asking container is on
 * both; service "my-name" (VIP mode) and service "my-alias" (DNSRR, two tasks) on both.
 * Addresses: web 10.1.0.0/24, internal 10.2.0.0/24; VIPs .2, the container "my-name" .5, the
 * tasks of "my-alias" .11 and .12, the asking container .100.
 */
class DnsNamesTest {
  static final String WEB = "net-web-000000000000000000001";
  static final String INTERNAL = "net-internal-0000000000000002";
  static final String OVERLAY = "net-overlay-00000000000000003";
  static final String INGRESS = "net-ingress-00000000000000004";
  static final String NODE = "node-1";

  static final DockerNetwork WEB_NET = new DockerNetwork(WEB, "web", "flannel-np:latest", "fl-web", "10.1.0.0/24");
  static final DockerNetwork INTERNAL_NET = new DockerNetwork(INTERNAL, "internal", "flannel-np:latest", "fl-int",
      "10.2.0.0/24");
  static final ServiceRecord VIP_SERVICE = new ServiceRecord("svc-vip", "my-name", EndpointMode.VIP,
      Map.of(WEB, "10.1.0.2", INTERNAL, "10.2.0.2"), Map.of());
  static final ServiceRecord RR_SERVICE = new ServiceRecord("svc-rr", "my-alias", EndpointMode.DNSRR, Map.of(),
      Map.of());

  // ---- the six examples, both modes ------------------------------------------------------------

  /** Scenario 1: container "my-name" on both networks with the alias "my-alias" on both. */
  static World scenario1() {
    return base().container(container("c-my-name", "my-name", Map.of(WEB, at("10.1.0.5", "my-alias"),
        INTERNAL, at("10.2.0.5", "my-alias"))));
  }

  /** Scenario 2: container "my-name" on web only. */
  static World scenario2() {
    return base().container(container("c-my-name", "my-name", Map.of(WEB, at("10.1.0.5"))));
  }

  /** Scenario 3: container "my-name.internal" on web only. */
  static World scenario3() {
    return base().container(container("c-my-name-internal", "my-name.internal", Map.of(WEB, at("10.1.0.6"))));
  }

  @Nested
  class CompatibilityModeTrue {
    final boolean compat = true;

    @Test
    void example1MyNameGivesTheContainerAndTheVipOfInternalOnly() {
      World w = scenario1();
      assertThat(w.resolve("my-name", compat)).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
    }

    @Test
    void example2MyNameDotInternalGivesTheSameAddresses() {
      World w = scenario1();
      assertThat(w.resolve("my-name.internal", compat)).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
    }

    @Test
    void example3MyNameDotWebGivesTheContainerAndTheVipOfWeb() {
      World w = scenario1();
      assertThat(w.resolve("my-name.web", compat)).containsExactlyInAnyOrder("10.1.0.5", "10.1.0.2");
    }

    @Test
    void example4MyAliasGivesTheAliasedContainerAndTheTasksOnInternal() {
      World w = scenario1();
      assertThat(w.resolve("my-alias", compat)).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.11", "10.2.0.12");
    }

    @Test
    void example5ContainerOnWebOnlyMyNameGivesOnlyTheVipOfInternal() {
      World w = scenario2();
      assertThat(w.resolve("my-name", compat)).containsExactly("10.2.0.2");
    }

    @Test
    void example6ContainerNamedMyNameDotInternalOnWebWinsOverTheServiceOnInternal() {
      World w = scenario3();
      assertThat(w.resolve("my-name.internal", compat)).containsExactly("10.1.0.6");
    }
  }

  @Nested
  class CompatibilityModeFalse {
    final boolean compat = false;

    @Test
    void example1MyNameGivesTheContainersAndVipsOfBothNetworks() {
      World w = scenario1();
      assertThat(w.resolve("my-name", compat)).containsExactlyInAnyOrder("10.1.0.5", "10.1.0.2", "10.2.0.5",
          "10.2.0.2");
    }

    /**
     * The old comment says "Example 2: We get the IPs and VIPs from both networks", but its own
     * code (resolveName: a named network must equal the network iterated), Docker (sandbox.go
     * ResolveName) and the issue ("{@code <name>.<network name>}: only that network") all give
     * only the named network: a network-qualified name is never merged across networks.
     */
    @Test
    void example2MyNameDotInternalGivesOnlyInternal() {
      World w = scenario1();
      assertThat(w.resolve("my-name.internal", compat)).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.2");
    }

    @Test
    void example3MyNameDotWebIsTheSameAsDocker() {
      World w = scenario1();
      assertThat(w.resolve("my-name.web", compat)).containsExactlyInAnyOrder("10.1.0.5", "10.1.0.2");
    }

    @Test
    void example4MyAliasGivesAddressesOfBothNetworks() {
      World w = scenario1();
      assertThat(w.resolve("my-alias", compat)).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.11", "10.2.0.12",
          "10.1.0.5", "10.1.0.11", "10.1.0.12");
    }

    @Test
    void example5GivesTheVipOfBothNetworksAndTheContainerOnWeb() {
      World w = scenario2();
      assertThat(w.resolve("my-name", compat)).containsExactlyInAnyOrder("10.2.0.2", "10.1.0.2", "10.1.0.5");
    }

    @Test
    void example6IsTheSameAsDocker() {
      World w = scenario3();
      assertThat(w.resolve("my-name.internal", compat)).containsExactly("10.1.0.6");
    }
  }

  // ---- every kind of name ----------------------------------------------------------------------

  @Test
  void serviceNameIsTheVipInVipModeAndTheRunningTasksInDnsrrMode() {
    World w = base();
    assertThat(w.resolve("my-name", true)).containsExactly("10.2.0.2");
    assertThat(w.resolve("my-name.web", true)).containsExactly("10.1.0.2");
    assertThat(w.resolve("my-alias", true)).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12");
    assertThat(w.resolve("my-alias", false)).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12", "10.1.0.11",
        "10.1.0.12");
    // a stopping task has left the records; a task of another node counts
    w.container(task("c-rr-3", "svc-rr", "my-alias", 3, "running", "node-2", Map.of(INTERNAL, at("10.2.0.13"))));
    w.container(task("c-rr-4", "svc-rr", "my-alias", 4, "stopping", NODE, Map.of(INTERNAL, at("10.2.0.14"))));
    assertThat(w.resolve("my-alias", true)).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12", "10.2.0.13");
  }

  @Test
  void tasksDotServiceIsEveryRunningTaskInBothModes() {
    World w = base();
    w.container(task("c-vip-1", "svc-vip", "my-name", 1, "running", NODE, Map.of(WEB, at("10.1.0.21"),
        INTERNAL, at("10.2.0.21"))));
    w.container(task("c-vip-2", "svc-vip", "my-name", 2, "running", "node-2", Map.of(WEB, at("10.1.0.22"),
        INTERNAL, at("10.2.0.22"))));
    assertThat(w.resolve("my-name", true)).containsExactly("10.2.0.2");
    assertThat(w.resolve("tasks.my-name", true)).containsExactlyInAnyOrder("10.2.0.21", "10.2.0.22");
    assertThat(w.resolve("tasks.my-name.web", true)).containsExactlyInAnyOrder("10.1.0.21", "10.1.0.22");
    assertThat(w.resolve("tasks.my-name", false)).containsExactlyInAnyOrder("10.2.0.21", "10.2.0.22", "10.1.0.21",
        "10.1.0.22");
    assertThat(w.resolve("tasks.my-alias", true)).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12");
    assertThat(w.resolve("tasks.nosuch", true)).isEmpty();
  }

  @Test
  void serviceAliasesResolveLikeTheServiceOnTheirNetworkOnly() {
    World w = base();
    w.service(new ServiceRecord("svc-vip", "my-name", EndpointMode.VIP, Map.of(WEB, "10.1.0.2", INTERNAL, "10.2.0.2"),
        Map.of(WEB, List.of("front"))));
    w.service(new ServiceRecord("svc-rr", "my-alias", EndpointMode.DNSRR, Map.of(), Map.of(INTERNAL, List.of("back"))));
    w.container(task("c-vip-1", "svc-vip", "my-name", 1, "running", NODE, Map.of(WEB, at("10.1.0.21"))));
    assertThat(w.resolve("front", true)).containsExactly("10.1.0.2");
    assertThat(w.resolve("front.internal", true)).isEmpty();
    assertThat(w.resolve("tasks.front", true)).containsExactly("10.1.0.21");
    assertThat(w.resolve("back", true)).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12");
    assertThat(w.resolve("tasks.back", true)).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12");
    assertThat(w.resolve("back.web", true)).isEmpty();
  }

  @Test
  void containerNameTaskNameHostnameShortIdAndNetworkAliasesGiveTheAddressOnThatNetwork() {
    World w = base();
    String id = "4f2a9c1b7d3e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    w.container(new ContainerRecord(id, "/db", "db-host", NODE, "", "", "", "", "running", "",
        Map.of(INTERNAL, at("10.2.0.30", "database", "pg"))));
    for (String n : List.of("db", "db-host", "4f2a9c1b7d3e", "database", "pg")) {
      assertThat(w.resolve(n, true)).as(n).containsExactly("10.2.0.30");
    }
    assertThat(w.resolve("4f2a9c1b7d3e5", true)).as("only the 12-character short ID").isEmpty();
    assertThat(w.resolve("db.internal", true)).containsExactly("10.2.0.30");
    assertThat(w.resolve("db.web", true)).isEmpty();
    // a task: <service>.<slot>.<task id>, dotted, found as a whole before any network split
    assertThat(w.resolve("my-alias.1.task1", true)).containsExactly("10.2.0.11");
    assertThat(w.resolve("my-alias.1.task1.web", true)).containsExactly("10.1.0.11");
  }

  @Test
  void namesAreCaseInsensitiveAndTheTrailingDotDoesNotMatter() {
    World w = scenario1();
    assertThat(w.resolve("MY-NAME.Web.", true)).containsExactlyInAnyOrder("10.1.0.5", "10.1.0.2");
    assertThat(w.resolve("Tasks.My-Alias", true)).containsExactlyInAnyOrder("10.2.0.11", "10.2.0.12");
  }

  @Test
  void aDottedNameIsTriedWholeThenWithTheLastLabelsAsTheNetwork() {
    World w = base();
    w.network(new DockerNetwork("net-dotted-000000000000000005", "a.b", "overlay", "", "10.5.0.0/24"));
    w.container(container("c-x", "x.y", Map.of("net-dotted-000000000000000005", at("10.5.0.7"))));
    w.container(container("c-x2", "x", Map.of("net-dotted-000000000000000005", at("10.5.0.8"))));
    w.asker(Map.of(WEB, at("10.1.0.100"), INTERNAL, at("10.2.0.100"), "net-dotted-000000000000000005",
        at("10.5.0.100")));
    assertThat(w.resolve("x.y", true)).containsExactly("10.5.0.7");
    assertThat(w.resolve("x.y.a.b", true)).containsExactly("10.5.0.7"); // "x.y" in network "a.b"
    assertThat(w.resolve("x.a.b", true)).containsExactly("10.5.0.8"); // "x" in network "a.b"
    assertThat(w.resolve("x.b", true)).isEmpty(); // no network "b"
  }

  @Test
  void onlyTheAskersNetworksAreInScopeOrdinaryOverlaysIncludedAndIngressNever() {
    World w = base();
    w.network(new DockerNetwork(OVERLAY, "backend", "overlay", "", "10.3.0.0/24"));
    w.network(new DockerNetwork(INGRESS, "ingress", "overlay", "", "10.0.0.0/24"));
    w.container(container("c-cache", "cache", Map.of(OVERLAY, at("10.3.0.9"), INGRESS, at("10.0.0.9"))));
    w.container(container("c-hidden", "hidden", Map.of("net-other-0000000000000000009", at("10.9.0.9"))));
    assertThat(w.resolve("cache", true)).as("asker not on the overlay").isEmpty();
    w.asker(Map.of(WEB, at("10.1.0.100"), OVERLAY, at("10.3.0.100"), INGRESS, at("10.0.0.100")));
    assertThat(w.resolve("cache", true)).containsExactly("10.3.0.9");
    assertThat(w.resolve("cache.backend", true)).containsExactly("10.3.0.9");
    assertThat(w.resolve("cache.ingress", true)).as("nothing is registered on ingress").isEmpty();
    assertThat(w.resolve("hidden", true)).isEmpty();
    assertThat(w.resolve("my-name", true)).as("internal is out of scope now").containsExactly("10.1.0.2");
    DnsNames.Scope s = w.scope();
    assertThat(s.networkIds()).containsExactly(OVERLAY, WEB, INGRESS); // backend < web, ingress last
  }

  @Test
  void unknownNamesAndEmptyScopesGiveNothing() {
    World w = scenario1();
    assertThat(w.resolve("nosuch", true)).isEmpty();
    assertThat(w.resolve("", true)).isEmpty();
    assertThat(w.names().resolveText("my-name", DnsNames.Scope.NONE, true)).isEmpty();
    assertThat(DnsNames.EMPTY.resolveText("my-name", w.scope(), true)).isEmpty();
  }

  @Test
  void ptrGivesNameDotNetworkForContainersAndTasksAndServiceDotNetworkForVips() {
    World w = scenario1();
    DnsNames n = w.names();
    DnsNames.Scope s = w.scope();
    assertThat(n.reverse(ip("10.2.0.5"), s, true)).containsExactly("my-name.internal");
    assertThat(n.reverse(ip("10.1.0.5"), s, true)).containsExactly("my-name.web");
    assertThat(n.reverse(ip("10.2.0.11"), s, true)).containsExactly("my-alias.1.task1.internal");
    assertThat(n.reverse(ip("10.1.0.2"), s, true)).containsExactly("my-name.web");
    assertThat(n.reverse(ip("10.2.0.2"), s, true)).containsExactly("my-name.internal");
    assertThat(n.reverse(ip("10.2.0.99"), s, true)).isEmpty();
    assertThat(n.reverse(ip("10.2.0.5"), new DnsNames.Scope(List.of(WEB)), true)).as("out of scope").isEmpty();
  }

  @Test
  void ptrOfAnAddressOnTwoNetworksFollowsTheMode() {
    World w = base();
    w.network(new DockerNetwork(OVERLAY, "backend", "overlay", "", "10.2.0.0/24")); // overlaps internal
    w.container(container("c-a", "a", Map.of(INTERNAL, at("10.2.0.50"))));
    w.container(container("c-b", "b", Map.of(OVERLAY, at("10.2.0.50"))));
    w.asker(Map.of(INTERNAL, at("10.2.0.100"), OVERLAY, at("10.2.0.101")));
    assertThat(w.names().reverse(ip("10.2.0.50"), w.scope(), true)).containsExactly("b.backend");
    assertThat(w.names().reverse(ip("10.2.0.50"), w.scope(), false)).containsExactly("b.backend", "a.internal");
  }

  // ---- fixtures --------------------------------------------------------------------------------

  static int ip(String s) {
    return DnsNames.Ipv4.parse(s);
  }

  static World base() {
    World w = new World();
    w.network(WEB_NET);
    w.network(INTERNAL_NET);
    w.service(VIP_SERVICE);
    w.service(RR_SERVICE);
    w.container(task("c-rr-1", "svc-rr", "my-alias", 1, "running", NODE, Map.of(WEB, at("10.1.0.11"),
        INTERNAL, at("10.2.0.11"))));
    w.container(task("c-rr-2", "svc-rr", "my-alias", 2, "running", "node-2", Map.of(WEB, at("10.1.0.12"),
        INTERNAL, at("10.2.0.12"))));
    w.asker(Map.of(WEB, at("10.1.0.100"), INTERNAL, at("10.2.0.100")));
    return w;
  }

  static Attachment at(String ip, String... aliases) {
    return new Attachment(ip, "ep-" + ip, List.of(aliases), "");
  }

  static ContainerRecord container(String id, String name, Map<String, Attachment> nets) {
    return new ContainerRecord(id, name, id.substring(0, Math.min(12, id.length())), NODE, "", "", "", "", "running",
        "", nets);
  }

  static ContainerRecord task(String id, String serviceId, String service, int slot, String state, String node,
      Map<String, Attachment> nets) {
    String taskId = "task" + slot;
    String taskName = service + "." + slot + "." + taskId;
    return new ContainerRecord(id, taskName, id, node, serviceId, service, taskId, taskName, state, "", nets);
  }

  /** A mutable cluster for a test, with the asking container. */
  static final class World {
    final Map<String, DockerNetwork> networks = new TreeMap<>();
    final Map<String, ServiceRecord> services = new TreeMap<>();
    final Map<String, ContainerRecord> containers = new LinkedHashMap<>();
    Map<String, Attachment> asker = Map.of();

    World network(DockerNetwork n) {
      networks.put(n.dockerId(), n);
      return this;
    }

    World service(ServiceRecord s) {
      services.put(s.serviceId(), s);
      return this;
    }

    World container(ContainerRecord c) {
      containers.put(c.containerId(), c);
      return this;
    }

    World asker(Map<String, Attachment> nets) {
      asker = nets;
      return this;
    }

    DnsNames names() {
      List<ContainerRecord> all = new ArrayList<>(containers.values());
      all.add(new ContainerRecord("c-asker", "client", "client", NODE, "", "", "", "", "running", "/run/x", asker));
      all.sort(java.util.Comparator.comparing(ContainerRecord::containerId));
      return DnsNames.of(new ClusterModel(Map.copyOf(networks), Map.copyOf(services), List.copyOf(all)));
    }

    DnsNames.Scope scope() {
      return names().scope(asker.keySet());
    }

    List<String> resolve(String name, boolean compat) {
      DnsNames n = names();
      return n.resolveText(name, n.scope(asker.keySet()), compat);
    }
  }
}
