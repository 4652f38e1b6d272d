#!/usr/bin/env bash
# scripts/e2e/first-query.sh [--runs N] [--docker V,…] [--hook] [--logs DIR]
#
# How often flannel-np's resolver, not Docker's, answers a container's very first DNS query, per
# engine, without the OCI hook (or with it: --hook). On Docker 27 and older a container's network
# namespace becomes usable only when runc creates it, and flannel-np injects its resolver as soon
# as it appears: nothing makes the container's first query wait for it (the hook does). Docker 28
# calls Join in that namespace before the container starts: always ours.
#
# Brings up the lab Swarm (scripts/swarm-lab.sh up 3 --docker V,…; default 28,host,26: Docker 28,
# this machine's 20.10 and Docker 26, no hook), installs the plugin (DNS_TTL=599, so an answer of
# ours has TTL 599 and Docker's 600), a VIP service `web` and then, per node, as each container's
# entrypoint, `dnsttl web` (scripts/swarm-lab/dnsttl.c):
#   docker run: N × `docker run --rm --network n1 IMAGE dnsttl web` on each node;
#   Swarm task: a service of N tasks per node (--replicas-max-per-node N), each task's log.
# Prints per node: engine, hook, and for each kind how many first answers were flannel-np's
# (TTL 599), Docker's (600) or none. --logs DIR keeps each node's dockerd log (the plugin's is in
# it) and the samples. Needs what scripts/demo.sh needs plus gcc and libc6-dev.
# Tears the lab down at the end (also on failure). About 2 minutes with the default N=20.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAB="$ROOT/scripts/swarm-lab.sh"
JAR="$ROOT/verticles/target/flannel-np.jar"
PREFIX="${FNP_LAB_PREFIX:-fnp}"
PLUGIN_DIR="${FNP_PLUGIN_DIR:-/tmp/$PREFIX-plugin}"
P="${FNP_PLUGIN:-flannel-np:fq}"
IMAGE="${FNP_LAB_IMAGE:-fnp/busybox:latest}"
RUNS=20 DOCKER=28,host,26 HOOK=() LOGS=""
N=3 TTL=599
t_start=$SECONDS

