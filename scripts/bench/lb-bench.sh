#!/bin/bash
# lb-bench.sh [sizes=1000,10000,20000] [kubeLimitSeconds=300] [kubeUpdateSize=1000] [updates=300]
#             [connects=500] [repeat=3] [kube=false]
#
# Benchmarks the service load balancer's nftables layout (verticles/.../lb/LbRules.java) against
# kube-proxy's per-service-chain layout, inside network namespaces it creates and deletes (root
# only; nothing touches the root namespace, no traffic leaves the namespaces):
#   1. full-sync time for 1,000 / 10,000 / 20,000 services x 4 backends, ours (libnftables and the
#      nft tool) and kube-proxy's layout (nft tool), with ratios;
#   2. latency of one service's update with 20,000 services loaded (p50/p99): the kernel transaction
#      alone and the verticle's whole pass (etcd snapshot -> desired -> diff -> apply);
#   3. time to open a TCP connection through a VIP with 100 and with 20,000 services.
# Goals: 20,000 services fully synced < 1 s; a single update < 10 ms p99.
# The kube-proxy layout at 20,000 services takes minutes on nft 1.0.6 (anonymous vmaps per rule
# are allocated quadratically); kubeLimitSeconds stops it. SKIP_BUILD=1 skips the Maven build;
# LB_BENCH_JAVA_OPTS goes to the JVM (-Dbench.trace=1: every plane update with the plane's own time).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/scripts/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || { echo "lb-bench.sh needs root (network namespaces, nftables)" >&2; exit 1; }
work=$(mktemp -d /tmp/lb-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
CP=$(bench_classpath verticles "$work")
java -Xmx2g ${LB_BENCH_JAVA_OPTS:-} -cp "$CP" io.flannelnp.bench.LbBench "$@"
