package io.flannelnp.docker;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.model.ContainerRecord;
import io.flannelnp.model.DockerNetwork;
import io.flannelnp.model.ServiceRecord;
import io.flannelnp.model.ServiceRecord.EndpointMode;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;

/**
 * The Engine API → record mapping for what the live test cannot create without the plugin
 * installed: flannel-np's own networks and their tasks. The JSON has the shapes a dockerd 20.10
 * answered in the lab (GET /networks, /services, /containers/{id}/json; the plugin network's
 * driver and IPAM fields as plugin-call-transcript.md records them for a plugin network).
 */
class DockerMirrorJsonTest {
  static final String NET_ID = "q1w2e3r4t5y6u7i8o9p0a1s2d";

  /** {@code GET /networks} entry of a plugin network after AllocateNetwork (options echoed). */
  static final String PLUGIN_NET = """
      {"Name":"fnet","Id":"%s","Created":"2026-11-28T06:00:00Z","Scope":"swarm",
       "Driver":"flannel-np:latest","EnableIPv6":false,
       "IPAM":{"Driver":"flannel-np:latest","Options":{"flannel-id":"f-123"},
               "Config":[{"Subnet":"10.99.16.0/20","Gateway":"10.99.16.1"}]},
       "Internal":false,"Attachable":true,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,
       "Containers":null,"Options":{"flannel-id":"f-123"},"Labels":null}
      """.formatted(NET_ID);

  static final String INGRESS = """
      {"Name":"ingress","Id":"ingressid000000000000000","Scope":"swarm","Driver":"overlay","Ingress":true,
       "IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"10.0.0.0/24","Gateway":"10.0.0.1"}]}}
      """;

  static final String BRIDGE = """
      {"Name":"docker_gwbridge","Id":"gwbridgeid00000000000000","Scope":"local","Driver":"bridge",
       "IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"}]}}
      """;

  /** An overlay somebody gave our option to: Docker's own driver, so not ours. */
  static final String OVERLAY_WITH_OPTION = """
      {"Name":"ov","Id":"overlayid000000000000000","Scope":"swarm","Driver":"overlay","Ingress":false,
       "IPAM":{"Driver":"default","Options":{"flannel-id":"x"},"Config":[{"Subnet":"10.0.1.0/24","Gateway":"10.0.1.1"}]}}
      """;

  static final String SERVICE = """
      {"ID":"svc1","Version":{"Index":20},
       "Spec":{"Name":"web","Labels":{},
               "TaskTemplate":{"ContainerSpec":{"Image":"fnd/busybox:latest"},
                               "Networks":[{"Target":"%s","Aliases":["www","web-alias"]},
                                           {"Target":"ingressid000000000000000"}]},
               "Mode":{"Replicated":{"Replicas":3}},
               "EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080}]}},
       "Endpoint":{"Spec":{"Mode":"vip"},
                   "VirtualIPs":[{"NetworkID":"ingressid000000000000000","Addr":"10.0.0.5/24"},
                                 {"NetworkID":"%s","Addr":"10.99.16.2/20"}]}}
      """.formatted(NET_ID, NET_ID);

  /** A DNSRR service whose network is named, not ID'd (the API accepts both), and no EndpointSpec. */
  static final String DNSRR = """
      {"ID":"svc2","Spec":{"Name":"rr","TaskTemplate":{"Networks":[{"Target":"fnet","Aliases":["rr2"]}]}},
       "Endpoint":{"Spec":{"Mode":"dnsrr"}}}
      """;

  /** {@code GET /containers/{id}/json} of a task whose address flannel-np replaced (placeholder). */
  static final String TASK = """
      {"Id":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","Name":"/web.1.tsk1",
       "State":{"Status":"running","Running":true,"Pid":4242},
       "Config":{"Hostname":"0123456789ab","Labels":{
          "com.docker.swarm.node.id":"node1","com.docker.swarm.service.id":"svc1",
          "com.docker.swarm.service.name":"web","com.docker.swarm.task":"",
          "com.docker.swarm.task.id":"tsk1","com.docker.swarm.task.name":"web.1.tsk1"}},
       "NetworkSettings":{"SandboxID":"sb1","SandboxKey":"/var/run/docker/netns/abcdef012345",
          "Networks":{
            "fnet":{"IPAMConfig":{"IPv4Address":"10.99.16.7"},"Links":null,
                    "Aliases":["0123456789ab","www"],"NetworkID":"%s","EndpointID":"ep1",
                    "Gateway":"","IPAddress":"10.99.16.133","IPPrefixLen":20,"MacAddress":"02:42:0a:63:10:85"},
            "ingress":{"IPAMConfig":{"IPv4Address":"10.0.0.7"},"Aliases":["0123456789ab"],
                    "NetworkID":"ingressid000000000000000","EndpointID":"ep2","IPAddress":"10.0.0.7"},
            "docker_gwbridge":{"NetworkID":"gwbridgeid00000000000000","EndpointID":"ep3","IPAddress":"172.18.0.3"}}}}
      """.formatted(NET_ID);

