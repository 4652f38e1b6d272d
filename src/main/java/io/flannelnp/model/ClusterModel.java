package io.flannelnp.model;

import io.flannelnp.etcd.EtcdSchema;
import io.flannelnp.etcd.KeyValue;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.logging.Logger;

/**
 * Docker's state as mirrored in etcd, parsed from a snapshot of the keys: what the load balancer
 * and DNS planes compute their desired state from. A record that does not parse is skipped with a
 * warning (one bad writer must not stop every node's DNS), and so is a container record that is
 * not under its own node's key ({@link #misplaced}).
 */
public record ClusterModel(Map<String, DockerNetwork> networks, Map<String, ServiceRecord> services,
    List<ContainerRecord> containers) {
  private static final Logger LOG = Logger.getLogger(ClusterModel.class.getName());

  public static ClusterModel of(EtcdSchema schema, Collection<KeyValue> kvs) {
    Map<String, DockerNetwork> nets = new TreeMap<>();
    Map<String, ServiceRecord> svcs = new TreeMap<>();
    List<ContainerRecord> ctrs = new ArrayList<>();
    for (KeyValue kv : kvs) {
      try {
        switch (schema.family(kv.key())) {
          case DOCKER_NETWORKS -> {
            DockerNetwork n = DockerNetwork.fromJson(kv.value());
            nets.put(n.dockerId(), n);
          }
          case DOCKER_SERVICES -> {
            ServiceRecord s = ServiceRecord.fromJson(kv.value());
            svcs.put(s.serviceId(), s);
          }
          case DOCKER_CONTAINERS -> {
            ContainerRecord c = ContainerRecord.fromJson(kv.value());
            String why = misplaced(schema, kv.key(), c);
            if (why != null) {
              LOG.warning(why);
            } else {
              ctrs.add(c);
            }
          }
          default -> { }
        }
      } catch (RuntimeException e) {
        LOG.warning("skipping unreadable record " + kv.key() + ": " + e.getMessage());
      }
    }
    ctrs.sort(java.util.Comparator.comparing(ContainerRecord::containerId));
    return new ClusterModel(Map.copyOf(nets), Map.copyOf(svcs), List.copyOf(ctrs));
  }

  /**
   * Why a container record must not be used, or null: a node writes its containers under
   * {@code docker-data/containers/<its node>/<container-id>} only, so a record that names another
   * node or container than its key does (written by another node, by mistake or to make that node
   * act on it) is refused.
   */
  public static String misplaced(EtcdSchema schema, String key, ContainerRecord c) {
    String rest = key.startsWith(schema.dockerContainers()) ? key.substring(schema.dockerContainers().length()) : "";
    int slash = rest.indexOf('/');
    String node = slash < 0 ? "" : rest.substring(0, slash);
    String id = slash < 0 ? "" : rest.substring(slash + 1);
    if (!node.equals(c.node()) || !id.equals(c.containerId())) {
      return "skipping container record " + key + ": it names node '" + c.node() + "' and container '"
          + c.containerId() + "', but a node writes only its own containers, each under its own key";
    }
    return null;
  }

  /** Running task IPs of a service on a network, in container-ID order. */
  public List<String> backends(String serviceId, String networkId) {
    List<String> out = new ArrayList<>();
    for (ContainerRecord c : containers) {
      ContainerRecord.Attachment a = c.networks().get(networkId);
      if (c.running() && serviceId.equals(c.serviceId()) && a != null && !a.ip().isEmpty()) {
        out.add(a.ip());
      }
    }
    return out;
  }
}
