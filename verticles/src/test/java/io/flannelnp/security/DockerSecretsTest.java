package io.flannelnp.security;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.Dockerd;
import io.flannelnp.testing.Poll;
import java.net.http.WebSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * What runs inside containers stays out of the plugin's log and console (review M5): a real
 * dockerd 20.10 names the whole command of every {@code docker exec} and every health-check probe
 * in its exec_create/exec_start events. Secrets given that way, and a command line built to forge
 * a log line, must reach neither the daemon's log nor a console; the container's lifecycle events
 * still do.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class DockerSecretsTest {
  static Dockerd dockerd;
  static SecurityLab lab;
  static final List<String> containers = new ArrayList<>();

  @BeforeAll
  static void up() throws Exception {
    dockerd = Dockerd.start();
    lab = new SecurityLab("fns-docker");
    lab.env.put("DOCKER_SOCKET", dockerd.socket().toString());
    lab.env.put("ADMIN_INSECURE_LOOPBACK", "true");
    lab.start();
  }

  @AfterAll
  static void down() throws Exception {
    try {
      for (String c : containers) {
        dockerd.docker("rm", "-f", c);
      }
      if (lab != null) {
        lab.daemon.stop(10, TimeUnit.SECONDS);
        lab.daemon = null;
        lab.etcd.deletePrefix(lab.prefix + "/").await(5, TimeUnit.SECONDS);
        lab.close();
      }
    } finally {
      if (dockerd != null) {
        dockerd.close();
      }
    }
  }

  @Test
  void execAndHealthCheckCommandLinesReachNeitherTheLogNorTheConsole() throws Exception {
    List<String> frames = new CopyOnWriteArrayList<>();
    WebSocket console = ConsoleAttackTest.console(lab.adminPort, null, frames, "console.docker.events");
    String secret = "s3cret-" + lab.run;
    String forged = "2026-01-01T00:00:00.000Z ERROR Daemon: forged by docker exec";
    try {
      String c = run("fns-exec-" + lab.run);
      String hc = run("fns-health-" + lab.run, "--health-cmd", "echo health-" + secret + " >/dev/null",
          "--health-interval", "1s");
      dockerd.docker("exec", c, "echo", "exec-" + secret).ok();
      dockerd.docker("exec", c, "sh", "-c", "true '\n" + forged + "'").ok();
      dockerd.docker("top", c).ok();
      Poll.await("the health check ran and the events reached the console", Duration.ofSeconds(30),
          () -> dockerd.docker("inspect", "-f", "{{.State.Health.Status}}", hc).out().strip().equals("healthy")
              && frames.stream().anyMatch(f -> f.contains("\"health_status: healthy\"")));
      dockerd.docker("exec", c, "echo", "late-" + secret).ok();
      String stopped = dockerd.docker("stop", "-t", "1", c).ok().out().strip();
      Poll.await("the stop reached the console", Duration.ofSeconds(20),
          () -> frames.stream().anyMatch(f -> f.contains("\"action\":\"die\"")));
      assertThat(stopped).isEqualTo(c);
    } finally {
      console.abort();
    }
    String all = String.join("\n", frames);
    String log = lab.log();
    System.out.println("console frames: " + frames.size());
    assertThat(all).as("the console still shows the containers' lifecycle").contains("\"action\":\"start\"",
        "\"action\":\"die\"", "\"health_status: healthy\"");
    assertThat(log).as("the log too").contains("docker container start", "docker container die");
    assertThat(all).as("console").doesNotContain(secret).doesNotContain("exec_").doesNotContain("forged");
    assertThat(log).as("log").doesNotContain(secret).doesNotContain("exec_create").doesNotContain("forged by docker");
    assertThat(log.lines()).noneMatch(l -> l.startsWith("2026-01-01T00:00:00.000Z"));
  }

  static String run(String name, String... opts) {
    List<String> argv = new ArrayList<>(List.of("run", "-d", "--name", name));
    argv.addAll(List.of(opts));
    argv.addAll(List.of(Dockerd.IMAGE, "sleep", "600"));
    String id = dockerd.docker(argv.toArray(String[]::new)).ok().out().strip();
    containers.add(id);
    return id;
  }
}
