package io.flannelnp.dns;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Failure;
import io.flannelnp.bus.Observed;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.config.Config;
import io.flannelnp.config.Setting;
import io.flannelnp.dns.DnsMessage.EjectDns;
import io.flannelnp.dns.DnsMessage.InjectDns;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.model.ClusterModel;
import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.eventbus.Message;
import io.vertx.core.internal.VertxInternal;
import io.vertx.core.json.JsonObject;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The resolver inside every container on flannel-np's networks on this node.
 *
 * <p><b>What a container sees.</b> Docker writes {@code nameserver 127.0.0.11} into its
 * resolv.conf; our table in its namespace sends 127.0.0.11:53 (UDP and TCP) to our listener
 * there ({@link DnsNat}, {@link DnsListener}); the listener answers Docker's names from etcd
 * ({@link DnsNames}) and forwards everything else to Docker's own resolver in that namespace.
 *
 * <p><b>Which containers.</b> A sandbox (a container's network namespace, named by Docker's
 * SandboxKey) is injected when
 * <ul>
 *   <li>{@link InjectDns} asks for it (Join), until {@link EjectDns} (Leave) for its last endpoint;</li>
 *   <li>or this node's etcd records say a container runs there on one of our networks: an endpoint
 *       record of this node with a SandboxKey (written at Join, cleared at Leave), or a running
 *       container record of this node with a SandboxKey and a flannel-np attachment. This is what
 *       re-injects every running container after a restart, within the first pass.</li>
 * </ul>
 * A sandbox whose path is no longer the namespace we injected into (the container is gone) is
 * ejected by the next pass. When InjectDns or a record names a sandbox before its namespace is
 * there (Docker 20.10 mounts it only during {@code runc create}, and brings its loopback up a
 * moment later), injection waits, polling every 20 ms, for up to 30 s; InjectDns is then
 * answered at once ("waiting ..."), else when the listener serves. Nothing holds the container
 * until then, so without the OCI hook its first queries may still reach Docker's resolver. With
 * IS_HOOK_AVAILABLE=true the plane serves the hook's handshake ({@link HookServer}): runc holds
 * each new container in its createContainer hook until the listener serves its namespace (or,
 * for a namespace that is not ours, not at all).
 *
 * <p><b>Scope.</b> A container resolves in the networks it is attached to: its container record's
 * networks (ordinary overlays included) and the networks of its endpoints.
 *
 * <p><b>Re-check.</b> Nothing stops a process in the container (an operator's {@code nft flush
 * ruleset}, a firewall tool) from removing or flushing our table, and Docker's resolver would then
 * answer there, without our names, until the container restarts. So every periodic pass (every
 * {@code resync} of the options, 30 s) reads our table back in each served sandbox, with
 * libnftables on the namespace thread ({@link TableReader}: no process per container), and
 * re-creates it in one transaction when it is missing or differs from what we applied (rules and
 * chains, priorities included; counters aside). Each repair is logged once, counted in the pass
 * summary and in {@code fnp_dns_table_repairs}.
 *
 * <p><b>Stop.</b> An orderly stop removes our table from every container and closes the
 * listeners, so Docker's resolver answers until the next start.
 */
public final class DnsVerticle extends ReconcilerVerticle {
  private static final Logger LOG = Logger.getLogger(DnsVerticle.class.getName());
  /** A request-driven batch is not computed from an etcd revision. */
  private static final long NO_REVISION = 0;
  /** How long an EjectDns keeps etcd records that still name the endpoint from re-injecting it. */
  static final Duration EJECT_GRACE = Duration.ofSeconds(60);
  /**
   * Without a wait (the namespace was there already), how long a loopback that is not up yet is
   * still waited for: Docker brings it up right after mounting the namespace.
   */
  static final Duration NOT_WAITING = Duration.ofSeconds(2);
  /** How long a sandbox of the records whose namespace never appeared is left alone. */
  static final Duration WAIT_BACKOFF = Duration.ofMinutes(5);
  /** How long a hook's request is worked on at most (the hook itself gives up after ~2 s). */
  static final Duration HOOK_WAIT = Duration.ofSeconds(10);

  private final String nodeName;
  /** The Swarm node ID the Docker plane keys this node's container records by (empty outside a Swarm). */
  private volatile String swarmNodeId = "";
  private final boolean compat;
  private final int ttl;
  private final EtcdSchema schema;
  private final DnsListener.Options options;
  /** The hook handshake socket, or null without IS_HOOK_AVAILABLE. */
  private final String hookSocket;
  private HookServer hookServer;
  private long ownNsDev;

