package io.flannelnp.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

class FlannelOptionsTest {

  private static ConfigException failure(String raw) {
    ConfigException e = catchThrowableOfType(ConfigException.class, () -> FlannelOptions.parse(raw));
    assertThat(e).as("FlannelOptions.parse(%s) must throw ConfigException", raw).isNotNull();
    assertThat(e.variable()).isEqualTo("DEFAULT_FLANNEL_OPTIONS");
    assertThat(e.value()).isEqualTo(raw);
    assertThat(e.getMessage()).doesNotContain("\n").doesNotContain("\r");
    return e;
  }

  private static void assertBad(String raw, String... ruleWords) {
    ConfigException e = failure(raw);
    assertThat(e.getMessage()).startsWith("invalid setting DEFAULT_FLANNEL_OPTIONS=\"" + raw + "\": ");
    assertThat(e.getMessage()).contains(ruleWords);
  }

  // ---- empty ------------------------------------------------------------------------------

  @Test
  void nullOrBlankGivesDefaults() {
    FlannelOptions none = new FlannelOptions(List.of(), List.of(), Optional.empty(), Optional.empty(), 0,
        Optional.empty(), 0);
    assertThat(FlannelOptions.parse(null)).isEqualTo(none);
    assertThat(FlannelOptions.parse("")).isEqualTo(none);
    assertThat(FlannelOptions.parse("  \t ")).isEqualTo(none);
  }

  @Test
  void honouredFlagsAreListed() {
    assertThat(FlannelOptions.HONOURED).containsExactly("-iface", "-iface-regex", "-iface-can-reach", "-public-ip",
        "-subnet-lease-renew-margin", "-ip-masq", "-v");
  }

