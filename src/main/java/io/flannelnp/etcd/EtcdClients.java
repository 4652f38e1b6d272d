package io.flannelnp.etcd;

import io.etcd.jetcd.ClientBuilder;
import io.flannelnp.config.Config.EtcdTls;
import java.util.Optional;

/**
 * The TLS part of every jetcd client the process builds (the daemon's store, replay and record):
 * one place, so no client can speak plaintext to an https:// endpoint. jetcd negotiates plaintext
 * unless it is given an SSL context, whatever the endpoint's scheme says.
 */
public final class EtcdClients {
  private EtcdClients() {}

  /**
   * Gives {@code b} an SSL context when {@code tls} is present: verified against the CA file if
   * there is one, else against the JVM's default trust store (the system's CAs), with the client
   * certificate if there is one.
   */
  public static ClientBuilder withTls(ClientBuilder b, Optional<EtcdTls> tls) {
    if (tls.isEmpty()) {
      return b;
    }
    EtcdTls t = tls.get();
    try {
      return b.sslContext(ssl -> {
        t.caFile().ifPresent(ca -> ssl.trustManager(ca.toFile()));
        if (t.certFile().isPresent()) {
          ssl.keyManager(t.certFile().get().toFile(), t.keyFile().orElseThrow().toFile());
        }
      });
    } catch (Exception e) {
      throw new IllegalArgumentException("cannot load etcd TLS material: " + e.getMessage(), e);
    }
  }
}