  static Map<String, DockerNetwork> nets() {
    return DockerMirror.networks(new JsonArray(List.of(new JsonObject(PLUGIN_NET), new JsonObject(INGRESS),
        new JsonObject(BRIDGE), new JsonObject(OVERLAY_WITH_OPTION))));
  }

  @Test
  void pluginNetworksCarryTheirFlannelIdAndOnlySwarmScopeNetworksOtherThanIngressAreMirrored() {
    Map<String, DockerNetwork> nets = nets();
    assertThat(nets).containsOnlyKeys(NET_ID, "overlayid000000000000000");
    DockerNetwork n = nets.get(NET_ID);
    assertThat(n).isEqualTo(new DockerNetwork(NET_ID, "fnet", "flannel-np:latest", "f-123", "10.99.16.0/20"));
    assertThat(n.isFlannel()).isTrue();
    assertThat(nets.get("overlayid000000000000000").isFlannel()).as("Docker's overlay is never ours").isFalse();
    assertThat(DockerNetwork.fromJson(n.toJson())).isEqualTo(n);
  }

  /** A custom ingress (`docker network create --ingress`) may have any name: Docker's flag decides. */
  @Test
  void anIngressNetworkIsLeftOutWhateverItsNameAndSoAreAttachmentsToIt() {
    JsonObject mesh = new JsonObject(INGRESS).put("Name", "mesh");
    assertThat(DockerMirror.networks(new JsonArray(List.of(new JsonObject(PLUGIN_NET), mesh))))
        .containsOnlyKeys(NET_ID);
    ContainerRecord c = DockerMirror.container(new JsonObject(TASK), nets().keySet(), "node1", false);
    assertThat(c.networks()).as("no names or backends on the routing mesh").containsOnlyKeys(NET_ID);
  }

  /**
   * A Swarm network our IPAM refused (no flannel-id) stays in GET /networks unallocated, with JSON
   * nulls where arrays go (lab, dockerd 20.10); it once failed every mirror pass, so no service
   * reached etcd and no node had VIP rules.
   */
  @Test
  void anUnallocatedNetworkAndAServiceOnItDoNotStopTheOthersBeingMirrored() {
    JsonObject refused = new JsonObject("""
        {"Name":"nofid","Id":"refusedid0000000000000000","Scope":"swarm","Driver":"","EnableIPv6":false,
         "IPAM":{"Driver":"","Options":null,"Config":null},"Internal":false,"Attachable":true,
         "Ingress":false,"Containers":null,"Options":null,"Labels":null}
        """);
    Map<String, DockerNetwork> nets = DockerMirror.networks(new JsonArray(List.of(new JsonObject(PLUGIN_NET), refused)));
    assertThat(nets.get(NET_ID).subnet()).isEqualTo("10.99.16.0/20");
    if (nets.containsKey("refusedid0000000000000000")) {
      assertThat(nets.get("refusedid0000000000000000").subnet()).as("no address pool yet").isEmpty();
    }
    JsonObject pending = new JsonObject("""
        {"ID":"svc9","Spec":{"Name":"bad","TaskTemplate":{"Networks":[{"Target":"refusedid0000000000000000"}]},
         "EndpointSpec":{"Mode":"vip"}},"Endpoint":{"Spec":{"Mode":"vip"},"VirtualIPs":null}}
        """);
    Map<String, ServiceRecord> svcs = DockerMirror.services(new JsonArray(List.of(pending, new JsonObject(SERVICE))), nets);
    assertThat(svcs.get("svc1").vips()).containsExactly(Map.entry(NET_ID, "10.99.16.2"));
    assertThat(svcs.get("svc9").vips()).isEmpty();
  }

