package io.flannelnp.ipam;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

class CidrTest {

  private static Cidr c(String s) {
    return Cidr.parse(s);
  }

  private static long ip(String s) {
    return Ipv4.parse(s);
  }

  // ---- parse / format ---------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(strings = {"0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "10.1.2.0/24",
      "192.168.1.128/25", "10.0.0.4/30", "10.0.0.1/32", "128.0.0.0/1", "255.255.255.255/32", "255.255.255.254/31"})
  void parseFormatRoundTrip(String text) {
    Cidr cidr = Cidr.parse(text);
    assertThat(cidr).hasToString(text);
    assertThat(Cidr.parse(cidr.toString())).isEqualTo(cidr);
  }

  @Test
  void parseGivesBaseAndPrefix() {
    Cidr cidr = c("10.1.2.0/24");
    assertThat(cidr.base()).isEqualTo(0x0A01_0200L);
    assertThat(cidr.prefix()).isEqualTo(24);
    assertThat(cidr.baseAddress()).isEqualTo("10.1.2.0");
    assertThat(cidr).isEqualTo(new Cidr(0x0A01_0200L, 24)).hasSameHashCodeAs(new Cidr(0x0A01_0200L, 24));
    assertThat(c("255.255.255.255/32").base()).isEqualTo(0xFFFF_FFFFL);
  }

  @Test
  void parseTrimsSurroundingWhitespace() {
    assertThat(c(" 10.1.2.0/24 ")).isEqualTo(c("10.1.2.0/24"));
  }

  @ParameterizedTest
  @ValueSource(strings = {"010.0.0.0/8", "10.01.0.0/16", "10.0.00.0/24", "10.0.0.00/32", "00.0.0.0/0"})
  void leadingZerosInOctetsAreRejected(String text) {
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("is not an IPv4 address");
  }

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0.0/08", "10.0.0.0/09", "0.0.0.0/00", "10.1.2.0/024"})
  void leadingZerosInThePrefixAreRejected(String text) {
    // parse() promises "canonical form only"; "/08" is not the canonical "/8".
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class);
  }

  @ParameterizedTest
  @ValueSource(strings = {"256.0.0.0/8", "10.0.0.300/32", "10.999.0.0/16"})
  void octetAbove255IsRejected(String text) {
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("> 255");
  }

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0.0", "banana", "", "10.0.0.0-8"})
  void missingPrefixIsRejected(String text) {
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("expected a.b.c.d/len");
  }

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-8", "10.0.0.0/+8", "10.0.0.0/8/8", "10.0.0.0/ 8",
      "10.0.0.0/100"})
  void invalidPrefixLengthIsRejected(String text) {
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("no valid prefix length");
  }

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0.0/33", "0.0.0.0/99"})
  void prefixAbove32IsRejected(String text) {
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("not between 0 and 32");
  }

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0/8", "10.0.0.0.0/8", "10..0.0/8", ".10.0.0/8", "10.0.0./8", "+10.0.0.0/8",
      "a.b.c.d/8", "10.0.0.-0/8", "10 .0.0.0/8", "/8"})
  void malformedAddressIsRejected(String text) {
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("is not an IPv4 address");
  }

  @ParameterizedTest
  @ValueSource(strings = {"\u0661\u0660.0.0.0/8", "\uff11\uff10.0.0.0/8", "10.0.0.0/\u0668"})
  void nonAsciiDigitsAreRejected(String text) {
    // Arabic-Indic / fullwidth digits are Character.isDigit() and Integer.parseInt() accepts them,
    // but they are not "four decimal octets".
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void nullIsRejected() {
    assertThatThrownBy(() -> Cidr.parse(null)).isInstanceOf(NullPointerException.class);
  }

  @ParameterizedTest
  @CsvSource({"10.0.0.1/8, 10.0.0.0/8", "10.1.2.3/24, 10.1.2.0/24", "192.168.1.129/24, 192.168.1.0/24",
      "1.0.0.0/0, 0.0.0.0/0", "10.0.0.5/30, 10.0.0.4/30"})
  void hostBitsSetAreRejectedWithTheBlockSuggested(String text, String block) {
    assertThatThrownBy(() -> Cidr.parse(text)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("host bits set")
        .hasMessageContaining(text)
        .hasMessageContaining("the block is " + block);
  }

  @Test
  void constructorRejectsOutOfRangeValues() {
    assertThatThrownBy(() -> new Cidr(0, 33)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("33");
    assertThatThrownBy(() -> new Cidr(0, -1)).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new Cidr(-1, 32)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("out of IPv4 range");
    assertThatThrownBy(() -> new Cidr(0x1_0000_0000L, 0)).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new Cidr(1, 31)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("host bits");
  }

  // ---- mask / size / last / address -------------------------------------------------------

  @Test
  void masks() {
    assertThat(Cidr.mask(0)).isZero();
    assertThat(Cidr.mask(1)).isEqualTo(0x8000_0000L);
    assertThat(Cidr.mask(8)).isEqualTo(0xFF00_0000L);
    assertThat(Cidr.mask(25)).isEqualTo(0xFFFF_FF80L);
    assertThat(Cidr.mask(32)).isEqualTo(0xFFFF_FFFFL);
  }

  @Test
  void sizeAndLast() {
    assertThat(c("10.1.2.0/24").size()).isEqualTo(256);
    assertThat(c("10.1.2.0/24").last()).isEqualTo(ip("10.1.2.255"));
    assertThat(c("10.1.2.128/25").last()).isEqualTo(ip("10.1.2.255"));
    assertThat(c("0.0.0.0/0").size()).isEqualTo(1L << 32);
    assertThat(c("0.0.0.0/0").last()).isEqualTo(0xFFFF_FFFFL);
    assertThat(c("255.255.255.255/32").size()).isEqualTo(1);
    assertThat(c("255.255.255.255/32").last()).isEqualTo(0xFFFF_FFFFL);
  }

  @Test
  void nthAddress() {
    Cidr cidr = c("10.1.2.0/24");
    assertThat(cidr.address(0)).isEqualTo(ip("10.1.2.0"));
    assertThat(cidr.address(1)).isEqualTo(ip("10.1.2.1"));
    assertThat(cidr.address(255)).isEqualTo(ip("10.1.2.255"));
    assertThatThrownBy(() -> cidr.address(256)).isInstanceOf(IndexOutOfBoundsException.class);
    assertThatThrownBy(() -> cidr.address(-1)).isInstanceOf(IndexOutOfBoundsException.class);
    assertThat(c("0.0.0.0/0").address(0xFFFF_FFFFL)).isEqualTo(0xFFFF_FFFFL);
    assertThat(c("255.255.255.255/32").address(0)).isEqualTo(0xFFFF_FFFFL);
    assertThatThrownBy(() -> c("255.255.255.255/32").address(1)).isInstanceOf(IndexOutOfBoundsException.class);
  }

  @Test
  void containing() {
    assertThat(Cidr.containing(ip("10.1.2.3"), 24)).isEqualTo(c("10.1.2.0/24"));
    assertThat(Cidr.containing(ip("10.1.2.200"), 25)).isEqualTo(c("10.1.2.128/25"));
    assertThat(Cidr.containing(ip("255.255.255.255"), 0)).isEqualTo(c("0.0.0.0/0"));
    assertThat(Cidr.containing(ip("255.255.255.255"), 32)).isEqualTo(c("255.255.255.255/32"));
  }

  // ---- count / subnet / split ---------------------------------------------------------------

  @Test
  void count() {
    assertThat(c("10.0.0.0/16").count(20)).isEqualTo(16);
    assertThat(c("10.0.0.0/16").count(16)).isEqualTo(1);
    assertThat(c("10.0.0.0/16").count(25)).isEqualTo(512);
    assertThat(c("0.0.0.0/0").count(32)).isEqualTo(1L << 32);
    assertThat(c("255.255.255.255/32").count(32)).isEqualTo(1);
    assertThatThrownBy(() -> c("10.0.0.0/16").count(15)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("/15").hasMessageContaining("10.0.0.0/16");
  }

  @Test
  void subnet() {
    Cidr cidr = c("10.0.0.0/16");
    assertThat(cidr.subnet(20, 0)).isEqualTo(c("10.0.0.0/20"));
    assertThat(cidr.subnet(20, 1)).isEqualTo(c("10.0.16.0/20"));
    assertThat(cidr.subnet(20, 15)).isEqualTo(c("10.0.240.0/20"));
    assertThat(cidr.subnet(16, 0)).isEqualTo(cidr);
    assertThat(cidr.subnet(32, 65535)).isEqualTo(c("10.0.255.255/32"));
    assertThatThrownBy(() -> cidr.subnet(20, 16)).isInstanceOf(IndexOutOfBoundsException.class);
    assertThatThrownBy(() -> cidr.subnet(20, -1)).isInstanceOf(IndexOutOfBoundsException.class);
    assertThatThrownBy(() -> cidr.subnet(8, 0)).isInstanceOf(IllegalArgumentException.class);
    assertThat(c("0.0.0.0/0").subnet(32, 0xFFFF_FFFFL)).isEqualTo(c("255.255.255.255/32"));
    assertThat(c("0.0.0.0/0").subnet(1, 1)).isEqualTo(c("128.0.0.0/1"));
  }

  @Test
  void split() {
    assertThat(c("10.1.0.0/22").split(24))
        .containsExactly(c("10.1.0.0/24"), c("10.1.1.0/24"), c("10.1.2.0/24"), c("10.1.3.0/24"));
    assertThat(c("10.1.0.0/22").split(22)).containsExactly(c("10.1.0.0/22"));
    assertThat(c("255.255.255.255/32").split(32)).containsExactly(c("255.255.255.255/32"));
    assertThat(c("0.0.0.0/0").split(1)).containsExactly(c("0.0.0.0/1"), c("128.0.0.0/1"));
    List<Cidr> quarters = c("192.168.0.0/24").split(26);
    assertThat(quarters).extracting(Cidr::toString)
        .containsExactly("192.168.0.0/26", "192.168.0.64/26", "192.168.0.128/26", "192.168.0.192/26");
    assertThat(c("10.0.0.0/8").split(27)).hasSize(1 << 19);
  }

  @Test
  void splitRefusesHugeOrLargerBlocks() {
    assertThatThrownBy(() -> c("0.0.0.0/0").split(32)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("0.0.0.0/0");
    assertThatThrownBy(() -> c("10.0.0.0/12").split(32)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("1048576");
    assertThatThrownBy(() -> c("10.0.0.0/16").split(8)).isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void splitBlocksAreDisjointAndCoverTheParent() {
    Cidr parent = c("10.1.0.0/20");
    List<Cidr> parts = parent.split(25);
    assertThat(parts).hasSize(32);
    long next = parent.base();
    for (Cidr p : parts) {
      assertThat(parent.contains(p)).isTrue();
      assertThat(p.base()).isEqualTo(next);
      next = p.last() + 1;
    }
    assertThat(next - 1).isEqualTo(parent.last());
  }

  // ---- contains / overlaps ------------------------------------------------------------------

  @Test
  void containsAddress() {
    Cidr cidr = c("10.1.2.0/24");
    assertThat(cidr.contains(ip("10.1.2.0"))).isTrue();
    assertThat(cidr.contains(ip("10.1.2.77"))).isTrue();
    assertThat(cidr.contains(ip("10.1.2.255"))).isTrue();
    assertThat(cidr.contains(ip("10.1.3.0"))).isFalse();
    assertThat(cidr.contains(ip("10.1.1.255"))).isFalse();
    assertThat(c("0.0.0.0/0").contains(0L)).isTrue();
    assertThat(c("0.0.0.0/0").contains(0xFFFF_FFFFL)).isTrue();
    assertThat(c("255.255.255.255/32").contains(0xFFFF_FFFFL)).isTrue();
    assertThat(c("255.255.255.255/32").contains(0xFFFF_FFFEL)).isFalse();
  }

  @Test
  void containsBlock() {
    Cidr parent = c("10.1.0.0/16");
    assertThat(parent.contains(c("10.1.2.0/24"))).isTrue();
    assertThat(parent.contains(c("10.1.255.255/32"))).isTrue();
    assertThat(parent.contains(parent)).isTrue();
    assertThat(c("10.1.2.0/24").contains(parent)).isFalse();
    assertThat(c("10.0.0.0/16").contains(c("10.1.0.0/16"))).isFalse();
    assertThat(parent.contains(c("10.0.0.0/8"))).isFalse();
    assertThat(c("0.0.0.0/0").contains(c("255.255.255.255/32"))).isTrue();
    assertThat(c("255.255.255.255/32").contains(c("0.0.0.0/0"))).isFalse();
  }

  @Test
  void overlaps() {
    Cidr a = c("10.0.0.0/8");
    Cidr b = c("10.1.0.0/16");
    assertThat(a.overlaps(b)).isTrue();
    assertThat(b.overlaps(a)).isTrue();
    assertThat(a.overlaps(a)).isTrue();
    assertThat(c("10.0.0.0/24").overlaps(c("10.0.1.0/24"))).isFalse();
    assertThat(c("10.0.1.0/24").overlaps(c("10.0.0.0/24"))).isFalse();
    assertThat(c("10.0.0.0/23").overlaps(c("10.0.1.0/24"))).isTrue();
    assertThat(c("10.0.0.0/16").overlaps(c("10.1.0.0/16"))).isFalse();
    assertThat(c("0.0.0.0/0").overlaps(c("255.255.255.255/32"))).isTrue();
    assertThat(c("255.255.255.255/32").overlaps(c("0.0.0.0/0"))).isTrue();
    assertThat(c("255.255.255.254/32").overlaps(c("255.255.255.255/32"))).isFalse();
  }

  // ---- Flannel key form -----------------------------------------------------------------------

  @Test
  void toKey() {
    assertThat(c("10.1.2.0/24").toKey()).isEqualTo("10.1.2.0-24");
    assertThat(c("0.0.0.0/0").toKey()).isEqualTo("0.0.0.0-0");
    assertThat(c("255.255.255.255/32").toKey()).isEqualTo("255.255.255.255-32");
  }

  @Test
  void fromKey() {
    assertThat(Cidr.fromKey("10.1.2.0-24")).isEqualTo(c("10.1.2.0/24"));
    assertThat(Cidr.fromKey("0.0.0.0-0")).isEqualTo(c("0.0.0.0/0"));
    assertThat(Cidr.fromKey("255.255.255.255-32")).isEqualTo(c("255.255.255.255/32"));
  }

  @ParameterizedTest
  @ValueSource(strings = {"10.0.0.0/8", "10.1.2.0/24", "192.168.1.128/25", "0.0.0.0/0", "255.255.255.255/32"})
  void keyRoundTrip(String text) {
    Cidr cidr = c(text);
    assertThat(Cidr.fromKey(cidr.toKey())).isEqualTo(cidr);
    assertThat(Cidr.fromKey(cidr.toKey()).toKey()).isEqualTo(cidr.toKey());
  }

  @Test
  void fromKeyRejectsBadKeys() {
    assertThatThrownBy(() -> Cidr.fromKey("10.1.2.0/24")).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("not a subnet key");
    assertThatThrownBy(() -> Cidr.fromKey("banana")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Cidr.fromKey("10.1.2.1-24")).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("host bits");
    assertThatThrownBy(() -> Cidr.fromKey("10.1.2.0-")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Cidr.fromKey("10.1.2.0-33")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Cidr.fromKey("10.1.2-24")).isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Cidr.fromKey("-24")).isInstanceOf(IllegalArgumentException.class);
  }

  // ---- ordering ---------------------------------------------------------------------------------

  @Test
  void ordersByAddressThenPrefix() {
    List<Cidr> list = new ArrayList<>(List.of(c("10.1.0.0/24"), c("10.0.0.0/16"), c("255.255.255.255/32"),
        c("10.0.0.0/8"), c("0.0.0.0/0"), c("128.0.0.0/1")));
    list.sort(null);
    assertThat(list).containsExactly(c("0.0.0.0/0"), c("10.0.0.0/8"), c("10.0.0.0/16"), c("10.1.0.0/24"),
        c("128.0.0.0/1"), c("255.255.255.255/32"));
    assertThat(c("10.0.0.0/8").compareTo(c("10.0.0.0/8"))).isZero();
    // Unsigned: 200.0.0.0 sorts after 10.0.0.0 even though its top bit is set.
    assertThat(c("200.0.0.0/8").compareTo(c("10.0.0.0/8"))).isPositive();
  }

  // ---- Ipv4 helpers used above ------------------------------------------------------------------

  @Test
  void ipv4FormatCoversTheFullRange() {
    assertThat(Ipv4.format(0)).isEqualTo("0.0.0.0");
    assertThat(Ipv4.format(0xFFFF_FFFFL)).isEqualTo("255.255.255.255");
    assertThat(Ipv4.format(0x0A01_0203L)).isEqualTo("10.1.2.3");
    assertThat(Ipv4.parse("255.255.255.255")).isEqualTo(0xFFFF_FFFFL);
    assertThat(Ipv4.isValid("10.0.0.1")).isTrue();
    assertThat(Ipv4.isValid("10.0.0.01")).isFalse();
  }
}
