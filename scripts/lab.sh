#!/usr/bin/env bash
# lab.sh: a multi-host lab in network namespaces on one machine, for humans and for the
# end-to-end tests. The same plumbing as the JUnit lab (verticles/src/test/java/io/flannelnp/
# testing/Lab.java) and ../shared/lab; nothing is put in the root network namespace.
#
#   netns fnplab-infra   bridge br0 198.18.0.1/24, etcd on 198.18.0.1:2379 (and 127.0.0.1:2379
#        │               inside infra), data on a tmpfs mounted at /tmp/fnp-lab/etcd
#        │ veth v-hI (on br0)
#   netns fnplabI        eth0 198.18.0.(10+I)/24, lo up, ip_forward=1, no default route
#                        (FNP_LAB_GWBRIDGE=1: also docker_gwbridge 172.18.0.1/16 with Docker's
#                        masquerade rule, as the JUnit lab has it, for runs without dockerd)
#
# Usage:
#   scripts/lab.sh up [N]          build the lab with N hosts (default 3; a running lab is torn
#                                  down first)
#   scripts/lab.sh down            stop every daemon and etcd, delete every namespace, unmount,
#                                  remove /tmp/fnp-lab, then verify (exit 1 if anything is left
#                                  or the root namespace's links, nft ruleset or mounts changed)
#   scripts/lab.sh status          what is running
#   scripts/lab.sh env I           the daemon settings for host I (one VAR=value per line)
#   scripts/lab.sh daemon I        start flannel-np (verticles/target/flannel-np.jar) on host I
#                                  as a real process; log in /tmp/fnp-lab/nI/daemon.log
#   scripts/lab.sh kill I [SIG]    signal host I's daemon (default KILL; TERM for an orderly stop)
#   scripts/lab.sh exec I CMD...   run CMD in host I's namespace (I=infra: the infra namespace)
#
# Environment: FNP_LAB_PREFIX (fnplab), FNP_LAB_STATE (/tmp/fnp-lab), FNP_LAB_GWBRIDGE (0),
# FNP_LAB_WAIT (30: the bound of every wait, seconds), JAVA (java), FNP_LAB_JAR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${FNP_LAB_PREFIX:-fnplab}"
STATE="${FNP_LAB_STATE:-/tmp/fnp-lab}"
INFRA="${PREFIX}-infra"
NET=198.18.0
ETCD_IP="$NET.1"
WAIT="${FNP_LAB_WAIT:-30}"
JAR="${FNP_LAB_JAR:-$ROOT/verticles/target/flannel-np.jar}"

