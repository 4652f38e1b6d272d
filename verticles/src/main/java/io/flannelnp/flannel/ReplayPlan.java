package io.flannelnp.flannel;

import java.util.List;

/** For replay (io.flannelnp.replay): the peer batches a partial pass would apply, without a kernel. */
public final class ReplayPlan {
  private ReplayPlan() {}

  /** {ip links/neighbours, bridge fdb, ip routes} turning {@code before}'s peers into {@code after}'s. */
  public static List<List<String>> peerBatches(VxlanPlan before, VxlanPlan after) {
    VxlanSync s = VxlanSync.peersOnly(before.own(), after.own());
    return List.of(List.copyOf(s.links), List.copyOf(s.fdb), List.copyOf(s.routes));
  }

  /** Whether a pass from {@code before} to {@code after} is partial (same devices), as FlannelVerticle decides. */
  public static boolean sameShape(VxlanPlan before, VxlanPlan after) {
    if (before.own().size() != after.own().size()) {
      return false;
    }
    for (int i = 0; i < before.own().size(); i++) {
      VxlanPlan.Own a = before.own().get(i);
      VxlanPlan.Own b = after.own().get(i);
      if (!a.network().equals(b.network()) || !a.block().equals(b.block()) || !a.vtepMac().equals(b.vtepMac())) {
        return false;
      }
    }
    return true;
  }
}
