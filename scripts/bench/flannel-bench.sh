#!/usr/bin/env bash
# VXLAN data-plane benchmark: how fast the FlannelVerticle programs remote leases into a real
# kernel (one "host" network namespace), against one private etcd, in one run:
#   1. 1,000 remote leases written to etcd at once: time until all are programmed (a route, a
#      neighbour and an FDB entry each), checked in the kernel.  Goal: under 1 s.
#   2. one new lease at a time on top of them: latency from the put until its route is programmed
#      (p50, p90, p99).  Goal: under 50 ms p99.
#   3. the same entries programmed with one `ip`/`bridge` command per entry (3,000 processes), and
#      with three batches without the daemon, in a second namespace; printed as ratios.
#
# Needs: root (network namespaces), iproute2, JDK 17, Maven with the project's dependencies in
# ~/.m2 (tries offline first), Debian's etcd (apt-get install etcd-server). Nothing is sent outside
# the two namespaces the bench creates (fnpbench-<hex>-h, fnpbench-<hex>-cmp); the root namespace
# is not touched. etcd runs on a free loopback port with its data on tmpfs. This script removes
# the namespaces, etcd and its directory however the run ends (Ctrl-C included).
#
# Usage: scripts/bench/flannel-bench.sh [LEASES [SAMPLES]]   (defaults 1000 and 200)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LEASES="${1:-1000}"
SAMPLES="${2:-200}"
for v in "$LEASES" "$SAMPLES"; do
  case "$v" in ''|*[!0-9]*) echo "flannel-bench: LEASES and SAMPLES must be numbers, not '$v'" >&2; exit 2;; esac
done

source "$ROOT/scripts/bench/lib.sh"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/flannel-bench.XXXXXX")"
JAVA_PID=""

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  # The JVM removes its namespaces and etcd itself; give it the chance (TERM).
  bench_stop "$JAVA_PID" 10
  # If it could not (killed hard), remove what it recorded, and only that.
  if [ -s "$STATE/record" ]; then
    local kind a b
    while read -r kind a b; do
      case "$kind" in
        netns)
          case "$a" in fnpbench-[0-9a-f]*) ;; *) continue ;; esac
          for ns in "$a-h" "$a-cmp"; do
            [ -e "/run/netns/$ns" ] && ip netns del "$ns" 2>/dev/null
          done ;;
        etcd) bench_kill_etcd "$a" "$b" ;;
      esac
    done < "$STATE/record"
  fi
  rm -rf -- "$STATE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" -eq 0 ] || { echo "flannel-bench: must run as root (it creates network namespaces)" >&2; exit 1; }
command -v java >/dev/null || { echo "flannel-bench: java not found (install a JDK 17)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "flannel-bench: mvn not found" >&2; exit 1; }
command -v ip >/dev/null && command -v bridge >/dev/null || { echo "flannel-bench: iproute2 not found" >&2; exit 1; }
[ -x /usr/bin/etcd ] || command -v etcd >/dev/null \
  || { echo "flannel-bench: etcd not found (apt-get install etcd-server)" >&2; exit 1; }

echo "flannel-bench: compiling (both modules through the reactor; nothing is installed to ~/.m2)..."
CP=$(bench_classpath verticles "$STATE")
# In the background so that this shell gets Ctrl-C at once and cleans up (the JVM then gets TERM).
java -cp "$CP" -Dbench.leases="$LEASES" -Dbench.samples="$SAMPLES" -Dbench.stateFile="$STATE/record" \
  io.flannelnp.bench.FlannelBench &
JAVA_PID=$!
wait "$JAVA_PID"
