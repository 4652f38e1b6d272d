package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.channel.socket.DatagramPacket;
import io.netty.handler.codec.dns.DatagramDnsResponse;
import io.netty.handler.codec.dns.DatagramDnsResponseDecoder;
import io.netty.handler.codec.dns.DnsOpCode;
import io.netty.handler.codec.dns.DnsPtrRecord;
import io.netty.handler.codec.dns.DnsRawRecord;
import io.netty.handler.codec.dns.DnsRecord;
import io.netty.handler.codec.dns.DnsRecordType;
import io.netty.handler.codec.dns.DnsResponseCode;
import io.netty.handler.codec.dns.DnsSection;
import java.io.ByteArrayOutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;

/**
 * The wire side of an answer, checked with Netty's own DNS decoder (an independent reader):
 * flags, TTL, owner names, shuffling, AAAA/MX without records, PTR, what is left to Docker, EDNS,
 * truncation at 512 bytes or the client's EDNS size (TCP up to 65,535), and malformed queries.
 */
class DnsWireTest {
  static final InetSocketAddress CLIENT = new InetSocketAddress("127.0.0.1", 40000);
  static final InetSocketAddress SERVER = new InetSocketAddress("127.0.0.11", 53);

  final DnsNamesTest.World world = DnsNamesTest.scenario1();
  final Responder.View view = view(world, true, 600);

  static Responder.View view(DnsNamesTest.World w, boolean compat, long ttl) {
    DnsNames n = w.names();
    return new Responder.View(n, n.scope(w.asker.keySet()), compat, ttl);
  }

  @Test
  void anAnswerHasQrRaRdNoAaTheTtlAndTheQuestionAsAsked() {
    Responder.View v = view(world, true, 77);
    DatagramDnsResponse r = ask(query(0x1234, "My-Name.Web", DnsWire.TYPE_A, 0, true), v, 512);
    try {
      assertThat(r.id()).isEqualTo(0x1234);
      assertThat(r.opCode()).isEqualTo(DnsOpCode.QUERY);
      assertThat(r.code()).isEqualTo(DnsResponseCode.NOERROR);
      assertThat(r.isRecursionDesired()).isTrue();
      assertThat(r.isRecursionAvailable()).isTrue();
      assertThat(r.isAuthoritativeAnswer()).isFalse();
      assertThat(r.isTruncated()).isFalse();
      DnsRecord q = r.recordAt(DnsSection.QUESTION);
      assertThat(q.name()).isEqualTo("My-Name.Web.");
      assertThat(addresses(r)).containsExactlyInAnyOrder("10.1.0.5", "10.1.0.2");
      for (int i = 0; i < r.count(DnsSection.ANSWER); i++) {
        DnsRecord a = r.recordAt(DnsSection.ANSWER, i);
        assertThat(a.name()).isEqualTo("My-Name.Web.");
        assertThat(a.timeToLive()).isEqualTo(77);
        assertThat(a.type()).isEqualTo(DnsRecordType.A);
      }
      assertThat(r.count(DnsSection.ADDITIONAL)).as("no OPT without EDNS in the query").isZero();
    } finally {
      r.release();
    }
    DatagramDnsResponse noRd = ask(query(7, "my-name", DnsWire.TYPE_A, 0, false), v, 512);
    assertThat(noRd.isRecursionDesired()).isFalse();
    noRd.release();
  }

  @Test
  void severalAddressesComeInEveryOrder() {
    Set<List<String>> orders = new HashSet<>();
    for (int i = 0; i < 200; i++) {
      DatagramDnsResponse r = ask(query(i, "my-alias", DnsWire.TYPE_A, 0, true), view, 512);
      orders.add(addresses(r));
      r.release();
    }
    assertThat(orders).allSatisfy(o -> assertThat(o).containsExactlyInAnyOrder("10.2.0.5", "10.2.0.11", "10.2.0.12"));
    assertThat(orders).as("3 addresses have 6 orders; 200 shuffles see them all").hasSize(6);
  }

