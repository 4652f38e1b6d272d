#!/usr/bin/env bash
# dns-bench.sh: flannel-np's per-container resolver against dnsmasq and Docker's embedded
# resolver, measured in the same run with dnsperf from inside a container network namespace.
#
#   scripts/bench/dns-bench.sh [--reps N] [--seconds S] [--memory COUNT] [--no-docker]
#
#   --reps N        repetitions of each max-QPS run, medians are reported (default 3)
#   --seconds S     length of each dnsperf run (default 10)
#   --memory COUNT  namespaces for the memory-per-container measurement (default 1000, 0 = skip)
#   --no-docker     skip Docker's resolver (it needs a real dockerd 20.10 in a lab namespace,
#                   built with scripts/swarm-lab.sh up 1 under its own prefix; about a minute)
#
# What runs where (nothing leaves the namespaces this script creates; all are removed at exit):
#   <stem>-ours     a "container" namespace carrying Docker's exact 127.0.0.11 DNAT rules (to a
#                   port nobody listens on); the DnsVerticle (DnsBench serve) injects its listener
#                   and table; dnsperf -s 127.0.0.11 runs inside, as a container's client would.
#   <stem>-dnsmasq  dnsmasq --addn-hosts=<the same names> on 127.0.0.11:53, dnsperf inside.
#   Docker          a 1-node swarm (lab prefix fnpdb), an attachable overlay, a VIP and a DNSRR
#                   service (dsvc0, drr0) with 3 tasks each and a client container; dnsperf inside
#                   the client's namespace against 127.0.0.11 (Docker's resolver, inside dockerd).
#                   Then a coexistence check: a second DnsVerticle injects into that real
#                   container (Docker's own rules and resolver in place), our names are ours,
#                   Docker's names and the rest go to Docker, and an orderly stop hands back.
# Reported: QPS (self-paced, -c 1), server CPU per query, latency p50/p99/p99.9 at fixed rates
# (dnsperf -v per-query latencies), the ratios, and JVM memory per injected container.
set -euo pipefail

REPS=3
SECS=10
MEM=1000
DOCKER=1
while (($#)); do
  case "$1" in
    --reps) REPS="$2"; shift 2 ;;
    --seconds) SECS="$2"; shift 2 ;;
    --memory) MEM="$2"; shift 2 ;;
    --no-docker) DOCKER=0; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$REPS" =~ ^[1-9][0-9]?$ && "$SECS" =~ ^[1-9][0-9]{0,2}$ && "$MEM" =~ ^[0-9]{1,5}$ ]] \
  || { echo "bad --reps/--seconds/--memory" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
[[ $EUID -eq 0 ]] || die "needs root (network namespaces, nft, setns)"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAB="$REPO/scripts/swarm-lab.sh"
STEM="fnpbench$$"
TMP="$(mktemp -d /tmp/dns-bench.XXXXXX)"
NETNS=()
JAVA_PID=""
HOLD_PID=""
JAVA2_PID=""
HOLD2_PID=""
DNSMASQ_PID=""
DOCKER_UP=0
export FNP_LAB_PREFIX=fnpdb FNP_LAB_STATE="/tmp/fnpdb-$$" FNP_LAB_NET=198.18.77

source "$REPO/scripts/bench/lib.sh"
stop_pid() { # PID NAME GRACE
  [[ -n "$1" && -d "/proc/$1" ]] && log "stopping $2 (pid $1)"
  bench_stop "$1" "${3:-20}"
}

