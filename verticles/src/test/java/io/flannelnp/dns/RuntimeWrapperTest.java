package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * hook/flannel-np-runtime, the runtime wrapper Docker runs instead of runc: it must add our
 * createContainer hook to the spec Docker wrote (a real dockerd 20.10's, captured by
 * hook/test/e2e-docker.sh) without losing anything of it, Docker's own libnetwork-setkey prestart
 * hook above all, and then be runc with exactly runc's arguments. /bin/echo stands in for runc
 * so the arguments it got can be read back.
 */
class RuntimeWrapperTest {
  static final String HOOK_PATH = "/usr/local/lib/flannel-np/flannel-np-hook";
  Path dir;
  Path bundle;
  Path hooks;

  @BeforeEach
  void setUp() throws IOException {
    dir = Files.createTempDirectory("fnh-wrapper");
    bundle = Files.createDirectory(dir.resolve("bundle"));
    hooks = dir.resolve("hooks.json");
    Files.writeString(hooks, new JsonObject().put("hooks", new JsonObject().put("createContainer", new JsonArray()
        .add(ourHook()))).encodePrettily());
  }

  @AfterEach
  void tearDown() throws IOException {
    try (Stream<Path> s = Files.walk(dir)) {
      s.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    }
    assertThat(dir).doesNotExist();
  }

  static JsonObject ourHook() {
    return new JsonObject().put("path", HOOK_PATH).put("args", new JsonArray().add("flannel-np-hook")
        .add("--timeout-ms").add("2000"));
  }

  static String dockerSpec() throws IOException {
    return Files.readString(HookBinaries.dir().resolve("test/fixtures/docker-20.10-config.json"));
  }

  HookBinaries.Result wrap(String... runcArgs) {
    List<String> argv = new ArrayList<>(List.of(HookBinaries.runtime().toString(), "--hook-config-path",
        hooks.toString(), "--runtime-path", "/bin/echo"));
    argv.addAll(List.of(runcArgs));
    return HookBinaries.run(argv, "", 10_000);
  }

  JsonObject spec() throws IOException {
    return new JsonObject(Files.readString(bundle.resolve("config.json")));
  }

  @Test
  void addsOurHookToDockersSpecAndKeepsDockersPrestartHookAndEverythingElse() throws Exception {
    String original = dockerSpec();
    Files.writeString(bundle.resolve("config.json"), original);
    Files.setPosixFilePermissions(bundle.resolve("config.json"), PosixFilePermissions.fromString("rw-------"));
    JsonObject before = new JsonObject(original);
    JsonArray dockersPrestart = before.getJsonObject("hooks").getJsonArray("prestart");
    assertThat(dockersPrestart.getJsonObject(0).getJsonArray("args").getString(0)).isEqualTo("libnetwork-setkey");

    // as containerd's shim calls runc
    String[] args = {"--root", "/run/docker/runtime-runc/moby", "--log", bundle + "/log.json", "--log-format", "json",
        "create", "--bundle", bundle.toString(), "--pid-file", bundle + "/init.pid", "abc123"};
    HookBinaries.Result r = wrap(args);
    assertThat(r.exit()).as(r.err()).isZero();
    assertThat(r.out().strip()).as("runc gets exactly its arguments").isEqualTo(String.join(" ", args));
    assertThat(r.err()).isEmpty();

    JsonObject after = spec();
    assertThat(after.getJsonObject("hooks").getJsonArray("prestart")).as("Docker's prestart hook").isEqualTo(dockersPrestart);
    assertThat(after.getJsonObject("hooks").getJsonArray("createContainer")).containsExactly(ourHook());
    JsonObject rest = after.copy();
    rest.getJsonObject("hooks").remove("createContainer");
    assertThat(rest).as("nothing else changed").isEqualTo(before);
    assertThat(Files.getPosixFilePermissions(bundle.resolve("config.json")))
        .isEqualTo(PosixFilePermissions.fromString("rw-------"));
    try (Stream<Path> s = Files.list(bundle)) {
      assertThat(s.map(p -> p.getFileName().toString())).containsExactly("config.json"); // no temp file left
    }

    // a second create with the same bundle (a retry) does not add it twice
    assertThat(wrap(args).exit()).isZero();
    assertThat(spec().getJsonObject("hooks").getJsonArray("createContainer")).containsExactly(ourHook());
    assertThat(spec().getJsonObject("hooks").getJsonArray("prestart")).isEqualTo(dockersPrestart);
  }

