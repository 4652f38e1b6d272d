package io.flannelnp.testing;

import io.vertx.core.Future;
import java.time.Duration;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

/** A Vert.x future awaited from a test thread: its value, or the exception it failed with, not wrapped. */
public final class Futures {
  private Futures() {}

  /** Waits at most 30 s: longer than any etcd client timeout the tests configure. */
  public static <T> T await(Future<T> f) throws Exception {
    return await(f, Duration.ofSeconds(30));
  }

  public static <T> T await(Future<T> f, Duration max) throws Exception {
    try {
      return f.toCompletionStage().toCompletableFuture().get(max.toMillis(), TimeUnit.MILLISECONDS);
    } catch (ExecutionException e) {
      if (e.getCause() instanceof Exception ex) {
        throw ex;
      }
      throw e;
    }
  }
}