cleanup() {
  set +e
  if [[ -n "$HOLD_PID" ]]; then
    kill -TERM "$HOLD_PID" 2>/dev/null # closes the daemon's stdin: it undeploys and exits
    local end=$((SECONDS + 30))
    while [[ -n "$JAVA_PID" && -d "/proc/$JAVA_PID" ]] && ((SECONDS < end)); do sleep 0.2; done
  fi
  stop_pid "$JAVA_PID" "DnsBench" 5
  [[ -n "$HOLD2_PID" ]] && kill -TERM "$HOLD2_PID" 2>/dev/null
  stop_pid "$JAVA2_PID" "DnsBench (Docker container)" 30
  stop_pid "$DNSMASQ_PID" "dnsmasq" 5
  for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if ((DOCKER_UP)); then
    log "removing the Docker lab ($FNP_LAB_STATE)"
    "$LAB" down >"$TMP/../dns-bench-lab-down.log" 2>&1 || log "lab down reported differences: /tmp/dns-bench-lab-down.log"
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

need_pkg() { # COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null || die "cannot install $2"
}
need_pkg dnsperf dnsperf
need_pkg dnsmasq dnsmasq-base
for c in java mvn ip nft iptables nsenter dig; do command -v "$c" >/dev/null || die "$c is missing"; done

# ---- build ------------------------------------------------------------------------------------
log "building (both modules through the reactor; nothing is installed to ~/.m2)"
CP=$(ROOT="$REPO" bench_classpath verticles "$TMP") || die "build failed"
JAVA=(java -Xms256m -Xmx1g -cp "$CP")

add_ns() { ip netns add "$1"; NETNS+=("$1"); ip -n "$1" link set lo up; }
docker_rules() { # NS PORT: Docker's exact 127.0.0.11 rules (docker-contract.md §5.2)
  local n="$1" p="$2"
  ip netns exec "$n" iptables -t nat -N DOCKER_OUTPUT
  ip netns exec "$n" iptables -t nat -I OUTPUT -d 127.0.0.11 -j DOCKER_OUTPUT
  ip netns exec "$n" iptables -t nat -N DOCKER_POSTROUTING
  ip netns exec "$n" iptables -t nat -I POSTROUTING -d 127.0.0.11 -j DOCKER_POSTROUTING
  for proto in udp tcp; do
    ip netns exec "$n" iptables -t nat -I DOCKER_OUTPUT -d 127.0.0.11 -p $proto --dport 53 -j DNAT --to-destination "127.0.0.11:$p"
    ip netns exec "$n" iptables -t nat -I DOCKER_POSTROUTING -s 127.0.0.11 -p $proto --sport "$p" -j SNAT --to-source :53
  done
}

# ---- flannel-np -------------------------------------------------------------------------------
OURS="$STEM-ours"
add_ns "$OURS"
docker_rules "$OURS" 41000
mkfifo "$TMP/in"
sleep 1000000 >"$TMP/in" &
HOLD_PID=$!
"${JAVA[@]}" io.flannelnp.bench.DnsBench serve "$OURS" "$TMP" <"$TMP/in" >"$TMP/ours.out" 2>"$TMP/ours.err" &
JAVA_PID=$!
for _ in $(seq 150); do grep -q READY "$TMP/ours.out" 2>/dev/null && break; [[ -d /proc/$JAVA_PID ]] || break; sleep 0.2; done
grep -q READY "$TMP/ours.out" || { cat "$TMP/ours.err" >&2; die "the DnsVerticle did not come up"; }
log "flannel-np: $(grep READY "$TMP/ours.out")"
[[ "$(ip netns exec "$OURS" dig @127.0.0.11 +short svc1)" == 10.60.0.101 ]] || die "flannel-np does not answer svc1"

# ---- dnsmasq ----------------------------------------------------------------------------------
DM="$STEM-dnsmasq"
add_ns "$DM"
ip netns exec "$DM" dnsmasq --no-resolv --no-hosts --addn-hosts="$TMP/hosts" --cache-size=10000 \
  --listen-address=127.0.0.11 --bind-interfaces --port=53 --user=root --pid-file="$TMP/dnsmasq.pid" \
  --log-facility="$TMP/dnsmasq.log"
for _ in $(seq 50); do [[ -s "$TMP/dnsmasq.pid" ]] && break; sleep 0.1; done
DNSMASQ_PID="$(cat "$TMP/dnsmasq.pid")"
[[ "$(ip netns exec "$DM" dig @127.0.0.11 +short svc1)" == 10.60.0.101 ]] || die "dnsmasq does not answer svc1"

# ---- Docker's embedded resolver (optional) ----------------------------------------------------
DOCKER_NS_PATH=""
DOCKERD_PID=""
docker_up() {
  [[ -x "$LAB" ]] || { log "no lab script at $LAB"; return 1; }
  command -v dockerd >/dev/null || { log "dockerd not installed"; return 1; }
  log "starting a 1-node Docker 20.10 swarm in a lab namespace (prefix $FNP_LAB_PREFIX, about a minute)"
  DOCKER_UP=1
  "$LAB" up 1 >"$TMP/lab-up.log" 2>&1 || { tail -20 "$TMP/lab-up.log" >&2; return 1; }
  local dk=("$LAB" dk 1)
  "${dk[@]}" network create -d overlay --attachable fnpbench >/dev/null
  "${dk[@]}" service create -q --name dsvc0 --network fnpbench --replicas 3 fnp/busybox:latest sleep 1000000 >/dev/null
  "${dk[@]}" service create -q --name drr0 --endpoint-mode dnsrr --network fnpbench --replicas 3 \
    fnp/busybox:latest sleep 1000000 >/dev/null
  local end=$((SECONDS + 90))
  until [[ "$("${dk[@]}" ps -q --filter label=com.docker.swarm.service.name | wc -l)" -ge 6 ]]; do
    ((SECONDS < end)) || { log "tasks did not start"; return 1; }
    sleep 1
  done
  "${dk[@]}" run -d --name client --network fnpbench fnp/busybox:latest sleep 1000000 >/dev/null
  local pid
  pid="$("${dk[@]}" inspect -f '{{.State.Pid}}' client)"
  DOCKER_NS_PATH="/proc/$pid/ns/net"
  DOCKERD_PID="$(cat "$FNP_LAB_STATE/n1/dockerd.pid")"
  {
    echo "dsvc0 A"; echo "drr0 A"; echo "tasks.dsvc0 A"; echo "tasks.drr0 A"
    "${dk[@]}" ps --format '{{.Names}}' --filter label=com.docker.swarm.service.name | sed 's/$/ A/'
  } >"$TMP/docker-queries"
  sleep 2 # the last task records propagate
  local a
  a="$(nsenter --net="$DOCKER_NS_PATH" dig @127.0.0.11 +short +time=2 +tries=1 tasks.drr0 | wc -l)"
  [[ "$a" -eq 3 ]] || { log "Docker's resolver gives $a addresses for tasks.drr0"; return 1; }
  log "Docker: $(wc -l <"$TMP/docker-queries") names; client namespace $DOCKER_NS_PATH; dockerd pid $DOCKERD_PID"
}
HAVE_DOCKER=0
if ((DOCKER)); then
  if docker_up; then HAVE_DOCKER=1; else log "Docker's resolver: SKIPPED (see above)"; fi
fi

# ---- measurements -----------------------------------------------------------------------------
# run_in TARGET CMD...: run inside the target's client namespace
run_in() {
  local t="$1"; shift
  case "$t" in
    ours) ip netns exec "$OURS" "$@" ;;
    dnsmasq) ip netns exec "$DM" "$@" ;;
    docker) nsenter --net="$DOCKER_NS_PATH" "$@" ;;
  esac
}
server_pid() { case "$1" in ours) echo "$JAVA_PID" ;; dnsmasq) echo "$DNSMASQ_PID" ;; docker) echo "$DOCKERD_PID" ;; esac; }
queries() { if [[ "$1" == docker ]]; then echo "$TMP/docker-queries"; else echo "$TMP/queries"; fi; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TARGETS=(ours dnsmasq)
((HAVE_DOCKER)) && TARGETS+=(docker)
HZ="$(getconf CLK_TCK)"

declare -A QPS CPUQ LAT
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if (NR==0) print 0; else print a[int((NR+1)/2)]}'; }

