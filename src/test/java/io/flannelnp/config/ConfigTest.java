package io.flannelnp.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.flannelnp.ipam.Cidr;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class ConfigTest {

  private static final String ENDPOINT = "http://10.0.0.5:2379";
  private static final String SUBNETS = "10.1.0.0/16";
  private static final Supplier<String> HOST = () -> "node-a";

  /** A valid minimal environment plus the given overrides (key, value, key, value, ...). */
  private static Map<String, String> env(String... kv) {
    Map<String, String> env = new HashMap<>();
    env.put("ETCD_ENDPOINTS", ENDPOINT);
    env.put("AVAILABLE_SUBNETS", SUBNETS);
    for (int i = 0; i < kv.length; i += 2) {
      if (kv[i + 1] == null) {
        env.remove(kv[i]);
      } else {
        env.put(kv[i], kv[i + 1]);
      }
    }
    return env;
  }

  private static Config load(String... kv) {
    return Config.fromEnv(env(kv), HOST);
  }

  private static ConfigException failure(Map<String, String> env) {
    ConfigException e = catchThrowableOfType(ConfigException.class, () -> Config.fromEnv(env, HOST));
    assertThat(e).as("Config.fromEnv(%s) must throw ConfigException", env).isNotNull();
    return e;
  }

  private static ConfigException failure(String... kv) {
    return failure(env(kv));
  }

  /**
   * Asserts the message is one line that starts with {@code invalid setting VAR="value": } and
   * contains every key word of the rule.
   */
  private static void assertBadSetting(ConfigException e, String variable, String value, String... ruleWords) {
    String msg = e.getMessage();
    assertThat(msg).startsWith("invalid setting " + variable + "=\"" + value + "\": ");
    assertSingleLine(msg);
    assertThat(msg).contains(ruleWords);
    assertThat(e.variable()).isEqualTo(variable);
    assertThat(e.rule()).isNotBlank();
    assertThat(msg).endsWith(e.rule());
  }

  private static void assertSingleLine(String msg) {
    assertThat(msg).doesNotContain("\n").doesNotContain("\r");
    assertThat(msg.lines().count()).isEqualTo(1);
  }

  // ---- defaults ---------------------------------------------------------------------------

  @Test
  void minimalEnvGivesTheDocumentedDefaults() {
    Config c = Config.fromEnv(Map.of("ETCD_ENDPOINTS", ENDPOINT, "AVAILABLE_SUBNETS", SUBNETS), () -> "host-7");

    assertThat(c.etcdEndpoints()).containsExactly(ENDPOINT);
    assertThat(c.etcdPrefix()).isEqualTo("/flannel");
    assertThat(c.etcdTls()).isEmpty();
    assertThat(c.flannelOptions()).isEqualTo(FlannelOptions.parse(""));
    assertThat(c.flannelOptions().choosesInterface()).isFalse();
    assertThat(c.subnetLeaseRenewSeconds()).as("the keep-alive's third of the TTL").isEqualTo(86400L / 3);
    assertThat(c.availableSubnets()).containsExactly(Cidr.parse("10.1.0.0/16"));
    assertThat(c.networkSubnetSize()).isEqualTo(20);
    assertThat(c.hostSubnetSize()).isEqualTo(25);
    assertThat(c.vniStart()).isEqualTo(6514);
    assertThat(c.subnetLeaseTtlSeconds()).isEqualTo(86400L);
    assertThat(c.dnsDockerCompatibilityMode()).isTrue();
    assertThat(c.dnsTtl()).isEqualTo(600);
    assertThat(c.hookAvailable()).isFalse();
    assertThat(c.pluginSocket()).isEqualTo("/run/docker/plugins/flannel-np.sock");
    assertThat(c.dockerSocket()).isEqualTo("/run/docker.sock");
    assertThat(c.nodeName()).isEqualTo("host-7");
    assertThat(c.adminListen()).isEmpty();
    assertThat(c.logLevel()).isEqualTo("info");
    assertThat(c.adminInsecureLoopback()).isFalse();
    assertThat(c.adminOrigins()).isEmpty();
    assertThat(c.dnsQueryRate()).isEqualTo(2000);
  }

  @Test
  void settingDefaultsAreTheDocumentedOnes() {
    assertThat(Setting.ETCD_PREFIX.defaultValue()).isEqualTo("/flannel");
    assertThat(Setting.NETWORK_SUBNET_SIZE.defaultValue()).isEqualTo("20");
    assertThat(Setting.DEFAULT_HOST_SUBNET_SIZE.defaultValue()).isEqualTo("25");
    assertThat(Setting.VNI_START.defaultValue()).isEqualTo("6514");
    assertThat(Setting.DNS_DOCKER_COMPATIBILITY_MODE.defaultValue()).isEqualTo("true");
    assertThat(Setting.IS_HOOK_AVAILABLE.defaultValue()).isEqualTo("false");
    assertThat(Setting.PLUGIN_SOCKET.defaultValue()).isEqualTo("/run/docker/plugins/flannel-np.sock");
    assertThat(Setting.ETCD_ENDPOINTS.defaultValue()).isEmpty();
    assertThat(Setting.AVAILABLE_SUBNETS.defaultValue()).isEmpty();
    for (Setting s : Setting.values()) {
      assertThat(s.description()).as(s.name()).isNotBlank();
    }
  }

  @Test
  void explicitValuesOverrideTheDefaults() {
    Config c = load(
        "ETCD_ENDPOINTS", " http://10.0.0.5:2379/ , http://etcd-2:2380 ",
        "ETCD_PREFIX", "/my/prefix/",
        "DEFAULT_FLANNEL_OPTIONS", "-iface=eth1,-public-ip=192.168.1.10",
        "AVAILABLE_SUBNETS", "10.0.0.0/16, 10.1.0.0/16",
        "NETWORK_SUBNET_SIZE", "22",
        "DEFAULT_HOST_SUBNET_SIZE", "26",
        "VNI_START", "100",
        "SUBNET_LEASE_TTL", "3600",
        "DNS_DOCKER_COMPATIBILITY_MODE", "FALSE",
        "DNS_TTL", "0",
        "IS_HOOK_AVAILABLE", " True ",
        "PLUGIN_SOCKET", "/run/fnp.sock",
        "DOCKER_SOCKET", "/var/run/docker.sock",
        "NODE_NAME", "worker-3.example",
        "ADMIN_LISTEN", "0.0.0.0:9090",
        "ADMIN_TOKEN", "s3cret-token-0123456789",
        "LOG_LEVEL", "DEBUG",
        "LOG_FORMAT", "JSON",
        "ADMIN_ORIGINS", "https://Admin.Example.com:443, http://10.0.0.9:8080",
        "DNS_QUERY_RATE", "0");

    assertThat(c.etcdEndpoints()).containsExactly("http://10.0.0.5:2379", "http://etcd-2:2380");
    assertThat(c.etcdPrefix()).isEqualTo("/my/prefix");
    assertThat(c.flannelOptions().iface()).contains("eth1");
    assertThat(c.flannelOptions().publicIp()).contains("192.168.1.10");
    assertThat(c.availableSubnets()).containsExactly(Cidr.parse("10.0.0.0/16"), Cidr.parse("10.1.0.0/16"));
    assertThat(c.networkSubnetSize()).isEqualTo(22);
    assertThat(c.hostSubnetSize()).isEqualTo(26);
    assertThat(c.vniStart()).isEqualTo(100);
    assertThat(c.subnetLeaseTtlSeconds()).isEqualTo(3600L);
    assertThat(c.dnsDockerCompatibilityMode()).isFalse();
    assertThat(c.dnsTtl()).isZero();
    assertThat(c.hookAvailable()).isTrue();
    assertThat(c.pluginSocket()).isEqualTo("/run/fnp.sock");
    assertThat(c.dockerSocket()).isEqualTo("/var/run/docker.sock");
    assertThat(c.nodeName()).isEqualTo("worker-3.example");
    assertThat(c.adminListen()).contains(new Config.HostPort("0.0.0.0", 9090));
    assertThat(c.adminListen().orElseThrow()).hasToString("0.0.0.0:9090");
    assertThat(c.logLevel()).isEqualTo("debug");
    assertThat(c.adminToken()).isEqualTo("s3cret-token-0123456789");
    assertThat(c.logFormat()).isEqualTo("json");
    assertThat(c.adminOrigins()).containsExactly("https://admin.example.com", "http://10.0.0.9:8080");
    assertThat(c.dnsQueryRate()).isZero();
  }

  @Test
  void hostNameSupplierIsOnlyAskedWhenNodeNameIsEmpty() {
    AtomicInteger calls = new AtomicInteger();
    Supplier<String> host = () -> {
      calls.incrementAndGet();
      return "from-supplier";
    };
    assertThat(Config.fromEnv(env("NODE_NAME", "explicit"), host).nodeName()).isEqualTo("explicit");
    assertThat(calls).hasValue(0);
    assertThat(Config.fromEnv(env("NODE_NAME", ""), host).nodeName()).isEqualTo("from-supplier");
    assertThat(calls).hasValue(1);
  }

  @Test
  void returnedListsAreImmutable() {
    Config c = load();
    assertThat(catchThrowableOfType(UnsupportedOperationException.class, () -> c.etcdEndpoints().add("x")))
        .isNotNull();
    assertThat(catchThrowableOfType(UnsupportedOperationException.class,
        () -> c.availableSubnets().add(Cidr.parse("10.9.0.0/16")))).isNotNull();
  }

  @Test
  void adminListenForms() {
    String token = "ADMIN_TOKEN";
    String t = "0123456789abcdef";
    assertThat(load("ADMIN_LISTEN", ":9090", token, t).adminListen()).contains(new Config.HostPort("127.0.0.1", 9090));
    assertThat(load("ADMIN_LISTEN", "localhost:1", token, t).adminListen())
        .contains(new Config.HostPort("localhost", 1));
    assertThat(load("ADMIN_LISTEN", "[::1]:65535", token, t).adminListen())
        .contains(new Config.HostPort("[::1]", 65535));
    assertThat(load("ADMIN_LISTEN", "off").adminListen()).isEmpty();
    assertThat(load("ADMIN_LISTEN", "   ").adminListen()).isEmpty();
  }

  @Test
  void vniStartBoundsAreAccepted() {
    assertThat(load("VNI_START", "0").vniStart()).isZero();
    assertThat(load("VNI_START", "9999998").vniStart()).isEqualTo(Config.MAX_VNI - 1);
    // flannel.<VNI> must fit Linux's 15-character interface names
    assertThat(("flannel." + Config.MAX_VNI).length()).isEqualTo(15);
  }

  @Test
  void networkSubnetSizeMayEqualTheBlockPrefix() {
    Config c = load("AVAILABLE_SUBNETS", "10.0.0.0/16", "NETWORK_SUBNET_SIZE", "16", "DEFAULT_HOST_SUBNET_SIZE", "24");
    assertThat(c.networkSubnetSize()).isEqualTo(16);
    assertThat(c.networkCapacity()).isEqualTo(1);
  }

  @Test
  void socketPathOf107CharactersIsAccepted() {
    String path = "/" + "s".repeat(106);
    assertThat(path).hasSize(107);
    assertThat(load("PLUGIN_SOCKET", path).pluginSocket()).isEqualTo(path);
  }

  @Test
  void nodeNameOf63CharactersIsAccepted() {
    String name = "n" + "a".repeat(62);
    assertThat(load("NODE_NAME", name).nodeName()).isEqualTo(name);
  }

  @ParameterizedTest
  @ValueSource(strings = {"error", "warn", "info", "debug", "trace", "WARN", "Trace"})
  void everyLogLevelIsAccepted(String level) {
    assertThat(load("LOG_LEVEL", level).logLevel()).isEqualTo(level.toLowerCase());
  }

  // ---- capacity ---------------------------------------------------------------------------

  @Test
  void capacityOfTwoSlash16Blocks() {
    Config c = load("AVAILABLE_SUBNETS", "10.0.0.0/16,10.1.0.0/16",
        "NETWORK_SUBNET_SIZE", "20", "DEFAULT_HOST_SUBNET_SIZE", "25");
    assertThat(c.networkCapacity()).isEqualTo(32);
    assertThat(c.nodesPerNetwork()).isEqualTo(31);
    assertThat(c.addressesPerNode()).isEqualTo(125);

    String line = c.capacityLine();
    assertSingleLine(line);
    assertThat(line).contains("32 networks", "/20", "10.0.0.0/16", "10.1.0.0/16",
        "31 nodes per network", "/25", "125 container addresses per node");
    // the default /20 network holds 1,000 tasks and 200 VIPs with up to 21 nodes on it
    assertThat(c.clusterAddresses()).isEqualTo(125);
    assertThat(c.clusterAddresses(21)).isEqualTo(125 + 10 * 125).isGreaterThanOrEqualTo(1000 + 200);
    assertThat(line).contains("Swarm tasks + VIPs per network: 125 in the cluster range + 125 per node block no node"
        + " leases (3625 with 3 nodes, 2750 with 10)");
  }

  @Test
  void capacityOfOneSlash8Block() {
    Config c = load("AVAILABLE_SUBNETS", "10.0.0.0/8", "NETWORK_SUBNET_SIZE", "16", "DEFAULT_HOST_SUBNET_SIZE", "24");
    assertThat(c.networkCapacity()).isEqualTo(256);
    assertThat(c.nodesPerNetwork()).isEqualTo(255);
    assertThat(c.addressesPerNode()).isEqualTo(253);
    assertThat(c.capacityLine()).contains("256 networks", "255 nodes per network", "253 container addresses per node");
  }

  @Test
  void capacityAtTheSmallestHostBlock() {
    Config c = load("AVAILABLE_SUBNETS", "10.1.0.0/16", "NETWORK_SUBNET_SIZE", "29", "DEFAULT_HOST_SUBNET_SIZE", "30");
    assertThat(c.networkCapacity()).isEqualTo(1L << 13);
    assertThat(c.nodesPerNetwork()).isEqualTo(1);
    assertThat(c.addressesPerNode()).isEqualTo(1);
  }

  // ---- AVAILABLE_SUBNETS ------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0.0/33", "10.0.0/8", "banana", "10.0.0.256/24", "010.0.0.0/8", "10.0.0.0/",
      "10.0.0.0", "10.0.0.0/-8", "10.0.0.0.0/8"})
  void malformedCidrIsRejected(String bad) {
    ConfigException e = failure("AVAILABLE_SUBNETS", bad);
    assertBadSetting(e, "AVAILABLE_SUBNETS", bad, "'" + bad + "'", "is not a valid IPv4 CIDR");
  }

  @Test
  void malformedCidrAmongGoodOnesIsNamed() {
    String raw = "10.1.0.0/16,10.2.0.0/33";
    ConfigException e = failure("AVAILABLE_SUBNETS", raw);
    assertBadSetting(e, "AVAILABLE_SUBNETS", raw, "'10.2.0.0/33'", "is not a valid IPv4 CIDR", "33");
  }

  @Test
  void emptyEntryBetweenCommasIsRejected() {
    String raw = "10.1.0.0/16,,10.2.0.0/16";
    assertBadSetting(failure("AVAILABLE_SUBNETS", raw), "AVAILABLE_SUBNETS", raw, "has an empty entry");
  }

  @Test
  void trailingCommaIsAnEmptyEntry() {
    String raw = "10.1.0.0/16,";
    assertBadSetting(failure("AVAILABLE_SUBNETS", raw), "AVAILABLE_SUBNETS", raw, "has an empty entry");
  }

  @Test
  void hostBitsSetSuggestTheBlock() {
    ConfigException e = failure("AVAILABLE_SUBNETS", "10.0.0.1/8");
    assertBadSetting(e, "AVAILABLE_SUBNETS", "10.0.0.1/8", "host bits", "10.0.0.0/8");
  }

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0.0/8,10.1.0.0/16", "10.1.0.0/16,10.0.0.0/8", "10.1.0.0/16,10.1.0.0/16",
      "10.1.0.0/16,10.2.0.0/16,10.2.128.0/17"})
  void overlappingSubnetsAreRejected(String raw) {
    ConfigException e = failure("AVAILABLE_SUBNETS", raw);
    assertBadSetting(e, "AVAILABLE_SUBNETS", raw, "overlaps", "disjoint");
  }

  @Test
  void overlapMessageNamesBothBlocks() {
    ConfigException e = failure("AVAILABLE_SUBNETS", "10.0.0.0/8,10.1.0.0/16");
    assertThat(e.getMessage()).contains("10.1.0.0/16 overlaps 10.0.0.0/8");
  }

  @Test
  void adjacentSubnetsDoNotOverlap() {
    assertThat(load("AVAILABLE_SUBNETS", "10.0.0.0/16,10.1.0.0/16").availableSubnets()).hasSize(2);
  }

  @ParameterizedTest
  @ValueSource(strings = {"", "   "})
  void emptyAvailableSubnetsIsRejected(String raw) {
    assertBadSetting(failure("AVAILABLE_SUBNETS", raw), "AVAILABLE_SUBNETS", raw, "is required", "CIDR");
  }

  @Test
  void unsetAvailableSubnetsIsRejected() {
    assertBadSetting(failure("AVAILABLE_SUBNETS", null), "AVAILABLE_SUBNETS", "", "is required");
  }

  // ---- sizes ------------------------------------------------------------------------------

  @Test
  void networkSubnetSizeShorterThanABlockPrefixIsRejected() {
    ConfigException e = failure("AVAILABLE_SUBNETS", "10.0.0.0/16", "NETWORK_SUBNET_SIZE", "12");
    assertBadSetting(e, "NETWORK_SUBNET_SIZE", "12", "must not be shorter", "AVAILABLE_SUBNETS", "10.0.0.0/16",
        "16 or more");
  }

  @Test
  void networkSubnetSizeIsCheckedAgainstEveryBlock() {
    ConfigException e = failure("AVAILABLE_SUBNETS", "10.0.0.0/8,11.1.0.0/16", "NETWORK_SUBNET_SIZE", "12");
    assertBadSetting(e, "NETWORK_SUBNET_SIZE", "12", "11.1.0.0/16", "16 or more");
  }

  @ParameterizedTest
  @ValueSource(strings = {"twenty", "0", "30", "-1", "", "20.5"})
  void networkSubnetSizeOutOfRangeIsRejected(String raw) {
    // 30 is out: a node block must be longer, and /30 is the longest one allowed
    assertBadSetting(failure("NETWORK_SUBNET_SIZE", raw), "NETWORK_SUBNET_SIZE", raw,
        "must be an integer between 1 and 29");
  }

  @ParameterizedTest
  @ValueSource(strings = {"20", "19"})
  void hostSubnetSizeNotLongerThanNetworkSizeIsRejected(String raw) {
    ConfigException e = failure("NETWORK_SUBNET_SIZE", "20", "DEFAULT_HOST_SUBNET_SIZE", raw);
    assertBadSetting(e, "DEFAULT_HOST_SUBNET_SIZE", raw, "must be longer than NETWORK_SUBNET_SIZE (20)");
  }

  @ParameterizedTest
  @ValueSource(strings = {"31", "1", "x"})
  void hostSubnetSizeOutOfRangeIsRejected(String raw) {
    assertBadSetting(failure("DEFAULT_HOST_SUBNET_SIZE", raw), "DEFAULT_HOST_SUBNET_SIZE", raw,
        "must be an integer between 2 and 30");
  }

  // ---- VNI_START ----------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"abc", "65 14", "6514.0", "0x1972", "", "99999999999"})
  void nonNumericVniStartIsRejected(String raw) {
    assertBadSetting(failure("VNI_START", raw), "VNI_START", raw, "must be an integer between 0 and 9999998");
  }

  @ParameterizedTest
  @ValueSource(strings = {"-1", "9999999", "16777215", "2147483648"})
  void vniStartOutOfRangeIsRejected(String raw) {
    assertBadSetting(failure("VNI_START", raw), "VNI_START", raw, "must be an integer between 0 and 9999998");
  }

  // ---- CLUSTER_SUBNET_SIZE ------------------------------------------------------------------

  @Test
  void clusterRangeDefaultsToOneNodeBlockAndCanBeWidened() {
    assertThat(load("DEFAULT_HOST_SUBNET_SIZE", "25").clusterSubnetSize()).isEqualTo(25);
    Config wide = load("CLUSTER_SUBNET_SIZE", "23");
    assertThat(wide.clusterSubnetSize()).isEqualTo(23);
    // /20 holds 32 blocks of /25; a /23 cluster range takes 4 of them
    assertThat(wide.nodesPerNetwork()).isEqualTo(28);
  }

  @ParameterizedTest
  @ValueSource(strings = {"20", "26", "x"})
  void clusterRangeMustLieBetweenTheNetworkAndANodeBlock(String raw) {
    assertBadSetting(failure("CLUSTER_SUBNET_SIZE", raw), "CLUSTER_SUBNET_SIZE", raw, "must be an integer between 21 and 25");
  }

  // ---- other integers -----------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"4", "2592001", "a day"})
  void subnetLeaseTtlOutOfRangeIsRejected(String raw) {
    assertBadSetting(failure("SUBNET_LEASE_TTL", raw), "SUBNET_LEASE_TTL", raw,
        "must be an integer between 5 and 2592000");
  }

  @Test
  void negativeDnsTtlIsRejected() {
    assertBadSetting(failure("DNS_TTL", "-1"), "DNS_TTL", "-1", "must be an integer between 0 and");
  }

  // ---- booleans ---------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"yes", "no", "1", "0", "on", "t"})
  void badDnsCompatibilityBooleanIsRejected(String raw) {
    assertBadSetting(failure("DNS_DOCKER_COMPATIBILITY_MODE", raw), "DNS_DOCKER_COMPATIBILITY_MODE", raw,
        "must be true or false");
  }

  @Test
  void badHookBooleanIsRejected() {
    assertBadSetting(failure("IS_HOOK_AVAILABLE", "yes"), "IS_HOOK_AVAILABLE", "yes", "must be true or false");
  }

  // ---- ETCD_ENDPOINTS ---------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"", "  "})
  void emptyEtcdEndpointsIsRejected(String raw) {
    assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "is required", "http://");
  }

  @Test
  void unsetEtcdEndpointsIsRejected() {
    assertBadSetting(failure("ETCD_ENDPOINTS", null), "ETCD_ENDPOINTS", "", "is required");
  }

  /** As the original plugin's README writes them (flanneld and etcdctl read host:port as http://). */
  @Test
  void etcdEndpointsWithoutSchemeAreHttp() {
    Config c = Config.fromEnv(Map.of("ETCD_ENDPOINTS", "172.16.0.2:2379,172.16.0.3:2379, etcd-3:2379",
        "AVAILABLE_SUBNETS", SUBNETS), () -> "host-7");
    assertThat(c.etcdEndpoints()).containsExactly("http://172.16.0.2:2379", "http://172.16.0.3:2379", "http://etcd-3:2379");
    assertThat(c.etcdTls()).isEmpty();
  }

  @ParameterizedTest
  @ValueSource(strings = {"etcd1", "172.16.0.2", "172.16.0.2:0", "172.16.0.2:99999"})
  void etcdEndpointWithoutSchemeStillNeedsAPort(String raw) {
    assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "'" + raw + "'", "must name a host and a port");
  }

  /** The original plugin's README settings block, as its users pasted it, starts a daemon. */
  @Test
  void theOriginalPluginsExampleSettingsAreAccepted() {
    Config c = Config.fromEnv(Map.of(
        "ETCD_PREFIX", "/flannel/",
        "ETCD_ENDPOINTS", "172.16.0.2:2379,172.16.0.3:2379,172.16.0.4:2379",
        "DEFAULT_FLANNEL_OPTIONS", "-iface=enp7s0",
        "AVAILABLE_SUBNETS", "10.1.0.0/16,10.10.0.0/16,10.20.0.0/16,10.30.0.0/16,10.50.0.0/16",
        "NETWORK_SUBNET_SIZE", "18",
        "DEFAULT_HOST_SUBNET_SIZE", "23",
        "IS_HOOK_AVAILABLE", "true",
        "DNS_DOCKER_COMPATIBILITY_MODE", "false"), () -> "host-7");
    assertThat(c.etcdPrefix()).isEqualTo("/flannel");
    assertThat(c.etcdEndpoints()).hasSize(3).allMatch(e -> e.startsWith("http://172.16.0."));
    assertThat(c.flannelOptions().ifaces()).containsExactly("enp7s0");
    assertThat(c.networkCapacity()).isEqualTo(5 * 4);
    assertThat(c.hookAvailable()).isTrue();
    assertThat(c.dnsDockerCompatibilityMode()).isFalse();
  }

  @ParameterizedTest
  @ValueSource(strings = {"ftp://10.0.0.5:2379", "unix:///run/etcd.sock", "tcp://10.0.0.5:2379"})
  void etcdEndpointWithoutHttpSchemeIsRejected(String raw) {
    assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "'" + raw + "'",
        "must start with http:// or https://");
  }

  @Test
  void etcdEndpointThatIsNotAUrlIsRejected() {
    ConfigException e = failure("ETCD_ENDPOINTS", "http://10.0.0 5:2379");
    assertBadSetting(e, "ETCD_ENDPOINTS", "http://10.0.0 5:2379", "'http://10.0.0 5:2379'", "is not a URL");
  }

  @ParameterizedTest
  @ValueSource(strings = {"http://10.0.0.5", "https://etcd", "http://10.0.0.5:0", "http://10.0.0.5:65536"})
  void etcdEndpointWithoutValidPortIsRejected(String raw) {
    assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "'" + raw + "'",
        "must name a host and a port");
  }

  @ParameterizedTest
  @ValueSource(strings = {"http://10.0.0.5:2379/v3", "http://10.0.0.5:2379/v3/kv", "http://10.0.0.5:2379?x=1",
      "http://user:pw@10.0.0.5:2379"})
  void etcdEndpointWithPathQueryOrUserIsRejected(String raw) {
    assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "'" + raw + "'",
        "must be scheme://host:port only");
  }

  @Test
  void etcdEndpointsBadOneAmongGoodOnesIsNamed() {
    String raw = "http://10.0.0.5:2379,http://10.0.0.6";
    assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "'http://10.0.0.6'", "port");
  }

  @Test
  void etcdEndpointsWithEmptyEntryIsRejected() {
    String raw = "http://10.0.0.5:2379,,http://10.0.0.6:2379";
    assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "empty entry");
  }

  // ---- ETCD_PREFIX ------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"flannel", "flannel/", "/", "", "/a//b", "/fl annel", "/flannel*"})
  void etcdPrefixNotAbsoluteKeyPathIsRejected(String raw) {
    assertBadSetting(failure("ETCD_PREFIX", raw), "ETCD_PREFIX", raw, "must be an absolute key path", "/flannel");
  }

  @Test
  void etcdPrefixTrailingSlashesAreDropped() {
    assertThat(load("ETCD_PREFIX", "/flannel//").etcdPrefix()).isEqualTo("/flannel");
    assertThat(load("ETCD_PREFIX", "/a/b-c_d.e").etcdPrefix()).isEqualTo("/a/b-c_d.e");
  }

  // ---- sockets ----------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"run/docker/plugins/flannel-np.sock", "flannel-np.sock", "", "/run/plugins/",
      "/run/my plugin.sock"})
  void badPluginSocketIsRejected(String raw) {
    assertBadSetting(failure("PLUGIN_SOCKET", raw), "PLUGIN_SOCKET", raw, "must be an absolute file path", "107");
  }

  @Test
  void pluginSocketLongerThan107CharactersIsRejected() {
    String path = "/" + "s".repeat(107);
    assertThat(path).hasSize(108);
    assertBadSetting(failure("PLUGIN_SOCKET", path), "PLUGIN_SOCKET", path, "at most 107 characters");
  }

  @Test
  void relativeDockerSocketIsRejected() {
    assertBadSetting(failure("DOCKER_SOCKET", "docker.sock"), "DOCKER_SOCKET", "docker.sock",
        "must be an absolute file path");
  }

  // ---- NODE_NAME --------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"-node", ".node", "node name", "node/1", "nodé", "node:1"})
  void badNodeNameIsRejected(String raw) {
    assertBadSetting(failure("NODE_NAME", raw), "NODE_NAME", raw, "1-63 characters", "starting with a letter or digit");
  }

  @Test
  void nodeNameOf64CharactersIsRejected() {
    String name = "n".repeat(64);
    assertBadSetting(failure("NODE_NAME", name), "NODE_NAME", name, "1-63 characters");
  }

  @Test
  void badHostNameFromSupplierIsRejectedAsNodeName() {
    ConfigException e = catchThrowableOfType(ConfigException.class,
        () -> Config.fromEnv(env(), () -> "bad host"));
    assertThat(e).isNotNull();
    assertBadSetting(e, "NODE_NAME", "bad host", "1-63 characters");
  }

  // ---- ADMIN_LISTEN -----------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"0.0.0.0:9090", "10.1.2.3:9090", "admin.example:80"})
  void adminListenOffLoopbackWithoutTokenIsRejected(String raw) {
    assertBadSetting(failure("ADMIN_LISTEN", raw), "ADMIN_LISTEN", raw, "not a loopback address",
        "ADMIN_TOKEN must be set");
  }

  @ParameterizedTest
  @ValueSource(strings = {"127.0.0.1:9090", "localhost:9090", "[::1]:9090", "127.1.2.3:9090"})
  void adminListenOnLoopbackNeedsATokenUnlessInsecureLoopbackIsChosen(String raw) {
    assertBadSetting(failure("ADMIN_LISTEN", raw), "ADMIN_LISTEN", raw, "needs ADMIN_TOKEN",
        "ADMIN_INSECURE_LOOPBACK=true");
    Config c = load("ADMIN_LISTEN", raw, "ADMIN_INSECURE_LOOPBACK", "true");
    assertThat(c.adminToken()).isEmpty();
    assertThat(c.adminListen().orElseThrow().loopback()).isTrue();
    assertThat(c.adminInsecureLoopback()).isTrue();
  }

  /** Only an address literal of 127.0.0.0/8, [::1] or the name localhost is loopback; a name is not. */
  @ParameterizedTest
  @ValueSource(strings = {"127.evil.example:9090", "127.0.0.1.nip.io:9090", "localhost.example:9090",
      "1270.0.0.1:9090", "127.0.0.256:9090"})
  void aHostThatOnlyLooksLikeLoopbackIsNotOne(String raw) {
    assertBadSetting(failure("ADMIN_LISTEN", raw, "ADMIN_INSECURE_LOOPBACK", "true"), "ADMIN_LISTEN", raw,
        "not a loopback address", "ADMIN_TOKEN must be set");
  }

  @ParameterizedTest
  @ValueSource(strings = {"admin.example.com", "ftp://admin.example.com", "https://admin.example.com/console",
      "https://user@admin.example.com", "https://admin.example.com?x=1", "https://"})
  void adminOriginsMustBeOrigins(String raw) {
    assertBadSetting(failure("ADMIN_ORIGINS", raw), "ADMIN_ORIGINS", raw, "must be an origin");
  }

  @ParameterizedTest
  @ValueSource(strings = {"short", "has a space in it here"})
  void badAdminTokenIsRejectedWithoutEchoingIt(String raw) {
    ConfigException e = failure("ADMIN_TOKEN", raw);
    assertThat(e.getMessage()).contains("ADMIN_TOKEN", "16-256 printable").doesNotContain(raw);
  }

  @Test
  void badLogFormatIsRejected() {
    assertBadSetting(failure("LOG_FORMAT", "xml"), "LOG_FORMAT", "xml", "must be text or json");
  }

  @ParameterizedTest
  @ValueSource(strings = {"9090", "localhost"})
  void adminListenWithoutPortIsRejected(String raw) {
    assertBadSetting(failure("ADMIN_LISTEN", raw), "ADMIN_LISTEN", raw, "must be host:port");
  }

  @ParameterizedTest
  @ValueSource(strings = {"127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "127.0.0.1:", ":-1", ":123456"})
  void adminListenWithBadPortIsRejected(String raw) {
    assertBadSetting(failure("ADMIN_LISTEN", raw), "ADMIN_LISTEN", raw, "port must be 1-65535");
  }

  @ParameterizedTest
  @ValueSource(strings = {"bad host:9090", "a/b:9090", "::1:9090"})
  void adminListenWithBadHostIsRejected(String raw) {
    assertBadSetting(failure("ADMIN_LISTEN", raw), "ADMIN_LISTEN", raw, "is not a host name or address");
  }

  // ---- LOG_LEVEL --------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"verbose", "warning", "", "inf0"})
  void badLogLevelIsRejected(String raw) {
    assertBadSetting(failure("LOG_LEVEL", raw), "LOG_LEVEL", raw, "must be one of error, warn, info, debug, trace");
  }

  // ---- DEFAULT_FLANNEL_OPTIONS ------------------------------------------------------------

  @Test
  void badFlannelOptionsAreRejectedAtLoad() {
    ConfigException e = failure("DEFAULT_FLANNEL_OPTIONS", "-kube-subnet-mgr");
    assertBadSetting(e, "DEFAULT_FLANNEL_OPTIONS", "-kube-subnet-mgr", "flanneld's flag -kube-subnet-mgr is not taken",
        "not Kubernetes");
  }

  @Test
  void flanneldVerbosityRaisesTheLogLevelButNeverLowersIt() {
    assertThat(load("DEFAULT_FLANNEL_OPTIONS", "-v=1").logLevel()).isEqualTo("debug");
    assertThat(load("DEFAULT_FLANNEL_OPTIONS", "-v=5").logLevel()).isEqualTo("trace");
    assertThat(load("DEFAULT_FLANNEL_OPTIONS", "-v=0").logLevel()).isEqualTo("info");
    assertThat(load("DEFAULT_FLANNEL_OPTIONS", "-v=1", "LOG_LEVEL", "trace").logLevel()).isEqualTo("trace");
    assertThat(load("DEFAULT_FLANNEL_OPTIONS", "-v=2", "LOG_LEVEL", "warn").logLevel()).isEqualTo("debug");
  }

  @Test
  void subnetLeaseRenewMarginIsHonouredAndMustBeShorterThanTheLease() {
    assertThat(load("DEFAULT_FLANNEL_OPTIONS", "-subnet-lease-renew-margin=60").subnetLeaseRenewSeconds())
        .as("flanneld's default with its 24 h lease: the keep-alive is sooner").isEqualTo(86400L / 3);
    assertThat(load("DEFAULT_FLANNEL_OPTIONS", "-subnet-lease-renew-margin=1400").subnetLeaseRenewSeconds())
        .isEqualTo(86400L - 1400 * 60);
    assertThat(load("SUBNET_LEASE_TTL", "30").subnetLeaseRenewSeconds()).as("no margin given").isEqualTo(10);
    ConfigException e = failure("DEFAULT_FLANNEL_OPTIONS", "-subnet-lease-renew-margin=1", "SUBNET_LEASE_TTL", "60");
    assertBadSetting(e, "DEFAULT_FLANNEL_OPTIONS", "-subnet-lease-renew-margin=1", "not shorter than SUBNET_LEASE_TTL=60");
  }

  // ---- TLS ----------------------------------------------------------------------------------

  @Nested
  class Tls {
    @TempDir Path dir;

    private String file(String name) throws IOException {
      Path p = dir.resolve(name);
      Files.writeString(p, "-----BEGIN " + name + "-----\n");
      return p.toString();
    }

    /** A real self-signed certificate and its key (the files are read at start): {cert, key}. */
    private String[] certAndKey() throws Exception {
      Process p = new ProcessBuilder("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
          "-keyout", dir.resolve("key.pem").toString(), "-out", dir.resolve("cert.pem").toString()).redirectErrorStream(true).start();
      p.getInputStream().readAllBytes();
      assertThat(p.waitFor()).isZero();
      return new String[] {dir.resolve("cert.pem").toString(), dir.resolve("key.pem").toString()};
    }

    @Test
    void certWithoutKeyIsRejected() throws IOException {
      ConfigException e = failure("ETCD_ENDPOINTS", "https://10.0.0.5:2379", "ETCD_CERT_FILE", file("cert.pem"));
      assertBadSetting(e, "ETCD_KEY_FILE", "", "must be set together with ETCD_CERT_FILE");
    }

    @Test
    void keyWithoutCertIsRejected() throws IOException {
      ConfigException e = failure("ETCD_ENDPOINTS", "https://10.0.0.5:2379", "ETCD_KEY_FILE", file("key.pem"));
      assertBadSetting(e, "ETCD_CERT_FILE", "", "must be set together with ETCD_KEY_FILE");
    }

    @Test
    void caWithHttpEndpointIsRejected() throws IOException {
      ConfigException e = failure("ETCD_CA_FILE", file("ca.pem"));
      assertBadSetting(e, "ETCD_ENDPOINTS", ENDPOINT, "must use https://", "ETCD_CA_FILE", "'" + ENDPOINT + "'");
    }

    @Test
    void certAndKeyWithOneHttpEndpointAreRejected() throws IOException {
      ConfigException e = failure("ETCD_ENDPOINTS", "https://10.0.0.5:2379,http://10.0.0.6:2379",
          "ETCD_CERT_FILE", file("cert.pem"), "ETCD_KEY_FILE", file("key.pem"));
      assertBadSetting(e, "ETCD_ENDPOINTS", "https://10.0.0.5:2379,http://10.0.0.6:2379", "mixes http:// and https://");
    }

    @Test
    void missingTlsFileIsRejected() {
      String missing = dir.resolve("nope.pem").toString();
      ConfigException e = failure("ETCD_ENDPOINTS", "https://10.0.0.5:2379", "ETCD_CA_FILE", missing);
      assertBadSetting(e, "ETCD_CA_FILE", missing, "must name a readable file");
    }

    @Test
    void directoryAsTlsFileIsRejected() {
      ConfigException e = failure("ETCD_ENDPOINTS", "https://10.0.0.5:2379", "ETCD_CERT_FILE", dir.toString(),
          "ETCD_KEY_FILE", dir.toString());
      assertBadSetting(e, "ETCD_CERT_FILE", dir.toString(), "must name a readable file");
    }

    @Test
    void caAloneWithHttpsIsAccepted() throws Exception {
      String ca = certAndKey()[0];
      Config c = load("ETCD_ENDPOINTS", "https://10.0.0.5:2379", "ETCD_CA_FILE", ca);
      assertThat(c.etcdTls()).contains(new Config.EtcdTls(Optional.of(Path.of(ca)), Optional.empty(), Optional.empty()));
    }

    @Test
    void fullTlsWithHttpsIsAccepted() throws Exception {
      String[] pair = certAndKey();
      String ca = pair[0];
      String cert = pair[0];
      String key = pair[1];
      Config c = load("ETCD_ENDPOINTS", "https://10.0.0.5:2379,https://10.0.0.6:2379",
          "ETCD_CA_FILE", ca, "ETCD_CERT_FILE", cert, "ETCD_KEY_FILE", key);
      assertThat(c.etcdTls()).contains(new Config.EtcdTls(
          Optional.of(Path.of(ca)), Optional.of(Path.of(cert)), Optional.of(Path.of(key))));
    }

    /** https:// without a CA file is TLS against the system's trust store, never plaintext. */
    @Test
    void httpsWithoutACaFileIsTlsWithTheSystemTrustStore() {
      Config c = load("ETCD_ENDPOINTS", "https://10.0.0.5:2379,https://10.0.0.6:2379");
      assertThat(c.etcdTls()).contains(Config.EtcdTls.SYSTEM_TRUST);
    }

    @Test
    void mixedSchemesAreRejected() {
      String raw = "https://10.0.0.5:2379,http://10.0.0.6:2379";
      assertBadSetting(failure("ETCD_ENDPOINTS", raw), "ETCD_ENDPOINTS", raw, "mixes http:// and https://");
    }

    @Test
    void emptyTlsSettingsMeanNoTls() {
      Config c = load("ETCD_CA_FILE", "", "ETCD_CERT_FILE", " ", "ETCD_KEY_FILE", "");
      assertThat(c.etcdTls()).isEmpty();
    }
  }

  // ---- one line, always ---------------------------------------------------------------------

  @Test
  void newlineInValueIsEscapedInTheMessage() {
    ConfigException e = failure("LOG_LEVEL", "info\nwarn");
    assertSingleLine(e.getMessage());
    assertThat(e.getMessage()).startsWith("invalid setting LOG_LEVEL=\"info\\x0awarn\": ")
        .contains("must be one of");
    assertThat(e.value()).isEqualTo("info\nwarn");
  }

  @Test
  void quotesAndBackslashesInValueAreEscaped() {
    ConfigException e = failure("NODE_NAME", "a\"b\\c");
    assertSingleLine(e.getMessage());
    assertThat(e.getMessage()).startsWith("invalid setting NODE_NAME=\"a\\\"b\\\\c\": ");
  }

  @Test
  void carriageReturnInValueIsEscaped() {
    ConfigException e = failure("IS_HOOK_AVAILABLE", "tr\rue");
    assertSingleLine(e.getMessage());
    assertThat(e.getMessage()).contains("\\x0d");
  }

  /** Rules that quote the offending part must not let a newline through either. */
  @Test
  void newlineInsideASubnetStaysOneLine() {
    ConfigException e = failure("AVAILABLE_SUBNETS", "10.1.0.0/16\n10.2.0.0/16");
    assertThat(e.getMessage()).startsWith("invalid setting AVAILABLE_SUBNETS=\"10.1.0.0/16\\x0a10.2.0.0/16\": ");
    assertSingleLine(e.getMessage());
  }

  @Test
  void newlineInsideAnEtcdEndpointStaysOneLine() {
    ConfigException e = failure("ETCD_ENDPOINTS", "http://10.0.0.5\n:2379");
    assertThat(e.getMessage()).startsWith("invalid setting ETCD_ENDPOINTS=\"http://10.0.0.5\\x0a:2379\": ");
    assertSingleLine(e.getMessage());
  }

  @Test
  void newlineInsideTheAdminHostStaysOneLine() {
    ConfigException e = failure("ADMIN_LISTEN", "bad\nhost:9090");
    assertThat(e.getMessage()).startsWith("invalid setting ADMIN_LISTEN=\"bad\\x0ahost:9090\": ");
    assertSingleLine(e.getMessage());
  }

  @Test
  void newlineInFlannelOptionsStaysOneLine() {
    ConfigException e = failure("DEFAULT_FLANNEL_OPTIONS", "-iface=eth0\n-bogus=1");
    assertThat(e.getMessage()).startsWith("invalid setting DEFAULT_FLANNEL_OPTIONS=\"-iface=eth0\\x0a-bogus=1\": ");
    assertSingleLine(e.getMessage());
  }

  @Test
  void unsetValueIsShownAsUnset() {
    ConfigException e = new ConfigException("X", null, "rule");
    assertThat(e.getMessage()).isEqualTo("invalid setting X=(unset): rule");
    assertThat(e.value()).isNull();
    assertThat(e.rule()).isEqualTo("rule");
  }

  @Test
  void nodeRecordsTtlDefaultsToHalfAMinuteAndIsBounded() {
    assertThat(Config.fromEnv(Map.of("ETCD_ENDPOINTS", "http://127.0.0.1:2379", "AVAILABLE_SUBNETS", "10.0.0.0/8"))
        .nodeRecordsTtlSeconds()).isEqualTo(30);
    assertThat(failure("NODE_RECORDS_TTL", "3601").getMessage())
        .isEqualTo("invalid setting NODE_RECORDS_TTL=\"3601\": must be an integer between 5 and 3600");
  }

  @Test
  void everySettingIsReadFromTheEnvironment() {
    // Each setting given a bad value must be reported under its own name: proves none is ignored.
    Map<String, String> bad = Map.ofEntries(
        Map.entry("ETCD_PREFIX", "x"),
        Map.entry("ETCD_CA_FILE", "/nonexistent/ca.pem"),
        Map.entry("ETCD_KEY_FILE", "/nonexistent/key.pem"),
        Map.entry("ETCD_CERT_FILE", "/nonexistent/cert.pem"),
        Map.entry("ETCD_USERNAME", "a:b"),
        Map.entry("ETCD_PASSWORD", "x"),
        Map.entry("ETCD_PASSWORD_FILE", "/nonexistent/password"),
        Map.entry("DEFAULT_FLANNEL_OPTIONS", "-bogus=1"),
        Map.entry("NETWORK_SUBNET_SIZE", "x"),
        Map.entry("DEFAULT_HOST_SUBNET_SIZE", "x"),
        Map.entry("CLUSTER_SUBNET_SIZE", "x"),
        Map.entry("VNI_START", "x"),
        Map.entry("SUBNET_LEASE_TTL", "x"),
        Map.entry("DNS_DOCKER_COMPATIBILITY_MODE", "x"),
        Map.entry("DNS_TTL", "x"),
        Map.entry("IS_HOOK_AVAILABLE", "x"),
        Map.entry("PLUGIN_SOCKET", "x"),
        Map.entry("DOCKER_SOCKET", "x"),
        Map.entry("NODE_NAME", "-x"),
        Map.entry("NODE_RECORDS_TTL", "4"),
        Map.entry("GC_GRACE", "4"),
        Map.entry("ADMIN_LISTEN", "x"),
        Map.entry("ADMIN_TOKEN", "short"),
        Map.entry("ADMIN_INSECURE_LOOPBACK", "x"),
        Map.entry("ADMIN_ORIGINS", "x"),
        Map.entry("DNS_QUERY_RATE", "-1"),
        Map.entry("LOG_LEVEL", "x"),
        Map.entry("LOG_FORMAT", "x"));
    for (Setting s : Setting.values()) {
      if (s == Setting.ETCD_ENDPOINTS || s == Setting.AVAILABLE_SUBNETS) {
        continue;
      }
      assertThat(bad).as("test covers %s", s).containsKey(s.name());
      ConfigException e = failure(s.name(), bad.get(s.name()));
      assertThat(e.variable()).as("bad %s", s).isEqualTo(s.name());
      assertThat(e.getMessage()).as("bad %s", s).startsWith("invalid setting " + s.name() + "=");
    }
    assertThat(List.of(Setting.values())).hasSize(bad.size() + 2);
  }
}
