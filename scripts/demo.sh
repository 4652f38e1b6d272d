#!/usr/bin/env bash
# flannel-np demo: runs the daemon against a private etcd and shows what works at this stage.
#
# Needs: a JDK 17 + Maven (only if verticles/target/flannel-np.jar is missing), Debian's etcd
# (apt-get install etcd-server) and curl. No Docker, no root: the plugin socket, the admin server
# and etcd all live on loopback or in a temporary directory that is removed on exit.
set -euo pipefail

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
DAEMON_LOG="$TMP/daemon.log"
SETTINGS=(
  ETCD_ENDPOINTS="$ETCD_URL"
  AVAILABLE_SUBNETS=10.50.0.0/16
  PLUGIN_SOCKET="$SOCK"
  DOCKER_SOCKET="$TMP/no-docker.sock"
  NODE_NAME=demo
  ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT"
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
curl -sS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/health"
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
