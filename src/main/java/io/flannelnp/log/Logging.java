package io.flannelnp.log;

import java.io.PrintStream;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.logging.Formatter;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogManager;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.StreamHandler;

/**
 * One-line logs on stderr (Docker keeps a managed plugin's output in its own log). jetcd and
 * gRPC log through SLF4J/JUL and land here too; their chatter is held at WARNING.
 */
public final class Logging {
  private static final DateTimeFormatter TS = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
      .withZone(ZoneOffset.UTC);

  private Logging() {}

  public static void configure(String level) {
    configure(level, System.err);
  }

  public static void configure(String level, PrintStream out) {
    configure(level, "text", out);
  }

  /** {@code format}: "text" (one line per record) or "json" (one JSON object per line). */
  public static void configure(String level, String format, PrintStream out) {
    LogManager.getLogManager().reset();
    Logger root = Logger.getLogger("");
    Level l = toJul(level);
    root.setLevel(l);
    // A StreamHandler on our stream (ConsoleHandler.setOutputStream would close System.err).
    Formatter f = "json".equals(format) ? new JsonLine() : new OneLine();
    Handler h = new StreamHandler(out, f) {
      @Override
      public synchronized void publish(LogRecord r) {
        super.publish(r);
        flush();
      }
    };
    h.setLevel(Level.ALL);
    h.setFormatter(f);
    root.addHandler(h);
    Logger.getLogger("io.flannelnp").setLevel(l);
    for (String noisy : new String[] {"io.grpc", "io.netty", "io.etcd", "io.vertx"}) {
      Logger.getLogger(noisy).setLevel(l == Level.FINEST ? Level.FINE : Level.WARNING);
    }
    // jetcd warns on every retry of every call while etcd is down; EtcdStore reports that once.
    Logger.getLogger("io.etcd.jetcd").setLevel(l == Level.FINEST ? Level.FINE : Level.SEVERE);
  }

  public static Level toJul(String level) {
    return switch (level.toLowerCase(Locale.ROOT)) {
      case "error" -> Level.SEVERE;
      case "warn" -> Level.WARNING;
      case "debug" -> Level.FINE;
      case "trace" -> Level.FINEST;
      default -> Level.INFO;
    };
  }

  /**
   * Logs one decision with structured fields (e.g. {@code corr}, {@code plane}, {@code rev}): text
   * format appends them as {@code key=value}, JSON format puts them next to {@code msg}.
   */
  public static void decision(Logger log, Level level, String msg, Map<String, ?> fields) {
    if (!log.isLoggable(level)) {
      return;
    }
    LogRecord r = new LogRecord(level, msg);
    r.setLoggerName(log.getName());
    r.setParameters(new Object[] {new Fields(new LinkedHashMap<>(fields))});
    log.log(r);
  }

  /** Marker for the structured fields of {@link #decision}. */
  record Fields(Map<String, ?> map) {}

  private static Map<String, ?> fields(LogRecord r) {
    Object[] p = r.getParameters();
    return p != null && p.length == 1 && p[0] instanceof Fields f ? f.map() : Map.of();
  }

  private static String level(LogRecord r) {
    return switch (r.getLevel().getName()) {
      case "SEVERE" -> "ERROR";
      case "WARNING" -> "WARN";
      case "INFO" -> "INFO";
      case "FINE", "CONFIG" -> "DEBUG";
      default -> "TRACE";
    };
  }

  private static String shortName(LogRecord r) {
    String name = r.getLoggerName() == null ? "" : r.getLoggerName();
    int dot = name.lastIndexOf('.');
    return dot >= 0 ? name.substring(dot + 1) : name;
  }

  /** {"ts":…,"level":…,"logger":…,"msg":…, fields…, "error":…}: one object per line. */
  static final class JsonLine extends Formatter {
    @Override
    public String format(LogRecord r) {
      StringBuilder sb = new StringBuilder(160).append('{');
      str(sb, "ts", TS.format(Instant.ofEpochMilli(r.getMillis()))).append(',');
      str(sb, "level", level(r)).append(',');
      str(sb, "logger", shortName(r)).append(',');
      Map<String, ?> f = fields(r);
      str(sb, "msg", f.isEmpty() ? formatMessage(r) : r.getMessage());
      for (Map.Entry<String, ?> e : f.entrySet()) {
        sb.append(',');
        if (e.getValue() instanceof Number || e.getValue() instanceof Boolean) {
          quote(sb, e.getKey()).append(':').append(e.getValue());
        } else {
          str(sb, e.getKey(), String.valueOf(e.getValue()));
        }
      }
      if (r.getThrown() != null) {
        sb.append(',');
        str(sb, "error", r.getThrown().toString());
      }
      return sb.append("}\n").toString();
    }

    private static StringBuilder str(StringBuilder sb, String k, String v) {
      return quote(quote(sb, k).append(':'), v);
    }

    static StringBuilder quote(StringBuilder sb, String s) {
      sb.append('"');
      for (int i = 0; i < s.length(); i++) {
        char c = s.charAt(i);
        switch (c) {
          case '"' -> sb.append("\\\"");
          case '\\' -> sb.append("\\\\");
          case '\n' -> sb.append("\\n");
          case '\r' -> sb.append("\\r");
          case '\t' -> sb.append("\\t");
          default -> {
            if (c < 0x20) {
              sb.append(String.format("\\u%04x", (int) c));
            } else {
              sb.append(c);
            }
          }
        }
      }
      return sb.append('"');
    }
  }

  /**
   * One line per record: text that came from outside (etcd keys and values, Docker names, error
   * messages quoting them) has its control characters escaped, so nothing it contains can end the
   * line or start a forged one. The stack trace lines of an error are the formatter's own.
   */
  static final class OneLine extends Formatter {
    @Override
    public String format(LogRecord r) {
      Map<String, ?> f = fields(r);
      StringBuilder sb = new StringBuilder(128)
          .append(TS.format(Instant.ofEpochMilli(r.getMillis()))).append(' ').append(level(r)).append(' ')
          .append(shortName(r)).append(": ");
      escape(sb, f.isEmpty() ? formatMessage(r) : r.getMessage());
      f.forEach((k, v) -> escape(escape(sb.append(' '), k).append('='), String.valueOf(v)));
      if (r.getThrown() != null) {
        escape(sb.append(" | "), String.valueOf(r.getThrown()));
        if (r.getLevel().intValue() >= Level.SEVERE.intValue()) {
          for (StackTraceElement e : r.getThrown().getStackTrace()) {
            escape(sb.append("\n    at "), String.valueOf(e));
          }
        }
      }
      return sb.append('\n').toString();
    }
  }

  /**
   * Appends {@code s} with every character that could break or disguise a log line escaped: C0
   * and C1 controls and DEL (newline, carriage return, the terminal's escape sequences) and the
   * Unicode line and paragraph separators.
   */
  static StringBuilder escape(StringBuilder sb, String s) {
    if (s == null) {
      return sb.append("null");
    }
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '\n' -> sb.append("\\n");
        case '\r' -> sb.append("\\r");
        case '\t' -> sb.append("\\t");
        default -> {
          if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == '\u2028' || c == '\u2029') {
            sb.append(String.format("\\u%04x", (int) c));
          } else {
            sb.append(c);
          }
        }
      }
    }
    return sb;
  }
}
