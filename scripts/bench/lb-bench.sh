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
# are allocated quadratically); kubeLimitSeconds stops it. SKIP_BUILD=1 skips the Maven build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[[ $(id -u) -eq 0 ]] || { echo "lb-bench.sh needs root (network namespaces, nftables)" >&2; exit 1; }
if [[ "${SKIP_BUILD:-}" != 1 ]]; then
  mvn -B -q -o -pl verticles -am test-compile
fi
work=$(mktemp -d /tmp/lb-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# through the reactor: the core module's classes come from src/target, nothing is installed to ~/.m2
mvn -B -q -o -pl verticles -am dependency:build-classpath -Dmdep.outputFile="$work/cp" -Dmdep.includeScope=test >/dev/null
cp -r src/target/classes "$work/core-classes"
sed -i "s#$PWD/src/target/classes#$work/core-classes#" "$work/cp"
# a private copy of the classes: a concurrent build in this tree must not pull them away mid-run
cp -r verticles/target/classes "$work/classes"
cp -r verticles/target/test-classes "$work/test-classes"
cp -r src/target/test-classes "$work/core-test-classes"
java -Xmx2g ${LB_BENCH_JAVA_OPTS:-} -cp "$work/test-classes:$work/classes:$work/core-test-classes:$(cat "$work/cp")" \
  io.flannelnp.bench.LbBench "$@"
