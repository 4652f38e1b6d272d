package io.flannelnp.dns;

import static org.assertj.core.api.Assertions.assertThat;

import io.flannelnp.testing.DaemonProcess;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * hook/test/e2e-docker.sh against the packaged daemon: a real dockerd 20.10 whose default runtime
 * is the wrapper, 10 containers whose first DNS query must be answered by flannel-np, and
 * containers that still start while flannel-np is frozen or dead. The script removes everything
 * it made, failed or not. Needs root, docker.io (dockerd 20.10, runc), busybox-static, etcd,
 * python3, curl.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
class HookDockerIT {
  @Test
  void everyFirstQueryIsAnsweredByFlannelNpAndContainersStartWhateverTheDaemonDoes() {
    String script = HookBinaries.dir().resolve("test/e2e-docker.sh").toString();
    HookBinaries.Result r = HookBinaries.run(List.of("env", "FNP_JAR=" + DaemonProcess.jar().toAbsolutePath(),
        "RUNS=10", script), "", 9 * 60_000);
    assertThat(r.exit()).as(r.err()).isZero();
    assertThat(r.err()).contains("with the hook:    10/10 first queries answered by flannel-np")
        .contains("flannel-np answered 10 hooks 'injected'").contains("e2e: PASS");
    assertThat(io.flannelnp.testing.Netns.list()).noneMatch(n -> n.startsWith("fnh-e2e-"));
  }
}
