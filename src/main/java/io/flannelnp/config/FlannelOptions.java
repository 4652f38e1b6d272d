package io.flannelnp.config;

import io.flannelnp.ipam.Ipv4;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * The flanneld flags of DEFAULT_FLANNEL_OPTIONS that flannel-np honours. There is no flanneld
 * process; these flags keep their Flannel meaning for the in-process data plane. Anything else is
 * an error, so a typo never silently changes which interface carries VXLAN.
 */
public record FlannelOptions(Optional<String> iface, Optional<String> publicIp, int subnetLeaseRenewMarginMinutes) {

  public static final List<String> HONOURED = List.of("-iface", "-public-ip", "-subnet-lease-renew-margin");

  public static FlannelOptions parse(String raw) {
    String var = Setting.DEFAULT_FLANNEL_OPTIONS.name();
    Optional<String> iface = Optional.empty();
    Optional<String> publicIp = Optional.empty();
    int margin = 60; // flanneld's default, in minutes
    if (raw == null || raw.isBlank()) {
      return new FlannelOptions(iface, publicIp, margin);
    }
    List<String> tokens = new ArrayList<>();
    for (String t : raw.trim().split("[,\\s]+")) {
      if (!t.isEmpty()) {
        tokens.add(t);
      }
    }
    for (int i = 0; i < tokens.size(); i++) {
      String tok = tokens.get(i);
      if (!tok.startsWith("-")) {
        throw new ConfigException(var, raw, "'" + tok + "' is not a flag; expected -flag=value, one of " + HONOURED);
      }
      String name = tok.startsWith("--") ? tok.substring(1) : tok;
      String value;
      int eq = name.indexOf('=');
      String bare = eq >= 0 ? name.substring(0, eq) : name;
      if (!HONOURED.contains(bare)) {
        throw new ConfigException(var, raw, "unknown flag " + bare + "; flannel-np honours " + String.join(", ", HONOURED));
      }
      if (eq >= 0) {
        value = name.substring(eq + 1);
        name = bare;
      } else if (i + 1 < tokens.size() && !tokens.get(i + 1).startsWith("-")) {
        value = tokens.get(++i);
      } else {
        throw new ConfigException(var, raw, "flag " + name + " needs a value");
      }
      switch (name) {
        case "-iface" -> {
          // the rule the data plane applies to it at runtime: what passes here never fails a pass later
          if (value.matches("[0-9.]+") ? !Ipv4.isValid(value) : !value.matches("[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")) {
            throw new ConfigException(var, raw, "-iface '" + value + "' is not an interface name (1-15 of A-Z a-z 0-9"
                + " _ . - starting with a letter or digit; a VLAN is named by its own link, not name@parent) nor an"
                + " IPv4 address");
          }
          if (iface.isPresent()) {
            throw new ConfigException(var, raw, "-iface given twice; flannel-np uses exactly one interface");
          }
          iface = Optional.of(value);
        }
        case "-public-ip" -> {
          if (!Ipv4.isValid(value)) {
            throw new ConfigException(var, raw, "-public-ip '" + value + "' is not an IPv4 address");
          }
          publicIp = Optional.of(value);
        }
        case "-subnet-lease-renew-margin" -> {
          if (!value.matches("\\d{1,6}") || Integer.parseInt(value) < 1) {
            throw new ConfigException(var, raw, "-subnet-lease-renew-margin '" + value + "' must be a positive number of minutes");
          }
          margin = Integer.parseInt(value);
        }
        default -> throw new ConfigException(var, raw,
            "unknown flag " + name + "; flannel-np honours " + String.join(", ", HONOURED));
      }
    }
    return new FlannelOptions(iface, publicIp, margin);
  }
}