  @Test
  void servicesKeepTheirModeVipsAndAliasesOnMirroredNetworks() {
    Map<String, ServiceRecord> svcs = DockerMirror.services(
        new JsonArray(List.of(new JsonObject(SERVICE), new JsonObject(DNSRR))), nets());
    ServiceRecord web = svcs.get("svc1");
    assertThat(web.name()).isEqualTo("web");
    assertThat(web.mode()).isEqualTo(EndpointMode.VIP);
    assertThat(web.vips()).as("VIP without prefix, ingress left out").containsExactly(Map.entry(NET_ID, "10.99.16.2"));
    assertThat(web.aliases()).containsExactly(Map.entry(NET_ID, List.of("www", "web-alias")));
    ServiceRecord rr = svcs.get("svc2");
    assertThat(rr.mode()).isEqualTo(EndpointMode.DNSRR);
    assertThat(rr.vips()).isEmpty();
    assertThat(rr.aliases()).as("a Target given by name").containsExactly(Map.entry(NET_ID, List.of("rr2")));
    assertThat(ServiceRecord.fromJson(web.toJson())).isEqualTo(web);
  }

  @Test
  void aTaskContainerRecordsItsRealAddressThePlaceholderAndItsSwarmIdentity() {
    ContainerRecord c = DockerMirror.container(new JsonObject(TASK), nets().keySet(), "node1", false);
    assertThat(c.name()).isEqualTo("web.1.tsk1");
    assertThat(c.node()).isEqualTo("node1");
    assertThat(c.serviceId()).isEqualTo("svc1");
    assertThat(c.serviceName()).isEqualTo("web");
    assertThat(c.taskId()).isEqualTo("tsk1");
    assertThat(c.taskName()).isEqualTo("web.1.tsk1");
    assertThat(c.state()).isEqualTo("running");
    assertThat(c.sandboxKey()).isEqualTo("/var/run/docker/netns/abcdef012345");
    assertThat(c.networks()).containsOnlyKeys(NET_ID);
    assertThat(c.networks().get(NET_ID)).isEqualTo(
        new ContainerRecord.Attachment("10.99.16.133", "ep1", List.of("www"), "10.99.16.7"));
    assertThat(ContainerRecord.fromJson(c.toJson())).isEqualTo(c);
  }

  @Test
  void aContainerBeingStoppedOrNotYetHealthyLeavesTheBackends() {
    JsonObject j = new JsonObject(TASK);
    assertThat(DockerMirror.container(j, nets().keySet(), "node1", true).state()).isEqualTo("stopping");
    j.getJsonObject("State").put("Health", new JsonObject().put("Status", "starting"));
    ContainerRecord starting = DockerMirror.container(j, nets().keySet(), "node1", false);
    assertThat(starting.state()).isEqualTo("starting");
    assertThat(starting.running()).isFalse();
    j.getJsonObject("State").put("Health", new JsonObject().put("Status", "healthy"));
    assertThat(DockerMirror.container(j, nets().keySet(), "node1", false).running()).isTrue();
    j.getJsonObject("State").put("Running", false);
    assertThat(DockerMirror.container(j, nets().keySet(), "node1", false)).as("not running: no record").isNull();
  }

  @Test
  void aContainerOnlyOnLocalNetworksHasNoRecord() {
    JsonObject j = new JsonObject(TASK);
    assertThat(DockerMirror.container(j, Set.of("overlayid000000000000000"), "node1", false)).isNull();
  }

  @Test
  void onlyTerminatingSignalsMarkAContainerStopping() {
    assertThat(DockerVerticle.goingAway("kill", "15")).isTrue();
    assertThat(DockerVerticle.goingAway("kill", "9")).isTrue();
    assertThat(DockerVerticle.goingAway("kill", "1")).as("SIGHUP reloads, the container stays").isFalse();
    assertThat(DockerVerticle.goingAway("die", "")).isTrue();
    assertThat(DockerVerticle.goingAway("start", "")).isFalse();
  }

