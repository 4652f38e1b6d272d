package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** hook/install.sh into a scratch prefix and daemon.json: what an operator's host ends up with. */
class HookInstallTest {
  Path dir;
  Path prefix;
  Path daemonJson;

  @BeforeEach
  void setUp() throws IOException {
    dir = Files.createTempDirectory("fnh-install");
    prefix = dir.resolve("lib/flannel-np");
    daemonJson = dir.resolve("docker/daemon.json");
    Files.createDirectories(daemonJson.getParent());
  }

  @AfterEach
  void tearDown() throws IOException {
    try (Stream<Path> s = Files.walk(dir)) {
      s.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    }
  }

  HookBinaries.Result install(String... more) {
    List<String> argv = new ArrayList<>(List.of(HookBinaries.dir().resolve("install.sh").toString(), "--prefix",
        prefix.toString(), "--daemon-json", daemonJson.toString()));
    argv.addAll(List.of(more));
    return HookBinaries.run(argv, "", 60_000);
  }

  @Test
  void installsTheWrapperAsDefaultRuntimeKeepingTheOperatorsSettingsAndUninstallsCleanly() throws Exception {
    String original = "{\"log-level\": \"debug\", \"runtimes\": {\"other\": {\"path\": \"/usr/bin/other\"}}}";
    Files.writeString(daemonJson, original);
    HookBinaries.Result r = install("--runc", "/usr/sbin/runc", "--timeout-ms", "1500");
    assertThat(r.exit()).as(r.err()).isZero();

    JsonObject cfg = new JsonObject(Files.readString(daemonJson));
    assertThat(cfg.getString("log-level")).isEqualTo("debug");
    assertThat(cfg.getString("default-runtime")).isEqualTo("flannel-np");
    assertThat(cfg.getJsonObject("runtimes").getJsonObject("other")).isEqualTo(new JsonObject().put("path", "/usr/bin/other"));
    JsonObject rt = cfg.getJsonObject("runtimes").getJsonObject("flannel-np");
    assertThat(rt.getString("path")).isEqualTo(prefix + "/flannel-np-runtime");
    assertThat(rt.getJsonArray("runtimeArgs")).isEqualTo(new JsonArray(List.of("--hook-config-path",
        prefix + "/hooks.json", "--runtime-path", "/usr/sbin/runc")));
    assertThat(Files.readString(Path.of(daemonJson + ".flannel-np.bak"))).isEqualTo(original);
    JsonObject hooks = new JsonObject(Files.readString(prefix.resolve("hooks.json")));
    assertThat(hooks.getJsonObject("hooks").getJsonArray("createContainer").getJsonObject(0)).isEqualTo(new JsonObject()
        .put("path", prefix + "/flannel-np-hook").put("args", new JsonArray(List.of("flannel-np-hook", "--timeout-ms",
            "1500"))));

    // what Docker runs: the installed wrapper with its runtimeArgs, then runc's own arguments
    List<String> argv = new ArrayList<>(List.of(rt.getString("path")));
    rt.getJsonArray("runtimeArgs").forEach(a -> argv.add((String) a));
    argv.add("--version");
    HookBinaries.Result v = HookBinaries.run(argv, "", 10_000);
    assertThat(v.exit()).as(v.err()).isZero();
    assertThat(v.out()).startsWith("runc version");

    // again: idempotent, the first backup kept
    assertThat(install("--runc", "/usr/sbin/runc").exit()).isZero();
    assertThat(Files.readString(Path.of(daemonJson + ".flannel-np.bak"))).isEqualTo(original);

    r = install("--uninstall");
    assertThat(r.exit()).as(r.err()).isZero();
    assertThat(new JsonObject(Files.readString(daemonJson))).isEqualTo(new JsonObject(original));
    assertThat(prefix).doesNotExist();
  }

  @Test
  void refusesWhatItWouldBreakAndSaysWhy() throws Exception {
    Files.writeString(daemonJson, "{\"default-runtime\": \"nvidia\"}");
    HookBinaries.Result r = install("--runc", "/usr/sbin/runc");
    assertThat(r.exit()).isNotZero();
    assertThat(r.err()).contains("already sets default-runtime='nvidia'");
    assertThat(Files.readString(daemonJson)).isEqualTo("{\"default-runtime\": \"nvidia\"}");

    Files.writeString(daemonJson, "{\"log-level\": ");
    r = install("--runc", "/usr/sbin/runc");
    assertThat(r.exit()).isNotZero();
    assertThat(r.err()).contains(daemonJson + " is not valid JSON");

    r = install("--runc", "runc");
    assertThat(r.exit()).isNotZero();
    assertThat(r.err()).contains("--runc must be an absolute path to an executable, got 'runc'");

    r = HookBinaries.run(List.of(HookBinaries.dir().resolve("install.sh").toString(), "--prefix", "relative/dir"), "",
        10_000);
    assertThat(r.exit()).isNotZero();
    assertThat(r.err()).contains("--prefix must be an absolute directory path, got 'relative/dir'");
  }
}
