package io.flannelnp.replay;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.common.exception.CompactedException;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.WatchOption;
import io.etcd.jetcd.watch.WatchResponse;
import io.flannelnp.config.Config.EtcdTls;
import io.flannelnp.etcd.EtcdClients;
import io.flannelnp.etcd.KeyValue;
import io.flannelnp.etcd.WatchEvent;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A stretch of etcd history under one prefix: the keys as they were just before
 * {@code fromRevision} and every revision's events after it, in order. Read from a live etcd (a
 * listing at {@code fromRevision - 1} plus a jetcd watch from {@code fromRevision}) or from a file
 * ({@code record} writes one: JSON lines, a "base" line then one "revision" line per revision), so
 * a user can attach the history of a bug to a report.
 */
public record Recording(String prefix, long fromRevision, long toRevision, List<KeyValue> base, List<Step> steps) {

  /** The events of one etcd revision (one transaction). */
  public record Step(long revision, List<WatchEvent> events) {}

  /** Bad input or an etcd that cannot deliver the history asked for: the message says which. */
  public static class ReplayException extends Exception {
    public ReplayException(String message) {
      super(message);
    }
  }

  /** A {@code --file} that is missing or is not a recording: a bad argument, not a failure of etcd. */
  public static final class BadFileException extends ReplayException {
    public BadFileException(String message) {
      super(message);
    }
  }

  /** With the daemon's TLS and auth settings ({@link io.flannelnp.etcd.EtcdClients}): https:// is never plaintext. */
  public static Recording fromEtcd(List<String> endpoints, Optional<EtcdTls> tls,
      Optional<io.flannelnp.config.Config.EtcdAuth> auth, String prefix, long from, long to, long timeoutMs)
      throws ReplayException, InterruptedException {
    ByteSequence root = ByteSequence.from(prefix + "/", StandardCharsets.UTF_8);
    try (Client client = EtcdClients.secure(Client.builder().endpoints(endpoints.toArray(String[]::new)), tls, auth)
        .build()) {
      long head;
      List<KeyValue> base = new ArrayList<>();
      try {
        head = client.getKVClient().get(root, GetOption.builder().isPrefix(true).withCountOnly(true).build())
            .get(timeoutMs, TimeUnit.MILLISECONDS).getHeader().getRevision();
        if (from > head) {
          throw new ReplayException("--from-revision " + from + " is in the future: etcd is at revision " + head);
        }
        if (from > 1) { // revision 0 would mean "now" to etcd; before revision 1 nothing exists
          client.getKVClient().get(root, GetOption.builder().isPrefix(true).withRevision(from - 1).build())
              .get(timeoutMs, TimeUnit.MILLISECONDS).getKvs().forEach(kv -> base.add(kvOf(kv)));
        }
      } catch (ExecutionException | java.util.concurrent.TimeoutException e) {
        if (String.valueOf(e.getCause()).contains("compacted")) {
          throw compacted(client, root, from, timeoutMs);
        }
        throw new ReplayException("etcd " + String.join(",", endpoints) + " did not answer"
            + (e.getCause() == null ? " within " + timeoutMs + " ms" : ": " + e.getCause().getMessage()));
      }
      long end = to <= 0 ? head : Math.min(to, head);
      Map<Long, List<WatchEvent>> byRev = new TreeMap<>();
      LinkedBlockingQueue<Object> q = new LinkedBlockingQueue<>();
      WatchOption opt = WatchOption.builder().isPrefix(true).withRevision(from).withPrevKV(true)
          .withProgressNotify(true).build();
      try (var w = client.getWatchClient().watch(root, opt, q::add, q::add)) {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        long seen = from - 1;
        long quietSince = System.nanoTime();
        boolean asked = false;
        while (seen < end) {
          // etcd 3.4 answers a progress request even before an unsynced watch caught up, so ask only
          // once the catch-up has gone quiet (history arrives in a burst); then its revision is real
          if (!asked && System.nanoTime() - quietSince > TimeUnit.MILLISECONDS.toNanos(500)) {
            client.getWatchClient().requestProgress();
            asked = true;
          }
          Object o = q.poll(100, TimeUnit.MILLISECONDS);
          if (o == null) {
            continue;
          }
          if (o instanceof CompactedException) {
            throw compacted(client, root, from, timeoutMs);
          }
          if (o instanceof Throwable t) {
            throw new ReplayException("etcd watch from revision " + from + " failed: " + t);
          }
          if (o instanceof WatchResponse r) {
            for (io.etcd.jetcd.watch.WatchEvent e : r.getEvents()) {
              long rev = e.getKeyValue().getModRevision();
              seen = Math.max(seen, rev);
              if (rev <= end) {
                byRev.computeIfAbsent(rev, k -> new ArrayList<>()).add(event(e));
              }
            }
            if (!r.getEvents().isEmpty()) {
              quietSince = System.nanoTime();
              asked = false;
            } else if (r.isProgressNotify() && asked) {
              seen = Math.max(seen, r.getHeader().getRevision());
            }
          }
          if (System.nanoTime() > deadline) {
            throw new ReplayException("etcd watch from revision " + from + " reached only revision " + seen
                + " of " + end + " within " + timeoutMs + " ms");
          }
        }
      }
      List<Step> steps = new ArrayList<>();
      byRev.forEach((rev, evs) -> steps.add(new Step(rev, List.copyOf(evs))));
      return new Recording(prefix, from, end, List.copyOf(base), List.copyOf(steps));
    }
  }