log "warm-up: 3 s of dnsperf per target (the JVM compiles its hot path)"
for t in "${TARGETS[@]}"; do run_in "$t" dnsperf -s 127.0.0.11 -d "$(queries "$t")" -l 3 -c 1 >/dev/null 2>&1; done
log "max QPS: dnsperf -c 1 (self-paced, 100 outstanding), ${SECS}s x $REPS, targets interleaved"
for rep in $(seq "$REPS"); do
  for t in "${TARGETS[@]}"; do
    pid="$(server_pid "$t")"
    c0="$(cpu_ticks "$pid")"
    out="$(run_in "$t" dnsperf -s 127.0.0.11 -d "$(queries "$t")" -l "$SECS" -c 1 2>&1)"
    c1="$(cpu_ticks "$pid")"
    q="$(awk '/Queries per second/{print $4}' <<<"$out")"
    n="$(awk '/Queries completed/{print $3}' <<<"$out")"
    lost="$(awk '/Queries lost/{print $3}' <<<"$out")"
    us="$(awk -v c=$((c1 - c0)) -v n="$n" -v hz="$HZ" 'BEGIN{printf "%.1f", (n > 0) ? (c * 1e6 / hz / n) : 0}')"
    QPS[$t]="${QPS[$t]:-} $q"
    CPUQ[$t]="${CPUQ[$t]:-} $us"
    log "  rep $rep $t: $(printf '%.0f' "$q") QPS, server CPU ${us} us/query, lost $lost"
  done