  private final Map<String, Entry> entries = new java.util.concurrent.ConcurrentHashMap<>();
  /** The last operation (inject, eject) per sandbox key: operations on one sandbox never overlap. */
  private final Map<String, Future<Void>> ops = new HashMap<>();
  private final Map<String, Tomb> tombs = new HashMap<>();
  /** Sandboxes from the records whose namespace did not appear in time: when that was. */
  private final Map<String, Long> waitFailed = new HashMap<>();
  private Namespaces.Switcher switcher;
  private ExecutorService tools;
  private long ownInode;
  private long revision;
  private DnsNames names = DnsNames.EMPTY;
  private Records records = Records.EMPTY;

  /** One sandbox we serve or are about to. Touched on the verticle's context only. */
  private static final class Entry {
    final String key;
    String containerId = "";
    final Set<String> explicitEndpoints = new HashSet<>();
    boolean explicit;
    volatile DnsListener listener;
    volatile String state = "new";
    volatile String error = "";
    /** Our table as read back right after we applied it ({@code nft -s}); null: not known, not checked. */
    volatile String table;
    /** While waiting for the namespace to appear: polls at once (a hook says it is there). */
    Runnable wake;

    Entry(String key) {
      this.key = key;
    }
  }

  /** Endpoints EjectDns removed from a sandbox, ignored in records until they catch up. */
  private record Tomb(Set<String> endpoints, long untilNanos) {}

  /** What etcd says about this node's sandboxes. */
  private record Records(ClusterModel model, Map<String, Set<String>> endpointsByKey,
      Map<String, Set<String>> networksByKey, Map<String, String> networkByEndpoint,
      Map<String, ContainerRecord> containersById) {
    static final Records EMPTY = new Records(new ClusterModel(Map.of(), Map.of(), List.of()), Map.of(), Map.of(),
        Map.of(), Map.of());
  }

  /** The daemon's constructor: node name, DNS_DOCKER_COMPATIBILITY_MODE and DNS_TTL from the config. */
  public DnsVerticle(Config config, EtcdSchema schema) {
    this(config.nodeName(), config.dnsDockerCompatibilityMode(), config.dnsTtl(), schema,
        DnsListener.Options.DEFAULTS.withQueryRate(config.dnsQueryRate()),
        config.hookAvailable() ? Path.of(config.pluginSocket()).resolveSibling(HookServer.SOCKET_NAME).toString() : null);
  }

  /**
   * Interim constructor until Daemon passes its Config: the settings' defaults
   * (DNS_DOCKER_COMPATIBILITY_MODE=true, DNS_TTL=600) and NODE_NAME from the environment, else
   * the host name.
   */
  @Deprecated
  public DnsVerticle(EtcdSchema schema) {
    this(defaultNodeName(), Boolean.parseBoolean(Setting.DNS_DOCKER_COMPATIBILITY_MODE.defaultValue()),
        Integer.parseInt(Setting.DNS_TTL.defaultValue()), schema, DnsListener.Options.DEFAULTS);
  }

  DnsVerticle(String nodeName, boolean compat, int ttl, EtcdSchema schema, DnsListener.Options options) {
    this(nodeName, compat, ttl, schema, options, null);
  }

  DnsVerticle(String nodeName, boolean compat, int ttl, EtcdSchema schema, DnsListener.Options options,
      String hookSocket) {
    this.hookSocket = hookSocket;
    this.nodeName = nodeName;
    this.compat = compat;
    this.ttl = ttl;
    this.schema = schema;
    this.options = options;
  }

  private static String defaultNodeName() {
    String env = System.getenv("NODE_NAME");
    if (env != null && !env.isBlank()) {
      return env.strip();
    }
    try {
      return java.net.InetAddress.getLocalHost().getHostName();
    } catch (IOException e) {
      return "localhost";
    }
  }

  @Override
  protected String plane() {
    return "dns";
  }

