package io.flannelnp.dns;

/** Requests the DnsVerticle answers. Addresses: {@link io.flannelnp.bus.Addresses}. */
public sealed interface DnsMessage {

  /** Put a resolver into the container's network namespace (idempotent per sandbox). */
  record InjectDns(String containerId, String sandboxKey, String endpointId) implements DnsMessage {}

  /** Remove it again (Leave, container stop). */
  record EjectDns(String sandboxKey, String endpointId) implements DnsMessage {}
}
