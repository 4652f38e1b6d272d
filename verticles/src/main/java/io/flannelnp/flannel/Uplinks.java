package io.flannelnp.flannel;

import io.flannelnp.config.FlannelOptions;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.Function;
import java.util.regex.Pattern;

/**
 * Which interface carries VXLAN and which address peers send it to, chosen as flanneld chooses
 * (its LookupExtIface): each -iface in order (a name, or the interface holding that address),
 * the first that exists with an IPv4 address; else each -iface-regex in order, the first
 * interface (in kernel order) whose name or one of whose IPv4 addresses matches; else
 * -iface-can-reach (the interface and source address the kernel routes that address by); else
 * the default route's interface. -public-ip replaces the address, never the interface. Pure: the
 * caller reads the kernel (the plugin API and the Flannel plane read the same namespace, so they
 * agree).
 */
public final class Uplinks {
  private Uplinks() {}

  /** One interface as {@code ip -json addr show} lists it: addresses as a.b.c.d/len. */
  public record Iface(String name, int mtu, List<String> ipv4) {}

  /** What {@code ip -json route get ADDR} answers: the device, and the source address if any. */
  public record Route(String dev, Optional<String> src) {}

  /** The chosen interface (absent: none, the VXLAN device is bound to no interface) and the public IP. */
  public record Choice(Optional<Iface> iface, String publicIp, String why) {}

  /** The settings name no usable interface (a pass fails naming why; the next pass looks again). */
  public static final class NoUplink extends RuntimeException {
    public NoUplink(String message) {
      super(message);
    }
  }

  /**
   * @param ifaces       every interface in kernel order
   * @param defaultDev   the device of the default route with the lowest metric, if any
   * @param routeGet     the kernel's route to an address (only asked for -iface-can-reach)
   */
  public static Choice choose(FlannelOptions o, List<Iface> ifaces, Optional<String> defaultDev,
      Function<String, Optional<Route>> routeGet) {
    Optional<String> pub = o.publicIp();
    List<String> tried = new ArrayList<>();
    for (String v : o.ifaces()) {
      Optional<Iface> i = FlannelOptions.isAddress(v) ? holding(ifaces, v) : byName(ifaces, v);
      if (i.isPresent() && !i.get().ipv4().isEmpty()) {
        String addr = FlannelOptions.isAddress(v) ? v : address(i.get().ipv4().get(0));
        return new Choice(i, pub.orElse(addr), "-iface " + v);
      }
      tried.add("-iface " + v + (i.isEmpty() ? " (no such interface)" : " (no IPv4 address)"));
    }
    List<Pattern> patterns = o.ifacePatterns();
    for (int p = 0; p < patterns.size(); p++) {
      Pattern re = patterns.get(p);
      for (Iface i : ifaces) {
        if (i.ipv4().isEmpty()) {
          continue;
        }
        if (re.matcher(i.name()).find()) {
          return new Choice(Optional.of(i), pub.orElse(address(i.ipv4().get(0))), "-iface-regex " + re.pattern());
        }
        for (String a : i.ipv4()) {
          if (re.matcher(address(a)).find()) {
            return new Choice(Optional.of(i), pub.orElse(address(a)), "-iface-regex " + re.pattern());
          }
        }
      }
      tried.add("-iface-regex " + o.ifaceRegexes().get(p) + " (no interface with an IPv4 address matches)");
    }
    if (!o.ifaces().isEmpty() || !patterns.isEmpty()) {
      // flanneld stops here too: naming interfaces means "only these"
      throw new NoUplink("no interface matches DEFAULT_FLANNEL_OPTIONS: " + String.join("; ", tried));
    }
    if (o.ifaceCanReach().isPresent()) {
      String target = o.ifaceCanReach().get();
      Optional<Route> r = routeGet.apply(target);
      Optional<Iface> i = r.flatMap(x -> byName(ifaces, x.dev()));
      if (i.isEmpty()) {
        throw new NoUplink("-iface-can-reach " + target + " (DEFAULT_FLANNEL_OPTIONS): no route to it leaves by an"
            + " interface of this namespace");
      }
      Optional<String> src = r.get().src();
      if (src.isEmpty() && i.get().ipv4().isEmpty() && pub.isEmpty()) {
        throw new NoUplink("-iface-can-reach " + target + ": interface " + i.get().name() + " has no IPv4 address;"
            + " set -public-ip");
      }
      return new Choice(i, pub.orElseGet(() -> src.orElseGet(() -> address(i.get().ipv4().get(0)))),
          "-iface-can-reach " + target);
    }
    Optional<Iface> dev = defaultDev.flatMap(d -> byName(ifaces, d));
    if (pub.isPresent()) {
      // the default route's interface; without one, the interface holding the address (a lab host)
      return new Choice(dev.or(() -> holding(ifaces, pub.get())), pub.get(), "-public-ip");
    }
    if (dev.isEmpty()) {
      throw new NoUplink("no default route to find this node's public IP; set -iface, -iface-regex,"
          + " -iface-can-reach or -public-ip in DEFAULT_FLANNEL_OPTIONS");
    }
    if (dev.get().ipv4().isEmpty()) {
      throw new NoUplink("interface " + dev.get().name() + " (the default route's) has no IPv4 address; set -public-ip"
          + " in DEFAULT_FLANNEL_OPTIONS");
    }
    return new Choice(dev, address(dev.get().ipv4().get(0)), "the default route");
  }

  private static Optional<Iface> byName(List<Iface> ifaces, String name) {
    return ifaces.stream().filter(i -> i.name().equals(name)).findFirst();
  }

  private static Optional<Iface> holding(List<Iface> ifaces, String ip) {
    return ifaces.stream().filter(i -> i.ipv4().stream().anyMatch(a -> address(a).equals(ip))).findFirst();
  }

  private static String address(String cidr) {
    int slash = cidr.indexOf('/');
    return slash < 0 ? cidr : cidr.substring(0, slash);
  }
}