log() { printf '[%s] first-query: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
dk()  { "$LAB" dk "$@"; }
wait_for() { # SECONDS WHAT CMD…
  local secs="$1" what="$2"; local end=$((SECONDS + secs)); shift 2
  until "$@" >/dev/null 2>&1; do (( SECONDS < end )) || die "timed out after $secs s waiting for $what"; sleep 0.3; done
}

while (($#)); do
  case "$1" in
    --runs) [[ "${2:-}" =~ ^[0-9]+$ ]] && (( $2 >= 1 && $2 <= 100 )) || die "--runs needs a number 1..100, got '${2:-}'"
      RUNS=$2; shift 2 ;;
    --docker) [[ $# -ge 2 ]] || die "--docker needs a list like 28,host,26"; DOCKER=$2; shift 2 ;;
    --hook) HOOK=(--hook); shift ;;
    --logs) [[ $# -ge 2 ]] || die "--logs needs a directory"; LOGS=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (first-query.sh [--runs N] [--docker V,…] [--hook] [--logs DIR])" ;;
  esac
done
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, dockerd)"
for c in dockerd etcd busybox mmdebstrap gcc python3; do
  command -v "$c" >/dev/null || die "missing command '$c' (apt-get install docker.io etcd-server etcd-client busybox-static mmdebstrap gcc libc6-dev python3)"
done
# swarm-lab.sh up would remove a lab that is already up; a measurement must not destroy someone's lab.
if [[ -e "${FNP_LAB_STATE:-/tmp/fnp-lab}" ]] || ip netns list 2>/dev/null | grep -qE "^$PREFIX(-infra|[0-9]+)( |$)"; then
  die "a lab is already up (${FNP_LAB_STATE:-/tmp/fnp-lab}, netns $PREFIX*): scripts/swarm-lab.sh down first, or choose another FNP_LAB_PREFIX, FNP_LAB_STATE and FNP_LAB_NET"
fi

LAB_UP=0 RESULTS=""
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$LOGS" ]]; then
    mkdir -p "$LOGS"
    for d in "${FNP_LAB_STATE:-/tmp/fnp-lab}"/n*/; do
      [[ -f $d/dockerd.log ]] && cp "$d/dockerd.log" "$LOGS/$(basename "$d")-dockerd.log"
    done
    [[ -z "$RESULTS" || ! -f "$RESULTS/samples" ]] || cp "$RESULTS/samples" "$LOGS/samples"
  fi
  if (( LAB_UP )) && ! "$LAB" down >/dev/null; then log "lab down did not restore the host"; rc=1; fi
  [[ -z "$RESULTS" ]] || rm -rf "$RESULTS"
  log "$([[ $rc == 0 ]] && echo done || echo FAILED) in $((SECONDS - t_start)) s"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
RESULTS=$(mktemp -d /tmp/"$PREFIX"-first-query.XXXXXX)

if [[ ! -f "$JAR" ]]; then (cd "$ROOT" && mvn -B -q -DskipTests package); fi
if [[ ! -f "$PLUGIN_DIR/config.json" || "$JAR" -nt "$PLUGIN_DIR/rootfs/opt/flannel-np/flannel-np.jar" \
      || "$ROOT/plugin-bundle/config.json" -nt "$PLUGIN_DIR/config.json" ]]; then
  "$ROOT/scripts/build-plugin.sh" "$PLUGIN_DIR"
fi
LAB_UP=1
"$LAB" up "$N" --docker "$DOCKER" "${HOOK[@]}"
# the Swarm's task addresses come from the network's cluster range: a /22 holds 3 × 100 tasks and the VIPs
"$LAB" install-plugin "$PLUGIN_DIR" "$P" ETCD_ENDPOINTS={etcd} NODE_NAME={node} AVAILABLE_SUBNETS=10.200.0.0/16 \
  CLUSTER_SUBNET_SIZE=22 DEFAULT_FLANNEL_OPTIONS=-iface=eth0 DNS_TTL=$TTL IS_HOOK_AVAILABLE={hook} 2>&1 | sed 's/^/  /' >&2
dk 1 run --rm "$IMAGE" sh -c 'command -v dnsttl' >/dev/null || die "the lab image has no dnsttl (gcc -static failed: apt-get install libc6-dev)"
dk 1 network create -d "$P" --ipam-driver "$P" --ipam-opt "flannel-id=$(cat /proc/sys/kernel/random/uuid)" --attachable n1 >/dev/null
dk 1 service create -d --name web --network n1 --replicas 1 --no-resolve-image --stop-grace-period 1s "$IMAGE" sleep 1d >/dev/null
# the manager allocates the VIP asynchronously (our IPAM, through etcd)
vip() { VIP=$(dk 1 service inspect -f '{{range .Endpoint.VirtualIPs}}{{.Addr}}{{end}}' web); VIP=${VIP%/*}; [[ "$VIP" =~ ^[0-9.]+$ ]]; }
wait_for 30 "a single VIP of service web" vip
vip
running() { [[ "$(dk 1 service ls -f name="$1" --format '{{.Replicas}}' | cut -d' ' -f1)" == "$2/$2" ]]; }  # "N/N (max K per node)"
wait_for 90 "web running" running web 1
"$LAB" versions >"$RESULTS/versions"

# Each sample: KIND NODE CONTAINER then the first answer, "TTL ADDR" or "none …" (no answer at all)
log "docker run: $RUNS per node"
for ((i = 1; i <= N; i++)); do
  for ((k = 1; k <= RUNS; k++)); do
    # hostname (the container's short ID, no DNS) first: the first query is still dnsttl's
    echo "run $i $(dk "$i" run --rm --network n1 "$IMAGE" sh -c 'hostname; dnsttl web' 2>/dev/null | tr '\n' ' ' || true)" >>"$RESULTS/samples"
  done
done
log "Swarm tasks: $RUNS per node"
dk 1 service create -d --name probe --network n1 --replicas $((RUNS * N)) --replicas-max-per-node "$RUNS" \
  --no-resolve-image --stop-grace-period 1s "$IMAGE" sh -c 'dnsttl web; exec sleep 1d' >/dev/null
wait_for 300 "$((RUNS * N)) probe tasks running" running probe $((RUNS * N))
for ((i = 1; i <= N; i++)); do
  for cid in $(dk "$i" ps -q -f label=com.docker.swarm.service.name=probe); do
    out=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do out=$(dk "$i" logs "$cid" 2>/dev/null); [[ -n "$out" ]] && break; sleep 0.3; done
    echo "task $i $cid ${out:-none}" >>"$RESULTS/samples"
  done
done

python3 - "$RESULTS/samples" "$RESULTS/versions" "$TTL" "$VIP" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import sys
samples, versions, ttl, vip, load = sys.argv[1:6]
eng = {}
for line in open(versions):
    f = line.split()
    eng[f[0]] = (f[1], f[6].split('=')[1])
count = {}
for line in open(samples):
    f = line.split()
    kind, node, rest = f[0], f[1], f[3:]  # f[2]: the container's short ID
    c = count.setdefault((node, kind), {'ours': 0, 'docker': 0, 'other': 0})
    if len(rest) == 2 and rest[0] == ttl and rest[1] == vip: c['ours'] += 1
    elif len(rest) == 2 and rest[0] == '600': c['docker'] += 1
    else: c['other'] += 1
print(f'\nfirst-query: the first DNS query of a container, answered by flannel-np (TTL {ttl}) or Docker (600); load {load}')
print(f'  {"node":5s} {"Docker":16s} {"hook":5s} {"docker run: ours/all":22s} {"Swarm task: ours/all":22s} (Docker\'s, none)')
for node in sorted(eng):
    v, hook = eng[node]
    cells = []
    for kind in ('run', 'task'):
        c = count.get((node, kind), {'ours': 0, 'docker': 0, 'other': 0})
        n = sum(c.values())
        cells.append(f'{c["ours"]:3d}/{n:<3d} ({100 * c["ours"] / n if n else 0:3.0f}%)  [{c["docker"]}, {c["other"]}]')
    print(f'  {node:5s} {v:16s} {hook:5s} ' + '   '.join(cells))
EOF