  @Test
  void aaaaAndMxOfAKnownNameAreNoerrorWithoutRecordsAndOfAnUnknownNameGoToDocker() {
    for (int type : new int[] {DnsWire.TYPE_AAAA, DnsWire.TYPE_MX}) {
      DatagramDnsResponse r = ask(query(9, "my-name", type, 0, true), view, 512);
      assertThat(r.code()).isEqualTo(DnsResponseCode.NOERROR);
      assertThat(r.count(DnsSection.ANSWER)).isZero();
      r.release();
      assertThat(forwarded(query(9, "nosuch", type, 0, true), view)).isTrue();
    }
    assertThat(forwarded(query(9, "nosuch", DnsWire.TYPE_A, 0, true), view)).isTrue();
  }

  @Test
  void otherTypesClassesAndOddNamesAreLeftToDocker() {
    assertThat(forwarded(query(1, "my-name", 16, 0, true), view)).as("TXT").isTrue();
    assertThat(forwarded(query(1, "my-name", 33, 0, true), view)).as("SRV").isTrue();
    assertThat(forwarded(query(1, "my-name", 255, 0, true), view)).as("ANY").isTrue();
    byte[] chaos = query(1, "my-name", DnsWire.TYPE_A, 0, true);
    chaos[chaos.length - 1] = 3; // class CH
    assertThat(forwarded(chaos, view)).as("class CHAOS").isTrue();
    assertThat(forwarded(query(1, "", DnsWire.TYPE_A, 0, true), view)).as("the root").isTrue();
    byte[] dotInLabel = raw(1, 0x0100, new byte[] {7, 'm', 'y', '.', 'n', 'a', 'm', 'e', 0}, DnsWire.TYPE_A);
    assertThat(forwarded(dotInLabel, view)).as("a '.' inside a label").isTrue();
  }

  @Test
  void ptrOfAContainerOrAVipIsAnsweredAndOfAnythingElseForwarded() {
    DatagramDnsResponse r = ask(query(5, "5.0.2.10.in-addr.arpa", DnsWire.TYPE_PTR, 0, true), view, 512);
    assertThat(r.count(DnsSection.ANSWER)).isEqualTo(1);
    DnsRecord a = r.recordAt(DnsSection.ANSWER, 0);
    assertThat(a.type()).isEqualTo(DnsRecordType.PTR);
    assertThat(a.name()).isEqualTo("5.0.2.10.in-addr.arpa.");
    assertThat(ptrTarget(a)).isEqualTo("my-name.internal.");
    r.release();
    DatagramDnsResponse vip = ask(query(5, "2.0.1.10.IN-ADDR.ARPA", DnsWire.TYPE_PTR, 0, true), view, 512);
    assertThat(ptrTarget(vip.recordAt(DnsSection.ANSWER, 0))).isEqualTo("my-name.web.");
    vip.release();
    assertThat(forwarded(query(5, "99.0.2.10.in-addr.arpa", DnsWire.TYPE_PTR, 0, true), view)).isTrue();
    assertThat(forwarded(query(5, "0.2.10.in-addr.arpa", DnsWire.TYPE_PTR, 0, true), view)).isTrue();
    assertThat(forwarded(query(5, "1.1.1.1.ip6.arpa", DnsWire.TYPE_PTR, 0, true), view)).isTrue();
  }

