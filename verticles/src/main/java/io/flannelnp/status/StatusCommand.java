package io.flannelnp.status;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.lease.LeaseTimeToLiveResponse;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.LeaseOption;
import io.flannelnp.config.Config;
import io.flannelnp.config.ConfigException;
import io.flannelnp.config.Setting;
import io.flannelnp.etcd.EtcdClients;
import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.log.Logging;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * {@code java -jar flannel-np.jar status [--json]}: the cluster as etcd holds it, read with the
 * daemon's own settings (ETCD_ENDPOINTS, ETCD_PREFIX, the TLS files), so it runs wherever the
 * daemon's environment is: inside the managed plugin too. Exit 0: nothing wrong; 1: a problem
 * is listed or etcd did not answer; 2: a usage or settings error.
 */
public final class StatusCommand {
  static final String USAGE = "usage: java -jar flannel-np.jar status [--json]\n"
      + "  reads etcd with the daemon's settings (ETCD_ENDPOINTS, ETCD_PREFIX, ETCD_CA_FILE, ...) and prints the\n"
      + "  nodes, networks, services and problems of the cluster; exit 1 when a problem is listed";
  static final long TIMEOUT_MS = 10_000;

  private StatusCommand() {}

  public static int run(String[] args, Map<String, String> env, PrintStream out, PrintStream err) {
    Logging.configure("error");
    boolean json = false;
    for (int i = 1; i < args.length; i++) {
      switch (args[i]) {
        case "--json" -> json = true;
        case "-h", "--help" -> {
          out.println(USAGE);
          return 0;
        }
        default -> {
          err.println("flannel-np status: unknown option '" + args[i] + "'");
          err.println(USAGE);
          return 2;
        }
      }
    }
    if (env.getOrDefault(Setting.ETCD_ENDPOINTS.name(), "").isBlank()) {
      err.println("flannel-np status: set ETCD_ENDPOINTS (and ETCD_PREFIX) as for the daemon");
      return 2;
    }
    Config c;
    try {
      Map<String, String> probe = new LinkedHashMap<>(env);
      probe.putIfAbsent(Setting.AVAILABLE_SUBNETS.name(), "10.0.0.0/8"); // not read here; the daemon requires it
      c = Config.fromEnv(probe, () -> "status");
    } catch (ConfigException e) {
      err.println("flannel-np status: " + e.getMessage());
      return 2;
    }
    EtcdSchema schema = new EtcdSchema(c.etcdPrefix());
    ClusterStatus status;
    try (Client client = EtcdClients.withTls(Client.builder().endpoints(c.etcdEndpoints().toArray(String[]::new)),
        c.etcdTls()).build()) {
      List<KeyValue> kvs = new ArrayList<>();
      client.getKVClient().get(ByteSequence.from(schema.root(), StandardCharsets.UTF_8),
          GetOption.builder().isPrefix(true).build()).get(TIMEOUT_MS, TimeUnit.MILLISECONDS).getKvs()
          .forEach(kv -> kvs.add(new KeyValue(kv.getKey().toString(StandardCharsets.UTF_8),
              kv.getValue().toString(StandardCharsets.UTF_8), kv.getCreateRevision(), kv.getModRevision(),
              kv.getVersion(), kv.getLease())));
      Map<Long, ClusterStatus.Ttl> ttls = new HashMap<>();
      for (KeyValue kv : kvs) {
        if (kv.lease() != 0 && !ttls.containsKey(kv.lease())) {
          LeaseTimeToLiveResponse r = client.getLeaseClient().timeToLive(kv.lease(), LeaseOption.DEFAULT)
              .get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
          ttls.put(kv.lease(), new ClusterStatus.Ttl(r.getTTL(), r.getGrantedTTL()));
        }
      }
      status = ClusterStatus.of(schema, kvs, ttls);
    } catch (ExecutionException | TimeoutException e) {
      err.println("flannel-np status: etcd " + String.join(",", c.etcdEndpoints()) + " did not answer"
          + (e.getCause() == null ? " within " + TIMEOUT_MS + " ms" : ": " + e.getCause().getMessage()));
      return 1;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return 1;
    }
    out.print(json ? status.json().encodePrettily() + "\n" : status.text());
    out.flush();
    return status.problems().isEmpty() ? 0 : 1;
  }
}
