#!/usr/bin/env bash
# scripts/swarm-lab.sh: a Docker Swarm of real dockerds, one per network namespace, on this
# machine; flannel-np is installed on it like an operator would.
#
#   swarm-lab.sh up [N=3] [--docker V,…] [--etcd 1|3] [--hook]
#                                     infra netns (bridge + etcd), N nodes, swarm, busybox image
#       --docker V,…   the engine of each node in turn (a shorter list repeats its last entry):
#                      host (or its version, 20.10 on Debian 12) = the machine's docker.io;
#                      26 = Debian trixie's docker.io 26.1; 28 = Debian sid's docker.io 28.5.
#                      Default: host on every node. Node 1 is the Swarm's manager.
#       --etcd M       M etcd members (1 or 3; default 1), data on tmpfs
#       --hook         the OCI hook (hook/) as default runtime on every node whose engine is 27
#                      or older (Docker 28 calls Join before the container starts: no hook)
#   swarm-lab.sh down                 remove everything; exit 1 if the host differs from before `up`
#   swarm-lab.sh roots V,…            build (once) and print the cached roots of engines 26 / 28
#   swarm-lab.sh versions             per node: engine, API max/min, containerd, runc, hook
#   swarm-lab.sh dk I ARGS…           docker CLI (the host's, 20.10) against node I
#   swarm-lab.sh exec I CMD…          CMD in node I's net, mount and UTS namespaces (dockerd's view;
#                                     on a 26/28 node its tools come from that engine's root)
#   swarm-lab.sh install-plugin DIR NAME:TAG [KEY=VALUE…]
#                                     docker plugin create + set + enable on every node; values may
#                                     use {i} {node} {ip} {etcd} {hook} (true where --hook
#                                     installed it); prints enable→socket times. The plugin's
#                                     config-dir mount is the node's /etc/docker/flannel-np
#                                     ($STATE/nI/etc/flannel-np) unless config-dir.source=… is given
#   swarm-lab.sh etcdctl ARGS…        etcdctl against every etcd member
#   swarm-lab.sh etcdctl-member I ARGS…  etcdctl against member I alone
#   swarm-lab.sh etcd-endpoints       the members' client URLs, member 1 first, one per line
#   swarm-lab.sh etcd-leader          the number of the member that is raft leader
#   swarm-lab.sh etcd-stop I|all      SIGSTOP member I (or all): it holds its sockets, answers nothing
#   swarm-lab.sh etcd-cont I|all      SIGCONT
#   swarm-lab.sh etcd-kill I|all      SIGKILL; its data stays (the tmpfs outlives it)
#   swarm-lab.sh etcd-start I|all     start a killed member again on its data (it rejoins)
#   swarm-lab.sh dockerd-kill I       SIGKILL node I's dockerd (its containers keep running)
#   swarm-lab.sh dockerd-start I      start it again in the node's namespaces, same arguments
#   swarm-lab.sh node-kill I          node I gone for good: its processes killed, its netns deleted
#   swarm-lab.sh node-add [--docker V] [--hook]
#                                     a new node joins the Swarm as a worker; prints its number
#   swarm-lab.sh plugin-pid I         the PID of the plugin's daemon on node I
#   swarm-lab.sh registry             the lab registry's address ($NET.1:5000; Debian's
#                                     docker-registry on the lab bridge, plain HTTP, which every
#                                     node's dockerd lists in insecure-registries)
#   swarm-lab.sh push-plugin DIR REF  docker plugin create REF DIR + push, through node 1
#   swarm-lab.sh pull-plugin [--nodes I,…] REF ALIAS [KEY=VALUE…]
#                                     the operator's `docker plugin install --alias ALIAS
#                                     --grant-all-permissions REF KEY=VALUE…` on every node (same
#                                     {i} {node} {ip} {etcd} {hook} as install-plugin)
#   (install-plugin --nodes I,… DIR NAME:TAG …: only on those nodes)
#
# FNP_LAB_DNS_HOSTS="name=a.b.c.d,…" (optional): `up` also runs dnsmasq on the lab bridge
# ($NET.1:53, answering only these names, never forwarding) and gives every dockerd
# "dns": ["$NET.1"], so names outside the Swarm are answered through Docker's upstream.
#
# Layout (names from FNP_LAB_PREFIX, default fnp; state in FNP_LAB_STATE, default /tmp/fnp-lab):
#   netns fnp-infra: bridge fnpbr0 with $NET.1/24 (… $NET.M for M members), etcd member I on
#     $NET.I:2379 (peers :2380); their data on one tmpfs held by a keeper process, so a member
#     killed and started again finds its data
#   netns fnpI: eth0 $NET.(10+I)/24 (veth to the bridge, no default route), dockerd in its own
#     mount + UTS namespace (scripts/swarm-lab/node-init.sh); fnp1 is the manager
#   engine roots (26, 28): $FNP_CACHE (default /var/cache/flannel-np, beside the plugin's rootfs),
#     built once with mmdebstrap from deb.debian.org, never changed by a node (an overlay)
# Nothing is created in the root network namespace; `down` proves it with a snapshot diff.
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/swarm-lab"
PREFIX="${FNP_LAB_PREFIX:-fnp}"
INFRA="$PREFIX-infra"
STATE="${FNP_LAB_STATE:-/tmp/fnp-lab}"
NET="${FNP_LAB_NET:-198.18.7}"
BR="${PREFIX}br0"
ETCD_IP="$NET.1"
CACHE="${FNP_CACHE:-/var/cache/flannel-np}"
MIRROR="${FNP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOOK_DIR="$STATE/hook"
REPO="$(cd "$LAB_DIR/../.." && pwd)"
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

