#!/bin/bash
# e2e-docker.sh: the createContainer hook against a REAL dockerd (Debian's docker.io, 20.10 here).
#
# One node: network namespace fnh-e2e-<pid> with its own etcd, a dockerd in a private mount
# namespace (scripts/swarm-lab/node-init.sh) whose default runtime is hook/target/flannel-np-runtime,
# and flannel-np (verticles/target/flannel-np.jar) as a legacy v1 plugin in that dockerd's mount
# and network namespaces (socket /run/docker/plugins/flannel-np.sock, IS_HOOK_AVAILABLE=true).
# A flannel-np network (local scope: see scope-proxy.py), and a name only flannel-np knows (a container record
# in etcd). Then, each as the container's FIRST action:
#   1. RUNS x `docker run --network net busybox nslookup NAME 127.0.0.11` through the hook:
#      every one must get flannel-np's answer;
#   2. the same RUNS with `--runtime runc` (no hook): reported, not asserted (that is the race);
#   3. flannel-np frozen (SIGSTOP): a container still starts, after the hook's 2 s timeout;
#   4. flannel-np killed (stale socket): a container starts at once.
# Also saves the config.json dockerd hands runc (CAPTURE=path) for the wrapper's unit tests.
# Everything is removed on exit, failed or not. Needs root. Exit 0 only if 1, 3 and 4 hold.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
JAR="${FNP_JAR:-$ROOT/verticles/target/flannel-np.jar}"
RUNS="${RUNS:-10}"
CAPTURE="${CAPTURE:-}"
NODE_INIT="${NODE_INIT:-$ROOT/scripts/swarm-lab/node-init.sh}"
NAME=fnhsecret
IP=198.18.77.10

log() { printf 'e2e: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root"
[[ -f "$JAR" ]] || die "$JAR missing: mvn -pl verticles -am package -DskipTests"
[[ -x "$NODE_INIT" ]] || die "$NODE_INIT missing"
make -s -C "$ROOT/hook"

W="$(mktemp -d /tmp/fnh-e2e.XXXXXX)"
NS="fnh-e2e-$$"
DPID="" FPID="" EPID="" PPID_=""

cleanup() {
  set +e
  [[ -n "$FPID" ]] && { kill -CONT "$FPID"; kill -KILL "$FPID"; } 2>/dev/null
  # dockerd asks its containerd for a stack dump (/tmp/containerd.<pid>.stacks.log) when it
  # does not stop in time: remember the PIDs to remove those files
  local ctd=""
  ip netns list | grep -qw "$NS" && ctd="$(ip netns pids "$NS" | while read -r p; do
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == containerd ]] && echo "$p"; done)"
  if [[ -n "$DPID" ]] && kill -0 "$DPID" 2>/dev/null; then
    dk swarm leave --force >/dev/null 2>&1
    kill -TERM "$DPID"
    for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DPID" 2>/dev/null
  fi
  [[ -n "$EPID" ]] && kill -KILL "$EPID" 2>/dev/null
  [[ -n "$PPID_" ]] && kill -KILL "$PPID_" 2>/dev/null
  # whatever still runs in the node's namespace was started by this script (shims, containers)
  if ip netns list | grep -qw "$NS"; then
    for p in $(ip netns pids "$NS"); do kill -KILL "$p" 2>/dev/null; done
    sleep 0.5
    ip netns del "$NS"
  fi
  for p in $ctd; do rm -f "/tmp/containerd.$p.stacks.log"; done
  if [[ -n "${KEEP:-}" ]]; then log "logs kept in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

dk() { docker -H "unix://$W/node/run/docker.sock" "$@"; }
etcdctl_() { ip netns exec "$NS" env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 "$@"; }

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add fnh-eth0 type veth peer name fnh-eth0p
ip -n "$NS" link set fnh-eth0p up
ip -n "$NS" addr add "$IP/24" dev fnh-eth0
ip -n "$NS" link set fnh-eth0 up

ip netns exec "$NS" etcd --name fnh --data-dir "$W/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster fnh=http://127.0.0.1:2380 \
  >"$W/etcd.log" 2>&1 &
EPID=$!

