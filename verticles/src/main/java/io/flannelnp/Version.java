package io.flannelnp;

/** The daemon's version, from the jar's manifest ("dev" when run from classes, as in tests). */
public final class Version {
  private Version() {}

  public static String string() {
    String v = Version.class.getPackage().getImplementationVersion();
    return v == null || v.isBlank() ? "dev" : v;
  }
}
