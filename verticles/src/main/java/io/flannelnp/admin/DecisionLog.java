package io.flannelnp.admin;

import io.flannelnp.bus.Addresses;
import io.flannelnp.bus.Observed.KernelBatch;
import io.flannelnp.bus.Observed.ReconcileReport;
import io.flannelnp.docker.DockerMessage.DockerEvent;
import io.flannelnp.etcd.EtcdMessage.KeyChanges;
import io.flannelnp.etcd.WatchEvent;
import io.flannelnp.log.Logging;
import io.vertx.core.eventbus.EventBus;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.logging.Level;
import java.util.logging.Logger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One log line per decision, with fields that chain them (docs/event-bus.md "Correlation"):
 * {@code docker=<id>} joins a Docker event to the etcd write of that object, {@code corr=r<rev>}
 * joins an etcd write to every kernel batch and reconcile pass computed from that revision.
 */
public final class DecisionLog {
  private static final Logger LOG = Logger.getLogger(DecisionLog.class.getName());
  /** docker-data/{networks,services}/ID or docker-data/containers/NODE/ID. */
  private static final Pattern DOCKER_KEY = Pattern.compile("/docker-data/(?:networks|services|containers/[^/]+)/([^/]+)$");

  private DecisionLog() {}

  public static void install(EventBus bus) {
    bus.<DockerEvent>consumer(Addresses.DOCKER_EVENTS, m -> {
      DockerEvent e = m.body();
      Logging.decision(LOG, Level.INFO, "docker " + e.type() + " " + e.action(),
          Map.of("docker", e.id(), "timeNano", e.timeNano()));
    });
    bus.<KeyChanges>consumer(Addresses.ETCD_CHANGES, m -> {
      KeyChanges c = m.body();
      if (c.resync()) {
        Logging.decision(LOG, Level.INFO, "etcd listing", Map.of("corr", "r" + c.revision(), "keys", c.events().size()));
        return;
      }
      for (WatchEvent e : c.events()) {
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("corr", "r" + e.modRevision());
        f.put("key", e.key());
        Matcher d = DOCKER_KEY.matcher(e.key());
        if (d.find()) {
          f.put("docker", d.group(1));
        }
        Logging.decision(LOG, Level.FINE, "etcd " + e.type(), f);
      }
    });
    bus.<KernelBatch>consumer(Addresses.KERNEL_BATCH, m -> {
      KernelBatch b = m.body();
      Map<String, Object> f = new LinkedHashMap<>();
      f.put("corr", "r" + b.revision());
      f.put("plane", b.plane());
      f.put("tool", b.tool());
      f.put("ok", b.ok());
      f.put("micros", b.micros());
      f.put("lines", b.text().lines().count());
      if (!b.ok()) {
        f.put("error", b.error());
      }
      Logging.decision(LOG, b.ok() ? Level.INFO : Level.WARNING, "kernel batch", f);
    });
    bus.<ReconcileReport>consumer(Addresses.RECONCILE_REPORT, m -> {
      ReconcileReport r = m.body();
      Logging.decision(LOG, r.ok() ? Level.FINE : Level.WARNING, "reconcile " + r.plane() + ": " + r.summary(),
          Map.of("corr", "r" + r.revision(), "plane", r.plane(), "ok", r.ok(), "micros", r.micros(),
              "periodic", r.periodic()));
    });
  }
}
