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
}
