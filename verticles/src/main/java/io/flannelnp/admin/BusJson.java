package io.flannelnp.admin;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.lang.reflect.RecordComponent;
import java.util.Collection;
import java.util.Map;

/**
 * Bus bodies are records passed by reference (their codec refuses the wire); the console bridge
 * and replay need JSON. Records become objects of their components, recursively.
 */
public final class BusJson {
  private BusJson() {}

  public static JsonObject of(Object record) {
    JsonObject o = new JsonObject().put("@type", record.getClass().getSimpleName());
    if (record instanceof Record) {
      for (RecordComponent c : record.getClass().getRecordComponents()) {
        try {
          o.put(c.getName(), value(c.getAccessor().invoke(record)));
        } catch (ReflectiveOperationException e) {
          o.put(c.getName(), "(unreadable: " + e + ")");
        }
      }
    } else {
      o.put("value", String.valueOf(record));
    }
    return o;
  }

  static Object value(Object v) {
    if (v == null || v instanceof String || v instanceof Number || v instanceof Boolean) {
      return v;
    }
    if (v instanceof Record) {
      JsonObject o = of(v);
      o.remove("@type");
      return o;
    }
    if (v instanceof Map<?, ?> m) {
      JsonObject o = new JsonObject();
      m.forEach((k, x) -> o.put(String.valueOf(k), value(x)));
      return o;
    }
    if (v instanceof Collection<?> c) {
      JsonArray a = new JsonArray();
      c.forEach(x -> a.add(value(x)));
      return a;
    }
    if (v instanceof java.util.Optional<?> opt) {
      return opt.map(BusJson::value).orElse(null);
    }
    return v.toString();
  }
}
