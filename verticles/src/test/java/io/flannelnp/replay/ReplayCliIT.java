package io.flannelnp.replay;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.DaemonProcess;
import io.flannelnp.testing.EtcdServer;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The shipped jar as a user runs it: {@code record}/{@code replay} against a real etcd and a file,
 * the usage errors, and a daemon logging JSON lines with LOG_FORMAT=json.
 */
class ReplayCliIT {
  @TempDir
  Path dir;

  record Run(int exit, String out, String err) {}

  Run jar(Map<String, String> env, String... args) throws Exception {
    List<String> cmd = new ArrayList<>(List.of("java", "-XX:TieredStopAtLevel=1", "-jar",
        DaemonProcess.jar().toAbsolutePath().toString()));
    cmd.addAll(List.of(args));
    Path out = dir.resolve("out.txt");
    Path err = dir.resolve("err.txt");
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
    pb.environment().keySet().removeIf(k -> !k.equals("PATH") && !k.equals("HOME") && !k.startsWith("JAVA"));
    pb.environment().putAll(env);
    Process p = pb.start();
    if (!p.waitFor(60, TimeUnit.SECONDS)) {
      p.destroyForcibly().waitFor();
      throw new AssertionError("jar " + String.join(" ", args) + " did not finish");
    }
    return new Run(p.exitValue(), Files.readString(out), Files.readString(err));
  }

  @Test
  void recordThenReplayTheFilePrintsDnsAndIpamChangesPerRevision() throws Exception {
    String prefix = "/fno-cli";
    try (EtcdServer etcd = EtcdServer.start()) {
      Map<String, String> env = Map.of("ETCD_ENDPOINTS", etcd.endpoint(), "ETCD_PREFIX", prefix);
      long first = put(etcd, prefix + "/docker-data/networks/n1",
          "{\"DockerId\":\"n1\",\"Name\":\"fnonet\",\"Driver\":\"flannel-np\",\"FlannelId\":\"f1\",\"Subnet\":\"10.9.0.0/20\"}");
      put(etcd, prefix + "/networks/f1/allocations/10.9.0.5", "{\"Kind\":\"container\"}");
      Path file = dir.resolve("rec.jsonl");
      Run rec = jar(env, "record", "--from-revision", "" + first, "--out", file.toString());
      assertThat(rec.exit).as(rec.err).isZero();
      assertThat(rec.err).contains("written to " + file);
      Run replay = jar(Map.of(), "replay", "--from-revision", "" + first, "--plane", "ipam", "--file", file.toString());
      assertThat(replay.exit).as(replay.err).isZero();
      assertThat(replay.out).contains("revision " + (first + 1) + ": PUT " + prefix + "/networks/f1/allocations/10.9.0.5")
          .contains("ipam + f1 10.9.0.5 {\"Kind\":\"container\"}");
      Run live = jar(env, "replay", "--from-revision", "" + first, "--plane", "ipam");
      assertThat(live.exit).as(live.err).isZero();
      assertThat(live.out).isEqualTo(replay.out);
    }
  }

  @Test
  void badArgumentsExit2WithUsage() throws Exception {
    Run r = jar(Map.of(), "replay", "--to-revision", "3");
    assertThat(r.exit).isEqualTo(2);
    assertThat(r.err).contains("--from-revision must be a revision number of 1 or more", "usage: java -jar flannel-np.jar replay");
    Run rec = jar(Map.of(), "record", "--from-revision", "3");
    assertThat(rec.exit).isEqualTo(2);
    assertThat(rec.err).contains("record: --out FILE is required");
    Run noEtcd = jar(Map.of(), "replay", "--from-revision", "3", "--plane", "lb");
    assertThat(noEtcd.exit).isEqualTo(2);
    assertThat(noEtcd.err).contains("set ETCD_ENDPOINTS");
  }

  @Test
  void logFormatJsonWritesOneJsonObjectPerLine() throws Exception {
    Map<String, String> env = new java.util.HashMap<>(Map.of(
        "ETCD_ENDPOINTS", "http://127.0.0.1:" + EtcdServer.freePort(), "AVAILABLE_SUBNETS", "10.50.0.0/16",
        "PLUGIN_SOCKET", dir.resolve("fnp.sock").toString(), "DOCKER_SOCKET", dir.resolve("none.sock").toString(),
        "LOG_FORMAT", "json"));
    try (DaemonProcess d = DaemonProcess.start(dir, env)) {
      assertThat(d.waitForLog("capacity:", Duration.ofSeconds(15))).as(d.stderr()).isTrue();
      for (String line : d.logLines()) {
        JsonObject j = new JsonObject(line);
        assertThat(j.getString("level")).isNotEmpty();
        assertThat(j.getString("msg")).isNotNull();
      }
      assertThat(d.stderr()).contains("\"msg\":\"capacity: 16 networks of /20");
    }
  }

  static long put(EtcdServer etcd, String key, String value) throws Exception {
    Process p = new ProcessBuilder("etcdctl", "--endpoints", etcd.endpoint(), "put", "-w", "json", key, value)
        .redirectErrorStream(true).start();
    p.getOutputStream().close();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertThat(p.waitFor()).as(out).isZero();
    return new JsonObject(out).getJsonObject("header").getLong("revision");
  }
}
