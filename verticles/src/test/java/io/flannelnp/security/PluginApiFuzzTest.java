package io.flannelnp.security;

import static io.flannelnp.testing.PluginClient.j;
import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.PluginClient;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Random and mutated bodies for every endpoint of the plugin API, against the real daemon with a
 * live network, the way the DNS fuzz treats the resolver. Every answer must be a JSON object with
 * a status Docker understands (200 with an error field for a refusal, 400/404/405/413 for a
 * request it cannot read) and a message a user can act on: no 5xx, no exception class, no "null".
 * A refused call changes nothing: etcd (every key and value) and the host's links are as before.
 * The daemon answers normally afterwards.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class PluginApiFuzzTest {
  static final int PER_SEED = 40;
  static final int RANDOM_BODIES = 150;
  /** What an error a user reads must not look like: the inside of the daemon. */
  static final List<String> UNCLEAR = List.of("Exception", "exception", "No value present", "Cannot invoke",
      "class java", "class io.", "cannot be cast", "because \"");
  /** Calls whose success changes the kernel after the answer (the Flannel plane's pass). */
  static final List<String> ASYNC_KERNEL = List.of("/IpamDriver.RequestPool", "/IpamDriver.ReleasePool",
      "/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork", "/NetworkDriver.Join",
      "/NetworkDriver.DeleteEndpoint");

  @Test
  void randomAndMutatedBodiesGetClearAnswersAndARefusalChangesNothing() throws Exception {
    try (SecurityLab lab = new SecurityLab("fns-fuzz")) {
      lab.env.put("ADMIN_INSECURE_LOOPBACK", "true");
      // an accepted FreeNetwork of the spare network is finished by the garbage collector after
      // GC_GRACE, in the background: out of this test's time, so a refusal is judged on its own
      lab.env.put("GC_GRACE", "86400");
      lab.start();
      SecurityLab.Network net = lab.createNetwork("fnsfz" + lab.run, "fuzznet");
      SecurityLab.Network spare = lab.createNetwork("fnsfs" + lab.run, "sparenet"); // the destructive calls' target
      String ip = lab.address(net);
      String ep = "e".repeat(64);
      String mac = "02:42:0a:34:00:99";
      lab.plugin.ok("/NetworkDriver.CreateEndpoint", j("NetworkID", net.netId(), "EndpointID", ep,
          "Interface", j("Address", ip + "/25", "AddressIPv6", "", "MacAddress", mac), "Options", j()));

      Map<String, List<JsonObject>> seeds = seeds(net, spare, ep, ip, mac);
      Random rnd = new Random(20261207);
      List<String> problems = new ArrayList<>();
      int calls = 0;
      int refused = 0;
      for (Map.Entry<String, List<JsonObject>> e : seeds.entrySet()) {
        for (JsonObject seed : e.getValue()) {
          for (int i = 0; i < PER_SEED; i++) {
            String body = mutate(seed, rnd);
            refused += call(lab, e.getKey(), body, problems) ? 0 : 1;
            calls++;
          }
        }
      }
      List<String> paths = new ArrayList<>(seeds.keySet());
      for (int i = 0; i < RANDOM_BODIES; i++) {
        String body = rnd.nextInt(4) == 0 ? randomText(rnd) : randomJson(rnd, 0).toString();
        refused += call(lab, paths.get(rnd.nextInt(paths.size())), body, problems) ? 0 : 1;
        calls++;
      }
      System.out.printf("plugin fuzz: %d calls, %d refused, %d problems%n", calls, refused, problems.size());
      assertThat(problems).as("answers that are not clear, and refusals that changed state").isEmpty();

      // still the daemon it was
      assertThat(lab.plugin.post("/Plugin.Activate", "").body()).contains("NetworkDriver");
      assertThat(lab.health(null).getJsonObject("etcd").getBoolean("reachable")).isTrue();
      SecurityLab.Network after = lab.createNetwork("fnsfa" + lab.run, "afternet");
      assertThat(lab.address(after)).startsWith(after.subnet().substring(0, after.subnet().lastIndexOf('.')));
      lab.etcd.deletePrefix(lab.prefix + "/").await(5, TimeUnit.SECONDS);
    }
  }

  /** One call; false when refused. Checks the answer's shape, and that a refusal changed nothing. */
  static boolean call(SecurityLab lab, String path, String body, List<String> problems) throws Exception {
    Map<String, String> etcdBefore = lab.etcdState();
    List<String> linksBefore = lab.links();
    PluginClient.Response r = lab.plugin.raw("POST", path, body.getBytes(java.nio.charset.StandardCharsets.UTF_8));
    String what = path + " " + clip(body) + " → " + r.status() + " " + clip(r.body());
    JsonObject answer;
    try {
      answer = new JsonObject(r.body());
    } catch (RuntimeException e) {
      problems.add("not a JSON object: " + what);
      return false;
    }
    if (r.status() >= 500 || !List.of(200, 400, 404, 405, 413).contains(r.status())) {
      problems.add("status " + r.status() + ": " + what);
    }
    String error = answer.getValue("Err") instanceof String s ? s : answer.getValue("Error") instanceof String s2 ? s2
        : null;
    boolean ok = r.status() == 200 && error == null;
    if (!ok) {
      if (error == null || error.isBlank() || error.equals("null") || UNCLEAR.stream().anyMatch(error::contains)) {
        problems.add("unclear error: " + what);
      }
      if (!lab.etcdState().equals(etcdBefore)) {
        problems.add("a refused call changed etcd: " + what + " " + diff(etcdBefore, lab.etcdState()));
      }
      if (!lab.links().equals(linksBefore)) {
        problems.add("a refused call changed the host's links: " + what + " " + linksBefore + " → " + lab.links());
      }
    } else if (ASYNC_KERNEL.contains(path)) {
      settle(lab); // what a successful call started in the kernel ends before the next refusal is judged
    }
    return ok;
  }

  static void settle(SecurityLab lab) throws InterruptedException {
    List<String> last = lab.links();
    for (int i = 0; i < 20; i++) {
      Thread.sleep(150);
      List<String> now = lab.links();
      if (now.equals(last)) {
        return;
      }
      last = now;
    }
  }

  static String diff(Map<String, String> a, Map<String, String> b) {
    Map<String, String> d = new TreeMap<>();
    b.forEach((k, v) -> {
      if (!v.equals(a.get(k))) {
        d.put(k, clip(v));
      }
    });
    a.keySet().stream().filter(k -> !b.containsKey(k)).forEach(k -> d.put(k, "(deleted)"));
    return d.toString();
  }

  static String clip(String s) {
    String t = s.length() > 160 ? s.substring(0, 160) + "..." : s;
    return t.replaceAll("[\\x00-\\x1f]", "?");
  }

  /** Valid bodies of every endpoint, as dockerd sends them, against the fuzz's networks. */
  static Map<String, List<JsonObject>> seeds(SecurityLab.Network net, SecurityLab.Network spare, String ep, String ip,
      String mac) {
    Map<String, List<JsonObject>> s = new LinkedHashMap<>();
    String gp = "FlannelGlobal/" + net.fid();
    String lp = "FlannelLocal/" + net.fid();
    JsonArray v4 = new JsonArray().add(j("AddressSpace", "FlannelLocal", "Pool", net.subnet(), "Gateway", net.gateway()));
    s.put("/Plugin.Activate", List.of(j()));
    s.put("/NetworkDriver.GetCapabilities", List.of(j()));
    s.put("/IpamDriver.GetCapabilities", List.of(j()));
    s.put("/IpamDriver.GetDefaultAddressSpaces", List.of(j()));
    s.put("/IpamDriver.RequestPool", List.of(
        j("AddressSpace", "FlannelGlobal", "Pool", "", "SubPool", "", "Options", j("flannel-id", net.fid()), "V6", false),
        j("AddressSpace", "FlannelLocal", "Pool", net.subnet(), "SubPool", "", "Options", j("flannel-id", net.fid()),
            "V6", false)));
    s.put("/IpamDriver.ReleasePool", List.of(j("PoolID", "FlannelGlobal/" + spare.fid()),
        j("PoolID", "FlannelLocal/" + spare.fid())));
    s.put("/IpamDriver.RequestAddress", List.of(
        j("PoolID", lp, "Address", "", "Options", j("com.docker.network.endpoint.macaddress", "02:42:0a:34:00:01")),
        j("PoolID", gp, "Address", "", "Options", j("flannel-id", net.fid(), "com.docker.network.ipam.serial", "true")),
        j("PoolID", lp, "Address", net.gateway(), "Options", j("RequestAddressType", "com.docker.network.gateway"))));
    s.put("/IpamDriver.ReleaseAddress", List.of(j("PoolID", lp, "Address", ip)));
    s.put("/NetworkDriver.AllocateNetwork", List.of(j("NetworkID", net.netId(), "Options", j("flannel-id", net.fid()),
        "IPv4Data", new JsonArray().add(j("AddressSpace", "", "Pool", net.subnet(), "Gateway", net.gateway())),
        "IPv6Data", null)));
    s.put("/NetworkDriver.FreeNetwork", List.of(j("NetworkID", spare.netId())));
    s.put("/NetworkDriver.CreateNetwork", List.of(j("NetworkID", net.netId(), "Options",
        j("com.docker.network.generic", j("flannel-id", net.fid()), "com.docker.network.enable_ipv6", false),
        "IPv4Data", v4, "IPv6Data", new JsonArray())));
    s.put("/NetworkDriver.DeleteNetwork", List.of(j("NetworkID", spare.netId())));
    s.put("/NetworkDriver.CreateEndpoint", List.of(j("NetworkID", net.netId(), "EndpointID", "f".repeat(64),
        "Interface", j("Address", ip + "/25", "AddressIPv6", "", "MacAddress", mac), "Options", j())));
    s.put("/NetworkDriver.EndpointOperInfo", List.of(j("NetworkID", net.netId(), "EndpointID", ep)));
    s.put("/NetworkDriver.Join", List.of(j("NetworkID", net.netId(), "EndpointID", ep,
        "SandboxKey", "/var/run/docker/netns/0123456789ab", "Options", j())));
    s.put("/NetworkDriver.Leave", List.of(j("NetworkID", net.netId(), "EndpointID", ep)));
    s.put("/NetworkDriver.DeleteEndpoint", List.of(j("NetworkID", net.netId(), "EndpointID", ep)));
    s.put("/NetworkDriver.DiscoverNew", List.of(j("DiscoveryType", 1, "DiscoveryData", j("Address", "198.19.8.2"))));
    s.put("/NetworkDriver.ProgramExternalConnectivity", List.of(j("NetworkID", net.netId(), "EndpointID", ep,
        "Options", j())));
    s.put("/NetworkDriver.RevokeExternalConnectivity", List.of(j("NetworkID", net.netId(), "EndpointID", ep)));
    return s;
  }

  // ---- mutations ----------------------------------------------------------------------------------

  static final List<Object> ODD_VALUES = List.of("", " ", "x".repeat(5000), "../../../etc/passwd", "FlannelGlobal/",
      "FlannelGlobal/../x", "FlannelLocal/a b", "10.52.0.300", "10.52.0.5/33", "10.52.0.05", "::1", "0.0.0.0/0",
      "255.255.255.255", "-1", "1e309", "é\u0000\u2028\n\r\t", "\ud83d\ude00", "null", "true", "{}", "[]",
      Long.MAX_VALUE, Long.MIN_VALUE, -1, 0, 1.5e300, true, false);

  /** A seed with one to three random changes, as text (some of it no longer JSON). */
  static String mutate(JsonObject seed, Random rnd) {
    JsonObject o = seed.copy();
    int changes = 1 + rnd.nextInt(3);
    for (int c = 0; c < changes; c++) {
      mutateIn(o, rnd, 0);
    }
    String text = o.encode();
    switch (rnd.nextInt(12)) {
      case 0 -> {
        return text.substring(0, rnd.nextInt(text.length() + 1)); // cut short
      }
      case 1 -> {
        char[] ch = text.toCharArray();
        ch[rnd.nextInt(ch.length)] = (char) rnd.nextInt(128); // one character flipped
        return new String(ch);
      }
      case 2 -> {
        return text.length() > 2 ? text.substring(0, text.length() - 1) + ",\"Options\":{\"a\":\"b\"}}" : text; // a duplicate key
      }
      default -> {
        return text;
      }
    }
  }

  static void mutateIn(JsonObject o, Random rnd, int depth) {
    List<String> keys = new ArrayList<>(o.fieldNames());
    int op = rnd.nextInt(5);
    if (keys.isEmpty() || op == 0) {
      o.put(rnd.nextBoolean() && !keys.isEmpty() ? keys.get(rnd.nextInt(keys.size())) + "x" : "Unknown" + rnd.nextInt(9),
          randomJson(rnd, depth));
      return;
    }
    String k = keys.get(rnd.nextInt(keys.size()));
    Object v = o.getValue(k);
    if (op == 1) {
      o.remove(k);
    } else if (op == 2 && v instanceof JsonObject inner && depth < 4) {
      mutateIn(inner, rnd, depth + 1);
    } else if (op == 2 && v instanceof JsonArray a && !a.isEmpty() && a.getValue(0) instanceof JsonObject inner) {
      mutateIn(inner, rnd, depth + 1);
    } else if (op == 3) {
      o.put(k, ODD_VALUES.get(rnd.nextInt(ODD_VALUES.size())));
    } else {
      o.put(k, randomJson(rnd, depth + 2));
    }
  }

  static Object randomJson(Random rnd, int depth) {
    int kind = depth > 6 ? rnd.nextInt(4) : rnd.nextInt(7);
    switch (kind) {
      case 0 -> {
        return randomString(rnd);
      }
      case 1 -> {
        return rnd.nextInt(3) == 0 ? rnd.nextLong() : rnd.nextDouble() * Math.pow(10, rnd.nextInt(40) - 20);
      }
      case 2 -> {
        return rnd.nextBoolean();
      }
      case 3 -> {
        return ODD_VALUES.get(rnd.nextInt(ODD_VALUES.size()));
      }
      case 4 -> {
        JsonArray a = new JsonArray();
        for (int i = rnd.nextInt(4); i > 0; i--) {
          a.add(randomJson(rnd, depth + 1));
        }
        return a;
      }
      default -> {
        JsonObject o = new JsonObject();
        for (int i = rnd.nextInt(5); i > 0; i--) {
          o.put(rnd.nextBoolean() ? randomString(rnd) : List.of("PoolID", "Address", "Options", "NetworkID",
              "EndpointID", "IPv4Data", "Pool", "AddressSpace", "Interface", "SandboxKey").get(rnd.nextInt(10)),
              randomJson(rnd, depth + 1));
        }
        return o;
      }
    }
  }

  static String randomString(Random rnd) {
    StringBuilder b = new StringBuilder();
    for (int i = rnd.nextInt(24); i > 0; i--) {
      b.append((char) (rnd.nextInt(10) == 0 ? rnd.nextInt(0x3000) : 0x20 + rnd.nextInt(95)));
    }
    return b.toString();
  }

  /** Not necessarily JSON at all: bytes a confused or hostile client sends. */
  static String randomText(Random rnd) {
    StringBuilder b = new StringBuilder(rnd.nextBoolean() ? "{" : "");
    for (int i = rnd.nextInt(200); i > 0; i--) {
      b.append((char) rnd.nextInt(256));
    }
    if (rnd.nextInt(5) == 0) {
      b.append("[".repeat(3000)); // deep nesting
    }
    return b.toString();
  }
}