# ---- engines -------------------------------------------------------------------------------------

host_engine() { dockerd --version | sed -nE 's/^Docker version ([0-9]+\.[0-9]+).*/\1/p'; }
# What a node's root needs: the engine, what dockerd and its containerd/runc execute (iptables,
# ip, nft), and the tools the lab and the tests run inside a node's mount namespace (exec): ip,
# bridge, nft, iptables, nsenter, dig, curl, ps and the engine's own docker CLI.
ROOT_PACKAGES=(docker.io docker-cli iptables iproute2 nftables util-linux mount procps dnsutils curl ca-certificates)
suite_of() { case "$1" in 26) echo trixie ;; 28) echo sid ;; *) return 1 ;; esac; }

# engine_root V: the cached root directory of engine V (26 or 28), built once with mmdebstrap.
# The archive this machine sees may serve a Release file past its Valid-Until date: accepted.
engine_root() {
  local v="$1" suite key dir inc
  suite=$(suite_of "$v") || die "no root for engine '$v' (26 or 28)"
  key=$(printf '%s\n' "$suite" "$MIRROR" "${ROOT_PACKAGES[@]}" | sha256sum | cut -c1-16)
  dir="$CACHE/docker-$suite-$key"
  if [[ ! -f "$dir/.complete" ]]; then
    command -v mmdebstrap >/dev/null || die "engine $v needs mmdebstrap to build its root (apt-get install mmdebstrap)"
    mkdir -p "$CACHE"
    # one builder at a time per root: two labs starting together must not both write it
    exec 8>"$dir.lock"
    flock 8
    if [[ ! -f "$dir/.complete" ]]; then
      log "building the root of Docker $v (Debian $suite's docker.io) in $dir: mmdebstrap, once (about a minute)"
      rm -rf "$dir" "$dir.tmp"
      inc=$(IFS=,; echo "${ROOT_PACKAGES[*]}")
      mmdebstrap --variant=minbase --include="$inc" --aptopt='Acquire::Check-Valid-Until "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        "$suite" "$dir.tmp" "deb $MIRROR $suite main" >&2 || { rm -rf "$dir.tmp"; die "mmdebstrap of $suite failed (see above)"; }
      [[ -x "$dir.tmp/usr/sbin/dockerd" && -x "$dir.tmp/usr/sbin/runc" ]] || { rm -rf "$dir.tmp"; die "the $suite root has no dockerd or runc"; }
      chroot "$dir.tmp" dpkg-query -W -f '${Package} ${Version}\n' docker.io docker-cli containerd runc >"$dir.tmp/.complete"
      mv "$dir.tmp" "$dir"
    fi
    exec 8>&-
    rm -f "$dir.lock"
  fi
  echo "$dir"
}

# engine_spec LIST N: one engine per node (host, the host's version, 26 or 28), one per line
engine_spec() {
  local list="$1" n="$2" hv v i last=host out=() given=()
  hv=$(host_engine)
  IFS=, read -ra given <<<"$list"
  ((${#given[@]} >= 1)) || die "--docker needs a list like 28,20.10,26"
  for ((i = 0; i < n; i++)); do
    v="${given[$i]:-$last}"; last="$v"
    case "$v" in
      host|"$hv") out+=(host) ;;
      26|28) out+=("$v") ;;
      *) die "--docker: unknown engine '$v' (host or $hv = this machine's dockerd; 26 = Debian trixie's docker.io; 28 = Debian sid's)" ;;
    esac
  done
  printf '%s\n' "${out[@]}"
}
engine_of() { cat "$(node_dir "$1")/engine" 2>/dev/null || echo host; }
engine_major() { if [[ $1 == host ]]; then host_engine | cut -d. -f1; else echo "$1"; fi; }

# ---- etcd ------------------------------------------------------------------------------------------
# Member I listens on $NET.I (member 1 on the bridge's own address). All members' data sit on one
# tmpfs mounted in the private mount namespace of a keeper process (a `sleep`): a member killed
# with SIGKILL comes back on its data, and nothing is mounted in the host's namespace.

