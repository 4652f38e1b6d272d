package io.flannelnp.log;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.json.JsonObject;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** LOG_FORMAT: what an operator's log shipper reads. */
class LoggingTest {
  final ByteArrayOutputStream buf = new ByteArrayOutputStream();
  final Logger log = Logger.getLogger("io.flannelnp.lb.LoadBalancerVerticle");

  @AfterEach
  void reset() {
    Logging.configure("warn");
  }

  @Test
  void jsonFormatWritesOneParsableObjectPerLineWithTheDecisionFields() {
    Logging.configure("info", "json", new PrintStream(buf, true, StandardCharsets.UTF_8));
    Map<String, Object> f = new LinkedHashMap<>();
    f.put("corr", "r42");
    f.put("plane", "lb");
    f.put("ok", true);
    f.put("micros", 1234L);
    Logging.decision(log, Level.INFO, "kernel batch \"nft\"\nsecond line", f);
    log.warning("plain warning");
    log.fine("not at info");
    String[] lines = buf.toString(StandardCharsets.UTF_8).split("\n");
    assertThat(lines).hasSize(2);
    JsonObject j = new JsonObject(lines[0]);
    assertThat(j.getString("level")).isEqualTo("INFO");
    assertThat(j.getString("logger")).isEqualTo("LoadBalancerVerticle");
    assertThat(j.getString("msg")).isEqualTo("kernel batch \"nft\"\nsecond line");
    assertThat(j.getString("corr")).isEqualTo("r42");
    assertThat(j.getBoolean("ok")).isTrue();
    assertThat(j.getLong("micros")).isEqualTo(1234L);
    assertThat(j.getString("ts")).matches("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z");
    assertThat(new JsonObject(lines[1]).getString("msg")).isEqualTo("plain warning");
  }

  @Test
  void textFormatAppendsTheFieldsAsKeyValue() {
    Logging.configure("info", "text", new PrintStream(buf, true, StandardCharsets.UTF_8));
    Logging.decision(log, Level.INFO, "kernel batch", Map.of("corr", "r7"));
    assertThat(buf.toString(StandardCharsets.UTF_8)).matches("(?s)\\S+ INFO LoadBalancerVerticle: kernel batch corr=r7\n");
  }

  @Test
  void textFormatEscapesWhatCouldEndTheLineSoNothingOutsideCanForgeOne() {
    Logging.configure("info", "text", new PrintStream(buf, true, StandardCharsets.UTF_8));
    String forged = "x\n2026-01-01T00:00:00.000Z ERROR Daemon: forged\r\u001b[2K\u2028y";
    log.warning("skipping unreadable record /p/docker-data/services/" + forged);
    Logging.decision(log, Level.INFO, "docker container " + forged, Map.of("key", forged));
    log.log(Level.SEVERE, "pass failed", new IllegalStateException("bad value " + forged));
    String out = buf.toString(StandardCharsets.UTF_8);
    String[] lines = out.split("\n");
    assertThat(lines).as(out).noneMatch(l -> l.startsWith("2026-01-01") || l.contains("\u001b"));
    assertThat(lines[0]).endsWith("/p/docker-data/services/x\\n2026-01-01T00:00:00.000Z ERROR Daemon: forged"
        + "\\r\\u001b[2K\\u2028y");
    assertThat(lines[1]).contains("docker container x\\n2026").contains(" key=x\\n2026");
    assertThat(lines[2]).contains("| java.lang.IllegalStateException: bad value x\\n2026");
    assertThat(java.util.Arrays.asList(lines).subList(3, lines.length))
        .as("every other line is a stack frame the formatter wrote").allMatch(l -> l.startsWith("    at "));
  }
}
