package io.flannelnp.api;

import io.vertx.core.Future;
import io.vertx.core.net.SocketAddress;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.function.Function;

/**
 * A unix socket only root may connect to (mode 0600), whatever the process's umask: bound in a
 * fresh 0700 directory beside its path, given its mode there, then renamed into place, so it is
 * never reachable with another mode, not even between bind and chmod. Any local user who can
 * connect to the plugin socket can remove networks; to the hook socket, hold up container starts.
 */
public final class PrivateSocket {
  /** sun_path holds 108 bytes with the terminating NUL. */
  private static final int MAX_PATH = 107;
  private static final SecureRandom RANDOM = new SecureRandom();

  private PrivateSocket() {}

  /**
   * Listens on {@code path} through {@code listen} (a server's {@code listen(SocketAddress)}),
   * replacing a stale socket a killed process left there. Blocks briefly on the file system.
   */
  public static Future<Void> listen(Path path, Function<SocketAddress, Future<?>> listen) {
    Path dir;
    try {
      Files.createDirectories(path.getParent());
      Files.deleteIfExists(path); // a stale socket from a killed process blocks bind()
      byte[] b = new byte[3];
      RANDOM.nextBytes(b);
      dir = Files.createDirectory(path.resolveSibling(".fnp" + HexFormat.of().formatHex(b)),
          PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
    } catch (IOException e) {
      return Future.failedFuture("cannot prepare socket " + path + ": " + e.getMessage());
    }
    Path staging = dir.resolve("s");
    if (staging.toString().length() > MAX_PATH) {
      deleteQuietly(dir);
      return Future.failedFuture("socket path " + path + " is too long to be bound privately beside itself ("
          + staging + " has more than " + MAX_PATH + " characters); use a shorter path");
    }
    return listen.apply(SocketAddress.domainSocketAddress(staging.toString())).<Void>compose(x -> {
      try {
        Files.setPosixFilePermissions(staging, PosixFilePermissions.fromString("rw-------"));
        Files.move(staging, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        return Future.succeededFuture();
      } catch (IOException e) {
        return Future.failedFuture("cannot put socket " + path + " in place: " + e.getMessage());
      }
    }).eventually(() -> {
      deleteQuietly(staging);
      deleteQuietly(dir);
      return Future.succeededFuture();
    });
  }

  private static void deleteQuietly(Path p) {
    try {
      Files.deleteIfExists(p);
    } catch (IOException ignored) {
      // a leftover directory of ours: harmless, named .fnp*
    }
  }
}