  @Test
  void prependsToAnExistingListAndAddsTheHooksObjectWhenThereIsNone() throws Exception {
    JsonObject other = new JsonObject().put("path", "/usr/bin/other-hook");
    JsonObject existing = new JsonObject().put("ociVersion", "1.0.2").put("hooks", new JsonObject()
        .put("createContainer", new JsonArray().add(other)).put("poststop", new JsonArray()));
    Files.writeString(bundle.resolve("config.json"), existing.encodePrettily());
    assertThat(wrap("create", "-b", bundle.toString(), "id").exit()).isZero();
    assertThat(spec().getJsonObject("hooks").getJsonArray("createContainer")).containsExactly(ourHook(), other);
    assertThat(spec().getJsonObject("hooks").getJsonArray("poststop")).isEmpty();

    // Docker >= 28 writes no hooks at all; empty objects and lists are handled too
    for (String spec : List.of("{\"ociVersion\":\"1.2.0\",\"process\":{\"args\":[\"sh\"]}}", "{}", "{\"hooks\":{}}",
        // "hooks" inside strings and nested objects is not the spec's hooks
        "{\"process\":{\"env\":[\"X={\\\"hooks\\\":{}}\",\"Y=\\u0022\"]},\"annotations\":{\"hooks\":\"x\"}}",
        "{\"annotations\":{\"hooks\":{\"createContainer\":[]}},\"hooks\":{\"prestart\":[{\"path\":\"/p\"}]}}",
        "{\"hooks\":{\"createContainer\":[]}}", " {\n \"hooks\" : { \"createContainer\" : [ ] } }\n")) {
      Files.writeString(bundle.resolve("config.json"), spec);
      assertThat(wrap("create", "--bundle=" + bundle, "id").exit()).isZero();
      JsonObject after = spec();
      assertThat(after.getJsonObject("hooks").getJsonArray("createContainer")).as(spec).containsExactly(ourHook());
      JsonObject rest = after.copy();
      rest.getJsonObject("hooks").remove("createContainer");
      JsonObject want = new JsonObject(spec);
      want.put("hooks", want.getJsonObject("hooks", new JsonObject()).copy());
      want.getJsonObject("hooks").remove("createContainer");
      assertThat(rest).as(spec).isEqualTo(want);
    }
  }

  @Test
  void withoutABundleOrWithABrokenSpecRuncRunsUnchanged() throws Exception {
    Files.writeString(bundle.resolve("config.json"), dockerSpec());
    HookBinaries.Result features = wrap("features");
    assertThat(features.exit()).isZero();
    assertThat(features.out().strip()).isEqualTo("features");
    assertThat(Files.readString(bundle.resolve("config.json"))).isEqualTo(dockerSpec());

    // a spec the wrapper cannot read: runc gets it untouched (and says what is wrong), the wrapper says why
    String broken = "{\"hooks\":{\"prestart\":[{\"path\":\"/x\"}]},\"process\":";
    Files.writeString(bundle.resolve("config.json"), broken);
    HookBinaries.Result r = wrap("create", "--bundle", bundle.toString(), "id");
    assertThat(r.exit()).isZero();
    assertThat(r.out().strip()).isEqualTo("create --bundle " + bundle + " id");
    assertThat(r.err()).contains(bundle + "/config.json is not a JSON object");
    assertThat(Files.readString(bundle.resolve("config.json"))).isEqualTo(broken);

    // "hooks" of the wrong type is not overwritten
    Files.writeString(bundle.resolve("config.json"), "{\"hooks\":[1]}");
    r = wrap("create", "--bundle", bundle.toString(), "id");
    assertThat(r.exit()).isZero();
    assertThat(r.err()).contains("\"hooks\" or \"hooks.createContainer\" has an unexpected type");
    assertThat(Files.readString(bundle.resolve("config.json"))).isEqualTo("{\"hooks\":[1]}");

    // a hook file that is not {"hooks":{...}} is named
    Files.writeString(bundle.resolve("config.json"), "{}");
    Files.writeString(hooks, "{\"createContainer\":[]}");
    r = wrap("create", "--bundle", bundle.toString(), "id");
    assertThat(r.exit()).isZero();
    assertThat(r.err()).contains(hooks + " is not {\"hooks\":{...}}");
    assertThat(Files.readString(bundle.resolve("config.json"))).isEqualTo("{}");
  }

  @Test
  void runcsExitCodeIsTheWrappersAndAMissingRuntimeIsAClearError() {
    HookBinaries.Result r = HookBinaries.run(List.of(HookBinaries.runtime().toString(), "--hook-config-path",
        hooks.toString(), "--runtime-path", "/bin/false", "state", "x"), "", 10_000);
    assertThat(r.exit()).isEqualTo(1);

    r = HookBinaries.run(List.of(HookBinaries.runtime().toString(), "--hook-config-path", hooks.toString(), "state"),
        "", 10_000);
    assertThat(r.exit()).isEqualTo(2);
    assertThat(r.err()).contains("usage: flannel-np-runtime --hook-config-path FILE --runtime-path /ABS/PATH/runc");

    r = HookBinaries.run(List.of(HookBinaries.runtime().toString(), "--hook-config-path", hooks.toString(),
        "--runtime-path", dir.resolve("no-runc").toString(), "state"), "", 10_000);
    assertThat(r.exit()).isEqualTo(127);
    assertThat(r.err()).contains("cannot run " + dir.resolve("no-runc") + ": No such file or directory");
  }
}
