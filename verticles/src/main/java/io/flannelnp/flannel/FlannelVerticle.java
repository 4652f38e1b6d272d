package io.flannelnp.flannel;

import io.flannelnp.bus.Ack;
import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Failure;
import io.flannelnp.bus.Observed;
import io.flannelnp.bus.ReconcilerVerticle;
import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdMessage.ClusterState;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.flannel.FlannelMessage.AttachEndpoint;
import io.flannelnp.flannel.FlannelMessage.DetachEndpoint;
import io.flannelnp.flannel.FlannelMessage.EndpointAttached;
import io.flannelnp.flannel.FlannelMessage.EnsureNetwork;
import io.flannelnp.flannel.FlannelMessage.NetworkReady;
import io.flannelnp.flannel.FlannelMessage.RemoveNetwork;
import io.flannelnp.flannel.Kernel.Applied;
import io.flannelnp.flannel.Kernel.KernelException;
import io.vertx.core.Future;
import io.vertx.core.eventbus.Message;
import io.vertx.core.json.DecodeException;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The data plane between hosts: the flannel.&lt;VNI&gt; devices and, per remote lease, one neighbour,
 * one FDB entry and one route (anchors.md §A.3), the bridges and veths of the endpoints, and the
 * isolation between networks.
 *
 * <p><b>Reconcile pass</b> (level-triggered: an etcd change or the periodic resync only wakes it):
 * from the {@link ClusterState}, {@link VxlanPlan} computes this node's networks (those where a
 * lease has this node's public IP, resolved once in the kernel's namespace like flanneld does:
 * -public-ip, else -iface, else the default route's interface) and their peers; {@link VxlanSync}
 * turns the difference with the kernel into {@code ip -batch} / {@code bridge -batch} batches:
 * <ul>
 *   <li>{@code flannel.<VNI>}: vxlan, id VNI, local = public IP, dev = uplink, dstport =
 *       Backend.Port, nolearning, MTU = uplink MTU − 50, MAC = the VtepMAC of this node's lease,
 *       address = the node block's network address /32, up, alias {@code fnp-vxlan:<flannel-id>}
 *       (how a device is known to be ours).</li>
 *   <li>per vxlan lease of another node, in this order: {@code neigh replace}, {@code fdb replace},
 *       {@code route replace … onlink}; removed (route, neighbour, FDB entry) when the lease is
 *       deleted or expires.</li>
 *   <li>our devices of networks this node no longer uses, and bridges (alias
 *       {@code fnp-net:<flannel-id>}) of networks gone from etcd, are deleted: at start this cleans
 *       what a previous run left.</li>
 *   <li>{@link Isolation}: the table {@code inet flannel-np}, one {@code nft -f -} transaction when
 *       it differs.</li>
 * </ul>
 * A <i>full</i> pass reads everything back ({@code ip -json}, {@code bridge -json}, {@code nft -j})
 * and applies the difference; it runs first, periodically ({@link #RESYNC}: a deleted device or
 * route is repaired there), after a failure, and whenever networks or this node's leases change.
 * A <i>partial</i> pass, when only peers changed since a fully successful pass, compares the new
 * peers with those that pass left and applies the difference without reading the kernel.
 *
 * <p><b>Requests</b> of {@link FlannelMessage}, from the plugin API:
 * <ul>
 *   <li>{@link EnsureNetwork}: bridge {@link Names#bridge} (stp off, MTU = uplink MTU − 50, the
 *       gateway address as its only IPv4 address, up), changing only what differs.</li>
 *   <li>{@link AttachEndpoint}: one veth pair in one {@code ip -batch}; a failed batch is undone.</li>
 *   <li>{@link DetachEndpoint}: the pair is set down, taken off the bridge and renamed
 *       ({@link Names#detached}) in one batch, so the endpoint is gone and its names are free when
 *       the answer goes; the kernel's delete (~20 ms of RCU waiting per device) follows on a
 *       background thread, and every full pass deletes detached veths a crash left. If that
 *       batch fails, the pair is deleted before the answer instead.</li>
 *   <li>{@link RemoveNetwork}: deletions; what is missing is success.</li>
 * </ul>
 *
 * Kernel work runs in {@code vertx.executeBlocking(…, ordered=true)}, so passes and requests are
 * applied one at a time in arrival order; every batch given to a tool is published as
 * {@link Observed.KernelBatch} on {@link Addresses#KERNEL_BATCH} (with the etcd revision it was
 * computed from, 0 for requests). Kernel state is never removed on stop: traffic keeps flowing
 * while the daemon is down, and a restarted daemon finds it in place and changes nothing.
 */
public final class FlannelVerticle extends ReconcilerVerticle {
  private static final Logger LOG = Logger.getLogger(FlannelVerticle.class.getName());

  /** VXLAN's overhead (outer Ethernet, IPv4, UDP and VXLAN headers), as Flannel subtracts it. */
  static final int VXLAN_OVERHEAD = 50;
  /** The uplink MTU assumed when there is no -iface and no default route. */
  static final int DEFAULT_UPLINK_MTU = 1500;
  /** Bridge alias prefix: the alias holds the flannel ID, so `ip link` tells which network it is. */
  static final String BRIDGE_ALIAS = "fnp-net:";
  /** Host-side veth alias prefix: the alias holds the full endpoint ID. */
  static final String VETH_ALIAS = "fnp-ep:";
  /** Request-driven batches are not computed from an etcd revision. */
  private static final long NO_REVISION = 0;
  /** Periodic resync: repairs what someone changed behind our back (a deleted device, a flushed table). */
  static final Duration RESYNC = Duration.ofSeconds(10);
  /** How long a bridge asked for by EnsureNetwork is safe from a pass whose snapshot lacks its network. */
  static final Duration ENSURE_GRACE = Duration.ofSeconds(60);

  private final Config config;
  private final EtcdSchema schema;
  private final Kernel kernel;
  /** This node's public IP once resolved (in the kernel's namespace). */
  private volatile String publicIp;
  /** The uplink of the last full pass (Backend.DirectRouting peers arrive on it). */
  private volatile String uplinkName;
  /** flannel ID → when EnsureNetwork or AttachEndpoint last asked for its bridge (System.nanoTime). */
  private final Map<String, Long> ensured = new ConcurrentHashMap<>();
  /** The networks of the last pass (worker-confined: passes run one at a time). */
  private Set<String> seenNetworks = Set.of();
  /** The isolation table as last verified or written; null when unknown. */
  private Isolation.Model nftVerified;
  /** What the last fully successful pass left, for the next partial pass; null: read the kernel. */
  private Trusted trusted;
  private final VxlanPlan.Cache leaseCache = new VxlanPlan.Cache();
  /** The network blocks the cluster's settings hand out: a config naming anything else is refused. */
  private final java.util.function.Predicate<io.flannelnp.ipam.Cidr> carved;
  private int failures;
  private boolean retryPending;
  /** Deletes detached veths off the request path (one thread: deletions never pile up in parallel). */
  private java.util.concurrent.ExecutorService reaper;
  /** Detached veths the reaper has yet to delete; a full pass leaves these to it. */
  private final Set<String> reaping = ConcurrentHashMap.newKeySet();

  public FlannelVerticle(Config config, EtcdSchema schema) {
    this(config, schema, Kernel.current());
  }

  public FlannelVerticle(Config config, EtcdSchema schema, Kernel kernel) {
    this.config = config;
    this.carved = new io.flannelnp.ipam.AddressPlan(config)::isNetworkBlock;
    this.schema = schema;
    this.kernel = kernel;
  }

  @Override
  protected String plane() {
    return "flannel";
  }

  @Override
  protected Set<Family> families() {
    return EnumSet.of(Family.NETWORK_CONFIG, Family.SUBNET_LEASES);
  }

  @Override
  protected Future<?> startPlane() {
    vertx.eventBus().<EnsureNetwork>consumer(Addresses.FLANNEL_NETWORK_ENSURE,
        m -> serve(m, EnsureNetwork.class, this::ensureNetwork));
    vertx.eventBus().<AttachEndpoint>consumer(Addresses.FLANNEL_ENDPOINT_ATTACH,
        m -> serve(m, AttachEndpoint.class, this::attachEndpoint, false));
    vertx.eventBus().<DetachEndpoint>consumer(Addresses.FLANNEL_ENDPOINT_DETACH,
        m -> serve(m, DetachEndpoint.class, this::detachEndpoint, false));
    vertx.eventBus().<RemoveNetwork>consumer(Addresses.FLANNEL_NETWORK_REMOVE,
        m -> serve(m, RemoveNetwork.class, this::removeNetwork));
    reaper = java.util.concurrent.Executors.newSingleThreadExecutor(r -> {
      Thread t = new Thread(r, "flannel-veth-reaper");
      t.setDaemon(true);
      return t;
    });
    kernel.keepWarm(); // a batch then costs the tool's work, not its start (see Kernel#keepWarm)
    return Future.succeededFuture();
  }

  @Override
  protected Future<?> stopPlane() {
    // kernel state stays; only the waiting tool processes go
    return vertx.executeBlocking(() -> {
      reaper.shutdown(); // pending deletions finish first: a stopped plane leaves no detached veth
      if (!reaper.awaitTermination(10, java.util.concurrent.TimeUnit.SECONDS)) {
        LOG.warning("detached veths " + reaping + " were not deleted within 10 s; the next start deletes them");
      }
      kernel.release();
      return null;
    }, false);
  }

  @Override
  protected Duration resyncPeriod() {
    return RESYNC;
  }

  /**
   * One pass: the VXLAN devices, neighbours, FDB entries and routes this node's leases call for,
   * bridges of networks that are gone, and the isolation table. All kernel work runs on a worker,
   * ordered with the requests, so a pass never interleaves with a bridge or veth change.
   */
  @Override
  protected Future<String> reconcile(ClusterState state, boolean periodic) {
    return vertx.executeBlocking(() -> {
      try {
        return sync(state, periodic);
      } catch (RuntimeException e) {
        if (!(e instanceof Refused) && !(e instanceof PassFailed)) {
          LOG.log(Level.WARNING, "flannel pass at revision " + state.revision() + " failed unexpectedly", e);
          throw new IllegalStateException("flannel pass failed: " + e, e);
        }
        throw e;
      }
    }, true).andThen(ar -> {
      if (ar.succeeded()) {
        failures = 0;
      } else {
        retrySoon();
      }
    });
  }

  /** After a failed pass: another one soon (0.5 s, doubling up to the resync period). */
  private void retrySoon() {
    if (retryPending) {
      return;
    }
    retryPending = true;
    long delay = Math.min(RESYNC.toMillis(), 500L << Math.min(failures++, 6));
    vertx.setTimer(delay, t -> {
      retryPending = false;
      wake(false);
    });
  }

  /**
   * A pass. Partial when the networks, this node's leases and its public IP are those of the last
   * fully successful pass and the pass is not periodic: then only peers changed, the devices are
   * known to be right, and the kernel's entries are known to be what that pass left, so the new
   * plan is compared with the old one without reading the kernel (a pass costs the batches it
   * applies, and nothing else). Otherwise full: everything is read back with {@code ip -json} and
   * {@code bridge -json} and compared. A failed batch makes the next pass full; so does every
   * periodic resync, which is how a change behind our back (a deleted device or route) is found.
   */
  private String sync(ClusterState state, boolean periodic) throws Exception {
    long rev = state.revision();
    String known = publicIp;
    VxlanPlan plan = null;
    if (known != null) {
      plan = VxlanPlan.compute(schema, state.kvs().values(), known, leaseCache, carved);
      // Backend.DirectRouting depends on the uplink's addresses, which only a full pass reads
      if (!periodic && trusted != null && trusted.sameShape(plan, known)
          && plan.networks().values().stream().noneMatch(VxlanPlan.Network::directRouting)) {
        return partial(plan, known, rev);
      }
    }
    return full(state, plan, periodic, rev);
  }

  /** What the last fully successful pass left in the kernel (worker-confined; null: unknown). */
  private record Trusted(String ip, Map<String, VxlanPlan.Network> networks, List<VxlanPlan.Own> own) {
    /** Whether {@code plan} differs from this one in peers at most. */
    boolean sameShape(VxlanPlan plan, String ip) {
      if (!ip.equals(this.ip) || !networks.equals(plan.networks()) || own.size() != plan.own().size()) {
        return false;
      }
      for (int i = 0; i < own.size(); i++) {
        VxlanPlan.Own a = own.get(i);
        VxlanPlan.Own b = plan.own().get(i);
        if (!a.network().equals(b.network()) || !a.block().equals(b.block()) || !a.vtepMac().equals(b.vtepMac())) {
          return false;
        }
      }
      return true;
    }
  }

  private String partial(VxlanPlan plan, String ip, long rev) throws Exception {
    List<Exception> errors = new ArrayList<>();
    VxlanSync vx = VxlanSync.peersOnly(trusted.own(), plan.own());
    trusted = null; // until these batches are known to have been applied
    int lines = applyAll("ip", vx.links, rev, errors);
    lines += applyAll("bridge", vx.fdb, rev, errors);
    lines += applyAll("ip", vx.routes, rev, errors);
    StringBuilder summary = summaryHead(plan, ip, vx);
    summary.append("; ").append(lines == 0 ? "no kernel changes" : lines + " kernel changes").append(" (partial)");
    try {
      summary.append("; ").append(syncIsolation(plan, false, rev));
    } catch (KernelException e) {
      errors.add(e);
    }
    return finish(plan, ip, true, summary, errors);
  }

  private String full(ClusterState state, VxlanPlan computed, boolean periodic, long rev) throws Exception {
    List<Exception> errors = new ArrayList<>();
    trusted = null;
    List<String> out = kernel.ipJsonBatch(List.of("addr show", "route show", "neigh show"), "-d");
    Map<String, Link> links = new LinkedHashMap<>();
    for (Object o : parse(out.get(0), "ip -d addr show")) {
      if (o instanceof JsonObject j && j.getString("ifname") != null) {
        Link l = Link.of(j);
        links.put(l.name(), l);
      }
    }
    JsonArray routes = parse(out.get(1), "ip route show");
    JsonArray neighs = parse(out.get(2), "ip neigh show");

    String ip = null;
    try {
      ip = publicIp(links, routes);
    } catch (Refused e) {
      errors.add(e);
    }
    VxlanPlan plan = computed != null && ip != null ? computed
        : VxlanPlan.compute(schema, state.kvs().values(), ip, leaseCache, carved);

    // the VXLAN plane; skipped (never torn down) while the public IP or the uplink is unknown
    VxlanSync vx = null;
    List<String> direct = List.of();
    int directCount = 0;
    if (ip != null) {
      try {
        VxlanSync.Uplink up = uplink(links, routes, ip);
        Link upLink = up.name() == null ? null : links.get(up.name());
        DirectRoutes.Split split = DirectRoutes.split(plan.own(), upLink == null ? List.of() : upLink.ipv4());
        direct = up.name() == null ? List.of() : DirectRoutes.diff(split.direct(), up.name(), routes);
        directCount = split.direct().size();
        uplinkName = up.name();
        vx = new VxlanSync(split.viaVxlan(), links, ip, up, plan.frozen());
        vx.diffDevices();
        Map<String, JsonArray> fdbs = new HashMap<>();
        if (!vx.kept.isEmpty()) {
          List<String> cmds = vx.kept.stream().map(d -> "fdb show dev " + d).toList();
          List<String> fdbOut = kernel.bridgeJsonBatch(cmds);
          for (int i = 0; i < cmds.size(); i++) {
            fdbs.put(vx.kept.get(i), parse(fdbOut.get(i), cmds.get(i)));
          }
        }
        vx.diffEntries(VxlanSync.Entries.read(routes, neighs, fdbs, Set.copyOf(vx.kept)));
      } catch (Refused | KernelException e) {
        errors.add(e);
        vx = null;
      }
    }
    StringBuilder summary = summaryHead(plan, ip, vx);

    // bridges of networks that are gone (their DeleteNetwork normally removed them already)
    List<String> stale = new ArrayList<>();
    List<String> staleFids = new ArrayList<>();
    for (Link l : links.values()) {
      if (!"bridge".equals(l.kind()) || !Names.isBridge(l.name()) || l.alias() == null
          || !l.alias().startsWith(BRIDGE_ALIAS)) {
        continue;
      }
      String fid = l.alias().substring(BRIDGE_ALIAS.length());
      if (plan.networks().containsKey(fid) || plan.frozen().contains(fid) || !mayRemoveBridge(fid)) {
        continue;
      }
      for (Link v : links.values()) {
        if (l.name().equals(v.master()) && Names.isHostVeth(v.name())) {
          stale.add("link del dev " + Kernel.ifname(v.name()));
        }
      }
      stale.add("link del dev " + l.name());
      staleFids.add(fid);
    }

    // detached veths a crash (or a failed background delete) left, unless the reaper has them
    List<String> detached = new ArrayList<>();
    for (Link l : links.values()) {
      if (Names.isDetached(l.name()) && !reaping.contains(l.name())
          && (l.peer() == null || !reaping.contains(l.peer()) && !detached.contains(l.peer()))) {
        detached.add(l.name());
      }
    }
    if (!detached.isEmpty()) {
      try {
        deleteAll(detached.stream().map(n -> "link del dev " + n).toList(), detached);
      } catch (KernelException e) {
        errors.add(e);
      }
    }

    int lines = 0;
    List<String> cleanup = new ArrayList<>(stale);
    if (vx != null) {
      cleanup.addAll(0, vx.cleanup);
    }
    lines += applyAll("ip", cleanup, rev, errors);
    if (vx != null) {
      lines += applyAll("ip", vx.links, rev, errors);
      lines += applyAll("bridge", vx.fdb, rev, errors);
      lines += applyAll("ip", vx.routes, rev, errors);
      lines += applyAll("ip", direct, rev, errors);
      if (directCount > 0) {
        summary.append(", ").append(directCount).append(directCount == 1 ? " peer" : " peers")
            .append(" routed directly on ").append(uplinkName);
      }
    }
    staleFids.forEach(ensured::remove);
    summary.append("; ").append(lines == 0 ? "no kernel changes" : lines + " kernel changes");

    try {
      summary.append("; ").append(syncIsolation(plan, periodic, rev));
    } catch (KernelException e) {
      errors.add(e);
    }
    seenNetworks = Set.copyOf(plan.networks().keySet());
    return finish(plan, ip, vx != null, summary, errors);
  }

  /** "node N IP: K networks, here flannel.V (P peers)". */
  private StringBuilder summaryHead(VxlanPlan plan, String ip, VxlanSync vx) {
    StringBuilder summary = new StringBuilder("node ").append(config.nodeName())
        .append(ip == null ? " (public IP unknown)" : " " + ip).append(": ").append(plan.networks().size())
        .append(plan.networks().size() == 1 ? " network" : " networks");
    if (vx != null) {
      summary.append(", here ").append(vx.peers.isEmpty() ? "none" : vx.peers.entrySet().stream()
          .map(e -> e.getKey() + " (" + e.getValue() + (e.getValue() == 1 ? " peer)" : " peers)"))
          .reduce((a, b) -> a + ", " + b).orElse(""));
    }
    return summary;
  }

  /**
   * Ends a pass: with no error (and the VXLAN plane not skipped: {@code synced}), the kernel now
   * holds what {@code plan} wants, which the next pass may trust; with errors the pass fails,
   * naming them.
   */
  private String finish(VxlanPlan plan, String ip, boolean synced, StringBuilder summary, List<Exception> errors) {
    vertx.eventBus().publish(Addresses.PROBLEMS, new Observed.Problems(plane(), plan.problems()));
    if (!plan.problems().isEmpty()) {
      summary.append("; ").append(plan.problems().size()).append(" ignored: ")
          .append(String.join("; ", plan.problems().subList(0, Math.min(3, plan.problems().size()))));
    }
    if (!errors.isEmpty()) {
      trusted = null;
      Exception first = errors.get(0);
      throw new PassFailed(summary + "; FAILED: " + first.getMessage()
          + (errors.size() > 1 ? " (and " + (errors.size() - 1) + " more)" : ""), first);
    }
    trusted = synced ? new Trusted(ip, plan.networks(), plan.own()) : null;
    return summary.toString();
  }

  /**
   * A bridge of a network that is not in the snapshot may only be too new for it (Docker's
   * CreateNetwork ran after the network reached etcd but before the watch delivered it): such a
   * bridge stays unless the network was in an earlier snapshot (so it was really deleted) or it
   * was not asked for in the last {@link #ENSURE_GRACE}.
   */
  private boolean mayRemoveBridge(String fid) {
    if (seenNetworks.contains(fid)) {
      return true;
    }
    Long at = ensured.get(fid);
    return at == null || System.nanoTime() - at > ENSURE_GRACE.toNanos();
  }

  /** Applies one batch of a pass (with -force: everything that can be applied is); returns its lines. */
  private int applyAll(String tool, List<String> lines, long rev, List<Exception> errors) {
    if (lines.isEmpty()) {
      return 0;
    }
    try {
      Applied a = "ip".equals(tool) ? kernel.ipBatch(lines, true) : kernel.bridgeBatch(lines, true);
      publish(new Observed.KernelBatch(plane(), a.tool(), a.text(), true, "", a.micros(), rev));
    } catch (KernelException e) {
      publish(new Observed.KernelBatch(plane(), e.tool(), e.text(), false, e.getMessage(), e.micros(), rev));
      errors.add(e);
    }
    return lines.size();
  }

  /**
   * The isolation table: read back and compared when the networks changed, on every periodic
   * pass and after a failure; replaced in one transaction when it differs.
   */
  private String syncIsolation(VxlanPlan plan, boolean periodic, long rev) throws KernelException {
    String up = uplinkName;
    Isolation.Model want = Isolation.desired(plan.networks().values(), up);
    if (!periodic && want.equals(nftVerified)) {
      return "nft unchanged";
    }
    // Docker's FORWARD DROP: checked when the networks change and on every periodic pass (an
    // operator may flush DOCKER-USER; dockerd may start after us); two `iptables -C` when in place.
    boolean anyDirect = plan.networks().values().stream().anyMatch(VxlanPlan.Network::directRouting);
    if (kernel.dockerUserAccept(!want.absent(), anyDirect)) {
      LOG.info("DOCKER-USER: flannel.* ACCEPT rules " + (want.absent() ? "removed" : "added"));
    }
    Isolation.Model have;
    try {
      have = Isolation.actual(kernel.nftJson(Isolation.listArgs()));
    } catch (KernelException e) {
      if (!Isolation.isAbsence(e)) {
        nftVerified = null;
        throw e;
      }
      have = Isolation.Model.ABSENT;
    }
    if (have.equals(want)) {
      nftVerified = want;
      return want.absent() ? "no nft table needed" : "nft in place";
    }
    if (want.absent() && have.absent()) {
      nftVerified = want;
      return "no nft table needed";
    }
    String script = Isolation.script(plan.networks().values(), up);
    try {
      Applied a = kernel.nftBatch(script);
      publish(new Observed.KernelBatch(plane(), a.tool(), a.text(), true, "", a.micros(), rev));
      nftVerified = want;
      return want.absent() ? "nft table removed" : "nft table written (" + want.elements().size() + " networks)";
    } catch (KernelException e) {
      publish(new Observed.KernelBatch(plane(), e.tool(), e.text(), false, e.getMessage(), e.micros(), rev));
      nftVerified = null;
      throw e;
    }
  }

  /**
   * This node's public IP, as flanneld picks it (see {@link Uplinks}), resolved in the kernel's
   * namespace; kept once known.
   */
  private String publicIp(Map<String, Link> links, JsonArray routes) {
    String ip = publicIp;
    if (ip != null) {
      return ip;
    }
    Uplinks.Choice c = choice(links, routes);
    ip = Kernel.ipv4(c.publicIp());
    publicIp = ip;
    LOG.info("node " + config.nodeName() + ": public IP " + ip + " (VXLAN underlay in " + kernel.where() + ", "
        + c.iface().map(i -> "interface " + i.name() + ", ").orElse("") + "chosen by " + c.why() + ")");
    return ip;
  }

  /**
   * The interface VXLAN packets leave by, and its MTU, as DEFAULT_FLANNEL_OPTIONS choose it; with
   * none chosen, the device is bound to no interface and the MTU is 1500.
   */
  private VxlanSync.Uplink uplink(Map<String, Link> links, JsonArray routes, String ip) {
    return choice(links, routes).iface().map(i -> new VxlanSync.Uplink(i.name(), i.mtu()))
        .orElse(new VxlanSync.Uplink(null, DEFAULT_UPLINK_MTU));
  }

  /** flanneld's choice of interface ({@link Uplinks}) from the kernel's links and routes. */
  private Uplinks.Choice choice(Map<String, Link> links, JsonArray routes) {
    List<Uplinks.Iface> ifaces = new ArrayList<>();
    for (Link l : links.values()) {
      ifaces.add(new Uplinks.Iface(l.name(), l.mtu(), l.ipv4()));
    }
    try {
      return Uplinks.choose(config.flannelOptions(), ifaces, defaultRouteDevice(routes, links), this::routeGet);
    } catch (Uplinks.NoUplink e) {
      throw new Refused(Failure.UNAVAILABLE, e.getMessage() + " (in " + kernel.where() + ")");
    }
  }

  /** {@code ip route get ADDR}: the device and source address the kernel would use. */
  private Optional<Uplinks.Route> routeGet(String address) {
    try {
      JsonArray r = parse(kernel.ipJson("-4", "route", "get", Kernel.ipv4(address)), "ip route get " + address);
      if (r.isEmpty() || !(r.getValue(0) instanceof JsonObject j) || j.getString("dev") == null) {
        return Optional.empty();
      }
      return Optional.of(new Uplinks.Route(j.getString("dev"), Optional.ofNullable(j.getString("prefsrc"))));
    } catch (KernelException e) {
      return Optional.empty(); // unreachable: no interface reaches it
    }
  }

  /** The device of the default route with the lowest metric that exists in {@code links}. */
  private static Optional<String> defaultRouteDevice(JsonArray routes, Map<String, Link> links) {
    List<JsonObject> defaults = new ArrayList<>();
    for (Object o : routes) {
      if (o instanceof JsonObject r && "default".equals(r.getString("dst"))) {
        defaults.add(r);
      }
    }
    defaults.sort(Comparator.comparingLong(r -> r.getLong("metric", 0L)));
    for (JsonObject r : defaults) {
      String dev = r.getString("dev");
      if (dev == null && r.getJsonArray("nexthops") != null && !r.getJsonArray("nexthops").isEmpty()) {
        dev = r.getJsonArray("nexthops").getJsonObject(0).getString("dev");
      }
      if (dev != null && links.containsKey(dev)) {
        return Optional.of(dev);
      }
    }
    return Optional.empty();
  }

  /** A pass that did what it could and names what failed (the next pass retries). */
  static final class PassFailed extends RuntimeException {
    PassFailed(String message, Throwable cause) {
      super(message, cause, false, false);
    }
  }

  // ---- request plumbing ------------------------------------------------------------------------

  /** A request refused with a {@link Failure} code and a text for the user. */
  static final class Refused extends RuntimeException {
    final int code;

    Refused(int code, String message) {
      super(message, null, false, false);
      this.code = code;
    }
  }

  /**
   * Validates the request on the event loop (cheap, no I/O), then runs its kernel work on a worker,
   * ordered with every other request of this verticle.
   */
  private <T> void serve(Message<T> m, Class<T> type, Function<T, Callable<Object>> plan) {
    serve(m, type, plan, true);
  }

  /**
   * Runs a request's kernel work on a worker. Network set-up and removal queue behind the plane's
   * passes (ordered); an endpoint's veth pair does not wait for a full pass (unordered): it only
   * touches its own links and the bridge, and the ip session serialises the batches themselves.
   */
  private <T> void serve(Message<T> m, Class<T> type, Function<T, Callable<Object>> plan, boolean ordered) {
    Callable<Object> work;
    try {
      Object body = m.body();
      if (!type.isInstance(body)) {
        m.fail(Failure.BAD_REQUEST, "expected a " + type.getSimpleName() + " body, got "
            + (body == null ? "none" : body.getClass().getSimpleName()));
        return;
      }
      work = plan.apply(type.cast(body));
    } catch (Refused r) {
      m.fail(r.code, r.getMessage());
      return;
    } catch (IllegalArgumentException e) {
      m.fail(Failure.BAD_REQUEST, e.getMessage());
      return;
    }
    vertx.executeBlocking(work, ordered).onComplete(ar -> {
      if (ar.succeeded()) {
        m.reply(ar.result());
        return;
      }
      Throwable t = ar.cause();
      if (t instanceof Refused r) {
        m.fail(r.code, r.getMessage());
      } else if (t instanceof KernelException k) {
        m.fail(k.unavailable() ? Failure.UNAVAILABLE : Failure.INTERNAL, k.getMessage());
      } else {
        LOG.log(Level.WARNING, "flannel request " + type.getSimpleName() + " failed", t);
        m.fail(Failure.INTERNAL, type.getSimpleName() + " failed: " + t);
      }
    });
  }

  // ---- EnsureNetwork ---------------------------------------------------------------------------

  private Callable<Object> ensureNetwork(EnsureNetwork req) {
    String bridge = Names.bridge(req.flannelId());
    String gateway = Kernel.ipv4Cidr(req.gatewayCidr());
    if (req.vni() < 0 || req.vni() > Config.MAX_VNI) {
      throw new IllegalArgumentException("invalid VNI " + req.vni() + ": expected 0-" + Config.MAX_VNI);
    }
    ensured.put(req.flannelId(), System.nanoTime());
    return () -> {
      Map<String, Link> links = links();
      int mtu = uplinkMtu() - VXLAN_OVERHEAD;
      if (mtu < 68) {
        throw new Refused(Failure.INTERNAL, "the uplink's MTU " + (mtu + VXLAN_OVERHEAD)
            + " leaves no room for VXLAN's " + VXLAN_OVERHEAD + " bytes");
      }
      String alias = BRIDGE_ALIAS + req.flannelId();
      Link b = links.get(bridge);
      List<String> lines = new ArrayList<>();
      if (b == null) {
        lines.add("link add name " + bridge + " address " + bridgeMac(req.flannelId()) + " mtu " + mtu
            + " type bridge stp_state 0");
        lines.add("link set dev " + bridge + " alias " + alias); // the kernel ignores an alias in link add
        lines.add("addr replace " + gateway + " dev " + bridge);
        lines.add("link set dev " + bridge + " up");
        try {
          apply(lines);
          routingSysctls(bridge);
        } catch (KernelException e) {
          undo(List.of(bridge));
          throw e;
        }
        return new NetworkReady(req.flannelId(), bridge, mtu);
      }
      if (!"bridge".equals(b.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + bridge + " exists in " + kernel.where() + " but is "
            + b.describeKind() + ", not the bridge of network " + req.flannelId() + "; remove it first");
      }
      if (b.alias() != null && b.alias().startsWith(BRIDGE_ALIAS) && !b.alias().equals(alias)) {
        throw new Refused(Failure.CONFLICT, "bridge " + bridge + " belongs to network "
            + b.alias().substring(BRIDGE_ALIAS.length()) + ", not " + req.flannelId());
      }
      if (b.stpState() != 0) {
        lines.add("link set dev " + bridge + " type bridge stp_state 0");
      }
      if (b.mtu() != mtu) {
        lines.add("link set dev " + bridge + " mtu " + Kernel.mtu(mtu));
      }
      if (!alias.equals(b.alias())) {
        lines.add("link set dev " + bridge + " alias " + alias);
      }
      List<String> others = new ArrayList<>();
      boolean has = false;
      for (String a : ipv4Addresses(bridge)) {
        if (a.equals(gateway)) {
          has = true;
        } else {
          others.add(a);
        }
      }
      for (String a : others) {
        lines.add("addr del " + a + " dev " + bridge);
      }
      // after deletions always (re)add: deleting a primary address can take secondaries with it
      if (!has || !others.isEmpty()) {
        lines.add("addr replace " + gateway + " dev " + bridge);
      }
      if (!b.up()) {
        lines.add("link set dev " + bridge + " up");
      }
      if (!lines.isEmpty()) {
        apply(lines);
      }
      return new NetworkReady(req.flannelId(), bridge, mtu);
    };
  }

  /**
   * The host routes between a network's bridge and its flannel.VNI device (and to VIP backends),
   * so forwarding must be on; and a task talking to a neighbour on its own bridge through a VIP
   * must not make the host send ICMP redirects, which use up the per-client ICMP budget that
   * the load balancer's refusals need. Set when the bridge is created.
   */
  private void routingSysctls(String bridge) throws KernelException {
    Applied a = kernel.sysctl(java.util.Map.of("net.ipv4.ip_forward", "1",
        "net.ipv4.conf." + Kernel.ifname(bridge) + ".send_redirects", "0"));
    vertx.eventBus().publish(io.flannelnp.bus.Addresses.KERNEL_BATCH,
        new io.flannelnp.bus.Observed.KernelBatch(plane(), a.tool(), a.text(), true, "", a.micros(), 0));
  }

  /**
   * The uplink's MTU: the interface DEFAULT_FLANNEL_OPTIONS choose (or the default route's), else
   * {@value #DEFAULT_UPLINK_MTU} when no flag names one and there is no default route.
   */
  private int uplinkMtu() throws KernelException {
    Map<String, Link> links = new LinkedHashMap<>();
    for (Object o : parse(kernel.ipJson("-d", "addr", "show"), "ip -d addr show")) {
      if (o instanceof JsonObject j && j.getString("ifname") != null) {
        Link l = Link.of(j);
        links.put(l.name(), l);
      }
    }
    try {
      return choice(links, parse(kernel.ipJson("route", "show", "default"), "ip route show default")).iface()
          .map(Uplinks.Iface::mtu).orElse(DEFAULT_UPLINK_MTU);
    } catch (Refused e) {
      if (config.flannelOptions().choosesInterface()) {
        throw e;
      }
      return DEFAULT_UPLINK_MTU; // no default route (a lab host) and nothing named
    }
  }

  /** The IPv4 addresses of a link as "a.b.c.d/len". */
  private List<String> ipv4Addresses(String dev) throws KernelException {
    List<String> out = new ArrayList<>();
    for (Object o : parse(kernel.ipJson("addr", "show", "dev", Kernel.ifname(dev)), "ip addr show dev " + dev)) {
      if (o instanceof JsonObject l) {
        for (Object i : l.getJsonArray("addr_info", new JsonArray())) {
          if (i instanceof JsonObject a && "inet".equals(a.getString("family"))) {
            out.add(Kernel.ipv4(a.getString("local")) + "/" + a.getInteger("prefixlen"));
          }
        }
      }
    }
    return out;
  }

  /**
   * A fixed, locally administered MAC for the bridge, derived from node and network. Without one
   * a Linux bridge takes the lowest MAC of its ports and changes it as containers come and go,
   * which leaves stale gateway entries in the containers' ARP caches (Docker sets one for the
   * same reason); derived rather than random so a re-created bridge keeps its MAC.
   */
  private String bridgeMac(String flannelId) {
    try {
      byte[] h = MessageDigest.getInstance("SHA-1")
          .digest((config.nodeName() + "/" + flannelId).getBytes(StandardCharsets.UTF_8));
      h[0] = (byte) ((h[0] & 0xfe) | 0x02);
      StringBuilder b = new StringBuilder();
      for (int i = 0; i < 6; i++) {
        b.append(i == 0 ? "" : ":").append(String.format("%02x", h[i] & 0xff));
      }
      return Kernel.mac(b.toString());
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  // ---- AttachEndpoint --------------------------------------------------------------------------

  private Callable<Object> attachEndpoint(AttachEndpoint req) {
    String bridge = Names.bridge(req.flannelId());
    String host = Names.hostVeth(req.endpointId());
    String cont = Names.containerVeth(req.endpointId());
    String mac = req.macAddress() == null || req.macAddress().isEmpty() ? null : Kernel.mac(req.macAddress());
    String alias = VETH_ALIAS + req.endpointId();
    ensured.put(req.flannelId(), System.nanoTime());
    return () -> {
      Map<String, Link> links = links(bridge, host, cont);
      Link b = links.get(bridge);
      if (b == null) {
        throw new Refused(Failure.NOT_FOUND, "network " + req.flannelId()
            + " is not set up on this node (EnsureNetwork first)");
      }
      if (!"bridge".equals(b.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + bridge + " of network " + req.flannelId() + " is "
            + b.describeKind() + ", not a bridge");
      }
      int mtu = Kernel.mtu(b.mtu());
      Link h = links.get(host);
      Link c = links.get(cont);
      if (h != null) {
        return existingPair(req, bridge, h, c, mac, alias, mtu);
      }
      List<String> lines = new ArrayList<>();
      if (c != null) {
        // a leftover container side without its host side is no pair of ours any more
        lines.add("link del dev " + cont);
      }
      lines.add("link add name " + host + " mtu " + mtu + " type veth peer name " + cont
          + " mtu " + mtu + (mac == null ? "" : " address " + mac));
      lines.add("link set dev " + host + " alias " + alias);
      lines.add("link set dev " + host + " master " + bridge);
      // a task must reach itself through its service's VIP (the DNAT sends it back out its port)
      lines.add("link set dev " + host + " type bridge_slave hairpin on");
      lines.add("link set dev " + host + " up");
      try {
        applyFast(lines);
      } catch (KernelException e) {
        undo(List.of(host, cont));
        throw new Refused(Failure.INTERNAL, "could not create the veth pair of endpoint " + req.endpointId()
            + " (" + host + "/" + cont + "); nothing was left behind: " + e.getMessage());
      }
      return new EndpointAttached(req.endpointId(), host, cont, mtu);
    };
  }

  /** Docker retried: the pair exists. Fix what differs and answer as the first time. */
  private Object existingPair(AttachEndpoint req, String bridge, Link h, Link c, String mac, String alias, int mtu)
      throws KernelException {
    String host = h.name();
    String cont = Names.containerVeth(req.endpointId());
    if (!"veth".equals(h.kind())) {
      throw new Refused(Failure.CONFLICT, "link " + host + " exists but is " + h.describeKind()
          + ", not the veth of endpoint " + req.endpointId() + "; remove it first");
    }
    if (h.alias() != null && h.alias().startsWith(VETH_ALIAS) && !h.alias().equals(alias)) {
      throw new Refused(Failure.CONFLICT, "veth " + host + " belongs to endpoint "
          + h.alias().substring(VETH_ALIAS.length()) + ", whose ID starts like " + req.endpointId()
          + "; the two cannot be on one node at once");
    }
    if (h.master() != null && !h.master().equals(bridge)) {
      throw new Refused(Failure.CONFLICT, "veth " + host + " of endpoint " + req.endpointId() + " is on "
          + h.master() + ", not on " + bridge + " of network " + req.flannelId());
    }
    if (h.peerElsewhere() || c == null || !cont.equals(h.peer())) {
      throw new Refused(Failure.CONFLICT, "endpoint " + req.endpointId() + " is in use: the container side of "
          + host + " is no longer in " + kernel.where() + " (a container holds it); detach it first");
    }
    List<String> lines = new ArrayList<>();
    if (h.mtu() != mtu) {
      lines.add("link set dev " + host + " mtu " + mtu);
    }
    if (c.mtu() != mtu) {
      lines.add("link set dev " + cont + " mtu " + mtu);
    }
    if (mac != null && !mac.equals(c.mac())) {
      lines.add("link set dev " + cont + " address " + mac);
    }
    if (!alias.equals(h.alias())) {
      lines.add("link set dev " + host + " alias " + alias);
    }
    if (h.master() == null) {
      lines.add("link set dev " + host + " master " + bridge);
    }
    if (!h.up()) {
      lines.add("link set dev " + host + " up");
    }
    if (!lines.isEmpty()) {
      try {
        applyFast(lines);
      } catch (KernelException e) {
        undo(List.of(host, cont));
        throw new Refused(Failure.INTERNAL, "could not repair the veth pair of endpoint " + req.endpointId()
            + "; it was removed: " + e.getMessage());
      }
    }
    return new EndpointAttached(req.endpointId(), host, cont, mtu);
  }

  // ---- DetachEndpoint --------------------------------------------------------------------------

  private Callable<Object> detachEndpoint(DetachEndpoint req) {
    // the names come from the endpoint ID alone; the API sends "" when it no longer knows the network
    if (req.flannelId() != null && !req.flannelId().isEmpty()) {
      Names.requireFlannelId(req.flannelId());
    }
    String host = Names.hostVeth(req.endpointId());
    String cont = Names.containerVeth(req.endpointId());
    String alias = VETH_ALIAS + req.endpointId();
    return () -> {
      Map<String, Link> links = links(host, cont);
      Link h = links.get(host);
      Link c = links.get(cont);
      if (h != null && !"veth".equals(h.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + host + " is " + h.describeKind() + ", not the veth of endpoint "
            + req.endpointId() + "; left alone");
      }
      if (h != null && h.alias() != null && h.alias().startsWith(VETH_ALIAS) && !h.alias().equals(alias)) {
        throw new Refused(Failure.CONFLICT, "veth " + host + " belongs to endpoint "
            + h.alias().substring(VETH_ALIAS.length()) + ", not " + req.endpointId() + "; left alone");
      }
      if (h == null && c == null) {
        return new Ack("endpoint " + req.endpointId() + " has no veth pair on this node");
      }
      // take it out of the network and free its names now; the slow delete runs in the background
      List<String> lines = new ArrayList<>();
      List<String> toDelete = new ArrayList<>();
      if (h != null) {
        String z = Names.detached();
        lines.add("link set dev " + host + " down");
        lines.add("link set dev " + host + " nomaster name " + z);
        toDelete.add(z); // takes its peer along, wherever it is
      }
      if (c != null) {
        String z = Names.detached();
        lines.add("link set dev " + cont + " down");
        lines.add("link set dev " + cont + " name " + z);
        if (h == null || !cont.equals(h.peer())) {
          toDelete.add(z);
        }
      }
      try {
        applyFast(lines);
      } catch (KernelException e) {
        // all or nothing: delete now whatever of the pair is still there, under either name
        List<String> names = new ArrayList<>(List.of(host, cont));
        names.addAll(lines.stream().filter(l -> l.contains(" name ")).map(l -> l.substring(l.lastIndexOf(' ') + 1)).toList());
        Map<String, Link> now = links(names.toArray(String[]::new));
        // -force: a peer that went with its pair fails its line; deleteAll checks what is left
        List<String> del = now.keySet().stream().map(n -> "link del dev " + n).toList();
        if (!del.isEmpty()) {
          deleteAll(del, names);
        }
        return new Ack("deleted the veth pair " + host + "/" + cont + " of endpoint " + req.endpointId());
      }
      reap(toDelete);
      return new Ack("detached the veth pair " + host + "/" + cont + " of endpoint " + req.endpointId()
          + "; it is deleted in the background");
    };
  }

  /** Deletes detached veths on the reaper thread; a failure is left to the next full pass. */
  private void reap(List<String> names) {
    if (names.isEmpty()) {
      return;
    }
    reaping.addAll(names);
    List<String> lines = names.stream().map(n -> "link del dev " + n).toList();
    try {
      reaper.execute(() -> {
        try {
          deleteAll(lines, names);
        } catch (KernelException | RuntimeException e) {
          LOG.warning("deleting detached veths " + names + " failed (the next full pass retries): " + e.getMessage());
        } finally {
          reaping.removeAll(names);
        }
      });
    } catch (java.util.concurrent.RejectedExecutionException e) {
      reaping.removeAll(names); // stopping: the next start's full pass deletes them
    }
  }

  // ---- RemoveNetwork ---------------------------------------------------------------------------

  private Callable<Object> removeNetwork(RemoveNetwork req) {
    String bridge = Names.bridge(req.flannelId());
    ensured.remove(req.flannelId());
    return () -> {
      Map<String, Link> links = links();
      Link b = links.get(bridge);
      if (b == null) {
        return new Ack("network " + req.flannelId() + " has no bridge on this node");
      }
      if (!"bridge".equals(b.kind())) {
        throw new Refused(Failure.CONFLICT, "link " + bridge + " is " + b.describeKind()
            + ", not the bridge of network " + req.flannelId() + "; left alone");
      }
      List<String> lines = new ArrayList<>();
      List<String> names = new ArrayList<>();
      for (Link l : links.values()) {
        if (bridge.equals(l.master()) && Names.isHostVeth(l.name())) {
          lines.add("link del dev " + Kernel.ifname(l.name()));
          names.add(l.name());
        }
      }
      lines.add("link del dev " + bridge);
      names.add(bridge);
      deleteAll(lines, names);
      return new Ack("deleted bridge " + bridge + (names.size() > 1 ? " and " + (names.size() - 1) + " veths" : ""));
    };
  }

  // ---- kernel helpers --------------------------------------------------------------------------

  /** Deletes with -force; a failure only counts if some of the links are still there afterwards. */
  private void deleteAll(List<String> lines, List<String> names) throws KernelException {
    try {
      apply(lines, true);
    } catch (KernelException e) {
      Map<String, Link> after = links(names.toArray(String[]::new));
      if (names.stream().anyMatch(after::containsKey)) {
        throw e;
      }
    }
  }

  /** Best-effort clean-up after a failed batch: deletes whichever of these links exist now. */
  private void undo(List<String> names) {
    try {
      Map<String, Link> now = links(names.toArray(String[]::new));
      List<String> lines = new ArrayList<>();
      for (String n : names) {
        if (now.containsKey(n)) {
          lines.add("link del dev " + n);
        }
      }
      if (!lines.isEmpty()) {
        apply(lines, true);
      }
    } catch (KernelException | RuntimeException e) {
      LOG.log(Level.WARNING, "clean-up of " + names + " in " + kernel.where() + " failed: " + e.getMessage());
    }
  }

  private Applied apply(List<String> lines) throws KernelException {
    return apply(lines, false);
  }

  /**
   * The hot path's batches (Join, DeleteEndpoint): in the Kernel's long-lived ip session, going on
   * past a failing line; every caller undoes a failed change as a whole.
   */
  private Applied applyFast(List<String> lines) throws KernelException {
    try {
      Applied a = kernel.ipApply(lines);
      publish(new Observed.KernelBatch(plane(), a.tool(), a.text(), true, "", a.micros(), NO_REVISION));
      return a;
    } catch (KernelException e) {
      publish(new Observed.KernelBatch(plane(), e.tool(), e.text(), false, e.getMessage(), e.micros(), NO_REVISION));
      throw e;
    }
  }

  /** Runs one {@code ip} batch and publishes it, applied or failed, as a KernelBatch. */
  private Applied apply(List<String> lines, boolean force) throws KernelException {
    try {
      Applied a = kernel.ipBatch(lines, force);
      publish(new Observed.KernelBatch(plane(), a.tool(), a.text(), true, "", a.micros(), NO_REVISION));
      return a;
    } catch (KernelException e) {
      publish(new Observed.KernelBatch(plane(), e.tool(), e.text(), false, e.getMessage(), e.micros(), NO_REVISION));
      throw e;
    }
  }

  private void publish(Observed.KernelBatch batch) {
    LOG.log(batch.ok() ? Level.FINE : Level.WARNING, () -> "flannel " + batch.tool() + " batch in " + kernel.where()
        + (batch.ok() ? " applied" : " failed: " + batch.error()) + "\n" + batch.text());
    vertx.eventBus().publish(Addresses.KERNEL_BATCH, batch);
  }

  /** These links by name (those that exist), from one warm `ip -batch` instead of a dump. */
  private Map<String, Link> links(String... names) throws KernelException {
    Map<String, Link> out = new LinkedHashMap<>();
    for (Map.Entry<String, String> e : kernel.ipLinks(List.of(names)).entrySet()) {
      for (Object o : parse(e.getValue(), "ip -d link show dev " + e.getKey())) {
        if (o instanceof JsonObject j && e.getKey().equals(j.getString("ifname"))) {
          out.put(e.getKey(), Link.of(j));
        }
      }
    }
    return out;
  }

  /** Every link of the namespace by name, with what these requests look at. */
  private Map<String, Link> links() throws KernelException {
    Map<String, Link> out = new LinkedHashMap<>();
    for (Object o : parse(kernel.ipJson("-d", "link", "show"), "ip -d link show")) {
      if (o instanceof JsonObject j && j.getString("ifname") != null) {
        Link l = Link.of(j);
        out.put(l.name(), l);
      }
    }
    return out;
  }

  private static JsonArray parse(String json, String what) {
    try {
      return new JsonArray(json);
    } catch (DecodeException e) {
      throw new IllegalStateException("cannot read the JSON of `" + what + "`: " + e.getMessage());
    }
  }

  /**
   * One link as `ip -d -json link show` (or `ip -d -json addr show`, which adds its IPv4
   * addresses as "a.b.c.d/len") describes it.
   */
  record Link(String name, String kind, String master, int mtu, boolean up, String mac, String alias, String peer,
      boolean peerElsewhere, int stpState, List<String> ipv4, Vxlan vxlan) {

    /** The attributes of a VXLAN device that cannot change in place. */
    record Vxlan(long id, String local, String link, int port, boolean learning) {}

    static Link of(JsonObject j) {
      JsonObject info = j.getJsonObject("linkinfo", new JsonObject());
      JsonObject data = info.getJsonObject("info_data", new JsonObject());
      JsonArray flags = j.getJsonArray("flags", new JsonArray());
      List<String> v4 = new ArrayList<>();
      for (Object o : j.getJsonArray("addr_info", new JsonArray())) {
        if (o instanceof JsonObject a && "inet".equals(a.getString("family")) && a.getString("local") != null) {
          v4.add(a.getString("local") + "/" + a.getInteger("prefixlen", 32));
        }
      }
      Vxlan vx = "vxlan".equals(info.getString("info_kind"))
          ? new Vxlan(data.getLong("id", -1L), data.getString("local"), data.getString("link"),
              data.getInteger("port", 0), data.getBoolean("learning", true))
          : null;
      return new Link(j.getString("ifname"), info.getString("info_kind"), j.getString("master"),
          j.getInteger("mtu", 0), flags.contains("UP"), j.getString("address"), j.getString("ifalias"),
          j.getString("link"), j.containsKey("link_netnsid"), data.getInteger("stp_state", 0), List.copyOf(v4), vx);
    }

    String describeKind() {
      return kind == null ? "a device of no particular kind" : "a " + kind + " device";
    }
  }
}