done

log "latency at fixed rates: dnsperf -Q RATE -v, ${SECS}s x $REPS each, medians of the percentiles"
RATES=(2000 5000 10000)
declare -A P50 P99 P999 PCPU
for rep in $(seq "$REPS"); do
  for rate in "${RATES[@]}"; do
    for t in "${TARGETS[@]}"; do
      pid="$(server_pid "$t")"
      c0="$(cpu_ticks "$pid")"
      run_in "$t" dnsperf -s 127.0.0.11 -d "$(queries "$t")" -l "$SECS" -c 1 -Q "$rate" -v >"$TMP/lat.out" 2>&1
      c1="$(cpu_ticks "$pid")"
      pct="$(awk -v c=$((c1 - c0)) -v s="$SECS" -v hz="$HZ" 'BEGIN{printf "%.0f", c * 100 / hz / s}')"
      read -r a50 a99 a999 < <(awk '/^> /{print $NF}' "$TMP/lat.out" | sort -g | awk '
        {a[NR] = $1 * 1000}
        function p(q) { i = int(NR * q + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; return a[i] }
        END { if (NR == 0) print "0 0 0"; else printf "%.3f %.3f %.3f\n", p(0.5), p(0.99), p(0.999) }')
      P50[$t,$rate]="${P50[$t,$rate]:-} $a50"; P99[$t,$rate]="${P99[$t,$rate]:-} $a99"
      P999[$t,$rate]="${P999[$t,$rate]:-} $a999"; PCPU[$t,$rate]="${PCPU[$t,$rate]:-} $pct"
      log "  rep $rep $rate QPS $t: p50/p99/p99.9 ms $a50 / $a99 / $a999 (cpu $pct%)"
    done
  done
done
for rate in "${RATES[@]}"; do
  for t in "${TARGETS[@]}"; do
    LAT[$t,$rate]="$(median <<<"${P50[$t,$rate]}") / $(median <<<"${P99[$t,$rate]}") / $(median <<<"${P999[$t,$rate]}")  (cpu $(median <<<"${PCPU[$t,$rate]}")%)"
  done
done

# ---- coexistence with a real Docker 20.10 resolver ------------------------------------------
COEX=()
coex_dig() { nsenter --net="$DOCKER_NS_PATH" dig @127.0.0.11 +time=8 +tries=1 "$@" 2>&1; }
coex_status() { awk '/status:/{gsub(",", "", $6); print $6; exit}' <<<"$1"; }
coex_answers() { awk '/^;; ANSWER SECTION:/{a=1; next} a && /^$/{exit} a && !/^;/{print $NF}' <<<"$1" | sort | tr '\n' ' '; }
if ((HAVE_DOCKER)); then
  log "coexistence: our resolver injected into Docker's client container (Docker's own rules and resolver)"
  docker_vip="$(coex_answers "$(coex_dig dsvc0)")"
  docker_tasks="$(coex_answers "$(coex_dig tasks.drr0)")"
  mkdir -p "$TMP/coex"
  mkfifo "$TMP/in2"
  sleep 1000000 >"$TMP/in2" &
  HOLD2_PID=$!
  "${JAVA[@]}" io.flannelnp.bench.DnsBench serve "$DOCKER_NS_PATH" "$TMP/coex" <"$TMP/in2" >"$TMP/coex.out" 2>"$TMP/coex.err" &
  JAVA2_PID=$!
  for _ in $(seq 150); do grep -q READY "$TMP/coex.out" 2>/dev/null && break; [[ -d /proc/$JAVA2_PID ]] || break; sleep 0.2; done
  if grep -q READY "$TMP/coex.out"; then
    check() { # WHAT EXPECTED ACTUAL
      if [[ "$2" == "$3" ]]; then COEX+=("ok    $1: $3"); else COEX+=("FAIL  $1: expected '$2', got '$3'"); fi
    }
    check "flannel-np name svc1 answered by us" "10.60.0.101 " "$(coex_answers "$(coex_dig svc1)")"
    check "Docker's VIP name dsvc0 forwarded to Docker" "$docker_vip" "$(coex_answers "$(coex_dig dsvc0)")"
    check "Docker's tasks.drr0 forwarded to Docker over TCP" "$docker_tasks" "$(coex_answers "$(coex_dig +tcp tasks.drr0)")"
    t0="$(date +%s%N)"
    st="$(coex_status "$(coex_dig nosuch.invalid)")"
    COEX+=("info  unknown name (Docker 20.10 has no upstream here and never answers): $st after $((($(date +%s%N) - t0) / 1000000)) ms")
    nat="$(nsenter --net="$DOCKER_NS_PATH" iptables-save -t nat | grep -c 'DOCKER_OUTPUT.*DNAT' || true)"
    check "Docker's DNAT rules still there" "2" "$nat"
    check "our table there" "1" "$(nsenter --net="$DOCKER_NS_PATH" nft list tables | grep -c flannel-np-dns || true)"
    q="$(nsenter --net="$DOCKER_NS_PATH" dnsperf -s 127.0.0.11 -d "$TMP/queries" -l "$SECS" -c 1 2>&1 | awk '/Queries per second/{printf "%.0f", $4}')"
    COEX+=("info  flannel-np inside Docker's container (Docker's conntrack rules around it): $q QPS")
    kill -TERM "$HOLD2_PID" 2>/dev/null
    for _ in $(seq 150); do [[ -d /proc/$JAVA2_PID ]] || break; sleep 0.2; done
    check "our table gone after an orderly stop" "0" "$(nsenter --net="$DOCKER_NS_PATH" nft list tables | grep -c flannel-np-dns || true)"
    check "Docker answers dsvc0 again" "$docker_vip" "$(coex_answers "$(coex_dig dsvc0)")"
    check "svc1 is Docker's business again (NXDOMAIN or no answer)" "" "$(coex_answers "$(coex_dig +time=2 svc1)")"
  else
    COEX+=("FAIL  the DnsVerticle did not inject into $DOCKER_NS_PATH: $(tail -3 "$TMP/coex.err" | tr '\n' ' ')")
  fi
  for l in "${COEX[@]}"; do log "  $l"; done
fi

# ---- memory per injected container ------------------------------------------------------------
MEMLINE="skipped (--memory 0)"
if ((MEM > 0)); then
  log "memory: $MEM namespaces, one injected resolver each"
  {
    for i in $(seq "$MEM"); do echo "netns add $STEM-m-$i"; done
  } | ip -batch - >/dev/null
  for i in $(seq "$MEM"); do NETNS+=("$STEM-m-$i"); done
  { for i in $(seq "$MEM"); do echo "netns exec $STEM-m-$i ip link set lo up"; done; } | ip -batch - >/dev/null
  "${JAVA[@]}" io.flannelnp.bench.DnsBench memory "$MEM" "$STEM-m" >"$TMP/mem.out" 2>"$TMP/mem.err" \
    || { tail -20 "$TMP/mem.err" >&2; die "memory measurement failed"; }
  MEMLINE="$(grep '^MEMORY' "$TMP/mem.out" | sed 's/^MEMORY //')"
  log "  $MEMLINE"
  log "  $(grep '^EJECTED' "$TMP/mem.out")"
  { for i in $(seq "$MEM"); do echo "netns del $STEM-m-$i"; done; } | ip -batch - >/dev/null 2>&1 || true
fi

# ---- summary ----------------------------------------------------------------------------------
med_q() { median <<<"${QPS[$1]}"; }
med_c() { median <<<"${CPUQ[$1]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", (a / b); else print "n/a" }'; }
OQ="$(med_q ours)"; MQ="$(med_q dnsmasq)"
DOCKER_ANCHOR=61500
{
  echo
  echo "== DNS benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), dnsperf $(dnsperf -h 2>&1 | awk '/^Version/{print $2}'), dnsmasq $(dnsmasq --version | awk 'NR==1{print $3}')) =="
  echo "max QPS, dnsperf -c 1, median of $REPS x ${SECS}s (server CPU per query):"
  printf "  %-26s %9.0f QPS  %6s us/query\n" "flannel-np (DnsVerticle)" "$OQ" "$(med_c ours)"
  printf "  %-26s %9.0f QPS  %6s us/query\n" "dnsmasq (hosts file)" "$MQ" "$(med_c dnsmasq)"
  if ((HAVE_DOCKER)); then
    DQ="$(med_q docker)"
    printf "  %-26s %9.0f QPS  %6s us/query\n" "Docker 20.10 127.0.0.11" "$DQ" "$(med_c docker)"
  else
    echo "  Docker 20.10 127.0.0.11    SKIPPED in this run (anchor: 61,500 QPS, dns-anchor.md)"
  fi
  echo "ratios:"
  echo "  flannel-np / dnsmasq          $(ratio "$OQ" "$MQ")   (goal >= 0.9)"
  if ((HAVE_DOCKER)); then
    echo "  flannel-np / Docker           $(ratio "$OQ" "$DQ")   (goal >= 2)"
    echo "  dnsmasq / Docker              $(ratio "$MQ" "$DQ")"
  else
    echo "  flannel-np / Docker (anchor)  $(ratio "$OQ" "$DOCKER_ANCHOR")   (goal >= 2; anchor measured on a quiet machine)"
  fi
  echo "latency p50 / p99 / p99.9 in ms at fixed rates, medians of $REPS x ${SECS}s (server CPU % of one core):"
  for rate in "${RATES[@]}"; do
    for t in "${TARGETS[@]}"; do printf "  %6s QPS  %-8s %s\n" "$rate" "$t" "${LAT[$t,$rate]}"; done
  done
  echo "memory per injected container: $MEMLINE"
  if ((HAVE_DOCKER)); then
    echo "coexistence with Docker 20.10's real resolver (injected into its client container):"
    for l in "${COEX[@]}"; do echo "  $l"; done
  fi
} | tee "$TMP/../dns-bench-last.txt"