  @Test
  void udpAnswersAreTruncatedWithTcAt512BytesOrTheClientsEdnsSizeTcpTakesEverything() {
    DnsNamesTest.World w = DnsNamesTest.base();
    w.service(new ServiceRecord("svc-big", "big", EndpointMode.DNSRR, Map.of(), Map.of()));
    for (int i = 1; i <= 100; i++) {
      w.container(DnsNamesTest.task("c-big-" + i, "svc-big", "big", i, "running", "node-1",
          Map.of(DnsNamesTest.INTERNAL, DnsNamesTest.at("10.2.1." + i))));
    }
    Responder.View v = view(w, true, 600);
    // no EDNS: 512 bytes; header 12 + question 8 ("big" + root + type/class): (512 - 20) / 16 = 30 records
    DatagramDnsResponse small = ask(query(1, "big", DnsWire.TYPE_A, 0, true), v, 512);
    assertThat(small.isTruncated()).isTrue();
    assertThat(small.count(DnsSection.ANSWER)).isEqualTo(30);
    assertThat(encodedSize(query(1, "big", DnsWire.TYPE_A, 0, true), v, 512)).isLessThanOrEqualTo(512);
    small.release();
    // EDNS 1232: room for all 100 (12 + 8 + 11 + 1600 = 1631 > 1232): (1232 - 31) / 16 = 75
    DatagramDnsResponse edns = ask(query(1, "big", DnsWire.TYPE_A, 1232, true), v, 1232);
    assertThat(edns.isTruncated()).isTrue();
    assertThat(edns.count(DnsSection.ANSWER)).isEqualTo(75);
    assertThat(edns.count(DnsSection.ADDITIONAL)).as("our OPT").isEqualTo(1);
    assertThat(edns.recordAt(DnsSection.ADDITIONAL, 0).type()).isEqualTo(DnsRecordType.OPT);
    edns.release();
    DatagramDnsResponse big = ask(query(1, "big", DnsWire.TYPE_A, 4096, true), v, 4096);
    assertThat(big.isTruncated()).isFalse();
    assertThat(big.count(DnsSection.ANSWER)).isEqualTo(100);
    big.release();
    DatagramDnsResponse tcp = ask(query(1, "big", DnsWire.TYPE_A, 0, true), v, DnsWire.TCP_MAX);
    assertThat(tcp.isTruncated()).isFalse();
    assertThat(tcp.count(DnsSection.ANSWER)).isEqualTo(100);
    tcp.release();
    // the limit used by the listener: max(512, EDNS size)
    DnsWire.Query q = new DnsWire.Query();
    DnsWire.parse(Unpooled.wrappedBuffer(query(1, "big", DnsWire.TYPE_A, 100, true)), q);
    assertThat(q.udpLimit()).isEqualTo(512);
    DnsWire.parse(Unpooled.wrappedBuffer(query(1, "big", DnsWire.TYPE_A, 0, true)), q);
    assertThat(q.udpLimit()).isEqualTo(512);
    DnsWire.parse(Unpooled.wrappedBuffer(query(1, "big", DnsWire.TYPE_A, 1400, true)), q);
    assertThat(q.udpLimit()).isEqualTo(1400);
  }

  @Test
  void ednsVersionsOtherThan0GetBadvers() {
    byte[] m = query(3, "my-name", DnsWire.TYPE_A, 1232, true);
    m[m.length - 11 + 6] = 1; // OPT version byte
    DatagramDnsResponse r = ask(m, view, 1232);
    // BADVERS = 16: the upper 8 bits (1) in the OPT record's TTL field, the lower 4 (0) in the header
    assertThat(r.code().intValue()).isZero();
    DnsRecord opt = r.recordAt(DnsSection.ADDITIONAL, 0);
    assertThat(opt.type()).isEqualTo(DnsRecordType.OPT);
    assertThat(opt.timeToLive() >>> 24).isEqualTo(1);
    assertThat(r.count(DnsSection.ANSWER)).isZero();
    r.release();
  }

