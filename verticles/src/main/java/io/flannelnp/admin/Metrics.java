package io.flannelnp.admin;

import io.flannelnp.ipam.IpamException;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.DistributionSummary;
import io.micrometer.core.instrument.Timer;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import io.vertx.core.Future;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * The one metrics facade of the daemon: a Prometheus registry that /metrics renders. Most series
 * are derived from bus messages by {@link AdminVerticle}; the few things only a plane sees (a DNS
 * answer, an IPAM allocation) are counted here with one call at the place it happens. Calls are
 * cheap and safe from any thread, with or without an admin server.
 */
public final class Metrics {
  public static final PrometheusMeterRegistry REGISTRY = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);

  private Metrics() {}

  static {
    // fnp_build_info{version="…"} 1: which build a node runs, next to its other series
    io.prometheus.metrics.core.metrics.Info.builder().name("fnp_build_info").help("the daemon's build (value 1)")
        .labelNames("version").register(REGISTRY.getPrometheusRegistry()).addLabelValues(io.flannelnp.Version.string());
  }

  private static final String[] RCODES = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"};

  /** A DNS query answered here; {@code rcode} from the answer's header, {@code nanos} since it arrived (negative: unknown, not timed). */
  public static void dnsQuery(int rcode, long nanos) {
    Counter.builder("fnp_dns_queries").description("DNS queries answered, by rcode")
        .tag("rcode", rcode >= 0 && rcode < RCODES.length ? RCODES[rcode] : String.valueOf(rcode))
        .register(REGISTRY).increment();
    if (nanos < 0) {
      return; // no start time known
    }
    Timer.builder("fnp_dns_query").description("DNS answer latency").publishPercentileHistogram()
        .serviceLevelObjectives(Duration.ofMillis(1), Duration.ofMillis(10), Duration.ofMillis(100))
        .minimumExpectedValue(Duration.ofNanos(10_000)).maximumExpectedValue(Duration.ofSeconds(5))
        .register(REGISTRY).record(nanos, TimeUnit.NANOSECONDS);
  }

  /** A container's query over its DNS_QUERY_RATE budget: not answered. */
  public static void dnsRateLimited() {
    Counter.builder("fnp_dns_rate_limited").description("DNS queries over their container's DNS_QUERY_RATE, not answered")
        .register(REGISTRY).increment();
  }

  /** A query passed to Docker's resolver (not one of ours). */
  public static void dnsForwarded() {
    Counter.builder("fnp_dns_forwarded").description("DNS queries forwarded upstream").register(REGISTRY).increment();
  }

  /** A forwarded query that upstream never answered in time (the client got SERVFAIL). */
  public static void dnsForwardTimeout() {
    Counter.builder("fnp_dns_forward_timeouts").description("forwarded DNS queries that timed out")
        .register(REGISTRY).increment();
  }

  /**
   * Our DNS table in a container was re-created by the periodic check; {@code what} "missing" or
   * "altered" (flushed, or a rule or chain changed).
   */
  public static void dnsTableRepaired(String what) {
    Counter.builder("fnp_dns_table_repairs").description("DNS tables in containers re-created by the periodic check")
        .tag("what", what).register(REGISTRY).increment();
  }

  /**
   * Counts an IPAM request's outcome: {@code kind} "pool" or "address"; a refusal because the range
   * is full counts as exhaustion. Returns {@code f} itself.
   */
  public static <T> Future<T> ipam(String kind, Future<T> f) {
    return f.andThen(ar -> {
      if (ar.succeeded()) {
        Counter.builder("fnp_ipam_allocations").description("IPAM allocations that succeeded").tag("kind", kind)
            .register(REGISTRY).increment();
      } else if (ar.cause() instanceof IpamException e && e.reason() == IpamException.Reason.EXHAUSTED) {
        Counter.builder("fnp_ipam_exhausted").description("IPAM requests refused because the range is exhausted")
            .tag("kind", kind).register(REGISTRY).increment();
      }
    });
  }

  /**
   * A leader's ReleasePool of a network: "removed" (Docker freed it), "deferred" (freed, endpoints
   * left) or "rollback" (Swarm undoing a failed allocation: nothing changed).
   */
  public static void poolRelease(String outcome) {
    Counter.builder("fnp_ipam_pool_releases").description("leader ReleasePool calls by outcome")
        .tag("outcome", outcome).register(REGISTRY).increment();
  }

  /** A record the garbage collector freed, by kind (allocation, endpoint, pool-ref, network). */
  public static void gcReclaimed(String kind) {
    Counter.builder("fnp_gc_reclaimed").description("records freed because Docker no longer holds them")
        .tag("kind", kind).register(REGISTRY).increment();
  }

  /** A record the garbage collector wrote back because Docker holds it and etcd had lost it. */
  public static void gcRestored(String kind) {
    Counter.builder("fnp_gc_restored").description("records restored from Docker's state")
        .tag("kind", kind).register(REGISTRY).increment();
  }

  static Timer timer(String name, String description, String plane) {
    return Timer.builder(name).description(description).tag("plane", plane).publishPercentileHistogram()
        .minimumExpectedValue(Duration.ofNanos(100_000)).maximumExpectedValue(Duration.ofSeconds(30))
        .register(REGISTRY);
  }

  static DistributionSummary size(String name, String description, String plane) {
    return DistributionSummary.builder(name).description(description).tag("plane", plane).register(REGISTRY);
  }

  static Counter counter(String name, String description, String... tags) {
    return Counter.builder(name).description(description).tags(tags).register(REGISTRY);
  }
}
