package io.flannelnp.bus;

import io.flannelnp.dns.DnsMessage;
import io.flannelnp.docker.DockerMessage;
import io.flannelnp.etcd.EtcdMessage;
import io.flannelnp.flannel.FlannelMessage;
import io.vertx.core.eventbus.EventBus;
import java.util.ArrayList;
import java.util.List;

/**
 * Registers a local codec for every concrete message record. The families are sealed, so the
 * list is complete by construction: a new record in a family is registered without touching this.
 */
public final class Codecs {
  private Codecs() {}

  /** The sealed message families and the standalone records sent on the bus. */
  static final List<Class<?>> ROOTS = List.of(EtcdMessage.class, FlannelMessage.class, DnsMessage.class,
      DockerMessage.class, Observed.class, Ack.class);

  public static void registerAll(EventBus bus) {
    for (Class<?> c : messageTypes()) {
      register(bus, c);
    }
  }

  private static <T> void register(EventBus bus, Class<T> type) {
    bus.registerDefaultCodec(type, new LocalCodec<>(type));
  }

  /** Every concrete record type reachable from the roots. */
  public static List<Class<?>> messageTypes() {
    List<Class<?>> out = new ArrayList<>();
    for (Class<?> root : ROOTS) {
      collect(root, out);
    }
    return out;
  }

  private static void collect(Class<?> c, List<Class<?>> out) {
    if (c.isSealed()) {
      for (Class<?> sub : c.getPermittedSubclasses()) {
        collect(sub, out);
      }
    } else if (c.isRecord()) {
      out.add(c);
    } else {
      throw new IllegalStateException(c + " is neither a sealed family nor a record");
    }
  }
}