  // ---- -iface -----------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"-iface=eth0", "-iface eth0", "--iface=eth0", "--iface eth0", "  -iface=eth0  ",
      "-iface=eth0,", ",-iface=eth0", "-iface\teth0"})
  void ifaceForms(String raw) {
    FlannelOptions o = FlannelOptions.parse(raw);
    assertThat(o.iface()).contains("eth0");
    assertThat(o.publicIp()).isEmpty();
    assertThat(o.subnetLeaseRenewMarginMinutes()).as("not given").isZero();
  }

  @ParameterizedTest
  @ValueSource(strings = {"bond0.100", "vlan10", "enp0s31f6", "br_int-1", "a23456789012345", "10.0.0.5"})
  void validInterfaceNamesAndAddresses(String name) {
    assertThat(FlannelOptions.parse("-iface=" + name).iface()).contains(name);
  }

  /** Start-up applies the data plane's own rule: nothing that passes here fails every pass later. */
  @ParameterizedTest
  @ValueSource(strings = {"-iface=a234567890123456", "-iface=eth#0", "-iface=eth/0", "-iface=", "--iface=",
      "-iface=eth0:1", "-iface=vlan10@eth0", "-iface=-x", "-iface=1.2.3", "-iface=10.0.0.256", "-iface=.eth0"})
  void badInterfaceNameIsRejected(String raw) {
    assertBad(raw, "-iface", "is not an interface name");
  }

  /** flanneld's -iface is repeatable: tried in order, the first that exists wins (Uplinks). */
  @Test
  void ifaceIsRepeatableInOrder() {
    assertThat(FlannelOptions.parse("-iface=eth1,-iface=10.0.0.5 --iface eth0").ifaces())
        .containsExactly("eth1", "10.0.0.5", "eth0");
    assertThat(FlannelOptions.parse("-iface=eth0,-iface=eth0").ifaces()).containsExactly("eth0");
  }

  // ---- -iface-regex, -iface-can-reach ---------------------------------------------------------

  @Test
  void ifaceRegexIsRepeatableAndCheckedAtStart() {
    FlannelOptions o = FlannelOptions.parse("-iface-regex=^enp.* -iface-regex=10\\.0\\..*");
    assertThat(o.ifaceRegexes()).containsExactly("^enp.*", "10\\.0\\..*");
    assertThat(o.ifacePatterns()).hasSize(2);
    assertThat(o.choosesInterface()).isTrue();
    assertBad("-iface-regex=eth(0", "-iface-regex 'eth(0'", "is not a regular expression");
    assertBad("-iface-regex=", "-iface-regex needs a regular expression");
  }

  @Test
  void ifaceCanReachIsAnAddress() {
    assertThat(FlannelOptions.parse("-iface-can-reach=172.16.0.2").ifaceCanReach()).contains("172.16.0.2");
    assertBad("-iface-can-reach=etcd-1", "-iface-can-reach 'etcd-1'", "is not an IPv4 address");
    assertBad("-iface-can-reach=10.0.0.1,-iface-can-reach=10.0.0.2", "given twice");
  }

  // ---- -ip-masq, -v -----------------------------------------------------------------------

  @Test
  void ipMasqIsABooleanFlagAsInGo() {
    assertThat(FlannelOptions.parse("-ip-masq").ipMasq()).contains(true);
    assertThat(FlannelOptions.parse("-ip-masq -iface=eth0").ipMasq()).contains(true);
    assertThat(FlannelOptions.parse("--ip-masq=false").ipMasq()).contains(false);
    assertThat(FlannelOptions.parse("").ipMasq()).isEmpty();
    assertBad("-ip-masq=maybe", "-ip-masq 'maybe'", "true or false");
  }

  @Test
  void verbosityIsALevel() {
    assertThat(FlannelOptions.parse("-v=3").verbosity()).isEqualTo(3);
    assertThat(FlannelOptions.parse("-v 2").verbosity()).isEqualTo(2);
    assertBad("-v=high", "-v 'high'", "verbosity level");
  }

  // ---- separators -------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {
      "-iface=eth0,-public-ip=192.168.1.10,-subnet-lease-renew-margin=30",
      "-iface=eth0 -public-ip=192.168.1.10 -subnet-lease-renew-margin=30",
      "-iface=eth0, -public-ip=192.168.1.10,  -subnet-lease-renew-margin=30",
      "-iface eth0 -public-ip 192.168.1.10 -subnet-lease-renew-margin 30",
      "--subnet-lease-renew-margin=30\n--public-ip=192.168.1.10\n--iface=eth0",
      "-iface=eth0,,-public-ip=192.168.1.10,,,-subnet-lease-renew-margin=30"})
  void commaAndSpaceSeparatedFlags(String raw) {
    FlannelOptions o = FlannelOptions.parse(raw);
    assertThat(o).isEqualTo(new FlannelOptions(List.of("eth0"), List.of(), Optional.empty(), Optional.of("192.168.1.10"),
        30, Optional.empty(), 0));
  }

  // ---- -public-ip -------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"0.0.0.0", "255.255.255.255", "10.0.0.1", "192.168.1.10"})
  void validPublicIp(String ip) {
    assertThat(FlannelOptions.parse("-public-ip=" + ip).publicIp()).contains(ip);
  }

  @ParameterizedTest
  @ValueSource(strings = {"300.1.1.1", "10.0.0", "10.0.0.1.5", "eth0", "01.2.3.4", "10.0.0.1/32", "::1", "-1.2.3.4"})
  void badPublicIpIsRejected(String ip) {
    String raw = "-public-ip=" + ip;
    assertBad(raw, "-public-ip '" + ip + "'", "is not an IPv4 address");
  }

  @Test
  void publicIpWithNonAsciiDigitsIsRejected() {
    // "١٠.0.0.1": Arabic-Indic digits would be stored verbatim and fail later when used as an address.
    String raw = "-public-ip=\u0661\u0660.0.0.1";
    assertBad(raw, "is not an IPv4 address");
  }

  // ---- -subnet-lease-renew-margin ---------------------------------------------------------

  @Test
  void renewMarginIsParsed() {
    assertThat(FlannelOptions.parse("-subnet-lease-renew-margin=1").subnetLeaseRenewMarginMinutes()).isEqualTo(1);
    assertThat(FlannelOptions.parse("-subnet-lease-renew-margin=999999").subnetLeaseRenewMarginMinutes())
        .isEqualTo(999_999);
  }

  @ParameterizedTest
  @ValueSource(strings = {"0", "abc", "1.5", "1000000", "+5"})
  void badRenewMarginIsRejected(String margin) {
    assertBad("-subnet-lease-renew-margin=" + margin, "-subnet-lease-renew-margin '" + margin + "'",
        "positive number of minutes");
  }

  // ---- unknown / malformed ------------------------------------------------------------------

  @ParameterizedTest
  @CsvSource(delimiter = '|', value = {
      "-Iface=eth0                   | -Iface",
      "-ifac=eth0                    | -ifac",
      "-iface=eth0,-bogus=1          | -bogus"})
  void unknownFlagIsNamedAndHonouredOnesListed(String raw, String flag) {
    assertBad(raw, "unknown flag " + flag, "-iface", "-iface-regex", "-iface-can-reach", "-public-ip",
        "-subnet-lease-renew-margin", "-ip-masq", "-v");
  }

  /** flanneld's own flags that mean nothing here are refused by name, with the reason and the alternative. */
  @ParameterizedTest
  @CsvSource(delimiter = '|', value = {
      "-etcd-endpoints=http://x:2379 | -etcd-endpoints | ETCD_ENDPOINTS",
      "--etcd-prefix /coreos.com     | -etcd-prefix    | ETCD_PREFIX",
      "-kube-subnet-mgr              | -kube-subnet-mgr | not Kubernetes",
      "--kube-subnet-mgr=true        | -kube-subnet-mgr | not Kubernetes",
      "-subnet-file=/run/x.env       | -subnet-file    | plugin API",
      "-healthz-port=8471            | -healthz-port   | ADMIN_LISTEN",
      "-public-ipv6=fd00::1          | -public-ipv6    | IPv4 only",
      "-iptables-resync=5            | -iptables-resync | nftables",
      "-logtostderr                  | -logtostderr    | LOG_LEVEL",
      "-iface=eth0,-net-config-path=/x | -net-config-path | etcd"})
  void flanneldFlagsWithoutMeaningHereAreRefusedSayingWhy(String raw, String flag, String why) {
    assertBad(raw, "flanneld's flag " + flag + " is not taken", why, "flannel-np honours -iface");
  }

  @ParameterizedTest
  @ValueSource(strings = {"-iface", "--iface", "-iface=eth0 -public-ip", "-iface -public-ip=10.0.0.1",
      "-subnet-lease-renew-margin", "-iface-regex", "-iface-can-reach", "-v"})
  void missingValueIsRejected(String raw) {
    ConfigException e = failure(raw);
    assertThat(e.getMessage()).startsWith("invalid setting DEFAULT_FLANNEL_OPTIONS=\"" + raw + "\": ")
        .containsPattern("flag -(iface|iface-regex|iface-can-reach|v|public-ip|subnet-lease-renew-margin) needs a value");
  }

  @Test
  void missingValueNamesTheFlag() {
    assertBad("-iface", "flag -iface needs a value");
    assertBad("-iface=eth0 -public-ip", "flag -public-ip needs a value");
  }

  @ParameterizedTest
  @ValueSource(strings = {"eth0", "iface=eth0", "-iface=eth0 eth1"})
  void tokenThatIsNotAFlagIsRejected(String raw) {
    ConfigException e = failure(raw);
    assertThat(e.getMessage()).contains("is not a flag", "-flag=value", "-iface");
  }

  @Test
  void newlineSeparatedErrorStaysOneLine() {
    ConfigException e = failure("-iface=eth0\n-bogus=1");
    assertThat(e.getMessage()).startsWith("invalid setting DEFAULT_FLANNEL_OPTIONS=\"-iface=eth0\\x0a-bogus=1\": ")
        .contains("unknown flag -bogus");
  }
}
