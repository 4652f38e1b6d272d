package io.flannelnp.bus;

/**
 * Every event-bus address of the daemon, in one place. The verticles talk only through these.
 * "publish" = one-to-many notification; "request" = one consumer that replies (or fails with a
 * {@link Failure} code and a message a user can read). All bodies are records sent by reference
 * with a local codec ({@link Codecs}). docs/event-bus.md has the same table with the senders and
 * receivers drawn out.
 *
 * <pre>
 * address                      kind     body → reply                                   from → to
 * fnp.etcd.status              publish  EtcdStatus                                     EtcdWatch → Api, Admin
 * fnp.state.changed            publish  StateChanged                                   EtcdWatch → Flannel, LB, Dns, Api
 * fnp.etcd.changes             publish  KeyChanges                                     EtcdWatch → LoadBalancer, console, recorder
 * fnp.state.snapshot           request  SnapshotRequest → ClusterState                 planes → EtcdWatch
 * fnp.flannel.network.ensure   request  EnsureNetwork → NetworkReady                   Api → Flannel
 * fnp.flannel.endpoint.attach  request  AttachEndpoint → EndpointAttached              Api → Flannel
 * fnp.flannel.endpoint.detach  request  DetachEndpoint → Ack                           Api → Flannel
 * fnp.flannel.network.remove   request  RemoveNetwork → Ack                            Api → Flannel
 * fnp.dns.inject               request  InjectDns → Ack                                Api, Docker → Dns
 * fnp.dns.eject                request  EjectDns → Ack                                 Api, Docker → Dns
 * fnp.docker.status            publish  DockerStatus                                   Docker → Api, Admin
 * fnp.docker.events            publish  DockerEvent                                    Docker → Dns, console
 * fnp.docker.view              request  ViewRequest → DockerView                       Gc → Docker
 * fnp.problems                 publish  Problems                                       Gc, Flannel → Admin, console, log
 * fnp.kernel.batch             publish  KernelBatch                                    Flannel, LB, Dns → console, log
 * fnp.reconcile.report         publish  ReconcileReport                                every plane → Admin, console
 * </pre>
 */
public final class Addresses {
  private Addresses() {}

  public static final String ETCD_STATUS = "fnp.etcd.status";
  public static final String STATE_CHANGED = "fnp.state.changed";
  public static final String ETCD_CHANGES = "fnp.etcd.changes";
  public static final String STATE_SNAPSHOT = "fnp.state.snapshot";

  public static final String FLANNEL_NETWORK_ENSURE = "fnp.flannel.network.ensure";
  public static final String FLANNEL_ENDPOINT_ATTACH = "fnp.flannel.endpoint.attach";
  public static final String FLANNEL_ENDPOINT_DETACH = "fnp.flannel.endpoint.detach";
  public static final String FLANNEL_NETWORK_REMOVE = "fnp.flannel.network.remove";

  public static final String DNS_INJECT = "fnp.dns.inject";
  public static final String DNS_EJECT = "fnp.dns.eject";

  public static final String DOCKER_STATUS = "fnp.docker.status";
  public static final String DOCKER_EVENTS = "fnp.docker.events";
  public static final String DOCKER_VIEW = "fnp.docker.view";

  public static final String PROBLEMS = "fnp.problems";

  public static final String KERNEL_BATCH = "fnp.kernel.batch";
  public static final String RECONCILE_REPORT = "fnp.reconcile.report";
}
