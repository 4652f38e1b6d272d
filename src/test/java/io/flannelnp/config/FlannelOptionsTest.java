package io.flannelnp.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

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
    FlannelOptions none = new FlannelOptions(Optional.empty(), Optional.empty(), 60);
    assertThat(FlannelOptions.parse(null)).isEqualTo(none);
    assertThat(FlannelOptions.parse("")).isEqualTo(none);
    assertThat(FlannelOptions.parse("  \t ")).isEqualTo(none);
  }

  @Test
  void honouredFlagsAreListed() {
    assertThat(FlannelOptions.HONOURED).containsExactly("-iface", "-public-ip", "-subnet-lease-renew-margin");
  }

  // ---- -iface -----------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"-iface=eth0", "-iface eth0", "--iface=eth0", "--iface eth0", "  -iface=eth0  ",
      "-iface=eth0,", ",-iface=eth0", "-iface\teth0"})
  void ifaceForms(String raw) {
    FlannelOptions o = FlannelOptions.parse(raw);
    assertThat(o.iface()).contains("eth0");
    assertThat(o.publicIp()).isEmpty();
    assertThat(o.subnetLeaseRenewMarginMinutes()).isEqualTo(60);
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

  @ParameterizedTest
  @ValueSource(strings = {"-iface=eth0,-iface=eth1", "-iface=eth0 --iface eth1", "-iface=eth0,-iface=eth0"})
  void duplicatedIfaceIsRejected(String raw) {
    assertBad(raw, "-iface given twice", "exactly one interface");
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
    assertThat(o).isEqualTo(new FlannelOptions(Optional.of("eth0"), Optional.of("192.168.1.10"), 30));
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
      "-ip-masq=true                 | -ip-masq",
      "-iface=eth0,-ip-masq=true     | -ip-masq",
      "-etcd-endpoints=http://x:2379 | -etcd-endpoints",
      "-Iface=eth0                   | -Iface",
      "-ifac=eth0                    | -ifac"})
  void unknownFlagIsNamedAndHonouredOnesListed(String raw, String flag) {
    assertBad(raw, "unknown flag " + flag, "-iface", "-public-ip", "-subnet-lease-renew-margin");
  }

  @Test
  void unknownDoubleDashFlagIsNamed() {
    assertBad("--kube-subnet-mgr=true", "unknown flag", "kube-subnet-mgr", "-iface, -public-ip, -subnet-lease-renew-margin");
  }

  @Test
  void unknownFlagWithSpaceSeparatedValueIsNamed() {
    assertBad("-ip-masq true", "unknown flag -ip-masq", "-iface");
  }

  @Test
  void unknownValuelessFlagIsReportedAsUnknown() {
    // "-ip-masq" is a real (boolean) flanneld flag: the error must say it is not honoured and list
    // the honoured ones, not claim that it merely lacks a value.
    assertBad("-ip-masq", "unknown flag -ip-masq", "-iface", "-public-ip", "-subnet-lease-renew-margin");
  }

  @ParameterizedTest
  @ValueSource(strings = {"-iface", "--iface", "-iface=eth0 -public-ip", "-iface -public-ip=10.0.0.1",
      "-subnet-lease-renew-margin"})
  void missingValueIsRejected(String raw) {
    ConfigException e = failure(raw);
    assertThat(e.getMessage()).startsWith("invalid setting DEFAULT_FLANNEL_OPTIONS=\"" + raw + "\": ")
        .containsPattern("flag -(iface|public-ip|subnet-lease-renew-margin) needs a value");
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
