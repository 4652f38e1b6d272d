package io.flannelnp.config;

import static org.assertj.core.api.Assertions.assertThat;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Every setting an operator can give is in the README's table and settable in the plugin, with its default. */
class SettingsDocumentedTest {
  static Path root() {
    Path here = Path.of("").toAbsolutePath();
    return Files.exists(here.resolve("plugin-bundle")) ? here : here.getParent();
  }

  @Test
  void everySettingIsInTheReadmeTableWithItsDefault() throws Exception {
    String readme = Files.readString(root().resolve("README.md"));
    for (Setting s : Setting.values()) {
      String def = s.defaultValue().isEmpty() ? "(empty)" : "`" + s.defaultValue() + "`";
      assertThat(readme).as(s.name()).contains("| `" + s.name() + "` | " + def + " |");
    }
  }

  @Test
  void everySettingIsAnEnvOfThePluginWithItsDefault() throws Exception {
    JsonObject cfg = new JsonObject(Files.readString(root().resolve("plugin-bundle/config.json")));
    JsonArray env = cfg.getJsonArray("Env", cfg.getJsonArray("env"));
    Map<String, JsonObject> byName = new HashMap<>();
    env.forEach(e -> byName.put(((JsonObject) e).getString("Name", ((JsonObject) e).getString("name")), (JsonObject) e));
    for (Setting s : Setting.values()) {
      JsonObject e = byName.get(s.name());
      assertThat(e).as(s.name() + " in plugin-bundle/config.json").isNotNull();
      String value = e.getString("Value", e.getString("value"));
      if (s == Setting.PLUGIN_SOCKET) {
        assertThat(value).isEqualTo("/run/docker/plugins/flannel-np.sock"); // where Docker looks for it
      } else {
        assertThat(value).as(s.name()).isEqualTo(s.defaultValue());
      }
    }
    assertThat(byName.keySet()).as("no env the daemon does not read").hasSameSizeAs(Setting.values());
  }
}
