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

  /** One line on stderr and the usage; returns 2, the exit code of every usage error. */
  static int usageError(String what) {
    System.err.println("flannel-np: " + what);
    System.err.println(USAGE);
    return 2;
  }

  static final String USAGE = "usage: java -jar flannel-np.jar [daemon] | replay … | record … | status … | --version | --help\n"
      + "  daemon    run the plugin (the default); every setting comes from the environment\n"
      + "            (ETCD_ENDPOINTS, AVAILABLE_SUBNETS, …: README \"Settings\")\n"
      + "  replay    replay etcd history through the planes' planners (replay --help)\n"
      + "  record    write etcd history to a file for replay (record --help)\n"
      + "  status    the cluster as etcd holds it: nodes, networks, services, problems (status --help)\n"
      + "  --version print the version and exit\n"
      + "exit codes: 0 ok, 1 runtime failure, 2 bad arguments or settings";

  public static void main(String[] args) throws InterruptedException {
    String cmd = args.length == 0 ? "daemon" : args[0];
    if (cmd.equals("--version") || cmd.equals("version")) {
      System.out.println("flannel-np " + Version.string());
      System.exit(args.length == 1 ? 0 : usageError("--version takes no arguments"));
    }
    if (cmd.equals("--help") || cmd.equals("-h") || cmd.equals("help")) {
      System.out.println(USAGE);
      System.exit(0);
    }
    if (cmd.equals("replay") || cmd.equals("record")) {
      System.exit(io.flannelnp.replay.ReplayCommand.run(args, System.getenv(), System.out, System.err));
    }
    if (cmd.equals("status")) {
      System.exit(io.flannelnp.status.StatusCommand.run(args, System.getenv(), System.out, System.err));
    }
    if (!cmd.equals("daemon")) {
      System.exit(usageError("unknown command '" + cmd + "'"));
    }
    if (args.length > 1) {
      if (args.length == 2 && (args[1].equals("--help") || args[1].equals("-h"))) {
        System.out.println("usage: java -jar flannel-np.jar [daemon]\n"
            + "Runs the Docker network and IPAM plugin. It takes no arguments: every setting comes from the\n"
            + "environment, as a managed plugin receives them (docker plugin set NAME=VALUE); README \"Settings\".\n"
            + "A bad setting stops it with exit code 2 and one line naming the variable, the value and the rule.");
        System.exit(0);
      }
      System.exit(usageError("daemon takes no arguments (settings come from the environment), got '" + args[1] + "'"));
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
    log.info("flannel-np " + Version.string() + " starting on node " + config.nodeName() + ", etcd " + String.join(",", config.etcdEndpoints())
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
