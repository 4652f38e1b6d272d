package io.flannelnp.testing;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Named network namespaces for a test: every one it adds shares a random stem ({@code fnpt-<6 hex>}),
 * and {@link #close()} deletes all of them, which also destroys every link inside. Needs root and
 * iproute2. Commands run from argument lists, never through a shell.
 */
public final class Netns implements AutoCloseable {
  private static final SecureRandom RANDOM = new SecureRandom();

  /** A finished command. */
  public record Result(List<String> argv, int exit, String out, String err) {
    /** This result if the command succeeded; else an AssertionError with its output. */
    public Result ok() {
      if (exit != 0) {
        throw new AssertionError(String.join(" ", argv) + " exited " + exit + ": " + err.strip() + " " + out.strip());
      }
      return this;
    }
  }

  private final String stem;
  private final List<String> created = new ArrayList<>();

  public Netns() {
    byte[] b = new byte[3];
    RANDOM.nextBytes(b);
    stem = "fnpt-" + HexFormat.of().formatHex(b);
  }

  /** The prefix every namespace of this fixture starts with. */
  public String stem() {
    return stem;
  }

  /** Creates {@code <stem>-<suffix>} with its loopback up and returns its name. */
  public synchronized String add(String suffix) {
    String name = stem + "-" + suffix;
    run("ip", "netns", "add", name).ok();
    created.add(name);
    run("ip", "-n", name, "link", "set", "dev", "lo", "up").ok();
    return name;
  }

  /**
   * Creates {@code <stem>-<suffix>} for every suffix with one {@code ip -batch} (loopbacks are left
   * down; {@link #ipBatch} brings them up where needed). Returns the names, in order.
   */
  public synchronized List<String> addAll(List<String> suffixes) {
    List<String> names = new ArrayList<>();
    StringBuilder b = new StringBuilder();
    for (String s : suffixes) {
      String name = stem + "-" + s;
      names.add(name);
      b.append("netns add ").append(name).append('\n');
    }
    Result r = run(List.of("ip", "-batch", "-"), b.toString());
    // whatever was made is ours to delete, even if the batch stopped half-way
    List<String> now = list();
    for (String n : names) {
      if (now.contains(n)) {
        created.add(n);
      }
    }
    r.ok();
    return names;
  }

  /** Deletes these namespaces of this fixture with one {@code ip -force -batch}. */
  public synchronized void deleteAll(List<String> names) {
    StringBuilder b = new StringBuilder();
    for (String n : names) {
      if (created.contains(n)) {
        b.append("netns del ").append(n).append('\n');
      }
    }
    if (b.length() > 0) {
      run(List.of("ip", "-force", "-batch", "-"), b.toString());
    }
    List<String> now = list();
    created.removeIf(n -> names.contains(n) && !now.contains(n));
    List<String> left = names.stream().filter(now::contains).toList();
    if (!left.isEmpty()) {
      throw new AssertionError("could not delete network namespaces " + left);
    }
  }

  /** {@code ip [-n NS] -batch -} with these lines (NS null: the current namespace). */
  public Result ipBatch(String ns, List<String> lines) {
    List<String> argv = new ArrayList<>(List.of("ip"));
    if (ns != null) {
      argv.addAll(List.of("-n", ns));
    }
    argv.addAll(List.of("-batch", "-"));
    return run(argv, String.join("\n", lines) + "\n");
  }

  /** {@code ip -n NS ARGS}. */
  public Result ip(String ns, String... args) {
    List<String> argv = new ArrayList<>(List.of("ip", "-n", ns));
    argv.addAll(List.of(args));
    return run(argv);
  }

  /** {@code ip netns exec NS CMD...}. */
  public Result exec(String ns, String... cmd) {
    List<String> argv = new ArrayList<>(List.of("ip", "netns", "exec", ns));
    argv.addAll(List.of(cmd));
    return run(argv);
  }

  /** Deletes one namespace of this fixture now. */
  public synchronized void delete(String ns) {
    run("ip", "netns", "del", ns).ok();
    created.remove(ns);
  }

  /** Deletes every namespace this fixture created that still exists. */
  @Override
  public synchronized void close() {
    List<String> failures = new ArrayList<>();
    for (String ns : List.copyOf(created)) {
      if (list().contains(ns)) {
        Result r = run("ip", "netns", "del", ns);
        if (r.exit() != 0) {
          failures.add(ns + ": " + r.err().strip());
        }
      }
      created.remove(ns);
    }
    if (!failures.isEmpty()) {
      throw new AssertionError("could not delete network namespaces " + failures);
    }
  }

  /** The names `ip netns list` shows. */
  public static List<String> list() {
    List<String> out = new ArrayList<>();
    for (String line : run("ip", "netns", "list").ok().out().split("\n")) {
      String l = line.strip();
      if (!l.isEmpty()) {
        out.add(l.split("\\s+")[0]);
      }
    }
    return out;
  }

  public static Result run(String... argv) {
    return run(List.of(argv));
  }

  /** Runs a command with a 60 s limit; stdout and stderr are captured. */
  public static Result run(List<String> argv) {
    return run(argv, null);
  }

  /** As {@link #run(List)}, with {@code stdin} fed to the command (null: /dev/null). */
  public static Result run(List<String> argv, String stdin) {
    return run(argv, java.util.Map.of(), stdin, 60);
  }

  /** Runs a command with {@code env} added, {@code stdin} (null: /dev/null) and a time limit. */
  public static Result run(List<String> argv, java.util.Map<String, String> env, String stdin, int limitSeconds) {
    ProcessBuilder pb = new ProcessBuilder(argv);
    pb.environment().put("LC_ALL", "C");
    pb.environment().putAll(env);
    if (stdin == null) {
      pb.redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
    }
    try {
      Process p = pb.start();
      if (stdin != null) {
        CompletableFuture.runAsync(() -> {
          try (var os = p.getOutputStream()) {
            os.write(stdin.getBytes(StandardCharsets.UTF_8));
          } catch (IOException ignored) {
            // the command exited early; its exit code says why
          }
        });
      }
      CompletableFuture<String> out = CompletableFuture.supplyAsync(() -> drain(p.getInputStream()));
      CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> drain(p.getErrorStream()));
      if (!p.waitFor(limitSeconds, TimeUnit.SECONDS)) {
        p.destroyForcibly();
        throw new AssertionError(String.join(" ", argv) + " did not finish in " + limitSeconds + " s");
      }
      return new Result(List.copyOf(argv), p.exitValue(), out.get(10, TimeUnit.SECONDS), err.get(10, TimeUnit.SECONDS));
    } catch (IOException e) {
      throw new AssertionError("cannot run " + argv + ": " + e.getMessage(), e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError("interrupted running " + argv, e);
    } catch (Exception e) {
      throw new AssertionError("running " + argv + " failed: " + e, e);
    }
  }

  private static String drain(InputStream is) {
    try {
      ByteArrayOutputStream b = new ByteArrayOutputStream();
      is.transferTo(b);
      return b.toString(StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "";
    }
  }
}
