#!/usr/bin/env bash
# scripts/bench/swarm-bench.sh [--reps N] [--starts N] [--docker V,…] [--keep]
#
# flannel-np against Docker's own overlay network, in the same run, on the three-node lab Swarm
# (scripts/swarm-lab.sh; one plugin per node, as scripts/demo.sh installs it). --docker picks
# the engines (swarm-lab.sh up --docker: host, 26 or 28 per node; `--docker 28`: every node on
# Docker 28); both networks always run on the same engines:
#
#  (a) scale: `docker service scale -d` 3→10 and 10→3 (N reps each, default 5) of
#        so: a VIP service on a flannel-np network, and
#        sd: a DNSRR service on an ordinary overlay network.
#      Per node, the time from the scale command to
#        dns:   tasks.<svc> answering exactly the new count, asked from a client container's
#               network namespace on that node (dig @127.0.0.11 run with nsenter -n, so the probe
#               costs milliseconds instead of a `docker exec`);
#        vip:   (so only) the VIP's backends in the backends-N maps of nft table ip flannel-np-lb there;
#      and, for reference, `docker service ls` on the manager showing T/T replicas running.
#      One event's result is the slowest node ("every node reflects it").
#  (b) start: `docker run -d` of a container on each network, rotating over the nodes (N each,
#      default 10, the two networks alternating), to `run` returning with the container running,
#      and to the first answer for the service name from the container's own resolver.
#
# Prints every sample, then median / p90 per measure and the ratios ours / overlay, plus the
# machine's load. Needs root and what scripts/demo.sh needs, plus dig (dnsutils). Tears the lab
# down at the end (also on failure or Ctrl-C) unless --keep. Takes about 5 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAB="$ROOT/scripts/swarm-lab.sh"
JAR="$ROOT/verticles/target/flannel-np.jar"
PREFIX="${FNP_LAB_PREFIX:-fnp}"
PLUGIN_DIR="${FNP_PLUGIN_DIR:-/tmp/$PREFIX-plugin}"
P="${FNP_PLUGIN:-flannel-np:bench}"
IMAGE="${FNP_LAB_IMAGE:-fnp/busybox:latest}"
REPS=5 STARTS=10 KEEP=0 DOCKER=host
LIMIT=60           # seconds an event may take before it counts as a timeout
RESULTS=""         # samples; made once the cleanup trap is set
t_start=$SECONDS

