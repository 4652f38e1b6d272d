package io.flannelnp.api;

import io.flannelnp.config.FlannelOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * This node's public IP, as flanneld chooses it: -public-ip if given, else the first IPv4 address
 * of -iface, else of the interface that carries the default route. Blocking (runs `ip`): call it
 * from a worker.
 */
public final class PublicAddress {
  private PublicAddress() {}

  public static String resolve(FlannelOptions opts) {
    if (opts.publicIp().isPresent()) {
      return opts.publicIp().get();
    }
    String iface = opts.iface().orElseGet(PublicAddress::defaultRouteInterface);
    JsonArray addrs = new JsonArray(ip("-j", "-4", "addr", "show", "dev", iface));
    for (Object o : addrs) {
      for (Object ai : ((JsonObject) o).getJsonArray("addr_info", new JsonArray())) {
        String local = ((JsonObject) ai).getString("local");
        if (local != null) {
          return local;
        }
      }
    }
    throw new IllegalStateException("interface " + iface + " has no IPv4 address; set -public-ip in DEFAULT_FLANNEL_OPTIONS");
  }

  static String defaultRouteInterface() {
    JsonArray routes = new JsonArray(ip("-j", "-4", "route", "show", "default"));
    if (routes.isEmpty()) {
      throw new IllegalStateException("no default route to find this node's public IP; set -iface or -public-ip in DEFAULT_FLANNEL_OPTIONS");
    }
    return routes.getJsonObject(0).getString("dev");
  }

  private static String ip(String... args) {
    List<String> cmd = new java.util.ArrayList<>(List.of("ip"));
    cmd.addAll(List.of(args));
    try {
      Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
      String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
      if (!p.waitFor(5, TimeUnit.SECONDS) || p.exitValue() != 0) {
        throw new IllegalStateException(String.join(" ", cmd) + " failed: " + out);
      }
      return out.isEmpty() ? "[]" : out;
    } catch (IOException e) {
      throw new IllegalStateException("cannot run ip: " + e.getMessage(), e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
  }
}
