package io.flannelnp.api;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.util.Map;
import java.util.TreeMap;

/**
 * Typed, checked access to a plugin request body. A missing or mistyped field is a 400 whose
 * message names the call, the field and what was expected, so Docker (and a person) sees exactly
 * what was wrong; nothing has been changed when it is thrown.
 */
final class Req {
  private final String call;
  private final JsonObject body;

  Req(String call, JsonObject body) {
    this.call = call;
    this.body = body;
  }

  PluginError bad(String what) {
    return new PluginError(400, call + ": " + what);
  }

  String string(String field) {
    Object v = body.getValue(field);
    if (v == null) {
      throw bad("missing field " + field);
    }
    if (!(v instanceof String s)) {
      throw bad("field " + field + " must be a string, not " + typeOf(v));
    }
    return s;
  }

  String optString(String field) {
    Object v = body.getValue(field);
    if (v == null) {
      return "";
    }
    if (!(v instanceof String s)) {
      throw bad("field " + field + " must be a string, not " + typeOf(v));
    }
    return s;
  }

  boolean optBool(String field) {
    Object v = body.getValue(field);
    if (v == null) {
      return false;
    }
    if (!(v instanceof Boolean b)) {
      throw bad("field " + field + " must be true or false, not " + typeOf(v));
    }
    return b;
  }

  JsonObject optObject(String field) {
    Object v = body.getValue(field);
    if (v == null) {
      return new JsonObject();
    }
    if (!(v instanceof JsonObject o)) {
      throw bad("field " + field + " must be an object, not " + typeOf(v));
    }
    return o;
  }

  JsonArray optArray(String field) {
    Object v = body.getValue(field);
    if (v == null) {
      return new JsonArray();
    }
    if (!(v instanceof JsonArray a)) {
      throw bad("field " + field + " must be an array, not " + typeOf(v));
    }
    return a;
  }

  /** Docker's option maps are map[string]string; anything else in them is refused. */
  Map<String, String> stringMap(String field) {
    JsonObject o = optObject(field);
    Map<String, String> out = new TreeMap<>();
    for (Map.Entry<String, Object> e : o) {
      if (!(e.getValue() instanceof String s)) {
        throw bad("option " + field + "." + e.getKey() + " must be a string, not " + typeOf(e.getValue()));
      }
      out.put(e.getKey(), s);
    }
    return out;
  }

  /** A Docker ID: 12-64 characters of [A-Za-z0-9] (swarm IDs are 25, local ones 64 hex). */
  String id(String field) {
    String v = string(field);
    if (!v.matches("[A-Za-z0-9]{12,64}")) {
      throw bad("field " + field + " is not a Docker ID (12-64 letters and digits): '" + clip(v) + "'");
    }
    return v;
  }

  static String typeOf(Object v) {
    if (v instanceof JsonObject) {
      return "an object";
    }
    if (v instanceof JsonArray) {
      return "an array";
    }
    if (v instanceof Number) {
      return "a number";
    }
    if (v instanceof Boolean) {
      return "a boolean";
    }
    return "a " + v.getClass().getSimpleName();
  }

  static String clip(String s) {
    String t = s.replaceAll("[\\p{Cntrl}]", "?");
    return t.length() > 80 ? t.substring(0, 80) + "..." : t;
  }
}
