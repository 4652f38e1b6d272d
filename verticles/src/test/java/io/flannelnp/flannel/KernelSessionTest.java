package io.flannelnp.flannel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.flannel.Kernel.KernelException;
import io.flannelnp.testing.Netns;
import io.vertx.core.json.JsonArray;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The Kernel's long-lived {@code ip} session (Join and DeleteEndpoint's hot path): `ip` caches
 * name → ifindex for its lifetime, so links deleted, re-created or renamed behind its back must
 * still be seen as they are; a failing line is reported by number; the session survives it.
 */
class KernelSessionTest {
  Netns ns;
  String host;
  Kernel kernel;

  @BeforeEach
  void setUp() {
    ns = new Netns();
    host = ns.add("ks");
    kernel = Kernel.inNetns(host);
    kernel.keepWarm();
  }

  @AfterEach
  void tearDown() {
    try {
      kernel.release();
    } finally {
      ns.close();
    }
    assertThat(Netns.list()).noneMatch(n -> n.startsWith(ns.stem()));
  }

  long ifindex(Map<String, String> links, String name) {
    return new JsonArray(links.get(name)).getJsonObject(0).getLong("ifindex");
  }

  @Test
  void linksChangedBehindTheSessionAreSeenAsTheyAre() throws Exception {
    kernel.ipApply(List.of("link add name fnqa type bridge", "link set dev fnqa up"));
    Map<String, String> first = kernel.ipLinks(List.of("fnqa", "fnqmissing"));
    assertThat(first).containsOnlyKeys("fnqa");
    long idx = ifindex(first, "fnqa");

    // deleted and made again by someone else: a new ifindex, which the session's cache lacks
    ns.ip(host, "link", "del", "fnqa").ok();
    ns.ip(host, "link", "add", "fnqa", "type", "bridge").ok();
    Map<String, String> again = kernel.ipLinks(List.of("fnqa"));
    assertThat(ifindex(again, "fnqa")).as("the new link, not the cached index").isNotEqualTo(idx);

    // renamed behind its back: the old name is gone, the new one is there
    ns.ip(host, "link", "set", "dev", "fnqa", "name", "fnqb").ok();
    assertThat(kernel.ipLinks(List.of("fnqa", "fnqb"))).containsOnlyKeys("fnqb");

    // deleted: absent, not an error
    ns.ip(host, "link", "del", "fnqb").ok();
    assertThat(kernel.ipLinks(List.of("fnqa", "fnqb"))).isEmpty();
  }

  @Test
  void aFailingLineIsNamedAndTheNextCallWorks() throws Exception {
    kernel.ipApply(List.of("link add name fnqc type bridge"));
    assertThatThrownBy(() -> kernel.ipApply(List.of("link set dev fnqc up", "link set dev fnqnone up",
        "link set dev fnqc mtu 1400")))
        .isInstanceOf(KernelException.class)
        .hasMessageContaining("line 2 \"link set dev fnqnone up\" failed")
        .hasMessageContaining("fnqnone");
    // with -force the lines after it ran too; the caller undoes as a whole (see FlannelVerticle)
    Map<String, String> c = kernel.ipLinks(List.of("fnqc"));
    assertThat(new JsonArray(c.get("fnqc")).getJsonObject(0).getInteger("mtu")).isEqualTo(1400);

    // a line `ip` exits on (an unknown master is a parse error): reported, and a fresh session follows
    assertThatThrownBy(() -> kernel.ipApply(List.of("link set dev fnqc master fnqnobridge")))
        .isInstanceOf(KernelException.class).hasMessageContaining("fnqnobridge");
    kernel.ipApply(List.of("link del dev fnqc"));
    assertThat(kernel.ipLinks(List.of("fnqc"))).isEmpty();
  }

  @Test
  void unsafeLinesAndNamesAreRefusedBeforeAnyToolRuns() {
    assertThatThrownBy(() -> kernel.ipApply(List.of("link set dev x up; reboot")))
        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("holds characters other than");
    assertThatThrownBy(() -> kernel.ipLinks(List.of("bad name")))
        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("invalid interface name");
    assertThatThrownBy(() -> kernel.ipApply(List.of("link set dev lo")))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