  /** Names the oldest revision still available: a watch from revision 1 reports where compaction cut. */
  private static ReplayException compacted(Client client, ByteSequence root, long from, long timeoutMs)
      throws InterruptedException {
    LinkedBlockingQueue<Throwable> q = new LinkedBlockingQueue<>();
    try (var w = client.getWatchClient().watch(root, WatchOption.builder().isPrefix(true).withRevision(1).build(),
        r -> { }, q::add)) {
      Throwable t = q.poll(timeoutMs, TimeUnit.MILLISECONDS);
      if (t instanceof CompactedException ce) {
        long oldest = ce.getCompactedRevision();
        return new ReplayException("revision " + (from - 1) + " is compacted: the oldest revision etcd still has is "
            + oldest + "; use --from-revision " + (oldest + 1) + " or later");
      }
    }
    return new ReplayException("revision " + (from - 1) + " is compacted (etcd did not say up to where)");
  }

  private static WatchEvent event(io.etcd.jetcd.watch.WatchEvent e) {
    KeyValue kv = kvOf(e.getKeyValue());
    KeyValue prev = e.getPrevKV() == null || e.getPrevKV().getKey().isEmpty() ? null : kvOf(e.getPrevKV());
    return new WatchEvent(e.getEventType() == io.etcd.jetcd.watch.WatchEvent.EventType.DELETE
        ? WatchEvent.Type.DELETE : WatchEvent.Type.PUT, kv.key(), kv, prev);
  }

  private static KeyValue kvOf(io.etcd.jetcd.KeyValue kv) {
    return new KeyValue(kv.getKey().toString(StandardCharsets.UTF_8), kv.getValue().toString(StandardCharsets.UTF_8),
        kv.getCreateRevision(), kv.getModRevision(), kv.getVersion(), kv.getLease());
  }

  // ---- file format -----------------------------------------------------------------------

  public void write(Writer out) throws IOException {
    JsonArray kvs = new JsonArray();
    base.forEach(kv -> kvs.add(kv(kv)));
    out.write(new JsonObject().put("type", "base").put("prefix", prefix).put("fromRevision", fromRevision)
        .put("toRevision", toRevision).put("kvs", kvs).encode() + "\n");
    for (Step s : steps) {
      JsonArray evs = new JsonArray();
      for (WatchEvent e : s.events()) {
        evs.add(new JsonObject().put("type", e.type().name()).put("key", e.key()).put("kv", kv(e.kv())));
      }
      out.write(new JsonObject().put("type", "revision").put("revision", s.revision()).put("events", evs).encode()
          + "\n");
    }
    out.flush();
  }

