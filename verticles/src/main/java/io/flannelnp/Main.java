package io.flannelnp;

import io.flannelnp.config.Config;
import io.flannelnp.config.ConfigException;
import io.flannelnp.log.Logging;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;
import sun.misc.Signal;

/**
 * {@code java -jar flannel-np.jar}: reads the settings from the environment (as a Docker managed
 * plugin passes them), validates them (a bad one: one line, exit 2), starts the daemon, and stops
 * it in order on SIGTERM/SIGINT (exit 0). The plugin is PID 1 in its own PID namespace, so the
 * signal is handled explicitly rather than left to the JVM's defaults.
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws InterruptedException {
    if (args.length > 0 && (args[0].equals("replay") || args[0].equals("record"))) {
      System.exit(io.flannelnp.replay.ReplayCommand.run(args, System.getenv(), System.out, System.err));
    }
    if (args.length > 0 && args[0].equals("status")) {
      System.exit(io.flannelnp.status.StatusCommand.run(args, System.getenv(), System.out, System.err));
    }
    if (args.length > 0 && !args[0].equals("daemon")) {
      System.err.println("flannel-np: unknown command '" + args[0] + "'; usage: java -jar flannel-np.jar"
          + " [daemon | replay --from-revision N [--to-revision M] [--node ID] [--plane flannel|lb|dns|ipam] [--file F]"
          + " | record --from-revision N --out FILE | status [--json]]");
      System.exit(2);
    }
    Config config;
    try {
      config = Config.fromEnv(System.getenv());
    } catch (ConfigException e) {
      System.err.println("flannel-np: " + e.getMessage());
      System.exit(2);
      return;
    }
    Logging.configure(config.logLevel(), config.logFormat(), System.err);
    Logger log = Logger.getLogger(Main.class.getName());
    log.info("flannel-np starting on node " + config.nodeName() + ", etcd " + String.join(",", config.etcdEndpoints())
        + " prefix " + config.etcdPrefix());
    log.info(config.capacityLine());
    config.flannelOptions().notes().forEach(log::info);

    Daemon daemon = new Daemon(config);
    CountDownLatch stop = new CountDownLatch(1);
    java.util.concurrent.atomic.AtomicReference<String> fatal = new java.util.concurrent.atomic.AtomicReference<>();
    daemon.onFatal(msg -> {
      if (fatal.compareAndSet(null, msg)) {
        stop.countDown();
      }
    });
    Signal.handle(new Signal("TERM"), s -> stop.countDown());
    Signal.handle(new Signal("INT"), s -> stop.countDown());
    try {
      daemon.start().await(60, TimeUnit.SECONDS);
    } catch (Exception e) {
      log.severe("start failed: " + e.getMessage());
      daemon.stop(5, TimeUnit.SECONDS);
      System.exit(1);
    }
    log.info("flannel-np started");
    stop.await();
    if (fatal.get() != null) {
      log.severe(fatal.get());
      daemon.stop(8, TimeUnit.SECONDS);
      System.err.println("flannel-np: " + fatal.get());
      System.exit(2);
    }
    log.info("stopping (signal received)");
    // Docker SIGKILLs a plugin 10 s after SIGTERM: finish well before.
    daemon.stop(8, TimeUnit.SECONDS);
    log.info("flannel-np stopped");
    System.exit(0);
  }
}