  @Override
  protected Duration resyncPeriod() {
    return options.resync();
  }

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.DOCKER_SERVICES, Family.DOCKER_CONTAINERS, Family.DOCKER_NETWORKS, Family.ENDPOINTS);
  }

  @Override
  protected Future<?> startPlane() {
    ownInode = Namespaces.ownNetnsInode();
    if (!TableReader.available()) {
      LOG.warning("libnftables cannot be loaded (" + TableReader.loadError() + "): the periodic check of the DNS"
          + " table in each container runs nft in a process per container");
    }
    switcher = new Namespaces.Switcher("fnp-dns-netns");
    AtomicInteger n = new AtomicInteger();
    // nft and iptables-save mostly wait for the kernel: a few in parallel re-inject a node's
    // containers in seconds without taking the CPUs
    tools = new ThreadPoolExecutor(8, 8, 30, TimeUnit.SECONDS, new LinkedBlockingQueue<>(), r -> {
      Thread t = new Thread(r, "fnp-dns-tool-" + n.incrementAndGet());
      t.setDaemon(true);
      return t;
    });
    ((ThreadPoolExecutor) tools).allowCoreThreadTimeOut(true);
    vertx.eventBus().<io.flannelnp.docker.DockerMessage.DockerStatus>consumer(Addresses.DOCKER_STATUS,
        m -> swarmNodeId = m.body().reachable() ? m.body().nodeId() : swarmNodeId);
    vertx.eventBus().<InjectDns>consumer(Addresses.DNS_INJECT, this::onInject);
    vertx.eventBus().<EjectDns>consumer(Addresses.DNS_EJECT, this::onEject);
    if (hookSocket == null) {
      return Future.succeededFuture();
    }
    try {
      ownNsDev = (Long) java.nio.file.Files.getAttribute(Path.of("/proc/thread-self/ns/net"), "unix:dev");
    } catch (IOException e) {
      return Future.failedFuture("cannot read /proc/thread-self/ns/net: " + e.getMessage());
    }
    hookServer = new HookServer(vertx, hookSocket, this::onHook);
    // without the socket the hook lets containers start at once: DNS as without the hook
    return hookServer.start().recover(err -> {
      LOG.severe("IS_HOOK_AVAILABLE=true but the hook socket cannot listen, containers start without waiting for DNS: "
          + err.getMessage());
      return Future.succeededFuture();
    });
  }

  @Override
  protected Future<?> stopPlane() {
    List<Future<Void>> all = new ArrayList<>();
    if (hookServer != null) {
      all.add(hookServer.stop()); // first: containers created from now on need not wait for us
    }
    for (Entry e : List.copyOf(entries.values())) {
      all.add(eject(e, "the daemon stops"));
    }
    return Future.join(all).eventually(() -> {
      switcher.close();
      tools.shutdown();
      return Future.succeededFuture();
    });
  }

  // ---- requests ---------------------------------------------------------------------------------

  private void onInject(Message<InjectDns> m) {
    InjectDns r = m.body();
    String key = sandboxKeyOf(m, r.sandboxKey());
    if (key == null) {
      return;
    }
    Entry e = entries.computeIfAbsent(key, Entry::new);
    e.explicit = true;
    if (r.containerId() != null && !r.containerId().isEmpty()) {
      e.containerId = r.containerId();
    }
    if (r.endpointId() != null && !r.endpointId().isEmpty()) {
      e.explicitEndpoints.add(r.endpointId());
      Tomb t = tombs.get(key);
      if (t != null) {
        Set<String> left = new HashSet<>(t.endpoints());
        left.remove(r.endpointId());
        tombs.put(key, new Tomb(left, t.untilNanos()));
      }
    }
    updateView(e);
    if (e.listener != null && sameNetns(e)) {
      m.reply(new Ack("already injected into " + key + " (udp " + e.listener.udpPort() + ", tcp "
          + e.listener.tcpPort() + ")"));
      return;
    }
    if (isReady(key)) {
      inject(e, false).onComplete(ar -> {
        if (ar.succeeded()) {
          m.reply(new Ack(e.listener != null ? "injected into " + key + " (udp " + e.listener.udpPort() + ", tcp "
              + e.listener.tcpPort() + ")" : "not injected: " + e.state));
        } else {
          m.fail(Failure.UNAVAILABLE, "DNS injection into " + key + " failed: " + ar.cause().getMessage());
        }
      });
    } else {
      inject(e, true);
      m.reply(new Ack("waiting up to " + options.netnsWait().toSeconds() + " s for " + key
          + " to become a network namespace"));
    }
  }

  private void onEject(Message<EjectDns> m) {
    EjectDns r = m.body();
    String key = sandboxKeyOf(m, r.sandboxKey());
    if (key == null) {
      return;
    }
    String ep = r.endpointId() == null ? "" : r.endpointId();
    Set<String> gone = new HashSet<>();
    if (ep.isEmpty()) {
      gone.addAll(records.endpointsByKey().getOrDefault(key, Set.of()));
      gone.add("*");
    } else {
      gone.add(ep);
    }
    Tomb old = tombs.get(key);
    if (old != null) {
      gone.addAll(old.endpoints());
    }
    tombs.put(key, new Tomb(gone, System.nanoTime() + EJECT_GRACE.toNanos()));
    Entry e = entries.get(key);
    if (e == null) {
      m.reply(new Ack("not injected into " + key));
      return;
    }
    e.explicitEndpoints.remove(ep);
    Set<String> remaining = new HashSet<>(e.explicitEndpoints);
    remaining.addAll(records.endpointsByKey().getOrDefault(key, Set.of()));
    remaining.removeAll(gone);
    if (!ep.isEmpty() && !remaining.isEmpty()) {
      m.reply(new Ack("kept " + key + ": endpoints " + new java.util.TreeSet<>(remaining) + " still use it"));
      return;
    }
    eject(e, "EjectDns").onComplete(ar -> {
      if (ar.succeeded()) {
        m.reply(new Ack("ejected from " + key));
      } else {
        m.fail(Failure.UNAVAILABLE, "DNS ejection from " + key + " failed: " + ar.cause().getMessage());
      }
    });
  }

  /** The request's sandbox key, or null after failing the request with what is wrong with it. */
  private String sandboxKeyOf(Message<?> m, String key) {
    try {
      return sandbox(key);
    } catch (IllegalArgumentException e) {
      m.fail(Failure.BAD_REQUEST, e.getMessage());
      return null;
    }
  }

  /**
   * A SandboxKey this plane may enter: a well-formed path ({@link DnsNat#sandboxPath}) in Docker's
   * directory of container namespaces. The plane holds CAP_SYS_ADMIN and puts a listener and an
   * nft table into what it enters, so a record must not be able to name any other namespace
   * (Docker's ingress or load-balancer sandboxes, {@code /proc/<pid>/ns/net}, the host's).
   */
  private String sandbox(String key) {
    String k = DnsNat.sandboxPath(key);
    if (!options.sandboxes().matcher(k).matches()) {
      throw new IllegalArgumentException("SandboxKey '" + DnsNat.clip(k) + "' is not a container's namespace in"
          + " Docker's netns directory (expected /var/run/docker/netns/<12 hex digits>)");
    }
    return k;
  }

  // ---- inject / eject ---------------------------------------------------------------------------

  private boolean isReady(String key) {
    OptionalLong ino = Namespaces.netnsInode(Path.of(key));
    return ino.isPresent() && ino.getAsLong() != ownInode;
  }

  private boolean sameNetns(Entry e) {
    OptionalLong ino = Namespaces.netnsInode(Path.of(e.key));
    return e.listener != null && ino.isPresent() && ino.getAsLong() == e.listener.inode();
  }

  /** Serialises the operations on one sandbox, whichever entry asked for them. */
  private <T> Future<T> chain(Entry e, java.util.function.Supplier<Future<T>> op) {
    Future<Void> prev = ops.getOrDefault(e.key, Future.succeededFuture());
    Future<T> next = prev.transform(x -> op.get());
    Future<Void> settled = next.<Void>mapEmpty().otherwiseEmpty();
    ops.put(e.key, settled);
    settled.onComplete(x -> ops.remove(e.key, settled));
    return next;
  }

  private Future<Void> inject(Entry e, boolean wait) {
    return chain(e, () -> {
      if (entries.get(e.key) != e) {
        return Future.succeededFuture(); // ejected meanwhile
      }
      long deadline = System.nanoTime() + (wait ? options.netnsWait() : NOT_WAITING).toNanos();
      if (wait) {
        e.state = "waiting";
      }
      return awaitNetns(e, wait ? deadline : 0).compose(ino -> {
        if (entries.get(e.key) != e) {
          return Future.succeededFuture();
        }
        if (e.listener != null) {
          if (e.listener.inode() == ino) {
            return Future.succeededFuture();
          }
          // a new namespace at the same path: the old one is gone with its container
          DnsListener old = e.listener;
          e.listener = null;
          return fromCf(old.close()).compose(v -> openAndInject(e, ino, deadline));
        }
        return openAndInject(e, ino, deadline);
      }).recover(err -> {
        e.state = "failed";
        e.error = String.valueOf(err.getMessage());
        LOG.log(entries.get(e.key) == e ? Level.WARNING : Level.FINE,
            "DNS injection into " + e.key + " failed: " + e.error);
        if (entries.get(e.key) == e && e.listener == null) {
          entries.remove(e.key); // a later pass or request tries again
        }
        return Future.failedFuture(err);
      });
    });
  }

  /** Polls until the path is a network namespace other than ours, or the deadline passed. */
  private Future<Long> awaitNetns(Entry e, long deadline) {
    Promise<Long> p = Promise.promise();
    poll(e, deadline, p);
    return p.future();
  }

  private void poll(Entry e, long deadline, Promise<Long> p) {
    String key = e.key;
    OptionalLong ino = Namespaces.netnsInode(Path.of(key));
    if (ino.isPresent() && ino.getAsLong() != ownInode) {
      p.complete(ino.getAsLong());
    } else if (entries.get(key) != e) {
      p.fail(key + ": no longer wanted");
    } else if (System.nanoTime() >= deadline) {
      p.fail(key + (ino.isPresent() ? " is the daemon's own network namespace" : " is not a network namespace")
          + (deadline == 0 ? "" : " after " + options.netnsWait().toSeconds() + " s"));
    } else {
      long timer = vertx.setTimer(options.netnsPoll().toMillis(), t -> {
        e.wake = null;
        poll(e, deadline, p);
      });
      e.wake = () -> {
        if (vertx.cancelTimer(timer)) {
          poll(e, deadline, p);
        }
      };
    }
  }

  private Future<Void> openAndInject(Entry e, long ino, long deadline) {
    e.state = "injecting";
    return openSockets(e.key, ino, deadline).compose(s -> {
      return applyTable(e, ino, s.udpPort(), s.tcpPort()).recover(err -> {
        s.closeQuietly();
        return Future.failedFuture(err);
      }).compose(v -> {
        VertxInternal vi = (VertxInternal) vertx;
        DnsListener l = new DnsListener(e.key, ino, s, vi.nettyEventLoopGroup().next(), options, switcher,
            this::discover);
        l.view = view(e);
        return fromCf(l.start()).map(x -> l);
      });
    }).compose(l -> {
      if (entries.get(e.key) != e) {
        // ejected while we were opening: undo
        return fromCf(l.close()).compose(v -> removeTable(e.key, ino)).mapEmpty();
      }
      e.listener = l;
      e.state = "active";
      e.error = "";
      LOG.info("DNS injected into " + e.key + " (udp " + l.udpPort() + ", tcp " + l.tcpPort() + ")");
      return Future.succeededFuture();
    });
  }

  /**
   * Opens the listener's sockets inside the namespace; while its loopback is not up yet, polls
   * again until the deadline.
   */
  private Future<DnsListener.Sockets> openSockets(String key, long ino, long deadline) {
    return fromCf(switcher.submit(Path.of(key), ino, DnsListener::openSockets)).recover(err -> {
      Throwable cause = err instanceof java.util.concurrent.CompletionException && err.getCause() != null
          ? err.getCause() : err;
      if (cause instanceof DnsListener.NotReadyException && System.nanoTime() < deadline) {
        Promise<DnsListener.Sockets> again = Promise.promise();
        vertx.setTimer(options.netnsPoll().toMillis(), t -> openSockets(key, ino, deadline).onComplete(again));
        return again.future();
      }
      return Future.failedFuture(cause);
    });
  }

  private Future<Void> eject(Entry e, String why) {
    entries.remove(e.key, e);
    e.explicit = false;
    return chain(e, () -> {
      DnsListener l = e.listener;
      e.listener = null;
      e.state = "ejected";
      if (l == null) {
        return Future.succeededFuture();
      }
      long ino = l.inode();
      return fromCf(l.close()).compose(v -> {
        OptionalLong now = Namespaces.netnsInode(Path.of(e.key));
        if (now.isPresent() && now.getAsLong() == ino) {
          return removeTable(e.key, ino);
        }
        return Future.succeededFuture(); // the namespace is gone, and our table with it
      }).onSuccess(v -> LOG.info("DNS ejected from " + e.key + " (" + why + ")"));
    });
  }

  /**
   * (Re)fills our table in one transaction, replacing it as a whole when a table of the same name
   * cannot be refilled (chains of another type or priority), then reads it back as what the
   * periodic check expects.
   */
  private Future<Void> applyTable(Entry e, long ino, int udpPort, int tcpPort) {
    String head = "# nsenter --net=" + e.key + "\n";
    return nft(e.key, head + DnsNat.tableScript(udpPort, tcpPort))
        .recover(err -> nft(e.key, head + DnsNat.replaceScript(udpPort, tcpPort)))
        .compose(v -> readTable(e.key, ino).transform(ar -> {
          e.table = ar.succeeded() && !ar.result().isEmpty() ? ar.result() : null;
          if (e.table == null) {
            LOG.warning("DNS table in " + e.key + " cannot be read back, it is not re-checked: "
                + (ar.failed() ? ar.cause().getMessage() : "gone right after it was made"));
          }
          return Future.succeededFuture();
        }));
  }

  /**
   * Our table in the sandbox's namespace ({@code nft -s list}), "" when there is none: with
   * libnftables on the namespace thread, else an {@code nsenter nft} process on the tool pool.
   */
  private Future<String> readTable(String key, long ino) {
    if (TableReader.available()) {
      return fromCf(switcher.submit(Path.of(key), ino, TableReader::list));
    }
    return fromCf(CompletableFuture.supplyAsync(() -> {
      try {
        return DnsNat.listTable(key);
      } catch (IOException ex) {
        throw new java.util.concurrent.CompletionException(ex);
      }
    }, tools));
  }

  /**
   * The periodic check of one served sandbox: re-creates our table when it is missing or is no
   * longer what we applied (flushed, a rule or chain changed or added), in one transaction.
   * Returns "missing" or "altered" when it repaired the table, else null. Runs as the
   * sandbox's operation, so it never overlaps an injection or ejection.
   */
  private Future<String> checkTable(Entry e) {
    return chain(e, () -> {
      DnsListener l = e.listener;
      String want = e.table;
      if (l == null || want == null || entries.get(e.key) != e) {
        return Future.succeededFuture(null);
      }
      return readTable(e.key, l.inode()).compose(have -> {
        if (have.equals(want) || e.listener != l) {
          return Future.succeededFuture(null);
        }
        String what = have.isEmpty() ? "missing" : "altered";
        return applyTable(e, l.inode(), l.udpPort(), l.tcpPort()).transform(ar -> {
          if (ar.failed()) {
            LOG.warning("DNS table in " + e.key + " was " + what + ", re-creating it failed: " + ar.cause().getMessage());
            return Future.failedFuture(ar.cause());
          }
          LOG.warning("DNS table in " + e.key + " was " + what + ": re-created (udp " + l.udpPort() + ", tcp "
              + l.tcpPort() + ")");
          io.flannelnp.admin.Metrics.dnsTableRepaired(what);
          return Future.succeededFuture(what);
        });
      });
    });
  }

  /** Checks every served sandbox no operation is busy with; the summary counts the repairs. */
  private Future<String> checkTables() {
    long t0 = System.nanoTime();
    List<Future<String>> checks = new ArrayList<>();
    for (Entry e : entries.values()) {
      if (e.listener != null && e.table != null && !ops.containsKey(e.key)) {
        checks.add(checkTable(e).otherwise(err -> {
          LOG.log(Level.FINE, "DNS table check in " + e.key + " failed: " + err.getMessage()); // retried next period
          return "failed";
        }));
      }
    }
    return Future.join(checks).transform(ar -> {
      Map<String, Integer> n = new java.util.TreeMap<>();
      for (Future<String> f : checks) {
        if (f.result() != null) {
          n.merge(f.result(), 1, Integer::sum);
        }
      }
      int repaired = n.getOrDefault("missing", 0) + n.getOrDefault("altered", 0);
      return Future.succeededFuture(checks.size() + " table(s) checked in "
          + String.format(java.util.Locale.ROOT, "%.1f", (System.nanoTime() - t0) / 1e6) + " ms, " + repaired
          + " re-created"
          + (repaired == 0 ? "" : " (" + n.getOrDefault("missing", 0) + " missing, " + n.getOrDefault("altered", 0)
          + " altered)") + (n.containsKey("failed") ? ", " + n.get("failed") + " failed" : ""));
    });
  }

  private Future<Void> removeTable(String key, long ino) {
    return nft(key, "# nsenter --net=" + key + "\n" + DnsNat.removeScript());
  }

  /** Applies an nft script in the sandbox's namespace (on the tool pool) and publishes it. */
  private Future<Void> nft(String key, String script) {
    CompletableFuture<DnsNat.Result> cf = CompletableFuture.supplyAsync(() -> {
      try {
        return DnsNat.nft(key, script);
      } catch (IOException ex) {
        throw new java.util.concurrent.CompletionException(ex);
      }
    }, tools);
    return fromCf(cf).transform(ar -> {
      boolean ok = ar.succeeded() && ar.result().exit() == 0;
      String err = ar.failed() ? String.valueOf(ar.cause().getMessage())
          : ok ? "" : ar.result().err().strip() + " (exit " + ar.result().exit() + ")";
      long micros = ar.succeeded() ? ar.result().micros() : 0;
      vertx.eventBus().publish(Addresses.KERNEL_BATCH,
          new Observed.KernelBatch(plane(), "nft", script, ok, err, micros, NO_REVISION));
      return ok ? Future.succeededFuture() : Future.failedFuture("nft in " + key + ": " + err);
    });
  }

  private CompletableFuture<DnsNat.DockerPorts> discover(String key) {
    return CompletableFuture.supplyAsync(() -> DnsNat.discover(key), tools);
  }

  private <T> Future<T> fromCf(CompletableFuture<T> cf) {
    return Future.fromCompletionStage(cf, context);
  }

  // ---- OCI hook ---------------------------------------------------------------------------------

  /** A hook's container is being created in the namespace it names: answer once we serve it. */
  private Future<HookServer.Reply> onHook(HookServer.Request r) {
    if (r.dev() != ownNsDev) {
      return Future.succeededFuture(new HookServer.Reply(true, "not-ours",
          "namespace device " + r.dev() + " is not this host's (" + ownNsDev + ")"));
    }
    long t0 = System.nanoTime();
    return hookCheck(r, t0 + HOOK_WAIT.toNanos(), null).onSuccess(reply -> {
      if (!"not-ours".equals(reply.status())) {
        String id = r.containerId().length() > 12 ? r.containerId().substring(0, 12) : r.containerId();
        LOG.log(reply.ok() ? Level.INFO : Level.WARNING, "OCI hook of container " + id + ": " + reply.status()
            + " after " + (System.nanoTime() - t0) / 1_000_000 + " ms (" + reply.detail() + ")");
      }
    });
  }

  private Future<HookServer.Reply> hookCheck(HookServer.Request r, long deadline, Entry last) {
    if (r.gone().isComplete()) {
      // the hook gave up (after its ~2 s) or runc went on: nobody reads the answer any more
      return Future.succeededFuture(new HookServer.Reply(false, "gone", "the hook closed its connection"));
    }
    // after the first look, only the sandbox found then is looked at again: no stat of every
    // sandbox path every round
    Entry e = last != null && entries.get(last.key) == last ? last : hookEntry(r, last == null);
    if (e == null) {
      return Future.succeededFuture(last == null
          ? new HookServer.Reply(true, "not-ours", "network namespace " + r.ino() + " is no sandbox of flannel-np's networks")
          : new HookServer.Reply(false, "failed", "DNS injection into " + last.key + " failed: " + last.error));
    }
    if (e.listener != null && e.listener.inode() == r.ino()) {
      return Future.succeededFuture(new HookServer.Reply(true, "injected", "flannel-np's resolver serves " + e.key
          + " (udp " + e.listener.udpPort() + ", tcp " + e.listener.tcpPort() + ")"));
    }
    if (System.nanoTime() >= deadline) {
      return Future.succeededFuture(new HookServer.Reply(false, "timeout", "DNS injection into " + e.key + " still "
          + e.state + " after " + HOOK_WAIT.toSeconds() + " s"));
    }
    Runnable wake = e.wake;
    if (wake != null) {
      e.wake = null;
      wake.run(); // the namespace is there now: no need to wait for the next poll
    }
    Future<Void> op = ops.get(e.key);
    if (op == null) {
      op = inject(e, false).otherwiseEmpty();
    }
    Promise<Void> next = Promise.promise();
    op.onComplete(x -> next.tryComplete());
    r.gone().onComplete(x -> next.tryComplete());
    long t = vertx.setTimer(50, x -> next.tryComplete()); // operations may chain: look again soon
    return next.future().compose(v -> {
      vertx.cancelTimer(t);
      return hookCheck(r, deadline, e);
    });
  }

  /**
   * The sandbox that is the hook's namespace: an entry whose listener or path is that namespace,
   * else (when {@code start}) a sandbox of this node's records, which gets an entry now.
   */
  private Entry hookEntry(HookServer.Request r, boolean start) {
    for (Entry e : entries.values()) {
      if (e.listener != null && e.listener.inode() == r.ino()) {
        return e;
      }
    }
    for (Entry e : entries.values()) {
      OptionalLong ino = Namespaces.netnsInode(Path.of(e.key));
      if (ino.isPresent() && ino.getAsLong() == r.ino()) {
        return e;
      }
    }
    if (!start) {
      return null;
    }
    for (String key : records.networksByKey().keySet()) {
      OptionalLong ino = Namespaces.netnsInode(Path.of(key));
      if (ino.isPresent() && ino.getAsLong() == r.ino() && !tombs.containsKey(key)) {
        Entry e = new Entry(key);
        entries.put(key, e);
        updateView(e);
        return e;
      }
    }
    return null;
  }

  // ---- reconcile --------------------------------------------------------------------------------

  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    revision = state.revision();
    records = readRecords(state);
    names = DnsNames.of(records.model());
    long now = System.nanoTime();

    // desired sandboxes from the records, minus endpoints an EjectDns removed
    Map<String, Set<String>> desired = new LinkedHashMap<>();
    records.networksByKey().forEach((key, nets) -> {
      Set<String> eps = records.endpointsByKey().getOrDefault(key, Set.of());
      Tomb t = tombs.get(key);
      if (t != null) {
        if (now > t.untilNanos() || java.util.Collections.disjoint(t.endpoints(), eps) && !t.endpoints().contains("*")) {
          tombs.remove(key);
        } else if (t.endpoints().contains("*") || t.endpoints().containsAll(eps)) {
          return;
        }
      }
      desired.put(key, nets);
    });
    tombs.keySet().removeIf(k -> !records.networksByKey().containsKey(k) || now > tombs.get(k).untilNanos());

    int ejected = 0;
    for (Entry e : List.copyOf(entries.values())) {
      updateView(e);
      if (e.listener != null && !sameNetns(e)) {
        eject(e, "its namespace is gone");
        ejected++;
      } else if (!e.explicit && !desired.containsKey(e.key) && !"injecting".equals(e.state)) {
        // a waiting one stops polling too
        eject(e, "no container on our networks uses it any more");
        ejected++;
      }
    }
    int started = 0;
    for (String key : desired.keySet()) {
      if (entries.containsKey(key)) {
        continue;
      }
      // Docker 20.10 writes the SandboxKey at Join, before runc mounts the namespace: wait for
      // it as for an early InjectDns; a key whose wait ran out is retried when it is a
      // namespace, or after WAIT_BACKOFF
      boolean ready = isReady(key);
      Long failedAt = waitFailed.get(key);
      if (!ready && failedAt != null && now - failedAt < WAIT_BACKOFF.toNanos()) {
        continue;
      }
      Entry e = new Entry(key);
      entries.put(key, e);
      updateView(e);
      inject(e, !ready).onFailure(err -> {
        if (!ready) {
          waitFailed.put(key, System.nanoTime());
        }
      });
      started++;
    }
    waitFailed.keySet().removeIf(k -> !desired.containsKey(k));
    long active = entries.values().stream().filter(e -> e.listener != null).count();
    String summary = active + " sandbox(es) served, " + started + " being injected, " + ejected + " ejected; "
        + names.size() + " names on " + names.networkIds().size() + " networks";
    // something in a container may have removed or flushed our table since: Docker's resolver
    // would answer there, without our names, until the container restarts
    return periodic ? checkTables().map(checked -> summary + "; " + checked) : Future.succeededFuture(summary);
  }

  private void updateView(Entry e) {
    DnsListener l = e.listener;
    if (l != null) {
      l.view = view(e);
    }
  }

  /** The container's networks: its sandbox's records, its explicit endpoints, its container record. */
  private Responder.View view(Entry e) {
    Set<String> nets = new LinkedHashSet<>(records.networksByKey().getOrDefault(e.key, Set.of()));
    for (String ep : e.explicitEndpoints) {
      String n = records.networkByEndpoint().get(ep);
      if (n != null) {
        nets.add(n);
      }
    }
    ContainerRecord c = records.containersById().get(e.containerId);
    if (c != null) {
      nets.addAll(c.networks().keySet());
    }
    return new Responder.View(names, names.scope(nets), compat, ttl);
  }

  /** This node's sandboxes from the endpoint and container records; unreadable records are skipped. */
  private Records readRecords(ClusterState state) {
    ClusterModel model = ClusterModel.of(schema, state.kvs().values());
    Map<String, String> refused = new HashMap<>();
    Map<String, Set<String>> eps = new HashMap<>();
    Map<String, Set<String>> nets = new HashMap<>();
    Map<String, String> netOfEp = new HashMap<>();
    for (KeyValue kv : state.under(schema.endpoints(nodeName))) {
      try {
        JsonObject j = new JsonObject(kv.value());
        String epId = j.getString("EndpointID", "");
        String netId = j.getString("NetworkID", "");
        if (!epId.isEmpty() && !netId.isEmpty()) {
          netOfEp.put(epId, netId);
        }
        String key = j.getString("SandboxKey", "");
        if (!key.isEmpty() && valid(key, kv.key(), refused)) {
          eps.computeIfAbsent(key, k -> new HashSet<>()).add(epId);
          if (!netId.isEmpty()) {
            nets.computeIfAbsent(key, k -> new LinkedHashSet<>()).add(netId);
          }
        }
      } catch (RuntimeException ex) {
        refused.put(kv.key(), "unreadable endpoint record: " + ex.getMessage());
      }
    }
    Map<String, ContainerRecord> byId = new HashMap<>();
    for (ContainerRecord c : model.containers()) {
      byId.put(c.containerId(), c);
      if (!(swarmNodeId.isEmpty() ? nodeName : swarmNodeId).equals(c.node()) || !c.running() || c.sandboxKey().isEmpty()
          || !valid(c.sandboxKey(), schema.dockerContainer(c.node(), c.containerId()), refused)) {
        continue;
      }
      boolean ours = false;
      for (String netId : c.networks().keySet()) {
        DockerNetwork n = model.networks().get(netId);
        ours |= n != null && n.isFlannel();
      }
      if (ours) {
        nets.computeIfAbsent(c.sandboxKey(), k -> new LinkedHashSet<>()).addAll(c.networks().keySet());
        Set<String> set = eps.computeIfAbsent(c.sandboxKey(), k -> new HashSet<>());
        c.networks().forEach((netId, a) -> {
          DockerNetwork n = model.networks().get(netId);
          if (n != null && n.isFlannel() && !a.endpointId().isEmpty()) {
            set.add(a.endpointId());
          }
        });
      }
    }
    refused.forEach((record, why) -> {
      if (!why.equals(reportedRefusals.get(record))) {
        LOG.warning("skipping " + record + ": " + why); // once per record and reason, not every pass
      }
    });
    reportedRefusals = refused;
    return new Records(model, eps, nets, netOfEp, byId);
  }

  /** Sandbox keys of records that were refused, by record key: reported when they first appear. */
  private Map<String, String> reportedRefusals = Map.of();

  private boolean valid(String key, String record, Map<String, String> refused) {
    try {
      sandbox(key);
      return true;
    } catch (IllegalArgumentException e) {
      refused.put(record, e.getMessage());
      return false;
    }
  }

  // ---- for tests and the benchmark ----------------------------------------------------------------

  /** The listener serving a sandbox, if any (call on the verticle's context or after it settled). */
  DnsListener listener(String sandboxKey) {
    Entry e = entries.get(sandboxKey);
    return e == null ? null : e.listener;
  }

  /** Number of sandboxes with a listener. */
  int served() {
    return (int) entries.values().stream().filter(e -> e.listener != null).count();
  }
}
