package io.flannelnp.docker;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class DockerVerticleTest {

  @ParameterizedTest(name = "server {0} (min {1}) → {2}")
  @CsvSource({
      "1.41, 1.12, 1.41", // Docker 20.10: its newest, below ours
      "1.47, 1.24, 1.47",
      "1.52, 1.44, 1.47", // Docker 29.0-29.2: ours is new enough
      "1.52, 1.24, 1.47", // Docker 29.3+
      "1.53, 1.48, 1.48", // a future server that refuses ours: speak its minimum
      "1.9, 1.8, 1.9",    // numeric, not lexical, comparison
  })
  void negotiatesTheNewestVersionBothSpeakButNeverBelowTheServersMinimum(String max, String min, String want) {
    assertThat(DockerVerticle.negotiate(max, min)).isEqualTo(want);
  }
}
