package io.flannelnp.log;

import java.io.PrintStream;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Locale;
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
    LogManager.getLogManager().reset();
    Logger root = Logger.getLogger("");
    Level l = toJul(level);
    root.setLevel(l);
    // A StreamHandler on our stream (ConsoleHandler.setOutputStream would close System.err).
    Handler h = new StreamHandler(out, new OneLine()) {
      @Override
      public synchronized void publish(LogRecord r) {
        super.publish(r);
        flush();
      }
    };
    h.setLevel(Level.ALL);
    h.setFormatter(new OneLine());
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

  static final class OneLine extends Formatter {
    @Override
    public String format(LogRecord r) {
      String lvl = switch (r.getLevel().getName()) {
        case "SEVERE" -> "ERROR";
        case "WARNING" -> "WARN";
        case "INFO" -> "INFO";
        case "FINE", "CONFIG" -> "DEBUG";
        default -> "TRACE";
      };
      String name = r.getLoggerName() == null ? "" : r.getLoggerName();
      int dot = name.lastIndexOf('.');
      StringBuilder sb = new StringBuilder(128)
          .append(TS.format(Instant.ofEpochMilli(r.getMillis()))).append(' ').append(lvl).append(' ')
          .append(dot >= 0 ? name.substring(dot + 1) : name).append(": ").append(formatMessage(r));
      if (r.getThrown() != null) {
        sb.append(" | ").append(r.getThrown());
        if (r.getLevel().intValue() >= Level.SEVERE.intValue()) {
          for (StackTraceElement e : r.getThrown().getStackTrace()) {
            sb.append("\n    at ").append(e);
          }
        }
      }
      return sb.append('\n').toString();
    }
  }
}
