#!/usr/bin/env bash
# scripts/flannel-np-status.sh [--pid PID] [--json]
#
# `flannel-np status` on a node where flannel-np runs as a Docker managed plugin, which cannot be
# `docker exec`ed into and needs no Java on the host: the command runs inside the plugin (its
# mount and network namespaces, its Java, its jar) with the plugin's own settings (ETCD_*, from
# the running daemon's environment, TLS file paths included). Prints the nodes, networks,
# services and problems of the cluster; exit 1 when a problem is listed (or etcd did not answer),
# 2 on a usage error or when no plugin daemon runs here. --pid: the daemon's PID when this host
# runs more than one (default: the only java process running flannel-np.jar).
set -euo pipefail

die() { echo "flannel-np-status: $*" >&2; exit 2; }
PID="" ARGS=()
while (($#)); do
  case "$1" in
    --pid) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--pid needs a process ID, got '${2:-}'"; PID=$2; shift 2 ;;
    --json) ARGS+=(--json); shift ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (flannel-np-status.sh [--pid PID] [--json])" ;;
  esac
done
[[ $EUID -eq 0 ]] || die "must run as root (it enters the plugin's namespaces)"

if [[ -z "$PID" ]]; then
  found=()
  for p in $(pgrep -x java 2>/dev/null || true); do
    tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qx -- '.*flannel-np\.jar' && found+=("$p")
  done
  ((${#found[@]} == 1)) || die "${#found[@]} flannel-np daemons run here${found:+ (${found[*]})}; give --pid"
  PID=${found[0]}
fi
[[ -r "/proc/$PID/cmdline" ]] || die "no process $PID"
mapfile -d '' argv <"/proc/$PID/cmdline"
java="${argv[0]}" jar=""
for ((k = 1; k < ${#argv[@]}; k++)); do
  [[ "${argv[k]}" == -jar ]] && jar="${argv[k + 1]:-}"
done
[[ "$jar" == *flannel-np.jar ]] || die "process $PID does not run flannel-np.jar"
# the daemon's whole environment: its settings, and what its Java needs to start (library paths)
mapfile -d '' envs <"/proc/$PID/environ"
# the client JVM starts fast and small: it reads etcd once
# -p too: the plugin's /proc shows only its own PID namespace, and Java finds its libraries through /proc/self/exe
exec nsenter -t "$PID" -m -n -p -- env -i "${envs[@]}" "$java" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss512k \
  -jar "$jar" status "${ARGS[@]}"
