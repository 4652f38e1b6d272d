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
cd "$ROOT"
echo "protocol-bench: compiling..."
# through the reactor (the core module's classes, not a copy installed to the shared ~/.m2)
build() { mvn -B -q "$@" -pl verticles -am test-compile dependency:build-classpath -Dmdep.outputFile=target/cp.txt; }
build -o || build
CP="verticles/target/classes:verticles/target/test-classes:src/target/test-classes:$(cat verticles/target/cp.txt)"
java -cp "$CP" -Dbench.ops="$OPS" -Dbench.joins="$JOINS" io.flannelnp.bench.ProtocolBench
