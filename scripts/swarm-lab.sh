#!/usr/bin/env bash
# scripts/swarm-lab.sh: a Docker Swarm of real dockerds (Debian docker.io 20.10), one per network
# namespace, on this machine; flannel-np is installed on it like an operator would.
#
#   swarm-lab.sh up [N=3]             infra netns (bridge + etcd), N nodes, swarm, busybox image
#   swarm-lab.sh down                 remove everything; exit 1 if the host differs from before `up`
#   swarm-lab.sh dk I ARGS…           docker CLI (20.10) against node I
#   swarm-lab.sh exec I CMD…          CMD in node I's net, mount and UTS namespaces (dockerd's view)
#   swarm-lab.sh install-plugin DIR NAME:TAG [KEY=VALUE…]
#                                     docker plugin create + set + enable on every node; values may
#                                     use {i} {node} {ip} {etcd}; prints enable→socket times
#   swarm-lab.sh etcdctl ARGS…        etcdctl against the lab's etcd
#
# FNP_LAB_DNS_HOSTS="name=a.b.c.d,…" (optional): `up` also runs dnsmasq on the lab bridge
# ($NET.1:53, answering only these names, never forwarding) and gives every dockerd
# "dns": ["$NET.1"], so names outside the Swarm are answered through Docker's upstream.
#
# Layout (names from FNP_LAB_PREFIX, default fnp; state in FNP_LAB_STATE, default /tmp/fnp-lab):
#   netns fnp-infra: bridge fnpbr0 $NET.1/24 and etcd :2379 (data on tmpfs)
#   netns fnpI: eth0 $NET.(10+I)/24 (veth to the bridge, no default route), dockerd in its own
#     mount + UTS namespace (scripts/swarm-lab/node-init.sh); fnp1 is the manager
# Nothing is created in the root network namespace; `down` proves it with a snapshot diff.
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/swarm-lab"
PREFIX="${FNP_LAB_PREFIX:-fnp}"
INFRA="$PREFIX-infra"
STATE="${FNP_LAB_STATE:-/tmp/fnp-lab}"
NET="${FNP_LAB_NET:-198.18.7}"
BR="${PREFIX}br0"
ETCD_IP="$NET.1"
ETCD="http://$ETCD_IP:2379"
WAIT="${FNP_LAB_WAIT:-60}"
IMAGE="${FNP_LAB_IMAGE:-fnp/busybox:latest}"
DOCKER_BIN="${DOCKER_BIN:-/usr/bin/docker}"   # the 20.10 CLI; /usr/local/bin/docker may be newer
export DOCKER_CONFIG="$STATE/cli"               # leave ~/.docker alone

log() { printf '[%s] swarm-lab: %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

node_ip()   { echo "$NET.$((10 + $1))"; }
node_ns()   { echo "$PREFIX$1"; }
node_dir()  { echo "$STATE/n$1"; }
node_sock() { echo "$STATE/n$1/run/docker.sock"; }
nodes()     { cat "$STATE/nodes" 2>/dev/null || echo 0; }
dk()        { local i="$1"; shift; DOCKER_HOST="unix://$(node_sock "$i")" "$DOCKER_BIN" "$@"; }
check_node() {
  [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= $(nodes) )) || die "no lab node '$1' (nodes: 1..$(nodes))"
}