  @Test
  void malformedQueriesGetFormerrOrNotimpOrNothingAndNeverAnException() {
    DnsWire.Query q = new DnsWire.Query();
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(new byte[11]), q)).as("shorter than a header").isEqualTo(DnsWire.DROP);
    byte[] response = query(1, "my-name", DnsWire.TYPE_A, 0, true);
    response[2] |= (byte) 0x80;
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(response), q)).as("a response").isEqualTo(DnsWire.DROP);
    byte[] notify = query(1, "my-name", DnsWire.TYPE_A, 0, true);
    notify[2] |= (byte) (4 << 3);
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(notify), q)).isEqualTo(DnsWire.NOTIMP);
    assertThat(q.id).isEqualTo(1);
    byte[] noQuestion = new byte[] {0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(noQuestion), q)).isEqualTo(DnsWire.FORMERR);
    byte[] two = query(1, "my-name", DnsWire.TYPE_A, 0, true);
    two[5] = 2;
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(two), q)).as("two questions").isEqualTo(DnsWire.FORMERR);
    byte[] cut = query(1, "my-name", DnsWire.TYPE_A, 0, true);
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(cut, 0, cut.length - 3), q)).isEqualTo(DnsWire.FORMERR);
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(raw(1, 0x100, new byte[] {(byte) 0xc0, 12}, 1)), q))
        .as("a compression pointer in the question").isEqualTo(DnsWire.FORMERR);
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(raw(1, 0x100, new byte[] {0x40, 'a', 0}, 1)), q))
        .as("an extended label type").isEqualTo(DnsWire.FORMERR);
    ByteArrayOutputStream longName = new ByteArrayOutputStream();
    for (int i = 0; i < 5; i++) {
      longName.write(63);
      longName.writeBytes("a".repeat(63).getBytes(StandardCharsets.US_ASCII));
    }
    longName.write(0);
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(raw(1, 0x100, longName.toByteArray(), 1)), q))
        .as("a name longer than 255 bytes").isEqualTo(DnsWire.FORMERR);
    byte[] badOpt = query(1, "my-name", DnsWire.TYPE_A, 1232, true);
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(badOpt, 0, badOpt.length - 1), q)).as("a cut OPT record")
        .isEqualTo(DnsWire.FORMERR);

    // the listener answers FORMERR/NOTIMP with the ID and no question
    ByteBuf out = Unpooled.buffer();
    DnsWire.bare(out, 0xbeef, 0x0100, DnsWire.FORMERR);
    DatagramDnsResponse r = decode(out);
    assertThat(r.id()).isEqualTo(0xbeef);
    assertThat(r.code()).isEqualTo(DnsResponseCode.FORMERR);
    assertThat(r.count(DnsSection.QUESTION)).isZero();
    r.release();
  }

  @Test
  void aServfailCarriesTheQuestionAndTheClientsId() {
    byte[] m = query(0x4242, "outside.example", DnsWire.TYPE_A, 1232, true);
    DnsWire.Query q = new DnsWire.Query();
    assertThat(DnsWire.parse(Unpooled.wrappedBuffer(m), q)).isEqualTo(DnsWire.OK);
    byte[] question = new byte[q.questionEnd - 12];
    System.arraycopy(m, 12, question, 0, question.length);
    ByteBuf out = Unpooled.buffer();
    DnsWire.failure(out, q.id, q.flags, question, q.edns(), DnsWire.SERVFAIL);
    DatagramDnsResponse r = decode(out);
    assertThat(r.id()).isEqualTo(0x4242);
    assertThat(r.code()).isEqualTo(DnsResponseCode.SERVFAIL);
    assertThat(r.recordAt(DnsSection.QUESTION).name()).isEqualTo("outside.example.");
    assertThat(r.count(DnsSection.ADDITIONAL)).isEqualTo(1);
    r.release();
  }

  @Test
  void namesAndReverseNamesEncodeAndParse() {
    assertThat(DnsWire.encodeName("my-name.web")).containsExactly(7, 'm', 'y', '-', 'n', 'a', 'm', 'e', 3, 'w', 'e',
        'b', 0);
    assertThat(DnsWire.encodeName("a..b")).isNull();
    assertThat(DnsWire.encodeName("x".repeat(64))).isNull();
    assertThat(DnsWire.reverseAddress("4.3.2.1.in-addr.arpa")).isEqualTo(DnsNamesTest.ip("1.2.3.4"));
    assertThat(DnsWire.reverseAddress("256.3.2.1.in-addr.arpa")).isEqualTo(DnsNames.Ipv4.INVALID);
    assertThat(DnsWire.reverseAddress("3.2.1.in-addr.arpa")).isEqualTo(DnsNames.Ipv4.INVALID);
    assertThat(DnsNames.Ipv4.parse("10.0.0.1")).isEqualTo(0x0a000001);
    for (String bad : List.of("", "10.0.0", "10.0.0.1.", "10.0.0.256", "1..2.3", "a.b.c.d", "10.0.0.1/24")) {
      assertThat(DnsNames.Ipv4.parse(bad)).as(bad).isEqualTo(DnsNames.Ipv4.INVALID);
    }
  }

  // ---- helpers -----------------------------------------------------------------------------------

  /** A query: header with RD as asked, one question, an OPT record when ednsSize > 0. */
  static byte[] query(int id, String name, int type, int ednsSize, boolean rd) {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    b.write(id >>> 8);
    b.write(id);
    b.write(rd ? 1 : 0);
    b.write(0);
    b.writeBytes(new byte[] {0, 1, 0, 0, 0, 0, 0, (byte) (ednsSize > 0 ? 1 : 0)});
    if (!name.isEmpty()) {
      for (String label : name.split("\\.")) {
        b.write(label.length());
        b.writeBytes(label.getBytes(StandardCharsets.US_ASCII));
      }
    }
    b.write(0);
    b.write(type >>> 8);
    b.write(type);
    b.write(0);
    b.write(1);
    if (ednsSize > 0) {
      b.writeBytes(new byte[] {0, 0, 41, (byte) (ednsSize >>> 8), (byte) ednsSize, 0, 0, 0, 0, 0, 0});
    }
    return b.toByteArray();
  }

  static byte[] raw(int id, int flags, byte[] nameWire, int type) {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    b.writeBytes(new byte[] {(byte) (id >>> 8), (byte) id, (byte) (flags >>> 8), (byte) flags, 0, 1, 0, 0, 0, 0, 0, 0});
    b.writeBytes(nameWire);
    b.writeBytes(new byte[] {(byte) (type >>> 8), (byte) type, 0, 1});
    return b.toByteArray();
  }

  static boolean forwarded(byte[] m, Responder.View v) {
    DnsWire.Query q = new DnsWire.Query();
    ByteBuf in = Unpooled.wrappedBuffer(m);
    assertThat(DnsWire.parse(in, q)).isEqualTo(DnsWire.OK);
    ByteBuf out = Responder.answer(ByteBufAllocator.DEFAULT, in, q, v, 512);
    if (out != null) {
      out.release();
    }
    return out == null;
  }

  static int encodedSize(byte[] m, Responder.View v, int limit) {
    DnsWire.Query q = new DnsWire.Query();
    ByteBuf in = Unpooled.wrappedBuffer(m);
    DnsWire.parse(in, q);
    ByteBuf out = Responder.answer(ByteBufAllocator.DEFAULT, in, q, v, limit);
    int n = out.readableBytes();
    out.release();
    return n;
  }

  static DatagramDnsResponse ask(byte[] m, Responder.View v, int limit) {
    DnsWire.Query q = new DnsWire.Query();
    ByteBuf in = Unpooled.wrappedBuffer(m);
    assertThat(DnsWire.parse(in, q)).isEqualTo(DnsWire.OK);
    ByteBuf out = Responder.answer(ByteBufAllocator.DEFAULT, in, q, v, limit);
    assertThat(out).as("answered locally").isNotNull();
    assertThat(out.readableBytes()).isLessThanOrEqualTo(Math.max(limit, 12 + m.length));
    return decode(out);
  }

  static DatagramDnsResponse decode(ByteBuf out) {
    EmbeddedChannel ch = new EmbeddedChannel(new DatagramDnsResponseDecoder());
    ch.writeInbound(new DatagramPacket(out, CLIENT, SERVER));
    DatagramDnsResponse r = ch.readInbound();
    ch.finishAndReleaseAll();
    return r;
  }

  static List<String> addresses(DatagramDnsResponse r) {
    List<String> out = new ArrayList<>();
    for (int i = 0; i < r.count(DnsSection.ANSWER); i++) {
      DnsRecord rec = r.recordAt(DnsSection.ANSWER, i);
      if (rec instanceof DnsRawRecord raw && rec.type() == DnsRecordType.A) {
        ByteBuf c = raw.content();
        out.add(c.getUnsignedByte(c.readerIndex()) + "." + c.getUnsignedByte(c.readerIndex() + 1) + "."
            + c.getUnsignedByte(c.readerIndex() + 2) + "." + c.getUnsignedByte(c.readerIndex() + 3));
      }
    }
    return out;
  }

  static String ptrTarget(DnsRecord r) {
    if (r instanceof DnsPtrRecord p) {
      return p.hostname();
    }
    throw new AssertionError("not a PTR record: " + r);
  }
}
