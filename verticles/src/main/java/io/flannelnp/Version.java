package io.flannelnp;

/**
 * The daemon's one version string: the Maven project version and the git commit of the build
 * (e.g. {@code 0.1.0-SNAPSHOT-g110634e5a4b2}), from the jar's manifest, written there by the
 * build (verticles/pom.xml). "dev" when run from classes, as in unit tests. {@code --version},
 * the start-up line, /health, the fnp_build_info metric, the node's etcd record, the plugin's
 * description and the pushed tag all use it.
 */
public final class Version {
  private Version() {}

  public static String string() {
    String v = Version.class.getPackage().getImplementationVersion();
    return v == null || v.isBlank() ? "dev" : v;
  }
}
