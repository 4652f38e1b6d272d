package io.flannelnp.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.HexFormat;

/**
 * A test's network namespace where Docker keeps a container's: {@code /run/netns/NAME} (made by
 * {@code ip netns add}) bind-mounted at {@code /run/docker/netns/<12 hex digits>}, the only place
 * the DNS plane accepts a SandboxKey from. {@link #close()} unmounts and removes it, and the
 * directories it made once the last one is closed. Needs root.
 */
public final class DockerSandbox implements AutoCloseable {
  private static final Path DOCKER = Path.of("/run/docker");
  private static final Path DIR = DOCKER.resolve("netns");
  private static final SecureRandom RANDOM = new SecureRandom();
  private static int open;
  private static boolean madeDocker;
  private static boolean madeDir;

  /** The SandboxKey as Docker writes it (/var/run is /run on Debian). */
  public final String key;
  private final Path path;

  private DockerSandbox(Path path) {
    this.path = path;
    this.key = "/var/run/docker/netns/" + path.getFileName();
  }

  /** Binds namespace {@code netns} (in /run/netns) at a fresh sandbox path. */
  public static DockerSandbox of(String netns) {
    byte[] b = new byte[6];
    RANDOM.nextBytes(b);
    return of(netns, HexFormat.of().formatHex(b));
  }

  /**
   * Binds namespace {@code netns} at {@code /run/docker/netns/<name>}: a container's (12 hex
   * digits) or one of Docker's own sandboxes ({@code ingress_sbox}, {@code lb_<id>}).
   */
  public static synchronized DockerSandbox of(String netns, String name) {
    try {
      if (!Files.isDirectory(DOCKER)) {
        Files.createDirectory(DOCKER);
        madeDocker = true;
      }
      if (!Files.isDirectory(DIR)) {
        Files.createDirectory(DIR);
        madeDir = true;
      }
      Path p = Files.createFile(DIR.resolve(name));
      open++;
      DockerSandbox s = new DockerSandbox(p);
      Netns.Result r = Netns.run("mount", "--bind", "/run/netns/" + netns, p.toString());
      if (r.exit() != 0) {
        s.close();
        r.ok();
      }
      return s;
    } catch (IOException e) {
      throw new IllegalStateException("cannot make a sandbox path in " + DIR + ": " + e.getMessage(), e);
    }
  }

  @Override
  public void close() {
    synchronized (DockerSandbox.class) {
      Netns.run("umount", path.toString());
      try {
        Files.deleteIfExists(path);
        if (--open == 0) {
          if (madeDir) {
            Files.deleteIfExists(DIR);
            madeDir = false;
          }
          if (madeDocker) {
            Files.deleteIfExists(DOCKER);
            madeDocker = false;
          }
        }
      } catch (IOException e) {
        throw new IllegalStateException("cannot remove " + path + ": " + e.getMessage(), e);
      }
    }
  }
}
