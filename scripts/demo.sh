#!/usr/bin/env bash
# scripts/demo.sh: flannel-np on a three-node Docker Swarm on this machine, as an operator sees it.
#
#   scripts/demo.sh [--keep] [--requests N]
#     builds the managed plugin (scripts/build-plugin.sh, cached), starts three real dockerds in
#     network namespaces with one etcd (scripts/swarm-lab.sh up 3), installs and enables the
#     plugin on every node, creates a flannel-np network, a VIP service of three busybox httpd
#     replicas (each answers its own host name) and a client container on every node, and shows
#     which replica answered N (default 20) HTTP requests to the service name from each node.
#     Then it tears everything down (also on failure or Ctrl-C) and checks the host is as before.
#     --keep leaves the lab up for exploring and prints how to use it.
#   scripts/demo.sh --local
#     the earlier single-daemon demo: no Docker, no root; the daemon against a private etcd,
#     the plugin protocol over its socket, /health, etcd going away, an orderly stop.
#
# Needs root; what it runs (docker.io, etcd-server, etcd-client, busybox-static, mmdebstrap,
# iproute2, nftables, iptables, python3, a JDK 17 and maven) is installed with apt on first use
# (scripts/install-deps.sh demo, shared with .ci/run). Lab names and addresses come from
# FNP_LAB_PREFIX (fnp), FNP_LAB_STATE (/tmp/fnp-lab) and FNP_LAB_NET (198.18.7), see swarm-lab.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ================================ --local: the single-daemon demo ================================
local_demo() {

  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  JAR="$ROOT/verticles/target/flannel-np.jar"
  ETCD_BIN="${ETCD_BIN:-/usr/bin/etcd}"

  section() { printf '\n=== %s ===\n' "$*"; }
  die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

  for tool in java curl; do
    command -v "$tool" >/dev/null || die "$tool not found (install a JDK 17 and curl)"
  done
  [ -x "$ETCD_BIN" ] || die "$ETCD_BIN not found (apt-get install etcd-server)"

  # ---- cleanup: daemon, etcd and the temp dir, whatever way the script ends ------------------
  TMP="$(mktemp -d /dev/shm/flannel-np-demo.XXXXXX 2>/dev/null || mktemp -d)"
  ETCD_PID=""
  DAEMON_PID=""
  cleanup() {
    local rc=$?
    set +e
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
      kill -TERM "$DAEMON_PID" 2>/dev/null
      for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$DAEMON_PID" 2>/dev/null
      wait "$DAEMON_PID" 2>/dev/null
    fi
    if [ -n "$ETCD_PID" ] && kill -0 "$ETCD_PID" 2>/dev/null; then
      kill -KILL "$ETCD_PID" 2>/dev/null
      wait "$ETCD_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
    if [ "$rc" -ne 0 ]; then
      printf '\ndemo: failed (exit %s)\n' "$rc" >&2
    fi
    exit "$rc"
  }
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # ---- helpers --------------------------------------------------------------------------------
  USED_PORTS=" "
  # A loopback TCP port nobody listens on (and that this script has not handed out yet).
  free_port() {
    local p
    for _ in $(seq 1 200); do
      p=$(( 20000 + RANDOM % 40000 ))
      case "$USED_PORTS" in *" $p "*) continue ;; esac
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        USED_PORTS="$USED_PORTS$p "
        echo "$p"
        return 0
      fi
    done
    die "no free loopback port found"
  }

  # POST to the plugin socket the way Docker does: no Content-Type, optional JSON body.
  plugin_call() {
    local path="$1" body="${2:-}"
    printf 'POST %s %s\n  -> ' "$path" "$body"
    curl -sS --max-time 10 --unix-socket "$SOCK" -X POST -H 'Content-Type:' \
      ${body:+--data "$body"} -w '   (HTTP %{http_code})\n' "http://localhost$path"
  }

  wait_for() { # seconds, description, command...
    local secs="$1" what="$2"
    shift 2
    for _ in $(seq 1 $(( secs * 10 ))); do
      if "$@" >/dev/null 2>&1; then return 0; fi
      # Fail fast, with the reason, when what we wait for has already died.
      if [ -n "$ETCD_PID" ] && ! kill -0 "$ETCD_PID" 2>/dev/null; then
        die "etcd exited: $(cat "$TMP/etcd.log")"
      fi
      if [ -n "$DAEMON_PID" ] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        die "the daemon exited: $(cat "$DAEMON_LOG")"
      fi
      sleep 0.1
    done
    die "timed out after ${secs}s waiting for $what"
  }

  daemon_alive() { kill -0 "$DAEMON_PID" 2>/dev/null; }

  # ---- 1. the jar -----------------------------------------------------------------------------
  section "1. Build"
  if [ -f "$JAR" ]; then
    echo "using $JAR"
  else
    command -v mvn >/dev/null || die "$JAR is missing and mvn is not installed"
    echo "building $JAR (mvn -B -q -DskipTests package) ..."
    (cd "$ROOT" && mvn -B -q -DskipTests package)
    [ -f "$JAR" ] || die "the build did not produce $JAR"
  fi

  # ---- 2. a private etcd ----------------------------------------------------------------------
  section "2. Start a private etcd on loopback"
  ETCD_PORT=$(free_port)
  PEER_PORT=$(free_port)
  ETCD_URL="http://127.0.0.1:$ETCD_PORT"
  # env -i: etcd reads ETCD_* variables as flags, so none of the caller's may leak in.
  env -i PATH="$PATH" "$ETCD_BIN" --name demo --data-dir "$TMP/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "demo=http://127.0.0.1:$PEER_PORT" \
    --logger zap --log-level error >"$TMP/etcd.log" 2>&1 &
  ETCD_PID=$!
  wait_for 20 "etcd at $ETCD_URL/health" curl -sf --max-time 1 "$ETCD_URL/health"
  echo "etcd (pid $ETCD_PID) healthy at $ETCD_URL: $(curl -sS --max-time 2 "$ETCD_URL/health")"

  # ---- 3. the daemon --------------------------------------------------------------------------
  section "3. Start the daemon"
  SOCK="$TMP/plugins/flannel-np.sock"
  ADMIN_PORT=$(free_port)
  ADMIN_TOKEN="demo-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  DAEMON_LOG="$TMP/daemon.log"
  SETTINGS=(
    ETCD_ENDPOINTS="$ETCD_URL"
    AVAILABLE_SUBNETS=10.50.0.0/16
    PLUGIN_SOCKET="$SOCK"
    DOCKER_SOCKET="$TMP/no-docker.sock"
    NODE_NAME=demo
    ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT"
    ADMIN_TOKEN="$ADMIN_TOKEN"
  )
  printf '  %s\n' "${SETTINGS[@]}"
  # env -i: only the settings above reach the daemon, not stray ones from the caller's shell.
  env -i PATH="$PATH" HOME="${HOME:-/root}" ${JAVA_HOME:+JAVA_HOME="$JAVA_HOME"} "${SETTINGS[@]}" \
    java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -jar "$JAR" >"$DAEMON_LOG" 2>&1 &
  DAEMON_PID=$!
  T0=$(date +%s%N)
  wait_for 30 "the plugin socket $SOCK" test -S "$SOCK"
  echo "plugin socket up after $(( ($(date +%s%N) - T0) / 1000000 )) ms"
  wait_for 30 "the daemon's start" grep -q 'flannel-np started' "$DAEMON_LOG"
  daemon_alive || die "the daemon exited: $(cat "$DAEMON_LOG")"
  echo "daemon log so far:"
  grep -E 'starting on node|capacity:|plugin API listening|etcd reachable|flannel-np started' "$DAEMON_LOG" | sed 's/^/  /'

  # ---- 4. the plugin protocol -----------------------------------------------------------------
  section "4. Docker plugin protocol on the unix socket"
  plugin_call /Plugin.Activate
  plugin_call /NetworkDriver.GetCapabilities
  plugin_call /IpamDriver.GetCapabilities

  # ---- 5. admin server ------------------------------------------------------------------------
  section "5. Admin server: GET http://127.0.0.1:$ADMIN_PORT/health"
  sleep 1 # let the planes publish their first reconcile report
  curl -sS --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$ADMIN_PORT/health"
  echo

  # ---- 6. etcd goes away ----------------------------------------------------------------------
  section "6. etcd goes away"
  kill -KILL "$ETCD_PID"
  wait "$ETCD_PID" 2>/dev/null || true
  ETCD_PID=""
  echo "killed etcd; waiting 3 s for the daemon's probe to notice ..."
  sleep 3
  echo "daemon log:"
  grep -E 'etcd unreachable' "$DAEMON_LOG" | sed 's/^/  /' || echo "  (no 'etcd unreachable' line yet)"
  echo "a call that needs etcd fails at once, naming the endpoint:"
  plugin_call /IpamDriver.RequestPool '{"AddressSpace":"FlannelGlobal","Options":{"flannel-id":"demo-net"}}'
  echo "a call that does not need etcd still answers:"
  plugin_call /NetworkDriver.GetCapabilities
  plugin_call /IpamDriver.GetCapabilities
  daemon_alive || die "the daemon exited after etcd went away"

  # ---- 7. orderly stop ------------------------------------------------------------------------
  section "7. Stop the daemon with SIGTERM"
  LINES_BEFORE=$(wc -l <"$DAEMON_LOG")
  T0=$(date +%s%N)
  kill -TERM "$DAEMON_PID"
  set +e
  wait "$DAEMON_PID"
  RC=$?
  set -e
  DAEMON_PID=""
  echo "daemon exited with code $RC after $(( ($(date +%s%N) - T0) / 1000000 )) ms; its last log lines:"
  tail -n +"$(( LINES_BEFORE + 1 ))" "$DAEMON_LOG" | sed 's/^/  /'
  if [ -e "$SOCK" ]; then
    echo "plugin socket still present: $SOCK"
  else
    echo "plugin socket removed"
  fi
  [ "$RC" -eq 0 ] || die "the daemon did not stop cleanly"

  section "Done"
  echo "everything the demo started is stopped; $TMP is removed on exit"
}