mkdir -p "$W/node"/{run,etc,lib}
cat >"$W/hooks.json" <<EOF
{"hooks":{"createContainer":[{"path":"$ROOT/hook/target/flannel-np-hook","args":["flannel-np-hook","--timeout-ms","2000"]}]}}
EOF
# a runtime that only saves the spec Docker hands runc (for the wrapper's unit tests)
cat >"$W/capture.sh" <<EOF
#!/bin/sh
prev=""
for a in "\$@"; do
  if [ "\$prev" = "--bundle" ] || [ "\$prev" = "-b" ]; then cp "\$a/config.json" "$W/captured.json"; fi
  prev="\$a"
done
exec /usr/sbin/runc "\$@"
EOF
chmod +x "$W/capture.sh"
# dns: a lab address nothing answers on, so nothing is ever forwarded off this machine
cat >"$W/node/etc/daemon.json" <<EOF
{
  "runtimes": {
    "flannel-np": {"path": "$ROOT/hook/target/flannel-np-runtime",
                   "runtimeArgs": ["--hook-config-path", "$W/hooks.json", "--runtime-path", "/usr/sbin/runc"]},
    "fnh-capture": {"path": "$W/capture.sh"}
  },
  "default-runtime": "flannel-np",
  "dns": ["198.18.77.1"]
}
EOF

FNP_LAB_PREFIX=fnh setsid nsenter --net="/run/netns/$NS" -- unshare --mount --uts --propagation slave -- \
  "$NODE_INIT" 1 "$W/node" "$IP" >"$W/dockerd.log" 2>&1 &
DPID=$!
for _ in $(seq 150); do dk version >/dev/null 2>&1 && break; sleep 0.2; done
dk version --format 'dockerd {{.Server.Version}}' >&2 || die "dockerd did not start: $(tail -5 "$W/dockerd.log")"

start_fnp() {
  nsenter --target "$DPID" --mount --net -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    ETCD_ENDPOINTS=http://127.0.0.1:2379 AVAILABLE_SUBNETS=10.77.0.0/16 IS_HOOK_AVAILABLE=true NODE_NAME=fnh-n1 DEFAULT_FLANNEL_OPTIONS=-iface=fnh-eth0 \
    PLUGIN_SOCKET=/run/docker/plugins/fnhplugin/flannel-np.sock \
    java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dvertx.cacheDirBase="$W/vertx-cache" -jar "$JAR" >>"$W/fnp.log" 2>&1 &
  FPID=$!
  for _ in $(seq 100); do [[ -S "$W/node/run/docker/plugins/fnhplugin/flannel-np-hook.sock" ]] && return; sleep 0.2; done
  die "flannel-np did not open its hook socket: $(tail -5 "$W/fnp.log")"
}
# the daemon's sockets where a managed plugin's are: its own directory under /run/docker/plugins
# (there <id>/), so the hook finds flannel-np-hook.sock with its default pattern, as installed
start_fnp
# legacy plugins get local-scope networks only (see scope-proxy.py): Docker talks to the proxy
nsenter --target "$DPID" --mount --net -- python3 "$ROOT/hook/test/scope-proxy.py" \
  /run/docker/plugins/flannel-np.sock /run/docker/plugins/fnhplugin/flannel-np.sock >"$W/proxy.log" 2>&1 &
PPID_=$!
for _ in $(seq 50); do [[ -S "$W/node/run/docker/plugins/flannel-np.sock" ]] && break; sleep 0.1; done

# image without a registry: a busybox-static rootfs
mkdir -p "$W/rootfs"/{bin,etc,tmp,proc,sys,dev}
cp /usr/bin/busybox "$W/rootfs/bin/busybox"
for a in sh nslookup true sleep time; do ln -s busybox "$W/rootfs/bin/$a"; done
tar -C "$W/rootfs" -cf "$W/rootfs.tar" .
dk import --change 'ENV PATH=/bin' "$W/rootfs.tar" fnh-busybox >/dev/null

# No Swarm: dockerd 20.10 refuses legacy network plugins in swarm mode (scope-proxy.py). What a
# Swarm manager's allocator does first (IPAM RequestPool in the global space: the network and its
# subnet in etcd) is done here directly; this node then acts as a worker that gets its first
# container on the network: local pool, CreateNetwork, CreateEndpoint, Join.
FID="$(cat /proc/sys/kernel/random/uuid)"
curl -sf --unix-socket "$W/node/run/docker/plugins/fnhplugin/flannel-np.sock" -X POST http://plugin/IpamDriver.RequestPool \
  -d "{\"AddressSpace\":\"FlannelGlobal\",\"Pool\":\"\",\"SubPool\":\"\",\"Options\":{\"flannel-id\":\"$FID\"},\"V6\":false}" \
  >/dev/null || die "RequestPool in the global space failed"