  /**
   * Reads a file {@code record} wrote. Anything else (not JSON, a field missing or of the wrong
   * type, revisions out of order) is a {@link BadFileException} naming the line and what is wrong
   * with it: the replay never starts from half a history.
   */
  public static Recording read(Path file) throws ReplayException, IOException {
    if (!Files.isRegularFile(file)) {
      throw new BadFileException("--file " + file + ": no such file");
    }
    try (BufferedReader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
      String first = r.readLine();
      JsonObject head;
      try {
        head = first == null ? null : new JsonObject(first);
      } catch (RuntimeException e) {
        head = null;
      }
      if (head == null || !"base".equals(head.getValue("type"))) {
        throw new BadFileException("--file " + file + ": line 1 is not a recording's base line (write one with"
            + " `record --from-revision N --out FILE`)");
      }
      String prefix;
      long fromRevision;
      long toRevision;
      List<KeyValue> base = new ArrayList<>();
      try {
        prefix = string(head, "prefix");
        fromRevision = number(head, "fromRevision");
        toRevision = number(head, "toRevision");
        for (Object o : array(head, "kvs")) {
          base.add(kv(object(o, "an entry of kvs")));
        }
      } catch (RuntimeException e) {
        throw new BadFileException("--file " + file + ": line 1 is not a recording's base line: " + e.getMessage());
      }
      List<Step> steps = new ArrayList<>();
      String line;
      int n = 1;
      long last = fromRevision - 1;
      while ((line = r.readLine()) != null) {
        n++;
        if (line.isBlank()) {
          continue;
        }
        try {
          JsonObject o = new JsonObject(line);
          List<WatchEvent> evs = new ArrayList<>();
          for (Object x : array(o, "events")) {
            JsonObject e = object(x, "an event");
            KeyValue kv = kv(object(e.getValue("kv"), "an event's kv"));
            String type = string(e, "type");
            if (!type.equals("PUT") && !type.equals("DELETE")) {
              throw new IllegalArgumentException("event type '" + type + "' is neither PUT nor DELETE");
            }
            evs.add(new WatchEvent(WatchEvent.Type.valueOf(type), kv.key(), kv, null));
          }
          long rev = number(o, "revision");
          if (rev <= last) {
            throw new IllegalArgumentException("revision " + rev + " does not follow revision " + last);
          }
          last = rev;
          steps.add(new Step(rev, List.copyOf(evs)));
        } catch (RuntimeException e) {
          throw new BadFileException("--file " + file + ": line " + n + " is not a revision line: " + e.getMessage());
        }
      }
      return new Recording(prefix, fromRevision, toRevision, List.copyOf(base), List.copyOf(steps));
    }
  }

  private static JsonObject kv(KeyValue kv) {
    return new JsonObject().put("key", kv.key()).put("value", kv.value()).put("createRevision", kv.createRevision())
        .put("modRevision", kv.modRevision()).put("version", kv.version()).put("lease", kv.lease());
  }

  private static KeyValue kv(JsonObject o) {
    Object value = o.getValue("value", "");
    if (!(value instanceof String v)) {
      throw new IllegalArgumentException("\"value\" of key " + o.getValue("key") + " is not a string");
    }
    return new KeyValue(string(o, "key"), v, optionalNumber(o, "createRevision"), optionalNumber(o, "modRevision"),
        optionalNumber(o, "version"), optionalNumber(o, "lease"));
  }

  // the file's fields, each checked for its type: a message names what is missing or wrong

  private static String string(JsonObject o, String field) {
    if (!(o.getValue(field) instanceof String s)) {
      throw new IllegalArgumentException("\"" + field + "\" is missing or not a string");
    }
    return s;
  }

  private static long number(JsonObject o, String field) {
    if (!(o.getValue(field) instanceof Number v) || v.longValue() < 0) {
      throw new IllegalArgumentException("\"" + field + "\" is missing or not a revision number");
    }
    return v.longValue();
  }

  private static long optionalNumber(JsonObject o, String field) {
    return o.getValue(field) == null ? 0L : number(o, field);
  }

  private static JsonArray array(JsonObject o, String field) {
    if (!(o.getValue(field) instanceof JsonArray a)) {
      throw new IllegalArgumentException("\"" + field + "\" is missing or not a list");
    }
    return a;
  }

  private static JsonObject object(Object x, String what) {
    if (!(x instanceof JsonObject j)) {
      throw new IllegalArgumentException(what + " is not an object");
    }
    return j;
  }
}
