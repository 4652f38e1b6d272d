#!/usr/bin/env bash
# Plugin-protocol benchmark: RequestAddress, ReleaseAddress, Join and DeleteEndpoint over the real
# plugin socket of a real daemon (etcd on loopback; bridges and veths in a network namespace the
# bench creates and deletes), each p99 printed as a ratio to one bare etcd create-once txn measured
# in the same run. Needs root (ip netns), Debian's etcd, a JDK 17 and Maven.
# Usage: scripts/bench/protocol-bench.sh [OPS] [JOINS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OPS="${1:-1000}"
JOINS="${2:-200}"
case "$OPS$JOINS" in *[!0-9]*|'') echo "protocol-bench: OPS and JOINS must be numbers" >&2; exit 2;; esac
[ "$(id -u)" -eq 0 ] || { echo "protocol-bench: needs root (it creates a network namespace)" >&2; exit 1; }
source "$ROOT/scripts/bench/lib.sh"
work=$(mktemp -d /tmp/protocol-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "protocol-bench: compiling..."
CP=$(bench_classpath verticles "$work")
java -cp "$CP" -Dbench.ops="$OPS" -Dbench.joins="$JOINS" io.flannelnp.bench.ProtocolBench