log() { printf '[%s] swarm-bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
dk()  { "$LAB" dk "$@"; }
now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
wait_for() { # SECONDS WHAT CMD…
  local secs="$1" what="$2"; local end=$((SECONDS + secs)); shift 2
  until "$@" >/dev/null 2>&1; do (( SECONDS < end )) || die "timed out after $secs s waiting for $what"; sleep 0.3; done
}

while (($#)); do
  case "$1" in
    --reps|--starts)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] && (( $2 >= 1 && $2 <= 50 )) || die "$1 needs a number 1..50, got '${2:-}'"
      [[ $1 == --reps ]] && REPS=$2 || STARTS=$2; shift 2 ;;
    --docker) [[ $# -ge 2 ]] || die "--docker needs a list like 28 or 28,host,26"; DOCKER=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (swarm-bench.sh [--reps N] [--starts N] [--docker V,…] [--keep])" ;;
  esac
done
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, dockerd)"
for c in dockerd etcd busybox mmdebstrap nft dig nsenter python3; do
  command -v "$c" >/dev/null || die "missing command '$c' (apt-get install docker.io etcd-server etcd-client busybox-static mmdebstrap nftables dnsutils util-linux python3)"
done

# swarm-lab.sh up would remove a lab that is already up; a benchmark must not destroy someone's lab.
if [[ -e "${FNP_LAB_STATE:-/tmp/fnp-lab}" ]] || ip netns list 2>/dev/null | grep -qE "^$PREFIX(-infra|[0-9]+)( |$)"; then
  die "a lab is already up (${FNP_LAB_STATE:-/tmp/fnp-lab}, netns $PREFIX*): scripts/swarm-lab.sh down first, or choose another FNP_LAB_PREFIX, FNP_LAB_STATE and FNP_LAB_NET"
fi

LAB_UP=0
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  jobs -p | xargs -r kill 2>/dev/null || true   # this script's own pollers only
  if (( LAB_UP )); then
    if (( KEEP )); then log "--keep: lab left up (scripts/swarm-lab.sh down)"
    elif ! "$LAB" down >/dev/null; then log "lab down did not restore the host"; rc=1; fi
  fi
  [[ -z "$RESULTS" ]] || rm -rf "$RESULTS"
  log "$([[ $rc == 0 ]] && echo done || echo FAILED) in $((SECONDS - t_start)) s"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
RESULTS=$(mktemp -d /tmp/"$PREFIX"-swarm-bench.XXXXXX)

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- setup: plugin, lab, networks, services, clients ---------------------------------------------
if [[ ! -f "$JAR" ]]; then (cd "$ROOT" && mvn -B -q -DskipTests package); fi
if [[ ! -f "$PLUGIN_DIR/config.json" || "$JAR" -nt "$PLUGIN_DIR/rootfs/opt/flannel-np/flannel-np.jar" \
      || "$ROOT/plugin-bundle/config.json" -nt "$PLUGIN_DIR/config.json" ]]; then
  "$ROOT/scripts/build-plugin.sh" "$PLUGIN_DIR"
fi
LAB_UP=1
"$LAB" up 3 --docker "$DOCKER"
ENGINES=$("$LAB" versions | awk '{printf "%s%s", sep, $2; sep=","}')
"$LAB" install-plugin "$PLUGIN_DIR" "$P" ETCD_ENDPOINTS={etcd} NODE_NAME={node} \
  AVAILABLE_SUBNETS=10.200.0.0/16 DEFAULT_FLANNEL_OPTIONS=-iface=eth0 2>&1 | sed 's/^/  /' >&2

dk 1 network create -d "$P" --ipam-driver "$P" --ipam-opt "flannel-id=$(cat /proc/sys/kernel/random/uuid)" \
  --attachable bn >/dev/null
dk 1 network create -d overlay --subnet 10.201.0.0/16 --attachable ovl >/dev/null
allocated() { [[ "$(dk 1 network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' bn)" == 10.200.* ]]; }
wait_for 30 "network bn allocated by flannel-np" allocated

svc_opts=(-d --replicas 3 --no-resolve-image --stop-grace-period 1s)
httpd=(sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www')
dk 1 service create "${svc_opts[@]}" --name so --network bn "$IMAGE" "${httpd[@]}" >/dev/null
dk 1 service create "${svc_opts[@]}" --name sd --network ovl --endpoint-mode dnsrr "$IMAGE" "${httpd[@]}" >/dev/null
replicas() { [[ "$(dk 1 service ls -f "name=$1" --format '{{.Name}} {{.Replicas}}' | awk -v s="$1" '$1 == s {print $2}')" == "$2/$2" ]]; }
wait_for 90 "3 replicas of so" replicas so 3
wait_for 90 "3 replicas of sd" replicas sd 3
VIP=$(dk 1 service inspect -f '{{range .Endpoint.VirtualIPs}}{{.Addr}}{{end}}' so); VIP=${VIP%/*}
[[ "$VIP" =~ ^[0-9.]+$ ]] || die "service so has no single VIP ('$VIP')"

# Client containers: one per node and network; the probes run in their network namespaces.
declare -A CPID
for i in 1 2 3; do
  for k in ours ovl; do
    net=$([[ $k == ours ]] && echo bn || echo ovl)
    dk "$i" run -d --name "cli-$k" --network "$net" --stop-timeout 1 "$IMAGE" sleep 86400 >/dev/null
    CPID[$k,$i]=$(dk "$i" inspect -f '{{.State.Pid}}' "cli-$k")
  done
done
declare -A SVC=([ours]=so [ovl]=sd)
dns_count() { # KIND I NAME: how many addresses node I's client of KIND gets for NAME
  nsenter -t "${CPID[$1,$2]}" -n dig +short +time=1 +tries=1 "$3" @127.0.0.11 2>/dev/null | grep -c '^[0-9]' || true
}
vip_count() { # I: backends of the VIP in node I's load-balancer maps (backends-N: VIPs with N tasks)
  nsenter --net="/run/netns/$PREFIX$1" nft list table ip flannel-np-lb 2>/dev/null \
    | grep -oF "$VIP . " | wc -l
}
steady() { local i; for i in 1 2 3; do [[ "$(dns_count "$1" "$i" "tasks.${SVC[$1]}")" == "$2" ]] || return 1
  [[ $1 == ovl || "$(vip_count "$i")" == "$2" ]] || return 1; done; }
wait_for 60 "every node's DNS (and VIP) to show 3 tasks of so" steady ours 3
wait_for 60 "every node's DNS to show 3 tasks of sd" steady ovl 3
log "setup done in $((SECONDS - t_start)) s: so (VIP $VIP) on flannel-np network bn, sd (DNSRR) on overlay ovl"

# ---- (a) scale -------------------------------------------------------------------------------
# poll_node KIND I TARGET T0 OUT: first time node I's DNS (and VIP) show TARGET; -1 on timeout.
poll_node() {
  local kind="$1" i="$2" target="$3" t0="$4" out="$5" dns=-1 vip=-1 deadline=$(( $4 + LIMIT * 1000000000 ))
  set +e   # a failed probe is a miss, not the end of the poller
  [[ $kind == ours ]] || vip=0
  while (( dns < 0 || vip < 0 )) && (( $(now) < deadline )); do
    if (( dns < 0 )) && [[ "$(dns_count "$kind" "$i" "tasks.${SVC[$kind]}")" == "$target" ]]; then dns=$(ms_since "$t0"); fi
    if (( vip < 0 )) && [[ "$(vip_count "$i")" == "$target" ]]; then vip=$(ms_since "$t0"); fi
    sleep 0.02
  done
  [[ $kind == ours ]] || vip=NA
  echo "$dns $vip" >"$out"
}
poll_swarm() { # SVC TARGET T0 OUT: `docker service ls` shows TARGET/TARGET
  local deadline=$(( $3 + LIMIT * 1000000000 )) t=-1
  set +e
  while (( $(now) < deadline )); do replicas "$1" "$2" && { t=$(ms_since "$3"); break; }; sleep 0.05; done
  echo "$t" >"$4"
}
scale_event() { # KIND FROM TO REP
  local kind="$1" from="$2" to="$3" rep="$4" s="${SVC[$1]}" t0 i pids=() line
  t0=$(now)
  dk 1 service scale -d "$s=$to" >/dev/null
  for i in 1 2 3; do poll_node "$kind" "$i" "$to" "$t0" "$RESULTS/p$i" & pids+=($!); done
  poll_swarm "$s" "$to" "$t0" "$RESULTS/sw" & pids+=($!)
  wait "${pids[@]}"
  line="scale $kind $from-$to rep$rep swarm=$(cat "$RESULTS/sw")"
  for i in 1 2 3; do read -r d v <"$RESULTS/p$i"; line+=" n$i:dns=$d,vip=$v"; done
  echo "$line" | tee -a "$RESULTS/samples" >&2
}
log "(a) scale 3→10→3, $REPS reps per network, the networks alternating"
for ((r = 1; r <= REPS; r++)); do
  order=(ours ovl); (( r % 2 )) || order=(ovl ours)
  for k in "${order[@]}"; do
    scale_event "$k" 3 10 "$r"
    sleep 1
    scale_event "$k" 10 3 "$r"
    sleep 1
  done
done

# ---- (b) container start ------------------------------------------------------------------------
start_one() { # KIND NODE N
  local kind="$1" i="$2" n="$3" net t0 run dns=-1 cid pid deadline
  net=$([[ $kind == ours ]] && echo bn || echo ovl)
  t0=$(now)
  cid=$(dk "$i" run -d --network "$net" --stop-timeout 1 "$IMAGE" sleep 86400)
  run=$(ms_since "$t0")
  pid=$(dk "$i" inspect -f '{{if .State.Running}}{{.State.Pid}}{{end}}' "$cid")
  [[ -n "$pid" ]] || die "container $cid on node $i is not running after docker run -d"
  deadline=$(( t0 + LIMIT * 1000000000 ))
  while (( $(now) < deadline )); do
    if [[ -n "$(nsenter -t "$pid" -n dig +short +time=1 +tries=1 "${SVC[$kind]}" @127.0.0.11 2>/dev/null | grep '^[0-9]')" ]]; then
      dns=$(ms_since "$t0"); break
    fi
    sleep 0.01
  done
  echo "start $kind node$i #$n run=$run dns=$dns" | tee -a "$RESULTS/samples" >&2
  dk "$i" rm -f "$cid" >/dev/null
}
log "(b) container start, $STARTS per network, rotating over the nodes"
for ((n = 1; n <= STARTS; n++)); do
  i=$(( (n - 1) % 3 + 1 ))
  if (( n % 2 )); then start_one ours "$i" "$n"; start_one ovl "$i" "$n"
  else start_one ovl "$i" "$n"; start_one ours "$i" "$n"; fi
done

# ---- summary --------------------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$RESULTS/samples" "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" "$ENGINES" <<'EOF'
import re, statistics, sys
path, cpus, load0, load1, engines = sys.argv[1:6]
series = {}  # measure -> list of ms; None = timeout
ms = lambda t: None if t == '-1' else int(t)
def add(k, v): series.setdefault(k, []).append(v)
for line in open(path):
    f = line.split()
    if f[0] == 'scale':
        kind, d = f[1], f[2]
        dns = [ms(m) for m in re.findall(r'dns=(-?\d+)', line)]
        vip = [ms(m) for m in re.findall(r'vip=(-?\d+)', line)]
        sw = ms(re.search(r'swarm=(-?\d+)', line).group(1))
        worst = lambda xs: None if None in xs else max(xs)
        add(f'scale {d} {kind} docker service ls', sw)
        add(f'scale {d} {kind} DNS tasks.<svc>, every node', worst(dns))
        if kind == 'ours':
            add(f'scale {d} ours VIP nft map, every node', worst(vip))
        # how long after Docker reports the replicas the network shows them (negative: before)
        if sw is not None and None not in dns:
            add(f'scale {d} {kind} DNS every node minus docker service ls', max(dns) - sw)
    else:
        kind = f[1]
        add(f'start {kind} docker run -d → running', ms(re.search(r'run=(-?\d+)', line).group(1)))
        add(f'start {kind} → first DNS answer', ms(re.search(r'dns=(-?\d+)', line).group(1)))
def stats(xs):
    ok = sorted(x for x in xs if x is not None)
    if not ok: return None
    p90 = ok[min(len(ok) - 1, max(0, -(-9 * len(ok) // 10) - 1))]
    return statistics.median(ok), p90, len(xs) - len(ok), len(xs)
print(f'\nswarm-bench: 3 nodes (Docker {engines}), {cpus} CPUs, load average {load0} before, {load1} after (ms; median / p90 over n; t/o = timeouts)')
med = {}
for k in sorted(series):
    s = stats(series[k])
    if s is None:
        print(f'  {k:58s} all {len(series[k])} timed out'); continue
    med[k] = s[0]
    print(f'  {k:58s} {s[0]:8.0f} / {s[1]:6.0f}   n={s[3]}' + (f' t/o={s[2]}' if s[2] else ''))
print('ratios ours / overlay (medians):')
def ratio(label, a, b):
    if a in med and b in med and med[b] > 0:
        print(f'  {label:58s} {med[a] / med[b]:6.2f}  ({med[a]:.0f} vs {med[b]:.0f} ms)')
for d in ('3-10', '10-3'):
    ratio(f'scale {d}: DNS every node (VIP svc vs DNSRR svc)', f'scale {d} ours DNS tasks.<svc>, every node', f'scale {d} ovl DNS tasks.<svc>, every node')
    ratio(f'scale {d}: our VIP every node vs overlay DNS', f'scale {d} ours VIP nft map, every node', f'scale {d} ovl DNS tasks.<svc>, every node')
    ratio(f'scale {d}: docker service ls (same Swarm)', f'scale {d} ours docker service ls', f'scale {d} ovl docker service ls')
ratio('start: docker run -d → running', 'start ours docker run -d → running', 'start ovl docker run -d → running')
ratio('start: → first DNS answer', 'start ours → first DNS answer', 'start ovl → first DNS answer')
EOF
