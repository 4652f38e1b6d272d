package io.flannelnp.security;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.DaemonProcess;
import io.flannelnp.testing.EtcdServer;
import io.flannelnp.testing.Netns;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A local user's attacks on the shipped jar (review L3, L4, L8, L10): the plugin and hook
 * sockets under a umask that would leave them open to everyone, a request aborted mid-body to
 * stall the orderly stop, settings that only look safe, and malformed replay files.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class LocalAttackIT {
  static final String NOBODY = "65534";

  @TempDir
  Path dir;

  Map<String, String> env(Path sockets) {
    Map<String, String> e = new HashMap<>();
    e.put("ETCD_ENDPOINTS", "http://127.0.0.1:" + EtcdServer.freePort()); // none: the sockets listen anyway
    e.put("AVAILABLE_SUBNETS", "10.50.0.0/16");
    e.put("PLUGIN_SOCKET", sockets.resolve("fnp.sock").toString());
    e.put("DOCKER_SOCKET", sockets.resolve("no-docker.sock").toString());
    e.put("NODE_NAME", "it-local");
    e.put("IS_HOOK_AVAILABLE", "true");
    return e;
  }

  /** curl as user nobody (uid and gid 65534, no supplementary groups). */
  static Netns.Result asNobody(String... cmd) {
    List<String> argv = new ArrayList<>(List.of("setpriv", "--reuid=" + NOBODY, "--regid=" + NOBODY, "--clear-groups"));
    argv.addAll(List.of(cmd));
    return Netns.run(argv);
  }

  @Test
  void underUmask000NeitherSocketLetsALocalUserInAndAnAbortedRequestDoesNotDelayTheStop() throws Exception {
    Path sockets = Files.createDirectory(dir.resolve("run"));
    // everyone may reach the directory: only the sockets' own modes stand in the way
    Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxr-xr-x"));
    Files.setPosixFilePermissions(sockets, PosixFilePermissions.fromString("rwxrwxrwx"));
    Files.writeString(sockets.resolve("probe"), "readable");
    Files.setPosixFilePermissions(sockets.resolve("probe"), PosixFilePermissions.fromString("rw-r--r--"));
    try (Netns ns = new Netns()) {
      String host = ns.add("local");
      try (DaemonProcess d = DaemonProcess.start(dir, env(sockets), new DaemonProcess.Launch(host, "000", List.of()))) {
        Path plugin = sockets.resolve("fnp.sock");
        Path hook = sockets.resolve("flannel-np-hook.sock");
        assertThat(d.waitForLog("OCI hook handshake listening", Duration.ofSeconds(20))).as(d.stderr()).isTrue();
        assertThat(d.waitForLog("plugin API listening", Duration.ofSeconds(5))).as(d.stderr()).isTrue();
        for (Path s : List.of(plugin, hook)) {
          assertThat(Netns.run("stat", "-c", "%a %U", s.toString()).ok().out().strip()).as(s.toString())
              .isEqualTo("600 root");
        }
        assertThat(asNobody("cat", sockets.resolve("probe").toString()).ok().out()).as("nobody reaches the directory")
            .isEqualTo("readable");
        Netns.Result denied = asNobody("curl", "-sS", "--max-time", "5", "--unix-socket", plugin.toString(), "-X", "POST",
            "-d", "{\"PoolID\":\"FlannelGlobal/x\"}", "http://plugin/IpamDriver.ReleasePool");
        assertThat(denied.exit()).as("curl as nobody: " + denied.err()).isEqualTo(7); // could not connect
        Netns.Result hookDenied = asNobody("curl", "-sS", "--max-time", "5", "--unix-socket", hook.toString(),
            "http://hook/");
        assertThat(hookDenied.exit()).as("hook socket as nobody: " + hookDenied.err()).isEqualTo(7);
        Netns.Result root = Netns.run("curl", "-sS", "--max-time", "5", "--unix-socket", plugin.toString(), "-X", "POST",
            "http://plugin/Plugin.Activate");
        assertThat(root.ok().out()).as("root, as dockerd").contains("NetworkDriver");
        assertThat(Files.list(sockets).map(p -> p.getFileName().toString()))
            .as("nothing but the sockets (no staging directory left)").containsExactlyInAnyOrder("fnp.sock",
                "flannel-np-hook.sock", "probe");

        // a client that sends half a body and goes away, three times
        for (int i = 0; i < 3; i++) {
          try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(plugin));
            ch.write(ByteBuffer.wrap(("POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                + "{\"AddressSpace\":").getBytes(StandardCharsets.US_ASCII)));
            Thread.sleep(100);
          }
        }
        Thread.sleep(300);
        long t0 = System.nanoTime();
        d.sigterm();
        assertThat(d.waitForExit(Duration.ofSeconds(15))).as(d.stderr()).isZero();
        long ms = (System.nanoTime() - t0) / 1_000_000;
        System.out.println("stop after three aborted requests: " + ms + " ms");
        assertThat(d.stderr()).doesNotContain("still in flight");
        // the bug waited the whole 5 s for calls that would never finish
        assertThat(ms).as("SIGTERM to exit").isLessThan(4500);
        assertThat(plugin).doesNotExist();
        assertThat(hook).doesNotExist();
      }
    }
  }

  @Test
  void aHostThatOnlyLooksLikeLoopbackNeedsTheToken() throws Exception {
    for (Map<String, String> extra : List.of(Map.of("ADMIN_LISTEN", "127.evil.example:9090"),
        Map.of("ADMIN_LISTEN", "127.evil.example:9090", "ADMIN_INSECURE_LOOPBACK", "true"))) {
      Map<String, String> e = env(dir);
      e.putAll(extra);
      try (DaemonProcess d = DaemonProcess.start(dir, e)) {
        assertThat(d.waitForExit(Duration.ofSeconds(20))).isEqualTo(2);
        assertThat(d.logLines()).hasSize(1);
        assertThat(d.logLines().get(0)).startsWith("flannel-np: invalid setting ADMIN_LISTEN=\"127.evil.example:9090\"")
            .contains("not a loopback address", "ADMIN_TOKEN must be set");
      }
    }
  }

  @Test
  void aMalformedReplayFileIsOneLineAndExit2() throws Exception {
    Map<String, String> files = new java.util.LinkedHashMap<>();
    String base = "{\"type\":\"base\",\"prefix\":\"/p\",\"fromRevision\":1,\"toRevision\":3,\"kvs\":[]}";
    files.put("a base line without kvs", "{\"type\":\"base\",\"prefix\":\"/p\",\"fromRevision\":1,\"toRevision\":3}");
    files.put("kvs that are not objects", "{\"type\":\"base\",\"prefix\":\"/p\",\"fromRevision\":1,\"toRevision\":3,"
        + "\"kvs\":[1,2]}");
    files.put("a revision that is a string", base.replace("\"fromRevision\":1", "\"fromRevision\":\"one\""));
    files.put("a null key", base + "\n{\"revision\":2,\"events\":[{\"type\":\"PUT\",\"key\":null,"
        + "\"kv\":{\"key\":null,\"value\":\"v\"}}]}");
    files.put("an unknown event type", base + "\n{\"revision\":2,\"events\":[{\"type\":\"ZAP\",\"kv\":{\"key\":\"/p/k\"}}]}");
    files.put("revisions out of order", base + "\n{\"revision\":3,\"events\":[]}\n{\"revision\":2,\"events\":[]}");
    files.put("not json", "not json at all");
    for (Map.Entry<String, String> f : files.entrySet()) {
      Path file = dir.resolve("bad.jsonl");
      Files.writeString(file, f.getValue());
      Run r = jar(dir, "replay", "--from-revision", "1", "--plane", "lb", "--file", file.toString());
      assertThat(r.exit()).as(f.getKey() + ": " + r.err()).isEqualTo(2);
      List<String> lines = r.err().lines().filter(l -> !l.contains("no --node")).toList();
      assertThat(lines).as(f.getKey()).hasSize(1);
      assertThat(lines.get(0)).as(f.getKey()).startsWith("flannel-np replay: --file " + file + ": line ")
          .doesNotContain("Exception");
    }
  }

  record Run(int exit, String out, String err) {}

  /** {@code java -jar flannel-np.jar ARGS} with only {@code env} (and PATH, HOME). */
  static Run jar(Path dir, String... args) throws Exception {
    return jar(dir, Map.of(), List.of(), null, args);
  }

  static Run jar(Path dir, Map<String, String> env, List<String> jvmArgs, String umask, String... args)
      throws Exception {
    List<String> cmd = new ArrayList<>();
    if (umask != null) {
      cmd.addAll(List.of("sh", "-c", "umask " + umask + " && exec \"$@\"", "sh"));
    }
    cmd.addAll(List.of("java", "-XX:TieredStopAtLevel=1"));
    cmd.addAll(jvmArgs);
    cmd.addAll(List.of("-jar", DaemonProcess.jar().toAbsolutePath().toString()));
    cmd.addAll(List.of(args));
    Path out = Files.createTempFile(dir, "jar", ".out");
    Path err = Files.createTempFile(dir, "jar", ".err");
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
    pb.environment().keySet().removeIf(k -> !k.equals("PATH") && !k.equals("HOME") && !k.startsWith("JAVA"));
    pb.environment().putAll(env);
    Process p = pb.start();
    if (!p.waitFor(60, TimeUnit.SECONDS)) {
      p.destroyForcibly().waitFor();
      throw new AssertionError("jar " + String.join(" ", args) + " did not finish");
    }
    Run r = new Run(p.exitValue(), Files.readString(out), Files.readString(err));
    Files.delete(out);
    Files.delete(err);
    return r;
  }
}
