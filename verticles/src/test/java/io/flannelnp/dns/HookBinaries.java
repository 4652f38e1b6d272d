package io.flannelnp.dns;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Builds hook/ with its Makefile (once per JVM) and runs its binaries as the tests need. */
final class HookBinaries {
  private static Path dir;

  private HookBinaries() {}

  /** hook/ of this checkout, found upwards from the working directory. */
  static synchronized Path dir() {
    if (dir == null) {
      Path p = Path.of("").toAbsolutePath();
      while (p != null && !Files.isRegularFile(p.resolve("hook/Makefile"))) {
        p = p.getParent();
      }
      if (p == null) {
        throw new IllegalStateException("hook/Makefile not found above " + Path.of("").toAbsolutePath());
      }
      Result r = run(List.of("make", "-s", "-C", p.resolve("hook").toString()), "", 120_000);
      if (r.exit() != 0) {
        throw new IllegalStateException("make -C hook failed: " + r.err());
      }
      dir = p.resolve("hook");
    }
    return dir;
  }

  static Path hook() {
    return dir().resolve("target/flannel-np-hook");
  }

  static Path runtime() {
    return dir().resolve("target/flannel-np-runtime");
  }

  /** A finished process: exit code (-1 if killed at the limit), output, wall time. */
  record Result(int exit, String out, String err, long millis) {}

  static Result run(List<String> argv, String stdin, long limitMillis) {
    try {
      Path out = Files.createTempFile("fnh-out", ".txt");
      Path err = Files.createTempFile("fnh-err", ".txt");
      try {
        long t0 = System.nanoTime();
        Process p = new ProcessBuilder(new ArrayList<>(argv)).redirectOutput(out.toFile()).redirectError(err.toFile())
            .start();
        try (var in = p.getOutputStream()) {
          in.write(stdin.getBytes(StandardCharsets.UTF_8));
        } catch (IOException ignored) {
          // the program did not read its input
        }
        boolean done = p.waitFor(limitMillis, TimeUnit.MILLISECONDS);
        if (!done) {
          p.destroyForcibly().waitFor();
        }
        long ms = (System.nanoTime() - t0) / 1_000_000;
        return new Result(done ? p.exitValue() : -1, Files.readString(out), Files.readString(err), ms);
      } finally {
        Files.deleteIfExists(out);
        Files.deleteIfExists(err);
      }
    } catch (IOException e) {
      throw new IllegalStateException("cannot run " + argv + ": " + e.getMessage(), e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
  }
}
