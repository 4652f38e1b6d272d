package io.flannelnp.bus;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.flannelnp.etcd.EtcdMessage.StateChanged;
import io.flannelnp.etcd.EtcdSchema.Family;
import io.flannelnp.flannel.FlannelMessage.AttachEndpoint;
import io.flannelnp.flannel.FlannelMessage.EndpointAttached;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import java.util.EnumSet;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

class CodecsTest {

  @Test
  void everyRecordOfEverySealedFamilyIsAMessageType() {
    assertThat(Codecs.messageTypes())
        .contains(StateChanged.class, AttachEndpoint.class, EndpointAttached.class, Observed.KernelBatch.class, Ack.class)
        .allMatch(Class::isRecord)
        .doesNotHaveDuplicates();
  }

  @Test
  void recordsTravelByReferenceAndRequestsGetTypedReplies() throws Exception {
    Vertx vertx = Vertx.vertx();
    try {
      Codecs.registerAll(vertx.eventBus());
      StateChanged sent = new StateChanged(42, EnumSet.of(Family.SUBNET_LEASES), false);
      vertx.eventBus().<StateChanged>consumer("t.state", m -> {
        assertThat(m.body()).isSameAs(sent);
        m.reply(new EndpointAttached("ep", "veth0", "veth1", 1450));
      });
      EndpointAttached reply = vertx.eventBus().<EndpointAttached>request("t.state", sent)
          .await(5, TimeUnit.SECONDS).body();
      assertThat(reply.hostVeth()).isEqualTo("veth0");
      assertThat(reply.mtu()).isEqualTo(1450);
    } finally {
      vertx.close().await(5, TimeUnit.SECONDS);
    }
  }

  @Test
  void aLocalCodecRefusesTheWire() {
    LocalCodec<Ack> c = new LocalCodec<>(Ack.class);
    assertThatThrownBy(() -> c.encodeToWire(Buffer.buffer(), Ack.OK)).hasMessageContaining("local-only");
  }
}
