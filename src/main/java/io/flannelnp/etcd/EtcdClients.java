package io.flannelnp.etcd;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.ClientBuilder;
import io.flannelnp.config.Config.EtcdAuth;
import io.flannelnp.config.Config.EtcdTls;
import java.nio.charset.StandardCharsets;
import java.security.PrivateKey;
import java.security.cert.X509Certificate;
import java.util.List;
import java.util.Optional;

/**
 * The security part of every jetcd client the process builds (the daemon's store, replay and
 * record): one place, so no client can speak plaintext to an https:// endpoint or forget the
 * credentials. jetcd negotiates plaintext unless it is given an SSL context, whatever the
 * endpoint's scheme says.
 */
public final class EtcdClients {
  private EtcdClients() {}

  /** {@link #withTls} and then etcd's user/password authentication when {@code auth} is present. */
  public static ClientBuilder secure(ClientBuilder b, Optional<EtcdTls> tls, Optional<EtcdAuth> auth) {
    withTls(b, tls);
    auth.ifPresent(a -> b.user(ByteSequence.from(a.user(), StandardCharsets.UTF_8))
        .password(ByteSequence.from(a.password(), StandardCharsets.UTF_8)));
    return b;
  }

  /**
   * Gives {@code b} an SSL context when {@code tls} is present: verified against the CA file if
   * there is one, else against the JVM's default trust store (the system's CAs), with the client
   * certificate if there is one (its key in any form {@link PemKeys} reads).
   */
  public static ClientBuilder withTls(ClientBuilder b, Optional<EtcdTls> tls) {
    if (tls.isEmpty()) {
      return b;
    }
    EtcdTls t = tls.get();
    try {
      PrivateKey key = t.keyFile().isPresent() ? PemKeys.privateKey(t.keyFile().get()) : null;
      List<X509Certificate> chain = t.certFile().isPresent() ? PemKeys.certificates(t.certFile().get()) : List.of();
      return b.sslContext(ssl -> {
        t.caFile().ifPresent(ca -> ssl.trustManager(ca.toFile()));
        if (key != null) {
          ssl.keyManager(key, chain.toArray(X509Certificate[]::new));
        }
      });
    } catch (PemKeys.BadPemException e) {
      throw new IllegalArgumentException(e.getMessage(), e);
    } catch (Exception e) {
      throw new IllegalArgumentException("cannot load etcd TLS material: " + e.getMessage(), e);
    }
  }
}