members()     { cat "$STATE/etcd-members" 2>/dev/null || echo 0; }
member_ip()   { echo "$NET.$1"; }
member_url()  { echo "http://$(member_ip "$1"):2379"; }
member_name() { echo "$PREFIX-etcd$1"; }
member_pid()  { local p; p=$(cat "$STATE/etcd$1.pid" 2>/dev/null) || return 1
  alive "$p" && [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == etcd ]] && echo "$p"; }
endpoints() { local i out=(); for ((i = 1; i <= $(members); i++)); do out+=("$(member_url "$i")"); done; (IFS=,; echo "${out[*]}"); }
check_member() {
  [[ "$1" == all ]] && return 0
  [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= $(members) )) || die "no etcd member '$1' (members: 1..$(members), or all)"
}
member_list() { if [[ "$1" == all ]]; then seq 1 "$(members)"; else echo "$1"; fi; }
infra_etcdctl() { nsenter --net="/run/netns/$INFRA" -- etcdctl "$@"; }

start_member() { # I: start (or start again) member I on its data dir
  local i="$1" M cluster=() k kpid
  M=$(members); kpid=$(cat "$STATE/etcd-keeper.pid")
  [[ "$(cat "/proc/$kpid/comm" 2>/dev/null)" == sleep ]] || die "the etcd data keeper (pid $kpid) is gone"
  for ((k = 1; k <= M; k++)); do cluster+=("$(member_name "$k")=http://$(member_ip "$k"):2380"); done
  # the keeper's mount namespace (the tmpfs) and network namespace (infra)
  setsid nsenter -t "$kpid" -m -n -- etcd --name "$(member_name "$i")" --data-dir "$STATE/etcd/m$i" \
    --listen-client-urls "$(member_url "$i")" --advertise-client-urls "$(member_url "$i")" \
    --listen-peer-urls "http://$(member_ip "$i"):2380" --initial-advertise-peer-urls "http://$(member_ip "$i"):2380" \
    --initial-cluster "$(IFS=,; echo "${cluster[*]}")" --initial-cluster-token "$PREFIX-lab" \
    --logger zap --log-level warn </dev/null >>"$STATE/etcd$i.log" 2>&1 &
  echo $! >"$STATE/etcd$i.pid"
}

start_etcd() { # M
  local M="$1" i kpid
  echo "$M" >"$STATE/etcd-members"
  for ((i = 2; i <= M; i++)); do ip -n "$INFRA" addr add "$(member_ip "$i")/24" dev "$BR"; done
  mkdir -p "$STATE/etcd"
  setsid nsenter --net="/run/netns/$INFRA" -- unshare --mount --propagation slave -- \
    sh -c 'mount -n -t tmpfs -o size=512m fnp-etcd "$0" && mkdir "$0/ready" && exec sleep infinity' "$STATE/etcd" \
    </dev/null >"$STATE/etcd-keeper.log" 2>&1 &
  kpid=$!
  echo "$kpid" >"$STATE/etcd-keeper.pid"
  # the keeper's "ready" is on its tmpfs: visible through its root only once the mount is there
  wait_until 10 "etcd tmpfs" test -d "/proc/$kpid/root$STATE/etcd/ready" || die "etcd's tmpfs did not come up ($STATE/etcd-keeper.log)"
  for ((i = 1; i <= M; i++)); do start_member "$i"; done
}

