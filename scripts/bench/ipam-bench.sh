#!/usr/bin/env bash
# IPAM benchmark: the cost of flannel-np's address accounting against the bare etcd round trip it
# is built on, measured in one run against one private etcd:
#   (a) one etcd create-once txn (p50, p99 over sequential txns; and with 8 concurrent callers)
#   (b) Ipam.allocateNext + release in a node block: latency and allocations/s, sequential and
#       with 8 concurrent requesters on one node daemon
#   (c) the node-side placeholder path of RequestAddress (find + allocateNext)
# Each p99 is printed as a ratio to the bare txn p99; the goal is below 3.
#
# RequestAddress and Join over the plugin socket are measured by a later benchmark (Join needs
# the kernel: bridges, veths, a network namespace).
#
# Needs: JDK 17, Maven with the project's dependencies in ~/.m2 (tries offline first), Debian's
# etcd (apt-get install etcd-server). No root. The bench (src/test/java/io/flannelnp/bench/
# IpamBench.java) starts its own etcd on a free loopback port with its data on tmpfs; this script
# makes sure that etcd and its directory are gone however the run ends (Ctrl-C included).
#
# Usage: scripts/bench/ipam-bench.sh [OPS]     OPS: operations per case (default 2000)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OPS="${1:-2000}"
case "$OPS" in ''|*[!0-9]*) echo "ipam-bench: OPS must be a number, not '$OPS'" >&2; exit 2;; esac

source "$ROOT/scripts/bench/lib.sh"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/ipam-bench.XXXXXX")"
JAVA_PID=""

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  # The JVM's shutdown hook kills etcd and removes its directory; give it the chance (TERM).
  bench_stop "$JAVA_PID" 10
  # If the JVM could not (killed hard), remove what it recorded: our etcd and our directory only.
  if [ -s "$STATE/etcd" ]; then
    local pid dir
    read -r pid dir < "$STATE/etcd"
    bench_kill_etcd "$pid" "$dir"
  fi
  rm -rf -- "$STATE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v java >/dev/null || { echo "ipam-bench: java not found (install a JDK 17)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "ipam-bench: mvn not found" >&2; exit 1; }
[ -x /usr/bin/etcd ] || command -v etcd >/dev/null \
  || { echo "ipam-bench: etcd not found (apt-get install etcd-server)" >&2; exit 1; }

echo "ipam-bench: compiling (core module and its tests)..."
CP=$(bench_classpath src "$STATE")
# In the background so that this shell gets Ctrl-C at once and cleans up (the JVM then gets TERM).
java -cp "$CP" -Dbench.ops="$OPS" -Dbench.stateFile="$STATE/etcd" io.flannelnp.bench.IpamBench &
JAVA_PID=$!
wait "$JAVA_PID"