dk network create -d flannel-np --ipam-driver flannel-np --ipam-opt "flannel-id=$FID" fnhnet >/dev/null
NET="$(dk network inspect -f '{{.Id}}' fnhnet)"
SUBNET="$(dk network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' fnhnet)"
ANSWER="${SUBNET%.*}.250"
log "network fnhnet $NET subnet $SUBNET; $NAME -> $ANSWER (known to flannel-np only)"
CID="$(printf 'fnh%061d' 1)"
etcdctl_ put "/flannel/docker-data/containers/fnh-remote/$CID" \
  "{\"ContainerID\":\"$CID\",\"Name\":\"/$NAME\",\"Hostname\":\"$NAME\",\"Node\":\"fnh-remote\",\"State\":\"running\",\"Networks\":{\"$NET\":{\"IP\":\"$ANSWER\",\"EndpointID\":\"\",\"Aliases\":[]}}}" >/dev/null

if [[ -n "$CAPTURE" ]]; then
  dk run --rm --runtime fnh-capture --network fnhnet fnh-busybox true
  cp "$W/captured.json" "$CAPTURE"
  log "captured the spec dockerd hands runc into $CAPTURE"
fi

# 1 + 2: the container's first action is the lookup. Docker's resolver does not know the name and
# 20.10 gives no reply when its upstream fails, so busybox retries after about a second: a lookup
# answered in under 0.5 s is one whose FIRST query flannel-np answered.
runs() { # runtime-args...
  local ok=0 out real
  for i in $(seq "$RUNS"); do
    out="$(dk run --rm "$@" --network fnhnet fnh-busybox time -p nslookup "$NAME" 127.0.0.11 2>&1)" || true
    real="$(sed -n 's/^real \([0-9.]*\)$/\1/p' <<<"$out")"
    if grep -q "$ANSWER" <<<"$out" && [[ -n "$real" ]] && awk -v r="$real" 'BEGIN { exit !(r < 0.5) }'; then
      ok=$((ok + 1))
    else
      log "  run $i ($*): ${real:-?} s: $(tr '\n' ' ' <<<"$out" | cut -c1-160)"
    fi
  done
  echo "$ok"
}
with="$(runs)"
log "with the hook:    $with/$RUNS first queries answered by flannel-np"
without="$(runs --runtime runc)"
log "without the hook: $without/$RUNS first queries answered by flannel-np (the others went to Docker's resolver)"
[[ "$with" == "$RUNS" ]] || die "with the hook only $with/$RUNS first queries were answered by flannel-np"
# and it was the hook that held each of them until the listener served (not luck in the race)
held="$(grep -c 'OCI hook of container .*: injected after' "$W/fnp.log" || true)"
log "flannel-np answered $held hooks 'injected': $(grep -o 'injected after [0-9]* ms' "$W/fnp.log" | awk '{print $3}' | tr '\n' ' ')ms"
[[ "$held" == "$RUNS" ]] || die "expected $RUNS hook handshakes answered 'injected', found $held"

# 3 + 4 measured against a container start whose hook is answered at once (namespace not ours)
start_ms() {
  local t0
  t0=$(date +%s%N)
  dk run --rm --network none fnh-busybox true || return 1
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
base="$(start_ms)" || die "a container on no network did not start"
log "flannel-np up: container started in $base ms"

# 3: flannel-np frozen: the socket accepts but nobody answers
kill -STOP "$FPID"
ms="$(start_ms)" || { kill -CONT "$FPID"; die "a container did not start while flannel-np was frozen"; }
kill -CONT "$FPID"
log "flannel-np frozen: container started in $ms ms"
(( ms - base >= 1500 && ms - base < 6000 )) || die "expected the hook to give up after its 2 s timeout, took $ms ms (base $base ms)"

# 4: flannel-np killed: a stale socket refuses at once
kill -KILL "$FPID"; wait "$FPID" 2>/dev/null || true; FPID=""
ms="$(start_ms)" || die "a container did not start while flannel-np was down"
log "flannel-np down: container started in $ms ms"
(( ms - base < 1200 )) || die "the hook seems to wait for a daemon that is not there: $ms ms (base $base ms)"
log "PASS"