  /** {@code GET /tasks?filters={"service":["svc1"]}} during a scale 2 → 1 (shapes of dockerd 20.10). */
  static final String TASKS = """
      [{"ID":"tsk1","ServiceID":"svc1","NodeID":"node1","Slot":1,"DesiredState":"running",
        "Status":{"State":"running","ContainerStatus":{"ContainerID":"c1","PID":10}}},
       {"ID":"tsk2","ServiceID":"svc1","NodeID":"node2","Slot":2,"DesiredState":"shutdown",
        "Status":{"State":"running","ContainerStatus":{"ContainerID":"c2","PID":11}}},
       {"ID":"tsk3","ServiceID":"svc1","NodeID":"node1","Slot":3,"DesiredState":"shutdown",
        "Status":{"State":"shutdown","ContainerStatus":{"ContainerID":"c3","ExitCode":137}}},
       {"ID":"tsk4","ServiceID":"svc1","NodeID":"node2","Slot":4,"DesiredState":"remove",
        "Status":{"State":"running","ContainerStatus":{"ContainerID":"c4","PID":12}}},
       {"ID":"tsk5","ServiceID":"svc1","NodeID":"","Slot":5,"DesiredState":"shutdown",
        "Status":{"State":"pending"}},
       {"ID":"tsk6","ServiceID":"other","NodeID":"node1","Slot":1,"DesiredState":"shutdown",
        "Status":{"State":"running","ContainerStatus":{"ContainerID":"c6","PID":13}}}]
      """;

  @Test
  void onlyRunningTasksTheOrchestratorIsShuttingDownAreLeaving() {
    assertThat(DockerMirror.leavingTasks(new JsonArray(TASKS), "svc1")).containsExactly(
        new DockerMirror.LeavingTask("node2", "c2", "tsk2"), new DockerMirror.LeavingTask("node2", "c4", "tsk4"));
    assertThat(DockerMirror.leavingTasks(new JsonArray(TASKS), "nosuch")).isEmpty();
  }

  @Test
  void aRollingUpdateOrItsRollbackIsInProgressUntilCompletedOrPaused() {
    assertThat(DockerMirror.updating(new JsonObject(SERVICE))).as("no UpdateStatus: never updated").isFalse();
    for (String st : List.of("updating", "rollback_started")) {
      assertThat(DockerMirror.updating(new JsonObject(SERVICE).put("UpdateStatus", new JsonObject()
          .put("State", st).put("StartedAt", "2026-11-28T07:00:00Z")))).as(st).isTrue();
    }
    for (String st : List.of("completed", "paused", "rollback_completed", "rollback_paused")) {
      assertThat(DockerMirror.updating(new JsonObject(SERVICE).put("UpdateStatus", new JsonObject()
          .put("State", st)))).as(st).isFalse();
    }
  }

  @Test
  void aTaskMarkedStoppingStaysStoppingWhileItsContainerStillRuns() {
    ContainerRecord fresh = DockerMirror.container(new JsonObject(TASK), nets().keySet(), "node1", false);
    assertThat(fresh.state()).isEqualTo("running");
    ContainerRecord marked = DockerMirror.markStopping(fresh,
        new DockerMirror.LeavingTask("node1", fresh.containerId(), "tsk1"));
    assertThat(marked.state()).isEqualTo("stopping");
    assertThat(marked.withState("running")).isEqualTo(fresh);
    assertThat(DockerMirror.markStopping(marked, new DockerMirror.LeavingTask("node1", fresh.containerId(), "tsk1")))
        .as("already stopping: nothing to write").isNull();
    assertThat(DockerMirror.markStopping(fresh, new DockerMirror.LeavingTask("node1", fresh.containerId(), "tskX")))
        .as("another task's record is left alone").isNull();

    // the node's pass sees a running container; the stored record says stopping: it stays so
    ContainerRecord kept = DockerMirror.keepStopping(fresh, ContainerRecord.fromJson(marked.toJson()));
    assertThat(kept.state()).isEqualTo("stopping");
    assertThat(kept.running()).isFalse();
    assertThat(DockerMirror.keepStopping(fresh, fresh)).isEqualTo(fresh);
    assertThat(DockerMirror.keepStopping(fresh, null)).as("first record of a new container").isEqualTo(fresh);
    ContainerRecord otherTask = new ContainerRecord(fresh.containerId(), fresh.name(), fresh.hostname(), "node1",
        "svc1", "web", "tskOld", "web.1.tskOld", "stopping", fresh.sandboxKey(), fresh.networks());
    assertThat(DockerMirror.keepStopping(fresh, otherTask).state()).as("only the same task is sticky")
        .isEqualTo("running");
    JsonObject plain = new JsonObject(TASK);
    plain.getJsonObject("Config").put("Labels", new JsonObject());
    ContainerRecord notTask = DockerMirror.container(plain, nets().keySet(), "node1", false);
    assertThat(DockerMirror.keepStopping(notTask, notTask.withState("stopping")).state())
        .as("a plain container can be started again: not sticky").isEqualTo("running");
  }
}
