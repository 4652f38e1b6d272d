package io.flannelnp.dns;

import io.flannelnp.config.Config;
import io.flannelnp.etcd.EtcdSchema;
import java.util.regex.Pattern;

/**
 * The DNS plane for tests and benchmarks that drive it directly with namespaces made by
 * {@code ip netns add}: those live in /run/netns, which the plane refuses by default (only
 * Docker's netns directory holds containers).
 */
public final class TestSandboxes {
  static final Pattern NETNS_TOO = Pattern.compile("(/var)?/run/(docker/)?netns/[A-Za-z0-9._-]+");

  private TestSandboxes() {}

  /** {@link DnsListener.Options#DEFAULTS} that also accept /run/netns/NAME. */
  static DnsListener.Options options() {
    return DnsListener.Options.DEFAULTS.withSandboxes(NETNS_TOO);
  }

  /**
   * The daemon's DNS plane from {@code config}, also accepting /run/netns/NAME, with a per
   * container budget of {@code queryRate} queries per second (0: none) whatever DNS_QUERY_RATE
   * says: a benchmark of the resolver itself sends far more from one client.
   */
  public static DnsVerticle verticle(Config config, EtcdSchema schema, int queryRate) {
    return new DnsVerticle(config.nodeName(), config.dnsDockerCompatibilityMode(), config.dnsTtl(), schema,
        options().withQueryRate(queryRate));
  }
}
