package io.flannelnp.api;

import io.flannelnp.config.FlannelOptions;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.flannel.Kernel.KernelException;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

/**
 * This node's public IP, as flanneld chooses it and as the Flannel plane does (same rules, same
 * network namespace, so the IPAM's lease value and the VXLAN device agree): -public-ip if given;
 * else -iface (an address is taken as is, a name gives its first IPv4 address); else the first
 * IPv4 address of the default route's device. Blocking (runs `ip`): call it from a worker.
 */
public final class PublicAddress {
  private PublicAddress() {}

  public static String resolve(FlannelOptions opts, Kernel kernel) {
    if (opts.publicIp().isPresent()) {
      return opts.publicIp().get();
    }
    if (opts.iface().isPresent() && opts.iface().get().matches("[0-9.]+")) {
      return Kernel.ipv4(opts.iface().get());
    }
    try {
      String iface = opts.iface().isPresent() ? Kernel.ifname(opts.iface().get()) : defaultRouteInterface(kernel);
      for (Object o : new JsonArray(orEmpty(kernel.ipJson("-4", "addr", "show", "dev", iface)))) {
        for (Object ai : ((JsonObject) o).getJsonArray("addr_info", new JsonArray())) {
          String local = ((JsonObject) ai).getString("local");
          if (local != null) {
            return local;
          }
        }
      }
      throw new IllegalStateException("interface " + iface + " has no IPv4 address; set -public-ip in DEFAULT_FLANNEL_OPTIONS");
    } catch (KernelException e) {
      throw new IllegalStateException("cannot find this node's public IP in " + kernel.where() + ": " + e.getMessage(), e);
    }
  }

  static String defaultRouteInterface(Kernel kernel) throws KernelException {
    JsonArray routes = new JsonArray(orEmpty(kernel.ipJson("-4", "route", "show", "default")));
    if (routes.isEmpty()) {
      throw new IllegalStateException("no default route in " + kernel.where()
          + " to find this node's public IP; set -iface or -public-ip in DEFAULT_FLANNEL_OPTIONS");
    }
    return routes.getJsonObject(0).getString("dev");
  }

  private static String orEmpty(String json) {
    return json == null || json.isBlank() ? "[]" : json;
  }
}
