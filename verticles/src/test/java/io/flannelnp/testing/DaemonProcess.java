package io.flannelnp.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** The daemon as a user runs it: {@code java -jar verticles/target/flannel-np.jar} with env settings. */
public final class DaemonProcess implements AutoCloseable {
  private final Process process;
  private final Path out;
  private final Path err;
  public final long startedNanos;

  private DaemonProcess(Process p, Path out, Path err, long started) {
    this.process = p;
    this.out = out;
    this.err = err;
    this.startedNanos = started;
  }

  public static Path jar() {
    String p = System.getProperty("flannelnp.jar");
    Path jar = p != null ? Path.of(p) : Path.of("target/flannel-np.jar");
    if (!Files.isRegularFile(jar)) {
      throw new IllegalStateException(jar + " missing: run `mvn package` first");
    }
    return jar;
  }

  public static DaemonProcess start(Path workDir, Map<String, String> env) throws IOException {
    return start(workDir, env, Launch.PLAIN);
  }

  /**
   * How the process is started: inside network namespace {@code netns} ({@code ip netns exec}, so
   * its kernel work stays there; null: this one), under {@code umask} (null: inherited), with
   * extra JVM arguments.
   */
  public record Launch(String netns, String umask, List<String> jvmArgs) {
    public static final Launch PLAIN = new Launch(null, null, List.of());
  }

  public static DaemonProcess start(Path workDir, Map<String, String> env, Launch launch) throws IOException {
    Path out = Files.createTempFile(workDir, "daemon", ".out");
    Path err = Files.createTempFile(workDir, "daemon", ".err");
    java.util.List<String> cmd = new java.util.ArrayList<>();
    if (launch.netns() != null) {
      cmd.addAll(List.of("ip", "netns", "exec", launch.netns()));
    }
    if (launch.umask() != null) {
      // the umask is the only thing the shell does; the arguments reach java unchanged
      cmd.addAll(List.of("sh", "-c", "umask " + launch.umask() + " && exec \"$@\"", "sh"));
    }
    // Vert.x's file cache goes under workDir, which the test removes: a daemon a test kills hard
    // cannot delete it, and it would stay in /tmp
    cmd.addAll(List.of("java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
        "-Dvertx.cacheDirBase=" + workDir.toAbsolutePath().resolve("vertx-cache")));
    cmd.addAll(launch.jvmArgs());
    cmd.addAll(List.of("-jar", jar().toAbsolutePath().toString()));
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
    // Only what the test says: a plugin gets exactly the env of its config.json.
    Map<String, String> e = pb.environment();
    e.keySet().removeIf(k -> !k.equals("PATH") && !k.equals("HOME") && !k.startsWith("JAVA"));
    e.putAll(env);
    long t0 = System.nanoTime();
    DaemonProcess d = new DaemonProcess(pb.start(), out, err, t0);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> d.process.destroyForcibly()));
    return d;
  }

  public String stderr() {
    try {
      return Files.readString(err);
    } catch (IOException e) {
      return "";
    }
  }

  public String stdout() {
    try {
      return Files.readString(out);
    } catch (IOException e) {
      return "";
    }
  }

  public List<String> logLines() {
    return stderr().lines().toList();
  }

  public boolean waitForLog(String needle, Duration max) throws InterruptedException {
    long deadline = System.nanoTime() + max.toNanos();
    while (System.nanoTime() < deadline) {
      if (stderr().contains(needle)) {
        return true;
      }
      if (!process.isAlive()) {
        return stderr().contains(needle);
      }
      Thread.sleep(25);
    }
    return false;
  }

  public int waitForExit(Duration max) throws InterruptedException {
    if (!process.waitFor(max.toMillis(), TimeUnit.MILLISECONDS)) {
      throw new AssertionError("daemon still running after " + max + "; log:\n" + stderr());
    }
    return process.exitValue();
  }

  public void sigterm() throws IOException, InterruptedException {
    new ProcessBuilder("kill", "-TERM", Long.toString(process.pid())).inheritIO().start().waitFor();
  }

  public boolean isAlive() {
    return process.isAlive();
  }

  public long pid() {
    return process.pid();
  }

  @Override
  public void close() {
    process.destroyForcibly();
    try {
      process.waitFor(10, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
