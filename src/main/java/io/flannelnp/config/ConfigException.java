package io.flannelnp.config;

/**
 * A bad setting. {@link #getMessage()} is the one line the daemon prints before exiting with 2:
 * it names the variable, the value and the rule.
 */
public final class ConfigException extends RuntimeException {
  private final String variable;
  private final String value;
  private final String rule;

  public ConfigException(String variable, String value, String rule) {
    super("invalid setting " + variable + "=" + quote(value) + ": " + oneLine(rule));
    this.variable = variable;
    this.value = value;
    this.rule = rule;
  }

  /** Rules quote parts of the value; keep them on one line too. */
  private static String oneLine(String rule) {
    String q = quote(rule);
    return q.substring(1, q.length() - 1).replace("\\\"", "\"").replace("\\\\", "\\");
  }

  private static String quote(String v) {
    if (v == null) {
      return "(unset)";
    }
    // One line, always: escape anything that would break it.
    StringBuilder sb = new StringBuilder("\"");
    for (char c : v.toCharArray()) {
      if (c == '"' || c == '\\') {
        sb.append('\\').append(c);
      } else if (c < 0x20 || c == 0x7f) {
        sb.append(String.format("\\x%02x", (int) c));
      } else {
        sb.append(c);
      }
    }
    return sb.append('"').toString();
  }

  public String variable() {
    return variable;
  }

  public String value() {
    return value;
  }

  public String rule() {
    return rule;
  }
}
