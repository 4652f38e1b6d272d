package io.flannelnp.api;

import io.flannelnp.config.FlannelOptions;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.flannel.Kernel.KernelException;
import io.flannelnp.flannel.Uplinks;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * This node's public IP, as flanneld chooses it and as the Flannel plane does (the same
 * {@link Uplinks} rules in the same network namespace, so the IPAM's lease value and the VXLAN
 * device agree). Blocking (runs `ip`): call it from a worker.
 */
public final class PublicAddress {
  private PublicAddress() {}

  public static String resolve(FlannelOptions opts, Kernel kernel) {
    try {
      List<Uplinks.Iface> ifaces = new ArrayList<>();
      for (Object o : new JsonArray(orEmpty(kernel.ipJson("-4", "addr", "show")))) {
        JsonObject l = (JsonObject) o;
        List<String> v4 = new ArrayList<>();
        for (Object ai : l.getJsonArray("addr_info", new JsonArray())) {
          JsonObject a = (JsonObject) ai;
          if (a.getString("local") != null) {
            v4.add(a.getString("local") + "/" + a.getInteger("prefixlen", 32));
          }
        }
        ifaces.add(new Uplinks.Iface(l.getString("ifname"), l.getInteger("mtu", 0), List.copyOf(v4)));
      }
      return Uplinks.choose(opts, ifaces, defaultRouteInterface(kernel), a -> routeGet(kernel, a)).publicIp();
    } catch (Uplinks.NoUplink e) {
      throw new IllegalStateException("cannot find this node's public IP in " + kernel.where() + ": " + e.getMessage(), e);
    } catch (KernelException e) {
      throw new IllegalStateException("cannot find this node's public IP in " + kernel.where() + ": " + e.getMessage(), e);
    }
  }

  static Optional<String> defaultRouteInterface(Kernel kernel) throws KernelException {
    JsonArray routes = new JsonArray(orEmpty(kernel.ipJson("-4", "route", "show", "default")));
    return routes.isEmpty() ? Optional.empty() : Optional.ofNullable(routes.getJsonObject(0).getString("dev"));
  }

  private static Optional<Uplinks.Route> routeGet(Kernel kernel, String address) {
    try {
      JsonArray r = new JsonArray(orEmpty(kernel.ipJson("-4", "route", "get", Kernel.ipv4(address))));
      if (r.isEmpty() || r.getJsonObject(0).getString("dev") == null) {
        return Optional.empty();
      }
      JsonObject j = r.getJsonObject(0);
      return Optional.of(new Uplinks.Route(j.getString("dev"), Optional.ofNullable(j.getString("prefsrc"))));
    } catch (KernelException e) {
      return Optional.empty();
    }
  }

  private static String orEmpty(String json) {
    return json == null || json.isBlank() ? "[]" : json;
  }
}
