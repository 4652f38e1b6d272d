#!/usr/bin/env bash
# DNS flood benchmark (issue 18): one container sends queries to its resolver as fast as one
# thread can, while Join over the plugin socket and another container's queries go on. Prints
# Join p99 and the neighbour's DNS p99 idle and during the flood, and their ratio, measured in
# the same run, with the default DNS_QUERY_RATE and with no limit. Real daemon (in-process), etcd
# on loopback, namespaces the bench makes and removes (their sandbox paths under
# /run/docker/netns too). Needs root, Debian's etcd, a JDK 17 and Maven.
# Usage: scripts/bench/dns-flood-bench.sh [JOINS] [QUERIES]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
JOINS="${1:-300}"
QUERIES="${2:-6000}"
case "$JOINS$QUERIES" in *[!0-9]*|'') echo "dns-flood-bench: JOINS and QUERIES must be numbers" >&2; exit 2;; esac
[ "$(id -u)" -eq 0 ] || { echo "dns-flood-bench: needs root (it creates network namespaces)" >&2; exit 1; }
source "$ROOT/scripts/bench/lib.sh"
work=$(mktemp -d /tmp/dns-flood-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "dns-flood-bench: compiling..."
CP=$(bench_classpath verticles "$work")
java -cp "$CP" -Dbench.joins="$JOINS" -Dbench.queries="$QUERIES" io.flannelnp.bench.DnsFloodBench