log() { printf 'lab: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

host_ns() { echo "${PREFIX}$1"; }
host_ip() { echo "$NET.$((10 + $1))"; }
nodes() { cat "$STATE/nodes" 2>/dev/null || echo 0; }

pid_alive() { [ -n "${1:-}" ] && [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# stop_pid FILE NAME: TERM, a bounded wait, then KILL; only the recorded PID, and only if its
# command line still is what we started (a recycled PID is left alone).
stop_pid() {
  local f="$1" what="$2" pid
  [ -s "$f" ] || return 0
  pid="$(cat "$f")"
  if pid_alive "$pid" && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$what"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((WAIT * 10))); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$f"
}

wait_until() { # SECONDS WHAT CMD...
  local t="$1" what="$2"; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < end )) || { log "timed out after ${t}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

lab_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^(${PREFIX}[0-9]+|${INFRA})$" || true; }

snapshot_root() { # what `down` must find unchanged
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "--- nft"
  nft list ruleset 2>/dev/null || true
  echo "--- mounts"
  # (network namespace mounts come and go with other users of `ip netns`; not ours to judge)
  awk '$3 != "nsfs" {print $2, $3}' /proc/self/mounts | grep -v -e "^$STATE" -e "^/run/netns" | sort
}

cmd_up() {
  local n="${1:-3}"
  case "$n" in ''|*[!0-9]*) die "N must be a number" ;; esac
  (( n >= 1 && n <= 200 )) || die "N must be 1-200"
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  for c in ip bridge nft etcd etcdctl mount; do command -v "$c" >/dev/null || die "missing $c"; done
  if [ -d "$STATE" ] || [ -n "$(lab_netns)" ]; then
    log "a lab exists; tearing it down first"
    cmd_down
  fi
  mkdir -p "$STATE"
  snapshot_root > "$STATE/baseline"
  echo "$n" > "$STATE/nodes"

  ip netns add "$INFRA"
  ip -n "$INFRA" -batch - <<EOF
link set dev lo up
link add name br0 type bridge
addr add $ETCD_IP/24 dev br0
link set dev br0 up
EOF
  local i h
  for ((i = 1; i <= n; i++)); do
    h="$(host_ns "$i")"
    ip netns add "$h"
    ip -n "$INFRA" -batch - <<EOF
link add name v-h$i type veth peer name eth0 netns $h
link set dev v-h$i master br0
link set dev v-h$i up
EOF
    ip -n "$h" -batch - <<EOF
link set dev lo up
addr add $(host_ip "$i")/24 dev eth0
link set dev eth0 up
EOF
    ip netns exec "$h" sysctl -qw net.ipv4.ip_forward=1
    if [ "${FNP_LAB_GWBRIDGE:-0}" = 1 ]; then
      ip -n "$h" -batch - <<EOF
link add name docker_gwbridge type bridge
addr add 172.18.0.1/16 dev docker_gwbridge
link set dev docker_gwbridge up
EOF
      ip netns exec "$h" nft -f - <<EOF
table ip fnplab-docker {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 172.18.0.0/16 oifname != "docker_gwbridge" masquerade
  }
}
EOF
    fi
    mkdir -p "$STATE/n$i"
  done

  # etcd in the infra namespace, data on a tmpfs of its own
  mkdir -p "$STATE/etcd"
  mount -t tmpfs -o size=512m,mode=0700 fnp-lab-etcd "$STATE/etcd"
  ip netns exec "$INFRA" setsid etcd --name fnp-lab --data-dir "$STATE/etcd/data" \
    --listen-client-urls "http://$ETCD_IP:2379,http://127.0.0.1:2379" \
    --advertise-client-urls "http://$ETCD_IP:2379" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster fnp-lab=http://127.0.0.1:2380 --log-level warn \
    > "$STATE/etcd.log" 2>&1 < /dev/null &
  echo $! > "$STATE/etcd.pid"
  wait_until "$WAIT" "etcd on $ETCD_IP:2379" \
    ip netns exec "$(host_ns 1)" etcdctl --endpoints "http://$ETCD_IP:2379" endpoint health \
    || { tail -5 "$STATE/etcd.log" >&2; die "etcd did not come up"; }
  for ((i = 1; i <= n; i++)); do
    ip netns exec "$(host_ns "$i")" ping -c1 -W2 -q "$ETCD_IP" >/dev/null || die "host $i cannot reach $ETCD_IP"
  done
  log "up: $n hosts $(host_ns 1)..$(host_ns "$n") ($(host_ip 1)..$(host_ip "$n")), etcd http://$ETCD_IP:2379"
}

cmd_down() {
  local i rc=0
  for f in "$STATE"/n*/daemon.pid; do
    [ -e "$f" ] && stop_pid "$f" "flannel-np.jar"
  done
  stop_pid "$STATE/etcd.pid" "--name fnp-lab"
  for ns in $(lab_netns); do
    ip netns del "$ns" || rc=1
  done
  if mountpoint -q "$STATE/etcd" 2>/dev/null; then
    umount "$STATE/etcd" || rc=1
  fi
  local baseline=""
  [ -s "$STATE/baseline" ] && baseline="$(cat "$STATE/baseline")"
  # verify
  local left
  left="$(lab_netns)"
  [ -z "$left" ] || { log "namespaces left: $left"; rc=1; }
  if mountpoint -q "$STATE/etcd" 2>/dev/null; then log "tmpfs still mounted on $STATE/etcd"; rc=1; fi
  if [ -n "$baseline" ]; then
    if ! diff -u <(echo "$baseline") <(snapshot_root) > "${STATE}.diff" 2>&1; then
      log "the root namespace changed since 'up' (see ${STATE}.diff):"
      cat "${STATE}.diff" >&2
      rc=1
    else
      rm -f "${STATE}.diff"
    fi
  fi
  case "$STATE" in /tmp/*) rm -rf -- "$STATE" ;; *) log "not removing $STATE (not under /tmp)"; rc=1 ;; esac
  [ $rc -eq 0 ] && log "down: CLEAN" || log "down: NOT CLEAN"
  return $rc
}

cmd_status() {
  [ -d "$STATE" ] || { echo "no lab"; return 0; }
  echo "hosts: $(nodes)"
  echo "namespaces: $(lab_netns | tr '\n' ' ')"
  if [ -s "$STATE/etcd.pid" ] && pid_alive "$(cat "$STATE/etcd.pid")"; then
    echo "etcd: pid $(cat "$STATE/etcd.pid"), http://$ETCD_IP:2379"
  else
    echo "etcd: not running"
  fi
  for ((i = 1; i <= $(nodes); i++)); do
    if [ -s "$STATE/n$i/daemon.pid" ] && pid_alive "$(cat "$STATE/n$i/daemon.pid")"; then
      echo "host $i: daemon pid $(cat "$STATE/n$i/daemon.pid")"
    else
      echo "host $i: no daemon"
    fi
  done
}

check_host() {
  case "${1:-}" in ''|*[!0-9]*) die "host must be a number 1..$(nodes)" ;; esac
  (( $1 >= 1 && $1 <= $(nodes) )) || die "no host $1 (the lab has $(nodes))"
}

cmd_env() {
  check_host "$1"
  cat <<EOF
ETCD_ENDPOINTS=http://$ETCD_IP:2379
ETCD_PREFIX=/flannel
AVAILABLE_SUBNETS=10.50.0.0/16
DEFAULT_FLANNEL_OPTIONS=-iface=eth0
NODE_NAME=$(host_ns "$1")
PLUGIN_SOCKET=$STATE/n$1/flannel-np.sock
DOCKER_SOCKET=$STATE/n$1/docker.sock
ADMIN_LISTEN=127.0.0.1:9090
ADMIN_INSECURE_LOOPBACK=true
LOG_LEVEL=info
EOF
}

cmd_daemon() {
  check_host "$1"
  [ -f "$JAR" ] || die "$JAR missing: run mvn -B -o package -DskipTests first"
  local f="$STATE/n$1/daemon.pid"
  if [ -s "$f" ] && pid_alive "$(cat "$f")"; then die "host $1 already runs a daemon (pid $(cat "$f"))"; fi
  local -a env=()
  while IFS= read -r line; do env+=("$line"); done < <(cmd_env "$1")
  ip netns exec "$(host_ns "$1")" env -i PATH="$PATH" HOME="${HOME:-/root}" "${env[@]}" \
    setsid "${JAVA:-java}" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -jar "$JAR" \
    > "$STATE/n$1/daemon.log" 2>&1 < /dev/null &
  echo $! > "$f"
  wait_until "$WAIT" "host $1's plugin socket" test -S "$STATE/n$1/flannel-np.sock" \
    || { tail -20 "$STATE/n$1/daemon.log" >&2; die "the daemon of host $1 did not start"; }
  log "host $1: daemon pid $(cat "$f"), log $STATE/n$1/daemon.log"
}

cmd_kill() {
  check_host "$1"
  local sig="${2:-KILL}" f="$STATE/n$1/daemon.pid" pid
  [ -s "$f" ] || die "host $1 runs no daemon"
  pid="$(cat "$f")"
  pid_alive "$pid" && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF flannel-np.jar || die "host $1 runs no daemon"
  kill -"$sig" "$pid"
  if [ "$sig" = KILL ] || [ "$sig" = TERM ]; then
    wait_until "$WAIT" "pid $pid to end" bash -c "! [ -d /proc/$pid ] || [ \"\$(awk '{print \$3}' /proc/$pid/stat)\" = Z ]"
    rm -f "$f"
  fi
}

cmd_exec() {
  local h="$1"; shift
  if [ "$h" = infra ]; then
    exec ip netns exec "$INFRA" "$@"
  fi
  check_host "$h"
  exec ip netns exec "$(host_ns "$h")" "$@"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) shift; cmd_env "${1:-}" ;;
  daemon) shift; cmd_daemon "${1:-}" ;;
  kill) shift; cmd_kill "$@" ;;
  exec) shift; [ $# -ge 2 ] || die "usage: lab.sh exec I CMD..."; cmd_exec "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