# ==================================== the three-node Swarm demo ====================================
LAB="$ROOT/scripts/swarm-lab.sh"
JAR="$ROOT/verticles/target/flannel-np.jar"
PLUGIN_DIR="${FNP_PLUGIN_DIR:-/tmp/${FNP_LAB_PREFIX:-fnp}-plugin}"
P="${FNP_PLUGIN:-flannel-np:demo}"
SUBNETS="${FNP_DEMO_SUBNETS:-10.200.0.0/16}"
NET=demo SVC=web
KEEP=0 REQUESTS=20
t_start=$SECONDS

say()  { printf '\n\033[1m=== %s\033[0m\n' "$*"; }
info() { printf '  %s\n' "$*"; }
die()  { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
dk()   { "$LAB" dk "$@"; }
wait_for() { # SECONDS WHAT CMD…
  local secs="$1" what="$2"; local end=$((SECONDS + secs)); shift 2
  until "$@" >/dev/null 2>&1; do (( SECONDS < end )) || die "timed out after $secs s waiting for $what"; sleep 0.5; done
}

while (($#)); do
  case "$1" in
    --local) (($# == 1)) || die "--local takes no other option"; local_demo; exit 0 ;;
    --keep) KEEP=1; shift ;;
    --requests)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] && (( $2 >= 1 && $2 <= 1000 )) || die "--requests needs a number 1..1000, got '${2:-}'"
      REQUESTS=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (scripts/demo.sh [--keep] [--requests N] | --local)" ;;
  esac
done
[[ $EUID -eq 0 ]] || die "the Swarm demo must run as root (network namespaces, dockerd); scripts/demo.sh --local needs no root"
for c in dockerd etcd etcdctl busybox mmdebstrap nft iptables python3 java mvn; do
  if ! command -v "$c" >/dev/null; then
    # a fresh Debian 12 machine: the packages come from apt, once (the same script as .ci/run's)
    info "missing command '$c': scripts/install-deps.sh demo"
    "$ROOT/scripts/install-deps.sh" demo || die "installing the demo's packages failed"
    break
  fi
done

# How the user reaches this lab later: the lab's env settings only when they differ from defaults.
lab_cmd() {
  local v out=""
  for v in FNP_LAB_PREFIX FNP_LAB_STATE FNP_LAB_NET; do [[ -n "${!v:-}" ]] && out+="$v=$(printf %q "${!v}") "; done
  echo "${out}scripts/swarm-lab.sh"
}

# swarm-lab.sh up would remove a lab that is already up; a demo must not destroy someone's lab.
state="${FNP_LAB_STATE:-/tmp/fnp-lab}"
if [[ -e "$state" ]] || ip netns list 2>/dev/null | grep -qE "^${FNP_LAB_PREFIX:-fnp}(-infra|[0-9]+)( |$)"; then
  die "a lab is already up ($state, netns ${FNP_LAB_PREFIX:-fnp}*): '$(lab_cmd) down' first, or choose another FNP_LAB_PREFIX, FNP_LAB_STATE and FNP_LAB_NET"
fi

LAB_UP=0
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if (( LAB_UP )); then
    if (( KEEP )); then
      say "The lab stays up (--keep)$( ((rc == 0)) || echo ", after a FAILURE (exit $rc)")"
      info "$(lab_cmd) dk 1 service ps $SVC                  # the docker CLI against node 1 (2, 3)"
      info "$(lab_cmd) dk 2 exec client sh -c 'printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | nc $SVC 80'"
      info "$(lab_cmd) dk 3 exec client nslookup tasks.$SVC"
      info "$(lab_cmd) exec 1 nft list table ip flannel-np-lb      # node 1's VIP rules"
      info "$(lab_cmd) etcdctl get --prefix --keys-only /flannel/docker-data"
      info "$(lab_cmd) down                                # remove it all; checks the host is as before"
      exit "$rc"
    fi
    say "Tear down"
    if ! "$LAB" down; then printf 'demo: lab down did not restore the host\n' >&2; rc=1; fi
  fi
  (( rc == 0 )) && say "Done in $((SECONDS - t_start)) s: the lab is gone, the host is as before" \
                 || printf '\ndemo: FAILED (exit %s) after %s s\n' "$rc" "$((SECONDS - t_start))" >&2
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. the managed plugin ---------------------------------------------------------------------
say "1. Build the managed plugin into $PLUGIN_DIR"
if [[ ! -f "$JAR" ]]; then
  command -v mvn >/dev/null || die "$JAR is missing and mvn is not installed"
  info "building $JAR (mvn -B -q -DskipTests package) ..."
  (cd "$ROOT" && mvn -B -q -DskipTests package)
fi
if [[ ! -f "$PLUGIN_DIR/config.json" || "$JAR" -nt "$PLUGIN_DIR/rootfs/opt/flannel-np/flannel-np.jar" \
      || "$ROOT/plugin-bundle/config.json" -nt "$PLUGIN_DIR/config.json" ]]; then
  "$ROOT/scripts/build-plugin.sh" "$PLUGIN_DIR"
else
  info "up to date (delete $PLUGIN_DIR to rebuild)"
fi

# ---- 2. three dockerds, a Swarm, one etcd --------------------------------------------------------
say "2. Three Docker 20.10 nodes in network namespaces, one Swarm, one etcd"
LAB_UP=1
"$LAB" up 3
dk 1 node ls --format '{{.Hostname}}  {{.Status}}  {{.ManagerStatus}}' | sed 's/^/  /'

# ---- 3. the plugin on every node ---------------------------------------------------------------
say "3. docker plugin create + set + enable $P on every node"
info "settings: ETCD_ENDPOINTS=<the lab's etcd> NODE_NAME=<node> AVAILABLE_SUBNETS=$SUBNETS DEFAULT_FLANNEL_OPTIONS=-iface=eth0"
"$LAB" install-plugin "$PLUGIN_DIR" "$P" ETCD_ENDPOINTS={etcd} NODE_NAME={node} \
  AVAILABLE_SUBNETS="$SUBNETS" DEFAULT_FLANNEL_OPTIONS=-iface=eth0

# ---- 4. a flannel-np network -------------------------------------------------------------------
fid=$(cat /proc/sys/kernel/random/uuid)
say "4. docker network create -d $P --ipam-driver $P --ipam-opt flannel-id=$fid --attachable $NET"
dk 1 network create -d "$P" --ipam-driver "$P" --ipam-opt "flannel-id=$fid" --attachable "$NET" >/dev/null
allocated() { [[ "$(dk 1 network inspect -f '{{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NET")" == "$P "[0-9]* ]]; }
wait_for 30 "network $NET to get its subnet from flannel-np (see ${FNP_LAB_STATE:-/tmp/fnp-lab}/n1/dockerd.log)" allocated
info "subnet $(dk 1 network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NET"), VXLAN VNI $(dk 1 network inspect -f '{{index .Options "io.flannel-np.vni"}}' "$NET")"

# ---- 5. a VIP service, one replica per node ------------------------------------------------------
say "5. docker service create --name $SVC --network $NET --replicas 3 (busybox httpd answering its host name)"
# The task's host name says which replica (slot) on which node answered.
dk 1 service create -d --name "$SVC" --network "$NET" --replicas 3 --replicas-max-per-node 1 \
  --hostname '{{.Service.Name}}-{{.Task.Slot}}-on-{{.Node.Hostname}}' --no-resolve-image --stop-grace-period 1s \
  "${FNP_LAB_IMAGE:-fnp/busybox:latest}" sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
running() { [[ "$(dk 1 service ps "$SVC" -f desired-state=running --format '{{.CurrentState}}' | grep -c '^Running')" == 3 ]]; }
wait_for 90 "3 running replicas of $SVC" running
dk 1 service ps "$SVC" --format '{{.Name}} on {{.Node}}: {{.CurrentState}}' | sed 's/^/  /'
info "VIP on $NET: $(dk 1 service inspect -f '{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}' "$SVC")"

# ---- 6. a client on every node ----------------------------------------------------------------
say "6. A client container on every node (docker run --network $NET)"
for i in 1 2 3; do
  dk "$i" run -d --name client --network "$NET" --stop-timeout 1 "${FNP_LAB_IMAGE:-fnp/busybox:latest}" sleep 86400 >/dev/null
done
# One HTTP GET from node I's client to the service name, printing the body. busybox's nc, not its
# wget: the Debian busybox-static wget segfaults in these containers.
http_get() { dk "$1" exec client sh -c 'printf "GET / HTTP/1.0\r\n\r\n" | nc -w 3 "$0" 80 | tail -n 1' "$SVC"; }
# Ready when the client's resolver (flannel-np's, at 127.0.0.11) lists all three tasks and one
# request through the VIP gets an answer.
ready() {
  local i n
  for i in 1 2 3; do
    n=$(dk "$i" exec client nslookup "tasks.$SVC" 2>/dev/null | grep -c '^Address: ' || true)
    [[ "$n" == 3 ]] || return 1
    [[ -n "$(http_get "$i")" ]] || return 1
  done
}
wait_for 60 "every client to resolve tasks.$SVC to 3 addresses and reach http://$SVC/" ready
for i in 1 2 3; do
  info "node $i: $SVC -> $(dk "$i" exec client nslookup "$SVC" | awk '/^Address: /{print $2}' | tr '\n' ' ')  tasks.$SVC -> $(dk "$i" exec client nslookup "tasks.$SVC" | awk '/^Address: /{print $2}' | sort -V | tr '\n' ' ')"
done

# ---- 7. the client loop ----------------------------------------------------------------------------
say "7. $REQUESTS requests to http://$SVC/ from the client on each node: which replica answered"
failed=0
for i in 1 2 3; do
  # The loop runs inside the client; each line is the answering replica's host name or FAILED.
  out=$(dk "$i" exec client sh -c 'n=0; while [ $n -lt "$1" ]; do n=$((n+1))
    r=$(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 3 "$0" 80 | tail -n 1); echo "${r:-FAILED}"; done' "$SVC" "$REQUESTS")
  printf '  from node %s (%s):\n' "$i" "$(dk "$i" info -f '{{.Name}}')"
  sort <<<"$out" | uniq -c | awk '{printf "    %3d  %s\n", $1, $2}'
  f=$(grep -c '^FAILED$' <<<"$out" || true)
  answered=$(grep -v '^FAILED$' <<<"$out" | sort -u | wc -l)
  (( f == 0 )) || { info "    $f of $REQUESTS requests failed"; failed=1; }
  (( REQUESTS < 12 || answered == 3 )) || { info "    only $answered of 3 replicas answered"; failed=1; }
done
(( failed == 0 )) || die "some requests failed or did not spread over the replicas"
info "every request answered; the VIP spreads them over all three replicas from every node"
