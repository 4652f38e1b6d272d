package io.flannelnp.testing;

import java.time.Duration;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;

/** Waiting for a condition the system under test reaches on its own (level-triggered planes converge). */
public final class Poll {
  private static final Duration EVERY = Duration.ofMillis(20);

  private Poll() {}

  /** Fails with "timed out … waiting for: {@code what}" if {@code ok} does not hold within {@code max}. */
  public static void await(String what, Duration max, BooleanSupplier ok) {
    await(what, max, EVERY, ok, () -> "");
  }

  /** Checked every {@code every}: for conditions that cost a process each (kernel reads). */
  public static void await(String what, Duration max, Duration every, BooleanSupplier ok) {
    await(what, max, every, ok, () -> "");
  }

  /** With what the test saw so far ({@code context}) in the failure, to tell a slow plane from a dead one. */
  public static void await(String what, Duration max, BooleanSupplier ok, Supplier<String> context) {
    await(what, max, EVERY, ok, context);
  }

  private static void await(String what, Duration max, Duration every, BooleanSupplier ok, Supplier<String> context) {
    long deadline = System.nanoTime() + max.toNanos();
    while (!ok.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("timed out after " + max + " waiting for: " + what + context.get());
      }
      try {
        Thread.sleep(every.toMillis());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new AssertionError(e);
      }
    }
  }
}