wait_until() { # SECONDS WHAT CMD…: poll every 0.2 s, bounded
  local end=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < end )) || { log "timeout after $((end - SECONDS + $1))s waiting for: $what"; return 1; }
    sleep 0.2
  done
}
alive() { [[ -n "${1:-}" && -d /proc/$1 ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
stop_pid() { # PID NAME GRACE: TERM, bounded wait, KILL; only this exact PID
  local pid="$1" name="$2" end=$((SECONDS + $3))
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid" && (( SECONDS < end )); do sleep 0.2; done
  alive "$pid" && { log "$name (pid $pid) ignored SIGTERM, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  return 0
}
lab_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^($PREFIX[0-9]+|$INFRA)$" || true; }

# The host state `down` must restore. Other engineers' tests run on this machine at the same
# time, so their network namespaces (and the mounts that pin them) are left out; everything a
# dockerd could leave in the root namespace (links, routes, rules, nft/iptables, mounts, cgroups,
# Docker's directories) is compared.
snapshot() {
  ( set +e +o pipefail  # a section that is empty is a result, not an error
    echo "## links";  ip -br link show | awk '{print $1, $3}' | sort
    echo "## addrs";  ip -br addr show | sort
    echo "## routes"; ip route show table all | sort; ip -6 route show table all 2>/dev/null | sort
    echo "## rules";  ip rule show
    echo "## netns";  lab_netns
    for t in filter nat mangle raw; do echo "## iptables $t"; iptables -t "$t" -S 2>/dev/null; done
    echo "## iptables-legacy"; iptables-legacy-save 2>/dev/null | sed -E 's/\[[0-9]+:[0-9]+\]//; /^#/d'
    echo "## nft";    nft list ruleset 2>/dev/null
    echo "## mounts"
    awk '{print $5, $(NF-2)}' /proc/self/mountinfo | grep -vE '^/run/netns/' | sort
    awk '{print $5}' /proc/self/mountinfo | grep -E "^/run/netns/($PREFIX[0-9]+|$INFRA)$" | sort
    # Only our own cgroups: other labs on this machine add and remove theirs at any time. The
    # plugins' cgroups (/<plugin-id>) are checked by ID in `down`.
    echo "## cgroups"; find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name "$PREFIX" 2>/dev/null | sort
    for d in /run/docker /run/docker/plugins /run/containerd /etc/docker /var/lib/docker /var/lib/containerd; do
      echo "## ls $d"; ls -A "$d" 2>/dev/null | sort || true
    done
    echo "## hostname"; hostname
  ) 2>&1
}

cmd_up() {
  local N="${1:-3}" t0=$SECONDS i ns d
  [[ "$N" =~ ^[0-9]+$ ]] && (( N >= 1 && N <= 50 )) || die "up: N must be 1..50, got '$N'"
  for c in ip nsenter unshare setsid dockerd containerd runc etcd etcdctl iptables nft busybox "$DOCKER_BIN"; do
    command -v "$c" >/dev/null || die "missing command '$c' (apt-get install docker.io etcd-server etcd-client busybox-static)"
  done
  [[ $EUID -eq 0 ]] || die "must run as root"
  if [[ -e "$STATE" || -n "$(lab_netns)" ]]; then log "a previous lab exists: down first"; cmd_down || true; fi
  mkdir -p "$STATE" "$DOCKER_CONFIG"
  echo "$N" >"$STATE/nodes"
  snapshot >"$STATE/baseline.txt"
  # Any failure below (a command, a die, Ctrl-C) tears down what exists so far.
  trap 'log "up failed: tearing down"; cmd_down || true' EXIT

  ip netns add "$INFRA"
  ip -n "$INFRA" link set lo up
  ip -n "$INFRA" link add "$BR" type bridge
  ip -n "$INFRA" addr add "$ETCD_IP/24" dev "$BR"
  ip -n "$INFRA" link set "$BR" up
  for ((i = 1; i <= N; i++)); do
    ns=$(node_ns "$i")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # both ends born in their own netns: nothing ever appears in the root namespace
    ip link add "v-$ns" netns "$INFRA" type veth peer name eth0 netns "$ns"
    ip -n "$INFRA" link set "v-$ns" master "$BR" up
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
  done

  mkdir -p "$STATE/etcd"
  setsid nsenter --net="/run/netns/$INFRA" -- unshare --mount --propagation slave -- \
    sh -c 'mount -n -t tmpfs -o size=512m fnp-etcd "$0" && exec "$@"' "$STATE/etcd" \
    etcd --name fnp-etcd --data-dir "$STATE/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://$ETCD_IP:2380" --initial-advertise-peer-urls "http://$ETCD_IP:2380" \
    --initial-cluster "fnp-etcd=http://$ETCD_IP:2380" --logger zap --log-level warn \
    </dev/null >"$STATE/etcd.log" 2>&1 &
  echo $! >"$STATE/etcd.pid"
  local dns_json=""
  if [[ -n "${FNP_LAB_DNS_HOSTS:-}" ]]; then
    command -v dnsmasq >/dev/null || die "FNP_LAB_DNS_HOSTS needs dnsmasq (apt-get install dnsmasq-base)"
    local h hs recs=()
    IFS=, read -ra hs <<<"$FNP_LAB_DNS_HOSTS"
    for h in "${hs[@]}"; do
      [[ "$h" =~ ^([A-Za-z0-9][A-Za-z0-9.-]*)=([0-9]{1,3}(\.[0-9]{1,3}){3})$ ]] \
        || die "FNP_LAB_DNS_HOSTS: '$h' is not NAME=IPv4"
      recs+=("--host-record=${BASH_REMATCH[1]},${BASH_REMATCH[2]}" "--local=/${BASH_REMATCH[1]}/")
    done
    # only the bridge address, only these names: nothing is forwarded off the machine
    setsid nsenter --net="/run/netns/$INFRA" -- dnsmasq --keep-in-foreground --conf-file=/dev/null \
      --no-resolv --no-hosts --no-poll --bind-interfaces --listen-address="$ETCD_IP" --pid-file= \
      --log-queries --log-facility=- "${recs[@]}" </dev/null >"$STATE/dnsmasq.log" 2>&1 &
    echo $! >"$STATE/dnsmasq.pid"
    dns_json=", \"dns\": [\"$ETCD_IP\"]"
  fi

  for ((i = 1; i <= N; i++)); do
    d=$(node_dir "$i"); ns=$(node_ns "$i")
    mkdir -p "$d"/{run,etc,varlib}
    cat >"$d/etc/daemon.json" <<EOF
{"storage-driver": "overlay2", "cgroup-parent": "/$PREFIX/$ns", "shutdown-timeout": 3,
 "live-restore": false, "log-driver": "json-file", "log-opts": {"max-size": "1m"}$dns_json}
EOF
    FNP_LAB_PREFIX="$PREFIX" setsid nsenter --net="/run/netns/$ns" -- \
      unshare --mount --uts --propagation slave -- \
      "$LAB_DIR/node-init.sh" "$i" "$d" "$(node_ip "$i")" </dev/null >"$d/dockerd.log" 2>&1 &
    echo $! >"$d/dockerd.pid"
  done
  wait_until "$WAIT" "etcd" nsenter --net="/run/netns/$(node_ns 1)" etcdctl --endpoints "$ETCD" endpoint health \
    || die "etcd did not come up ($STATE/etcd.log)"
  for ((i = 1; i <= N; i++)); do
    wait_until "$WAIT" "dockerd $i" dk "$i" version || { tail -20 "$(node_dir "$i")/dockerd.log" >&2; die "dockerd $i did not start"; }
    readlink "/proc/$(cat "$(node_dir "$i")/dockerd.pid")/ns/mnt" >"$(node_dir "$i")/mntns"
  done

  local ip1 token pids=() p
  ip1=$(node_ip 1)
  dk 1 swarm init --advertise-addr "$ip1" --listen-addr "$ip1:2377" >/dev/null
  token=$(dk 1 swarm join-token -q worker)
  for ((i = 2; i <= N; i++)); do
    ( timeout "$WAIT" env DOCKER_HOST="unix://$(node_sock "$i")" "$DOCKER_BIN" swarm join --token "$token" \
        --advertise-addr "$(node_ip "$i")" --listen-addr "$(node_ip "$i"):2377" "$ip1:2377" >/dev/null ) & pids+=($!)
  done
  for p in "${pids[@]+"${pids[@]}"}"; do wait "$p"; done
  ready() { [[ "$(dk 1 node ls --format '{{.Status}}' | grep -c '^Ready$')" -eq "$N" ]]; }
  wait_until "$WAIT" "$N Ready nodes" ready || die "swarm did not become ready"

  # busybox image without a registry: import once, save/load so every node has the same ID
  local img="$STATE/img" a
  mkdir -p "$img/rootfs"/{bin,etc,tmp,proc,sys,dev,root,www}
  cp /usr/bin/busybox "$img/rootfs/bin/busybox"
  for a in $(/usr/bin/busybox --list); do [[ "$a" == busybox ]] || ln -sf busybox "$img/rootfs/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$img/rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$img/rootfs/etc/group"
  chmod 1777 "$img/rootfs/tmp"
  tar -C "$img/rootfs" -cf "$img/rootfs.tar" .
  dk 1 import --change 'CMD ["sh"]' --change 'ENV PATH=/bin' "$img/rootfs.tar" "$IMAGE" >/dev/null
  dk 1 save -o "$img/image.tar" "$IMAGE"
  pids=()
  for ((i = 2; i <= N; i++)); do ( dk "$i" load -q -i "$img/image.tar" >/dev/null ) & pids+=($!); done
  for p in "${pids[@]+"${pids[@]}"}"; do wait "$p"; done
  rm -rf "$img/rootfs" "$img/rootfs.tar"
  trap - EXIT
  log "up: $N nodes Ready, etcd $ETCD, image $IMAGE, in $((SECONDS - t0))s"
}

cmd_down() {
  local t0=$SECONDS i p ns d rc=0 ids=()
  [[ $EUID -eq 0 ]] || die "must run as root"
  local -a idx=()
  for d in "$STATE"/n[0-9]*; do [[ -d "$d" ]] && idx+=("${d##*/n}"); done
  for ns in $(lab_netns); do [[ "$ns" =~ ^$PREFIX([0-9]+)$ ]] && idx+=("${BASH_REMATCH[1]}"); done
  mapfile -t idx < <(printf '%s\n' "${idx[@]+"${idx[@]}"}" | grep -E '^[0-9]+$' | sort -un)

  dockerd_pid() { local f p; f="$(node_dir "$1")/dockerd.pid"; [[ -s "$f" ]] || return 1; p=$(cat "$f")
    alive "$p" && [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == dockerd ]] && echo "$p"; }
  # Stop dockerds by recorded PID (swarm state is on their tmpfs; no need to leave the swarm).
  local pids=()
  for i in "${idx[@]+"${idx[@]}"}"; do
    if p=$(dockerd_pid "$i"); then
      # managed-plugin cgroups are /<plugin-id>, outside cgroup-parent: remember the IDs
      ls "/proc/$p/root/var/lib/docker/plugins" 2>/dev/null | grep -E '^[0-9a-f]{64}$' >"$(node_dir "$i")/plugin-ids" || true
      cp "$(node_dir "$i")/run/docker/containerd/containerd.pid" "$(node_dir "$i")/containerd.pid" 2>/dev/null || true
      ( stop_pid "$p" "dockerd$i" 20 ) & pids+=($!)
    fi
  done
  for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" || true; done
  # Whatever still runs in a node (containerd, shims, tasks, the plugin), found by PID only.
  leftovers() {
    local i="$1" ns d m q id
    ns=$(node_ns "$i"); d=$(node_dir "$i")
    [[ -e /run/netns/$ns ]] && ip netns pids "$ns" 2>/dev/null
    if [[ -s $d/mntns ]]; then m=$(cat "$d/mntns")
      for q in /proc/[0-9]*; do [[ "$(readlink "$q/ns/mnt" 2>/dev/null)" == "$m" ]] && echo "${q#/proc/}"; done; fi
    [[ -d /sys/fs/cgroup/pids/$PREFIX/$ns ]] && find "/sys/fs/cgroup/pids/$PREFIX/$ns" -name cgroup.procs -exec cat {} + 2>/dev/null
    for id in $(cat "$d/plugin-ids" 2>/dev/null); do cat "/sys/fs/cgroup/pids/$id/cgroup.procs" 2>/dev/null; done
    return 0
  }
  local end left
  for i in "${idx[@]+"${idx[@]}"}"; do
    end=$((SECONDS + 15))
    while :; do
      mapfile -t left < <(leftovers "$i" | sort -un | grep -vx "$$" || true)
      ((${#left[@]} == 0)) && break
      (( SECONDS < end )) || { log "node $i: pids ${left[*]} survive SIGKILL"; break; }
      for p in "${left[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
      sleep 0.3
    done
  done
  if [[ -s "$STATE/etcd.pid" ]]; then
    p=$(cat "$STATE/etcd.pid")
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == etcd ]] && stop_pid "$p" etcd 10
  fi
  if [[ -s "$STATE/dnsmasq.pid" ]]; then
    p=$(cat "$STATE/dnsmasq.pid")
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == dnsmasq ]] && stop_pid "$p" dnsmasq 5
  fi
  if [[ -e /run/netns/$INFRA ]]; then
    for p in $(ip netns pids "$INFRA" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  fi
  for ns in $(lab_netns); do ip netns del "$ns" || log "ip netns del $ns failed"; done
  for d in /sys/fs/cgroup/*/"$PREFIX"; do [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
  for i in "${idx[@]+"${idx[@]}"}"; do
    for id in $(cat "$(node_dir "$i")/plugin-ids" 2>/dev/null); do
      for d in /sys/fs/cgroup/*/"$id"; do [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
    done
  done
  for i in "${idx[@]+"${idx[@]}"}"; do
    for id in $(cat "$(node_dir "$i")/plugin-ids" 2>/dev/null); do
      ls -d /sys/fs/cgroup/*/"$id" >/dev/null 2>&1 && { log "down: cgroup of plugin $id is left"; rc=1; }
    done
  done
  if [[ -s "$STATE/baseline.txt" ]]; then
    snapshot >"$STATE/after.txt"
    if ! diff -u "$STATE/baseline.txt" "$STATE/after.txt" >"$STATE/down-diff.txt"; then
      rc=1; cp "$STATE/down-diff.txt" "/tmp/$PREFIX-lab-down-diff.txt"
      log "down: the host differs from before 'up' (/tmp/$PREFIX-lab-down-diff.txt):"; cat "$STATE/down-diff.txt" >&2
    else
      log "down: host identical to the snapshot taken before 'up'"
    fi
  fi
  rm -rf --one-file-system "$STATE"
  log "down in $((SECONDS - t0))s"
  return "$rc"
}

# install-plugin DIR NAME:TAG [KEY=VALUE…]: the operator's create + set + enable, on every node
# in parallel. Measures, per node, the time from `plugin enable` until the plugin's socket exists.
cmd_install_plugin() {
  local dir="${1:?usage: install-plugin DIR NAME:TAG [KEY=VALUE…]}" name="${2:?NAME:TAG missing}"; shift 2
  [[ -f "$dir/config.json" && -d "$dir/rootfs" ]] || die "install-plugin: '$dir' has no config.json and rootfs/ (scripts/build-plugin.sh DIR)"
  [[ "$name" =~ ^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die "install-plugin: '$name' is not NAME:TAG"
  local N i pids=() p rc=0
  N=$(nodes); (( N >= 1 )) || die "no lab is up"
  one() {
    local i="$1" s args=() id sock t0 t1 ms; shift
    for s in "$@"; do
      s=${s//\{i\}/$i}; s=${s//\{node\}/$(node_ns "$i")}; s=${s//\{ip\}/$(node_ip "$i")}; s=${s//\{etcd\}/$ETCD}
      args+=("$s")
    done
    if dk "$i" plugin inspect "$name" >/dev/null 2>&1; then
      dk "$i" plugin disable -f "$name" >/dev/null 2>&1 || true
      dk "$i" plugin rm -f "$name" >/dev/null
    fi
    dk "$i" plugin create "$name" "$dir" >/dev/null
    ((${#args[@]} == 0)) || dk "$i" plugin set "$name" "${args[@]}"
    id=$(dk "$i" plugin inspect -f '{{.Id}}' "$name")
    sock="$(node_dir "$i")/run/docker/plugins/$id/$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print((c.get("interface") or c.get("Interface"))["socket"])' "$dir/config.json")"
    t0=$(date +%s%N)
    dk "$i" plugin enable "$name" >/dev/null &
    local en=$!
    while [[ ! -S "$sock" ]] && (( ($(date +%s%N) - t0) < 15000000000 )); do sleep 0.02; done
    t1=$(date +%s%N)
    wait "$en" || { log "node $i: plugin enable $name failed"; return 1; }
    ms=$(( (t1 - t0) / 1000000 ))
    [[ -S "$sock" ]] || { log "node $i: no socket $sock after 15 s"; return 1; }
    echo "$ms" >"$(node_dir "$i")/plugin-socket-ms"
    log "node $i: $name enabled, socket after ${ms} ms, enable returned after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  }
  for ((i = 1; i <= N; i++)); do one "$i" "$@" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  dk) [[ $# -ge 1 ]] || die "usage: dk I ARGS…"; check_node "$1"; i="$1"; shift; exec env DOCKER_HOST="unix://$(node_sock "$i")" "$DOCKER_BIN" "$@" ;;
  exec)
    [[ $# -ge 2 ]] || die "usage: exec I CMD…"; check_node "$1"
    pid=$(cat "$(node_dir "$1")/dockerd.pid"); [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || die "node $1: dockerd not running"
    shift; exec nsenter -t "$pid" -n -m -u -- "$@" ;;
  install-plugin) cmd_install_plugin "$@" ;;
  etcdctl) exec nsenter --net="/run/netns/$INFRA" -- etcdctl --endpoints "$ETCD" "$@" ;;
  *) die "usage: swarm-lab.sh up [N] | down | dk I ARGS… | exec I CMD… | install-plugin DIR NAME:TAG [KEY=VALUE…] | etcdctl ARGS…" ;;
esac
