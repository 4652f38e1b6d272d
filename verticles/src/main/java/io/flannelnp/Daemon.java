package io.flannelnp;

import io.flannelnp.admin.AdminVerticle;
import io.flannelnp.api.ApiVerticle;
import io.flannelnp.api.IpamApi;
import io.flannelnp.api.NetworkApi;
import io.flannelnp.api.PluginRoutes;
import io.flannelnp.api.PublicAddress;
import io.flannelnp.ipam.Ipam;
import java.util.function.Supplier;
import io.flannelnp.bus.Codecs;
import io.flannelnp.config.Config;
import io.flannelnp.dns.DnsVerticle;
import io.flannelnp.docker.DockerVerticle;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdStore;
import io.flannelnp.etcd.EtcdWatchVerticle;
import io.flannelnp.flannel.FlannelVerticle;
import io.flannelnp.flannel.Kernel;
import io.flannelnp.lb.LoadBalancerVerticle;
import io.vertx.core.Deployable;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;

/**
 * The daemon's lifecycle: deploys the verticles in dependency order (the plugin socket first, so
 * Docker sees it listening within its deadline whatever etcd does) and undeploys them in reverse.
 */
public final class Daemon {
  private static final Logger LOG = Logger.getLogger(Daemon.class.getName());

  private final Config config;
  private final Kernel kernel;
  private final Vertx vertx;
  private final EtcdStore etcd;
  private final EtcdSchema schema;
  private Ipam ipam;
  private io.flannelnp.ipam.ClusterSettings settings;
  private volatile java.util.function.Consumer<String> fatal = msg -> LOG.severe(msg);
  private final Deque<String[]> deployed = new ArrayDeque<>(); // {name, deploymentId}

  public Daemon(Config config) {
    this(config, Kernel.current());
  }

  /** With the kernel the data plane programs: the current netns, or (tests, lab) a named one. */
  public Daemon(Config config, Kernel kernel) {
    this.config = config;
    this.kernel = kernel;
    this.vertx = Vertx.vertx();
    Codecs.registerAll(vertx.eventBus());
    this.schema = new EtcdSchema(config.etcdPrefix());
    this.etcd = new EtcdStore(vertx, config.etcdEndpoints(), config.etcdTls(), config.etcdAuth(), Duration.ofSeconds(5));
  }

  public Future<Void> start() {
    PluginRoutes routes = new PluginRoutes(etcd);
    ipam = new Ipam(etcd, schema, config);
    settings = new io.flannelnp.ipam.ClusterSettings(etcd, schema, config);
    Supplier<Future<String>> publicIp = publicIp();
    new IpamApi(ipam, config, publicIp, this::verifiedSettings).register(routes);
    new NetworkApi(ipam, etcd, schema, vertx.eventBus(), config, publicIp).register(routes);
    io.flannelnp.admin.DecisionLog.install(vertx.eventBus());
    Future<Void> chain = deploy("ApiVerticle", new ApiVerticle(config.pluginSocket(), routes));
    if (config.adminListen().isPresent()) {
      // before the publishers, so /health misses no status change
      chain = chain.compose(v -> deploy("AdminVerticle",
          new AdminVerticle(config.adminListen().get(), config.adminToken(), config.adminOrigins(),
              List.of("flannel", "lb", "dns", "docker"), etcd::lastRevision, schema)));
    }
    chain = chain
        .compose(v -> deploy("EtcdWatchVerticle", new EtcdWatchVerticle(etcd, schema,
            Duration.ofSeconds(Math.min(config.nodeRecordsTtlSeconds(), config.subnetLeaseTtlSeconds())))))
        .compose(v -> deploy("FlannelVerticle", new FlannelVerticle(config, schema, kernel)))
        .compose(v -> deploy("LoadBalancerVerticle", new LoadBalancerVerticle(schema, kernel)))
        .compose(v -> deploy("DnsVerticle", new DnsVerticle(config, schema)))
        .compose(v -> deploy("DockerVerticle", new DockerVerticle(config, etcd, schema)))
        .compose(v -> deploy("GcVerticle", new io.flannelnp.gc.GcVerticle(etcd, schema, ipam, config.nodeName(),
            Duration.ofSeconds(config.gcGraceSeconds()), config.nodeRecordsTtlSeconds(), publicIp, Version.string())));
    return chain.onSuccess(v -> {
      checkSettings();
      adoptLeases(publicIp);
    });
  }