wait_until() { # SECONDS WHAT CMD…: poll every 0.2 s, bounded
  local max="$1" end=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < end )) || { log "timeout after ${max}s waiting for: $what"; return 1; }
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
  local N=3 t0=$SECONDS i ns d docker="" M=1 hook=0
  if [[ "${1:-}" =~ ^[0-9]+$ ]]; then N="$1"; shift; fi
  while (($#)); do
    case "$1" in
      --docker) [[ $# -ge 2 ]] || die "--docker needs a list like 28,20.10,26"; docker="$2"; shift 2 ;;
      --etcd) [[ "${2:-}" =~ ^(1|3)$ ]] || die "--etcd needs 1 or 3 members, got '${2:-}'"; M="$2"; shift 2 ;;
      --hook) hook=1; shift ;;
      *) die "up: unknown argument '$1' (up [N] [--docker V,…] [--etcd 1|3] [--hook])" ;;
    esac
  done
  (( N >= 1 && N <= 50 )) || die "up: N must be 1..50, got '$N'"
  for c in ip nsenter unshare setsid flock dockerd containerd runc etcd etcdctl iptables nft busybox "$DOCKER_BIN"; do
    command -v "$c" >/dev/null || die "missing command '$c' (apt-get install docker.io etcd-server etcd-client busybox-static)"
  done
  [[ $EUID -eq 0 ]] || die "must run as root"
  local -a engines=() roots=()
  mapfile -t engines < <(engine_spec "${docker:-host}" "$N")
  ((${#engines[@]} == N)) || die "up: --docker '$docker' does not name an engine per node"
  # roots first: a build that fails leaves no lab behind
  for ((i = 1; i <= N; i++)); do
    if [[ ${engines[i-1]} == host ]]; then roots[i]=""; else roots[i]=$(engine_root "${engines[i-1]}"); fi
  done
  if ((hook)); then
    command -v make >/dev/null && command -v gcc >/dev/null || die "--hook builds hook/ (apt-get install gcc make libc6-dev)"
    make -s -C "$REPO/hook" >&2 || die "--hook: make -C hook failed"
  fi
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

  start_etcd "$M"
  start_registry
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

  local hooked=() hookdir
  for ((i = 1; i <= N; i++)); do
    d=$(node_dir "$i"); ns=$(node_ns "$i"); hookdir=""
    mkdir -p "$d"/{run,etc,varlib}
    echo "${engines[i-1]}" >"$d/engine"
    cat >"$d/etc/daemon.json" <<JSON
{"storage-driver": "overlay2", "cgroup-parent": "/$PREFIX/$ns", "shutdown-timeout": 3,
 "live-restore": false, "log-driver": "json-file", "log-opts": {"max-size": "1m"}$dns_json,
 "insecure-registries": ["$ETCD_IP:5000"]}
JSON
    if ((hook)) && (( $(engine_major "${engines[i-1]}") <= 27 )); then
      # as an operator installs it (hook/install.sh), into the lab's own prefix and this node's
      # daemon.json; runc is /usr/sbin/runc on the host and in every root
      "$REPO/hook/install.sh" --prefix "$HOOK_DIR" --daemon-json "$d/etc/daemon.json" --runc /usr/sbin/runc >/dev/null
      touch "$d/hook"; hooked+=("$i"); hookdir="$HOOK_DIR"
    fi
    FNP_LAB_PREFIX="$PREFIX" FNP_LAB_HOOK_DIR="$hookdir" setsid nsenter --net="/run/netns/$ns" -- \
      unshare --mount --uts --propagation slave -- \
      "$LAB_DIR/node-init.sh" "$i" "$d" "$(node_ip "$i")" "${roots[i]}" </dev/null >"$d/dockerd.log" 2>&1 &
    echo $! >"$d/dockerd.pid"
  done
  wait_until "$WAIT" "etcd ($M member(s))" nsenter --net="/run/netns/$(node_ns 1)" etcdctl --endpoints "$(endpoints)" endpoint health \
    || die "etcd did not come up ($STATE/etcd*.log)"
  # each member's ID, in member order: etcd-leader names the leader by it
  for ((i = 1; i <= M; i++)); do member_status "$i" | cut -d' ' -f1; done >"$STATE/etcd-ids"
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
  # dnsttl (scripts/swarm-lab/dnsttl.c): a container's first query, with the answer's TTL
  if ! gcc -O2 -static -o "$img/rootfs/bin/dnsttl" "$LAB_DIR/dnsttl.c" 2>"$img/gcc.log"; then
    log "no static gcc (apt-get install gcc libc6-dev): the image has no dnsttl"; rm -f "$img/rootfs/bin/dnsttl"
  fi
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
  local vers=()
  for ((i = 1; i <= N; i++)); do vers+=("$(dk "$i" version -f '{{.Server.Version}}')"); done
  log "up: $N nodes Ready (engines ${vers[*]}; hook on nodes: ${hooked[*]:-none}), etcd $(endpoints), image $IMAGE, in $((SECONDS - t0))s"
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
  local k
  for ((k = 1; k <= $(members); k++)); do
    if p=$(member_pid "$k"); then
      kill -CONT "$p" 2>/dev/null || true  # a frozen member would not act on SIGTERM
      stop_pid "$p" "etcd member $k" 10
    fi
  done
  if [[ -s "$STATE/etcd-keeper.pid" ]]; then
    p=$(cat "$STATE/etcd-keeper.pid")
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == sleep ]] && stop_pid "$p" "etcd tmpfs keeper" 5
  fi
  if [[ -s "$STATE/registry.pid" ]]; then
    p=$(cat "$STATE/registry.pid")
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == docker-registry ]] && stop_pid "$p" docker-registry 5
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
  local only=""
  if [[ "${1:-}" == --nodes ]]; then only="${2:?--nodes needs a list like 4 or 1,3}"; shift 2; fi
  local dir="${1:?usage: install-plugin [--nodes I,…] DIR NAME:TAG [KEY=VALUE…]}" name="${2:?NAME:TAG missing}"; shift 2
  [[ -f "$dir/config.json" && -d "$dir/rootfs" ]] || die "install-plugin: '$dir' has no config.json and rootfs/ (scripts/build-plugin.sh DIR)"
  [[ "$name" =~ ^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die "install-plugin: '$name' is not NAME:TAG"
  local N i pids=() p rc=0
  N=$(nodes); (( N >= 1 )) || die "no lab is up"
  one() {
    local i="$1" s args=() id sock t0 t1 ms; shift
    for s in "$@"; do
      s=${s//\{i\}/$i}; s=${s//\{node\}/$(node_ns "$i")}; s=${s//\{ip\}/$(node_ip "$i")}; s=${s//\{etcd\}/$(endpoints)}
      s=${s//\{hook\}/$([[ -e "$(node_dir "$i")/hook" ]] && echo true || echo false)}
      args+=("$s")
    done
    # the plugin's config-dir mount must name an existing directory in dockerd's mount namespace:
    # the node's own, under its /etc/docker ($STATE/nI/etc), which every engine's root sees
    if grep -q '"config-dir"' "$dir/config.json" && [[ " ${args[*]} " != *" config-dir.source="* ]]; then
      mkdir -p "$(node_dir "$i")/etc/flannel-np"; args+=("config-dir.source=/etc/docker/flannel-np")
    fi
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
  for ((i = 1; i <= N; i++)); do
    [[ -e "$(node_dir "$i")/gone" ]] && continue
    [[ -z "$only" || ",$only," == *",$i,"* ]] || continue
    one "$i" "$@" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

# versions: one line per node: I ENGINE-VERSION API MIN-API containerd=V runc=V hook=true|false engine=host|26|28
# (runc asked directly: with the hook as default runtime the engine reports no runc component)
cmd_versions() {
  local N i pid runc
  N=$(nodes); (( N >= 1 )) || die "no lab is up"
  for ((i = 1; i <= N; i++)); do
    pid=$(cat "$(node_dir "$i")/dockerd.pid")
    runc=$(nsenter -t "$pid" -m -- runc --version | sed -n 's/^runc version //p')
    dk "$i" version -f '{{json .Server}}' | python3 -c '
import json, sys
s = json.load(sys.stdin); c = {x["Name"]: x for x in s.get("Components") or []}
e = c.get("Engine", {}); d = e.get("Details", {})
print(sys.argv[1], e.get("Version", s.get("Version")), d.get("ApiVersion", s.get("ApiVersion")),
      d.get("MinAPIVersion", s.get("MinAPIVersion")), "containerd=" + c.get("containerd", {}).get("Version", "?"),
      "runc=" + (sys.argv[4] or "?"), "hook=" + sys.argv[2], "engine=" + sys.argv[3])
' "$i" "$([[ -e "$(node_dir "$i")/hook" ]] && echo true || echo false)" "$(engine_of "$i")" "$runc"
  done
}

# etcd-leader: asks each member that answers (a frozen one is skipped after 1 s) whom it follows
cmd_etcd_leader() {
  local M k out id lead=""
  M=$(members); (( M >= 1 )) || die "no lab is up"
  for ((k = 1; k <= M; k++)); do
    out=$(member_status "$k") || continue
    lead=${out#* }
    break
  done
  [[ -n "$lead" ]] || die "no etcd member answered (all stopped or killed?)"
  for ((k = 1; k <= M; k++)); do
    id=$(sed -n "${k}p" "$STATE/etcd-ids")
    [[ "$id" == "$lead" ]] && { echo "$k"; return 0; }
  done
  die "the members follow no leader (leader id '$lead'; a cluster without quorum elects none)"
}

# member_status I: "MEMBER-ID LEADER-ID" from member I itself (a frozen member: fails after 1 s)
member_status() {
  infra_etcdctl --endpoints "$(member_url "$1")" --command-timeout=1s endpoint status -w json 2>/dev/null \
    | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; print(s["header"]["member_id"], s["leader"])'
}

# etcd-stop|cont|kill|start I|all
cmd_etcd_signal() {
  local what="$1" k p
  if [[ $what == start ]]; then
    # every member first, then wait: one member alone has no quorum to come up with
    for k in $(member_list "$2"); do
      ! member_pid "$k" >/dev/null || die "etcd member $k is running (etcd-kill it first)"
      start_member "$k"
    done
    for k in $(member_list "$2"); do
      wait_until "$WAIT" "etcd member $k serving" member_status "$k" || die "etcd member $k did not come back ($STATE/etcd$k.log)"
      log "etcd member $k started again on its data (pid $(cat "$STATE/etcd$k.pid"))"
    done
    return 0
  fi
  for k in $(member_list "$2"); do
    case "$what" in
      stop|cont|kill)
        p=$(member_pid "$k") || die "etcd member $k is not running"
        kill "-${what^^}" "$p"
        [[ $what != kill ]] || { while alive "$p"; do sleep 0.05; done; }
        log "etcd member $k (pid $p): SIG${what^^}" ;;
      start)
        ! member_pid "$k" >/dev/null || die "etcd member $k is running (etcd-kill it first)"
        start_member "$k"
        # serving again (its own status answers); a quorum is not waited for: it may be the point
        wait_until "$WAIT" "etcd member $k serving" member_status "$k" || die "etcd member $k did not come back ($STATE/etcd$k.log)"
        log "etcd member $k started again on its data (pid $(cat "$STATE/etcd$k.pid"))" ;;
    esac
  done
}

# ---- faults of a node --------------------------------------------------------------------------

# dockerd-kill I: SIGKILL node I's dockerd; its containerd, shims and containers keep running
# (as when dockerd crashes), and the node's namespaces stay (node-init's keeper holds them).
cmd_dockerd_kill() {
  local i="$1" p
  p=$(cat "$(node_dir "$i")/dockerd.pid")
  [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == dockerd ]] || die "node $i: dockerd is not running"
  kill -KILL "$p"
  while alive "$p"; do sleep 0.05; done
  log "node $i: dockerd (pid $p) killed"
}

# dockerd-start I: start node I's dockerd again, in the node's namespaces and with the arguments
# it had; it finds its containerd and state as a restarted daemon does.
cmd_dockerd_start() {
  local i="$1" d k args=()
  d=$(node_dir "$i"); k=$(cat "$d/keeper.pid" 2>/dev/null) || die "node $i has no namespace keeper"
  [[ "$(cat "/proc/$k/comm" 2>/dev/null)" == sleep ]] || die "node $i: its namespace keeper is gone"
  ! alive "$(cat "$d/dockerd.pid")" || [[ "$(cat "/proc/$(cat "$d/dockerd.pid")/comm" 2>/dev/null)" != dockerd ]] \
    || die "node $i: dockerd is running"
  mapfile -d '' args <"$d/dockerd.args"
  setsid nsenter -t "$k" -n -m -u -- "${args[@]}" </dev/null >>"$d/dockerd.log" 2>&1 &
  echo $! >"$d/dockerd.pid"
  wait_until "$WAIT" "dockerd $i" dk "$i" version || die "dockerd $i did not start again"
  log "node $i: dockerd started again (pid $(cat "$d/dockerd.pid"))"
}

# node-kill I: node I is gone for good, as a machine that dies: every process of it SIGKILLed,
# its network namespace deleted (its link to the bridge with it). Nothing tells the Swarm or etcd.
cmd_node_kill() {
  local i="$1" d ns p end left=()
  d=$(node_dir "$i"); ns=$(node_ns "$i")
  if p=$(cat "$d/dockerd.pid" 2>/dev/null) && alive "$p"; then
    ls "/proc/$p/root/var/lib/docker/plugins" 2>/dev/null | grep -E '^[0-9a-f]{64}$' >"$d/plugin-ids" || true
  fi
  end=$((SECONDS + 15))
  while :; do
    mapfile -t left < <(node_pids "$i" | sort -un | grep -vx "$$" || true)
    ((${#left[@]} == 0)) && break
    (( SECONDS < end )) || die "node $i: pids ${left[*]} survive SIGKILL"
    for p in "${left[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    sleep 0.3
  done
  ip netns del "$ns"
  touch "$d/gone"
  log "node $i is gone: its processes killed, its namespace deleted"
}

# Every process of node I: in its netns, its mount namespace, its cgroups and its plugins'.
node_pids() {
  local i="$1" ns d m q id
  ns=$(node_ns "$i"); d=$(node_dir "$i")
  [[ -e /run/netns/$ns ]] && ip netns pids "$ns" 2>/dev/null
  if [[ -s $d/mntns ]]; then m=$(cat "$d/mntns")
    for q in /proc/[0-9]*; do [[ "$(readlink "$q/ns/mnt" 2>/dev/null)" == "$m" ]] && echo "${q#/proc/}"; done; fi
  [[ -d /sys/fs/cgroup/pids/$PREFIX/$ns ]] && find "/sys/fs/cgroup/pids/$PREFIX/$ns" -name cgroup.procs -exec cat {} + 2>/dev/null
  for id in $(cat "$d/plugin-ids" 2>/dev/null); do cat "/sys/fs/cgroup/pids/$id/cgroup.procs" 2>/dev/null; done
  return 0
}

# node-add [--docker V] [--hook]: a new node N+1 joins the Swarm as a worker (its own netns,
# dockerd, the lab image); prints its number. Its plugin: install-plugin --nodes N+1 ….
cmd_node_add() {
  local engine=host hook=0 i d ns root="" hookdir="" m token mgr=""
  while (($#)); do
    case "$1" in
      --docker) engine=$(engine_spec "${2:?--docker needs an engine}" 1); shift 2 ;;
      --hook) hook=1; shift ;;
      *) die "node-add: unknown argument '$1' (node-add [--docker V] [--hook])" ;;
    esac
  done
  i=$(( $(nodes) + 1 )); d=$(node_dir "$i"); ns=$(node_ns "$i")
  [[ $engine == host ]] || root=$(engine_root "$engine")
  for ((m = 1; m < i; m++)); do
    [[ -e "$(node_dir "$m")/gone" ]] && continue
    if dk "$m" node ls >/dev/null 2>&1; then mgr=$m; break; fi
  done
  [[ -n "$mgr" ]] || die "node-add: no manager answers"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "v-$ns" netns "$INFRA" type veth peer name eth0 netns "$ns"
  ip -n "$INFRA" link set "v-$ns" master "$BR" up
  ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
  echo "$i" >"$STATE/nodes"
  mkdir -p "$d"/{run,etc,varlib}
  echo "$engine" >"$d/engine"
  local dns_json=""
  [[ ! -s "$STATE/dnsmasq.pid" ]] || dns_json=", \"dns\": [\"$ETCD_IP\"]"
  cat >"$d/etc/daemon.json" <<JSON
{"storage-driver": "overlay2", "cgroup-parent": "/$PREFIX/$ns", "shutdown-timeout": 3,
 "live-restore": false, "log-driver": "json-file", "log-opts": {"max-size": "1m"}$dns_json,
 "insecure-registries": ["$ETCD_IP:5000"]}
JSON
  if ((hook)) && [[ $engine != 28 ]]; then
    "$REPO/hook/install.sh" --prefix "$HOOK_DIR" --daemon-json "$d/etc/daemon.json" --runc /usr/sbin/runc >/dev/null
    touch "$d/hook"; hookdir="$HOOK_DIR"
  fi
  FNP_LAB_PREFIX="$PREFIX" FNP_LAB_HOOK_DIR="$hookdir" setsid nsenter --net="/run/netns/$ns" -- \
    unshare --mount --uts --propagation slave -- \
    "$LAB_DIR/node-init.sh" "$i" "$d" "$(node_ip "$i")" "$root" </dev/null >"$d/dockerd.log" 2>&1 &
  echo $! >"$d/dockerd.pid"
  wait_until "$WAIT" "dockerd $i" dk "$i" version || { tail -20 "$d/dockerd.log" >&2; die "dockerd $i did not start"; }
  readlink "/proc/$(cat "$d/dockerd.pid")/ns/mnt" >"$d/mntns"
  token=$(dk "$mgr" swarm join-token -q worker)
  timeout "$WAIT" env DOCKER_HOST="unix://$(node_sock "$i")" "$DOCKER_BIN" swarm join --token "$token" \
    --advertise-addr "$(node_ip "$i")" --listen-addr "$(node_ip "$i"):2377" "$(node_ip "$mgr"):2377" >/dev/null
  dk "$i" load -q -i "$STATE/img/image.tar" >/dev/null
  log "node $i ($engine) joined the Swarm through node $mgr"
  echo "$i"
}

# The lab's registry: Debian's docker-registry on the bridge address, storage in the lab's state
# (gone with `down`); nothing outside this machine is ever asked for an image or a plugin. Without
# the package the lab runs without it (push-plugin / pull-plugin then say so).
start_registry() {
  command -v docker-registry >/dev/null || { log "no docker-registry (apt-get install docker-registry): the lab has no registry"; return 0; }
  mkdir -p "$STATE/registry/data"
  cat >"$STATE/registry/config.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $STATE/registry/data}, delete: {enabled: true}}
http: {addr: "$ETCD_IP:5000"}
YML
  setsid nsenter --net="/run/netns/$INFRA" -- docker-registry serve "$STATE/registry/config.yml" \
    </dev/null >"$STATE/registry.log" 2>&1 &
  echo $! >"$STATE/registry.pid"
  wait_until 20 "registry on $ETCD_IP:5000" nsenter --net="/run/netns/$INFRA" -- curl -sf "http://$ETCD_IP:5000/v2/" \
    || die "the lab registry did not come up ($STATE/registry.log)"
}
registry_addr() {
  [[ -s "$STATE/registry.pid" ]] && alive "$(cat "$STATE/registry.pid")" || die "the lab has no registry (apt-get install docker-registry, then up)"
  echo "$ETCD_IP:5000"
}

# push-plugin DIR REF: as an operator publishes a build (scripts/build-plugin.sh DIR --push REF
# does the same on its own docker): create it on node 1 under REF, push, remove the local copy.
cmd_push_plugin() {
  local dir="${1:?usage: push-plugin DIR REGISTRY/NAME:TAG}" ref="${2:?usage: push-plugin DIR REGISTRY/NAME:TAG}"
  [[ -f "$dir/config.json" && -d "$dir/rootfs" ]] || die "push-plugin: '$dir' has no config.json and rootfs/ (scripts/build-plugin.sh DIR)"
  registry_addr >/dev/null
  dk 1 plugin rm -f "$ref" >/dev/null 2>&1 || true
  dk 1 plugin create "$ref" "$dir" >/dev/null || die "push-plugin: plugin create $ref failed"
  dk 1 plugin push "$ref" >&2 || { dk 1 plugin rm -f "$ref" >/dev/null 2>&1; die "push-plugin: plugin push $ref failed"; }
  dk 1 plugin rm -f "$ref" >/dev/null
  log "pushed $ref"
}

# pull-plugin [--nodes I,…] REF ALIAS [KEY=VALUE…]: `docker plugin install` on every node (in
# parallel), as the README's Install says; the driver name is ALIAS on every node.
cmd_pull_plugin() {
  local only=""
  if [[ "${1:-}" == --nodes ]]; then only="${2:?--nodes needs a list like 4 or 1,3}"; shift 2; fi
  local ref="${1:?usage: pull-plugin [--nodes I,…] REF ALIAS [KEY=VALUE…]}" alias="${2:?ALIAS missing}"; shift 2
  local N i pids=() p rc=0
  N=$(nodes); (( N >= 1 )) || die "no lab is up"
  pull_one() {
    local i="$1" s args=() t0; shift
    for s in "$@"; do
      s=${s//\{i\}/$i}; s=${s//\{node\}/$(node_ns "$i")}; s=${s//\{ip\}/$(node_ip "$i")}; s=${s//\{etcd\}/$(endpoints)}
      s=${s//\{hook\}/$([[ -e "$(node_dir "$i")/hook" ]] && echo true || echo false)}
      args+=("$s")
    done
    if [[ " ${args[*]} " != *" config-dir.source="* ]]; then
      mkdir -p "$(node_dir "$i")/etc/flannel-np"; args+=("config-dir.source=/etc/docker/flannel-np")
    fi
    if dk "$i" plugin inspect "$alias" >/dev/null 2>&1; then
      dk "$i" plugin disable -f "$alias" >/dev/null 2>&1 || true
      dk "$i" plugin rm -f "$alias" >/dev/null
    fi
    t0=$(date +%s%N)
    dk "$i" plugin install --alias "$alias" --grant-all-permissions "$ref" "${args[@]}" >/dev/null \
      || { log "node $i: plugin install $ref failed"; return 1; }
    log "node $i: $ref installed and enabled as $alias in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  }
  for ((i = 1; i <= N; i++)); do
    [[ -e "$(node_dir "$i")/gone" ]] && continue
    [[ -z "$only" || ",$only," == *",$i,"* ]] || continue
    pull_one "$i" "$@" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

# plugin-pid I: the PID of the plugin's daemon (java) on node I
cmd_plugin_pid() {
  local i="$1" p
  for p in $(ip netns pids "$(node_ns "$i")" 2>/dev/null); do
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == java ]] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -q flannel-np.jar \
      && { echo "$p"; return 0; }
  done
  die "node $i: no plugin daemon running"
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
  roots)
    [[ $# -eq 1 ]] || die "usage: roots V,… (26, 28)"; [[ $EUID -eq 0 ]] || die "must run as root"
    IFS=, read -ra vs <<<"$1"; for v in "${vs[@]}"; do r=$(engine_root "$v"); echo "$v $r $(tr '\n' ' ' <"$r/.complete")"; done ;;
  versions) cmd_versions ;;
  etcdctl) (( $(members) >= 1 )) || die "no lab is up"; exec nsenter --net="/run/netns/$INFRA" -- etcdctl --endpoints "$(endpoints)" "$@" ;;
  etcdctl-member) [[ $# -ge 1 ]] || die "usage: etcdctl-member I ARGS…"; check_member "$1"; [[ $1 != all ]] || die "etcdctl-member needs one member"
    k="$1"; shift; exec nsenter --net="/run/netns/$INFRA" -- etcdctl --endpoints "$(member_url "$k")" "$@" ;;
  etcd-endpoints) (( $(members) >= 1 )) || die "no lab is up"; for ((k = 1; k <= $(members); k++)); do member_url "$k"; done ;;
  etcd-leader) cmd_etcd_leader ;;
  etcd-stop|etcd-cont|etcd-kill|etcd-start)
    [[ $# -eq 1 ]] || die "usage: $cmd I|all"; check_member "$1"; cmd_etcd_signal "${cmd#etcd-}" "$1" ;;
  dockerd-kill) [[ $# -eq 1 ]] || die "usage: dockerd-kill I"; check_node "$1"; cmd_dockerd_kill "$1" ;;
  dockerd-start) [[ $# -eq 1 ]] || die "usage: dockerd-start I"; check_node "$1"; cmd_dockerd_start "$1" ;;
  node-kill) [[ $# -eq 1 ]] || die "usage: node-kill I"; check_node "$1"; cmd_node_kill "$1" ;;
  node-add) cmd_node_add "$@" ;;
  plugin-pid) [[ $# -eq 1 ]] || die "usage: plugin-pid I"; check_node "$1"; cmd_plugin_pid "$1" ;;
  registry) registry_addr ;;
  push-plugin) [[ $# -eq 2 ]] || die "usage: push-plugin DIR REGISTRY/NAME:TAG"; cmd_push_plugin "$@" ;;
  pull-plugin) cmd_pull_plugin "$@" ;;
  *) die "usage: swarm-lab.sh up [N] [--docker V,…] [--etcd 1|3] [--hook] | down | roots V,… | versions | dk I ARGS… | exec I CMD… | install-plugin DIR NAME:TAG [KEY=VALUE…] | etcdctl ARGS… | etcdctl-member I ARGS… | etcd-endpoints | etcd-leader | etcd-stop|etcd-cont|etcd-kill|etcd-start I|all" ;;
esac
