package io.flannelnp.flannel;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.regex.Pattern;

/**
 * The names of every link flannel-np creates. All of them fit Linux's 15-character limit
 * (IFNAMSIZ − 1) and start with {@code fnp} or {@code flannel.}, so `ip link` shows at a glance
 * what is ours and a clean-up can find it by name.
 *
 * <pre>
 * link                  name                                       example
 * network bridge        "fnp"  + first 12 hex of SHA-1(flannelId)  fnp3b5d8c0e2a41   (15 chars)
 * endpoint, host side   "fnph" + first 11 chars of the endpoint ID fnph0123456789a   (15 chars)
 * endpoint, container   "fnpc" + first 11 chars of the endpoint ID fnpc0123456789a   (15 chars)
 * VXLAN device          "flannel." + VNI (Flannel's own name)      flannel.6515
 * detached veth         "fnpz" + 11 random [0-9a-z]                fnpz0k3m9q2x7ab   (15 chars)
 * </pre>
 *
 * A detached veth is one DeleteEndpoint took off its bridge, set down and renamed so its
 * endpoint's names are free at once; it is deleted in the background (the kernel's delete of a
 * net device waits ~20 ms for RCU) and by every full pass. "z" is not hex, so it never looks like
 * a bridge.
 *
 * <ul>
 *   <li>The bridge hashes the flannel ID instead of truncating it (the old plugin's
 *       {@code fl-<id>} cut IDs at 15 characters, so two IDs with a common start collided).
 *       A flannel ID is 1-128 characters of {@code A-Z a-z 0-9 . _ -} starting with a letter or
 *       digit (it is an etcd key segment).</li>
 *   <li>An endpoint ID is what Docker sends: 64 hex characters; any 12 or more of
 *       {@code A-Z a-z 0-9} (at most 128) are accepted. Two endpoints whose IDs share the first
 *       11 characters would share names; with Docker's random 256-bit IDs that does not happen,
 *       and the verticle detects it anyway (the host side's alias holds the full ID).</li>
 *   <li>{@code flannel.<VNI>} exists only for VNIs 0-9999999: larger ones would make a 16-character
 *       name, which the kernel refuses, so they are rejected here with that reason.</li>
 * </ul>
 *
 * Everything else is rejected with an {@link IllegalArgumentException} whose message says what
 * was wrong; a name returned from here is always safe to put into an {@code ip} command.
 */
public final class Names {
  private Names() {}

  public static final String BRIDGE_PREFIX = "fnp";
  public static final String HOST_VETH_PREFIX = "fnph";
  public static final String CONTAINER_VETH_PREFIX = "fnpc";
  public static final String VXLAN_PREFIX = "flannel.";
  public static final String DETACHED_PREFIX = "fnpz";

  /** Largest VNI whose device name fits 15 characters. */
  public static final int MAX_VXLAN_NAME_VNI = 9_999_999;

  private static final Pattern FLANNEL_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,127}");
  private static final Pattern ENDPOINT_ID = Pattern.compile("[A-Za-z0-9]{12,128}");
  private static final Pattern BRIDGE = Pattern.compile("fnp[0-9a-f]{12}");
  private static final Pattern HOST_VETH = Pattern.compile("fnph[A-Za-z0-9]{11}");
  private static final Pattern CONTAINER_VETH = Pattern.compile("fnpc[A-Za-z0-9]{11}");
  private static final Pattern DETACHED = Pattern.compile("fnpz[0-9a-z]{11}");
  private static final java.security.SecureRandom RANDOM = new java.security.SecureRandom();

  /** The bridge of a network on this node: {@code fnp} + 12 hex of SHA-1(flannelId). */
  public static String bridge(String flannelId) {
    return BRIDGE_PREFIX + sha1Hex(requireFlannelId(flannelId)).substring(0, 12);
  }

  /** The host side of an endpoint's veth pair (enslaved to the bridge). */
  public static String hostVeth(String endpointId) {
    return HOST_VETH_PREFIX + requireEndpointId(endpointId).substring(0, 11);
  }

  /** The container side of an endpoint's veth pair (Docker moves it into the sandbox). */
  public static String containerVeth(String endpointId) {
    return CONTAINER_VETH_PREFIX + requireEndpointId(endpointId).substring(0, 11);
  }

  /** A fresh name for a detached veth waiting to be deleted. */
  public static String detached() {
    StringBuilder b = new StringBuilder(DETACHED_PREFIX);
    for (int i = 0; i < 11; i++) {
      b.append(Character.forDigit(RANDOM.nextInt(36), 36));
    }
    return b.toString();
  }

  public static boolean isDetached(String name) {
    return name != null && DETACHED.matcher(name).matches();
  }

  /** Flannel's VXLAN device of a network. */
  public static String vxlan(int vni) {
    if (vni < 0 || vni > MAX_VXLAN_NAME_VNI) {
      throw new IllegalArgumentException("VNI " + vni + " has no device name: flannel." + vni
          + " must fit 15 characters, so the VNI must be 0-" + MAX_VXLAN_NAME_VNI);
    }
    return VXLAN_PREFIX + vni;
  }

  public static String requireFlannelId(String flannelId) {
    if (flannelId == null || !FLANNEL_ID.matcher(flannelId).matches()) {
      throw new IllegalArgumentException("invalid flannel network ID " + quote(flannelId)
          + ": expected 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit");
    }
    return flannelId;
  }

  public static String requireEndpointId(String endpointId) {
    if (endpointId == null || !ENDPOINT_ID.matcher(endpointId).matches()) {
      throw new IllegalArgumentException("invalid endpoint ID " + quote(endpointId)
          + ": expected Docker's 64 hex characters (any 12-128 of A-Z a-z 0-9 are accepted)");
    }
    return endpointId;
  }

  public static boolean isBridge(String name) {
    return name != null && BRIDGE.matcher(name).matches();
  }

  public static boolean isHostVeth(String name) {
    return name != null && HOST_VETH.matcher(name).matches();
  }

  public static boolean isContainerVeth(String name) {
    return name != null && CONTAINER_VETH.matcher(name).matches();
  }

  /** Shows a rejected input safely in a message: quoted, control characters escaped, cut at 80. */
  static String quote(String s) {
    if (s == null) {
      return "(none)";
    }
    StringBuilder b = new StringBuilder("'");
    int n = Math.min(s.length(), 80);
    for (int i = 0; i < n; i++) {
      char c = s.charAt(i);
      if (c < 0x20 || c == 0x7f) {
        b.append(String.format("\\x%02x", (int) c));
      } else {
        b.append(c);
      }
    }
    if (s.length() > n) {
      b.append("…");
    }
    return b.append('\'').toString();
  }

  private static String sha1Hex(String s) {
    try {
      MessageDigest md = MessageDigest.getInstance("SHA-1");
      return HexFormat.of().formatHex(md.digest(s.getBytes(StandardCharsets.UTF_8)));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-1 is part of every Java runtime", e);
    }
  }
}