  /** Called once with one line when the daemon must not go on (exit 2): its settings disagree with the cluster's. */
  public void onFatal(java.util.function.Consumer<String> handler) {
    this.fatal = handler;
  }

  /** The cluster settings check IPAM calls wait for: a disagreement is fatal. */
  private Future<Void> verifiedSettings() {
    return settings.verify().onFailure(e -> {
      if (e instanceof io.flannelnp.ipam.ClusterSettings.Disagreement) {
        fatal.accept(e.getMessage());
      }
    });
  }

  /** Compares this node's address settings with the cluster's as soon as etcd answers. */
  private void checkSettings() {
    verifiedSettings().onFailure(e -> {
      if (!(e instanceof io.flannelnp.ipam.ClusterSettings.Disagreement)) {
        LOG.fine("cluster settings not checked yet (" + e.getMessage() + "); retrying in 5 s");
        vertx.setTimer(5000, t -> checkSettings());
      }
    });
  }

  /** Renews the Flannel leases this node held before a restart; retried until etcd answers. */
  private void adoptLeases(Supplier<Future<String>> publicIp) {
    publicIp.get().compose(ip -> ipam.adoptLeases(config.nodeName(), ip)).onComplete(ar -> {
      if (ar.succeeded()) {
        if (!ar.result().isEmpty()) {
          LOG.info("kept " + ar.result().size() + " subnet lease(s) from before the restart");
        }
      } else {
        LOG.fine("adopting leases failed (" + ar.cause().getMessage() + "); retrying in 5 s");
        vertx.setTimer(5000, t -> adoptLeases(publicIp));
      }
    });
  }

  /** Resolved once (it runs `ip`), on a worker; a failure is retried at the next call. */
  private Supplier<Future<String>> publicIp() {
    java.util.concurrent.atomic.AtomicReference<Future<String>> cached = new java.util.concurrent.atomic.AtomicReference<>();
    return () -> cached.updateAndGet(f -> f == null || f.failed()
        ? vertx.executeBlocking(() -> PublicAddress.resolve(config.flannelOptions(), kernel)) : f);
  }

  private Future<Void> deploy(String name, Deployable verticle) {
    return vertx.deployVerticle(verticle).map(id -> {
      deployed.push(new String[] {name, id});
      LOG.fine("deployed " + name);
      return null;
    });
  }

  /**
   * Stops the plugin API first (no new calls; calls in flight finish, so no etcd write is cut
   * off), then the other verticles in reverse order of deployment (Docker, DNS, LB, Flannel, the
   * etcd watch, the admin server), then the etcd client and Vert.x.
   */
  public void stop(long timeout, TimeUnit unit) {
    long deadline = System.nanoTime() + unit.toNanos(timeout);
    // The API was deployed first (to listen early) but stops first too: refuse new work before
    // the planes it calls go away.
    String[] api = deployed.pollLast();
    if (api != null) {
      undeploy(api, deadline);
    }
    while (!deployed.isEmpty()) {
      undeploy(deployed.pop(), deadline);
    }
    if (ipam != null) {
      ipam.detach(); // stop renewing, never revoke: a restarted daemon takes its leases back
    }
    etcd.close();
    try {
      vertx.close().await(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
    } catch (Exception e) {
      LOG.warning("Vert.x did not close in time: " + e);
    }
  }

  /**
   * Stops the process's work as abruptly as SIGKILL would, for tests that need a crash: no
   * undeploy, no cleanup; etcd client and Vert.x closed under the verticles, leases not revoked.
   */
  public void halt() {
    if (ipam != null) {
      ipam.detach();
    }
    etcd.close();
    try {
      vertx.close().await(5, TimeUnit.SECONDS);
    } catch (Exception e) {
      LOG.fine("halt: " + e);
    }
  }

  private void undeploy(String[] d, long deadline) {
    try {
      vertx.undeploy(d[1]).await(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
      LOG.info("stopped " + d[0]);
    } catch (Exception e) {
      LOG.warning("stopping " + d[0] + " failed: " + e);
    }
  }
}
