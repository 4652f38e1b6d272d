#!/usr/bin/env bash
# scripts/build-plugin.sh DIR [--create NAME:TAG] [--push REGISTRY/NAME[:TAG]] [--jar JAR]
#
# Writes a Docker managed-plugin directory without any image registry:
#   DIR/config.json   plugin-bundle/config.json
#   DIR/rootfs/       Debian bookworm (mmdebstrap, essential variant + the tools the planes run),
#                     a jlinked JRE in /opt/flannel-np/jre, the daemon jar in
#                     /opt/flannel-np/flannel-np.jar and a CDS archive /opt/flannel-np/app.jsa
#                     recorded by a short training run (the socket must listen fast).
# With --create NAME:TAG it then runs `docker plugin create NAME:TAG DIR` (the docker CLI and
# DOCKER_HOST of the caller's environment). With --push REGISTRY/NAME[:TAG] it creates the plugin
# under that reference, pushes it and removes the local copy; the tag defaults to the jar's
# version (`java -jar flannel-np.jar --version`), which is also in the plugin's description.
# --jar JAR packs another build of the daemon (default verticles/target/flannel-np.jar, built
# with Maven when missing).
#
# The Debian part and the JRE are cached under $FNP_CACHE (default /var/cache/flannel-np), keyed
# by the package list / the module list and JDK, so a second build only refreshes the jar and the
# CDS archive. Needs root (mmdebstrap, chroot, unshare) and mmdebstrap, jlink, jdeps.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FNP_CACHE:-/var/cache/flannel-np}"
SUITE=bookworm
MIRROR="${FNP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${FNP_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
# What the planes execute (Kernel, DnsNat, Conntrack) or load (libnftables via JNA).
# libstdc++6: libjvm.so; mount: the entrypoint's remount of /proc/sys. (java.desktop's AWT libraries are never loaded, so their X11 deps are left out.)
PACKAGES=(iproute2 nftables libnftables1 iptables conntrack util-linux procps ca-certificates libstdc++6 mount)
# Modules jdeps misses because they are reached by service lookup (TLS to etcd with EC keys).
EXTRA_MODULES=(jdk.crypto.ec jdk.naming.dns)
JAR="$ROOT/verticles/target/flannel-np.jar"

log() { printf 'build-plugin: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { log "usage: build-plugin.sh DIR [--create NAME:TAG] [--push REGISTRY/NAME[:TAG]] [--jar JAR]"; exit 2; }

DIR=""; CREATE=""; PUSH=""
while (($#)); do
  case "$1" in
    --create) [[ $# -ge 2 ]] || usage; CREATE="$2"; shift 2 ;;
    --push) [[ $# -ge 2 ]] || usage; PUSH="$2"; shift 2 ;;
    --jar) [[ $# -ge 2 && -s "$2" ]] || die "--jar needs an existing jar, got '${2:-}'"; JAR="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1'" ;;
    *) [[ -z "$DIR" ]] || die "only one DIR allowed (got '$DIR' and '$1')"; DIR="$1"; shift ;;
  esac
done
[[ -n "$DIR" ]] || usage
if [[ -n "$CREATE" && ! "$CREATE" =~ ^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]]; then
  die "--create needs a plugin reference NAME:TAG (lower-case name, explicit tag), got '$CREATE'"
fi
if [[ -n "$PUSH" && ! "$PUSH" =~ ^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$ ]]; then
  die "--push needs REGISTRY/NAME[:TAG] (lower-case name), got '$PUSH'"
fi
[[ $EUID -eq 0 ]] || die "must run as root (mmdebstrap, chroot and unshare need it)"
for c in mmdebstrap jlink jdeps java unshare chroot sha256sum; do
  command -v "$c" >/dev/null || die "missing command '$c' (apt-get install mmdebstrap openjdk-17-jdk-headless)"
done
mkdir -p "$DIR" "$CACHE"
DIR="$(cd "$DIR" && pwd)"
case "$DIR" in /|/usr|/usr/*|/etc|/etc/*|/var|/opt) die "refusing to write a rootfs into '$DIR'" ;; esac

# ---- 1. the jar -------------------------------------------------------------------------------
if [[ ! -s "$JAR" ]]; then
  log "building $JAR"
  # not offline: on a fresh machine Maven first fetches the plugins and dependencies
  (cd "$ROOT" && mvn -B -q -pl verticles -am package -DskipTests) || die "maven package failed"
fi
VERSION=$(java -jar "$JAR" --version | sed -n 's/^flannel-np //p')
[[ -n "$VERSION" ]] || die "$JAR --version printed no version"

# ---- 2. Debian base, cached by package list ----------------------------------------------------
base_key=$(printf '%s\n' "$SUITE" "$MIRROR" "$SECURITY" merged-usr-hook "${PACKAGES[@]}" | sha256sum | cut -c1-16)
BASE="$CACHE/debian-$base_key"
if [[ ! -f "$BASE/.complete" ]]; then
  log "mmdebstrap $SUITE (${PACKAGES[*]}) into $BASE"
  rm -rf "$BASE" "$BASE.tmp"
  inc=$(IFS=,; echo "${PACKAGES[*]}")
  # The merged-usr hook lays out /usr itself; otherwise the usrmerge package pulls in full perl.
  mmdebstrap --variant=essential --include="$inc" --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$BASE.tmp" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main" \
    || die "mmdebstrap failed (see above)"
  # Device nodes are not needed (runc mounts /dev) and make `docker plugin create` tars odd.
  find "$BASE.tmp/dev" -mindepth 1 -delete
  touch "$BASE.tmp/.complete"
  mv "$BASE.tmp" "$BASE"
fi

# ---- 3. jlinked JRE, cached by module list and JDK ---------------------------------------------
mods=$(jdeps --multi-release 17 --ignore-missing-deps --print-module-deps "$JAR" 2>/dev/null | tail -1) \
  || die "jdeps failed on $JAR"
[[ "$mods" =~ ^java\.base ]] || die "jdeps printed no module list for $JAR: '$mods'"
mods="$mods,$(IFS=,; echo "${EXTRA_MODULES[*]}")"
jdk_ver=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/ *java.runtime.version = //p')
jre_key=$(printf '%s\n' "$mods" "$jdk_ver" | sha256sum | cut -c1-16)
JRE="$CACHE/jre-$jre_key"
if [[ ! -f "$JRE/.complete" ]]; then
  log "jlink $mods ($jdk_ver) into $JRE"
  rm -rf "$JRE" "$JRE.tmp"
  jlink --add-modules "$mods" --strip-debug --no-header-files --no-man-pages \
    --compress=2 --output "$JRE.tmp/jre" || die "jlink failed"
  "$JRE.tmp/jre/bin/java" -Xshare:dump >/dev/null || die "base CDS archive of the JRE failed"
  touch "$JRE.tmp/.complete"
  mv "$JRE.tmp" "$JRE"
fi

# ---- 4. assemble DIR ---------------------------------------------------------------------------
R="$DIR/rootfs"
rm -rf "$R" "$DIR/config.json"
log "assembling $R"
cp -a "$BASE" "$R"; rm -f "$R/.complete"
mkdir -p "$R/opt/flannel-np" "$R/run/docker/plugins" "$R/run/docker/netns"
cp -a "$JRE/jre" "$R/opt/flannel-np/jre"
# cp -p keeps the mtime: the CDS archive is only valid for the exact jar (path, size, mtime).
cp -p "$JAR" "$R/opt/flannel-np/flannel-np.jar"
touch "$R/etc/hosts" "$R/etc/resolv.conf"
# the description carries the version: `docker plugin ls` and `inspect` show which build runs
sed "s|\"description\": \"flannel-np: |\"description\": \"flannel-np $VERSION: |" "$ROOT/plugin-bundle/config.json" >"$DIR/config.json"
grep -q "\"description\": \"flannel-np $VERSION: " "$DIR/config.json" || die "plugin-bundle/config.json's description does not start with 'flannel-np: '"
install -m 0755 "$ROOT/plugin-bundle/entrypoint.sh" "$R/opt/flannel-np/entrypoint.sh"

# ---- 5. CDS training run -----------------------------------------------------------------------
# The daemon runs inside the rootfs (chroot) in throwaway net, mount and PID namespaces, so
# nothing it does reaches the host; etcd is unreachable there, which is exactly the plugin's
# first seconds after `docker plugin enable`. A GetCapabilities call loads the HTTP path. SIGTERM
# then makes it exit, and the JVM writes the archive at exit.
log "CDS training run"
train_log="$CACHE/cds-training.log"
unshare --net --mount --pid --fork --mount-proc="$R/proc" -- \
  sh -c '
    set -e
    mount -n --rbind /dev "$1/dev"
    mount -n -t tmpfs tmpfs "$1/tmp"
    mount -n -t tmpfs tmpfs "$1/run/docker/plugins"
    ip link set lo up 2>/dev/null || true
    ETCD_ENDPOINTS=http://127.0.0.1:9 AVAILABLE_SUBNETS=10.99.0.0/16 NODE_NAME=cds-training \
      PLUGIN_SOCKET=/run/docker/plugins/flannel-np.sock \
      chroot "$1" /opt/flannel-np/jre/bin/java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -XX:ArchiveClassesAtExit=/opt/flannel-np/app.jsa -jar /opt/flannel-np/flannel-np.jar &
    pid=$!
    sock="$1/run/docker/plugins/flannel-np.sock"
    i=0; while [ ! -S "$sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    [ -S "$sock" ] || { echo "training: socket never appeared" >&2; kill -KILL $pid; exit 1; }
    for p in NetworkDriver.GetCapabilities IpamDriver.GetCapabilities IpamDriver.GetDefaultAddressSpaces; do
      curl -s --max-time 5 --unix-socket "$sock" -X POST "http://plugin.moby.localhost/$p" >/dev/null || true
    done
    sleep 2
    kill -TERM $pid
    wait $pid
  ' train "$R" >"$train_log" 2>&1 || { tail -30 "$train_log" >&2; die "CDS training run failed (log: $train_log)"; }
[[ -s "$R/opt/flannel-np/app.jsa" ]] || { tail -30 "$train_log" >&2; die "no CDS archive written (log: $train_log)"; }
rm -rf "${R:?}/tmp/"* 2>/dev/null || true

log "rootfs $(du -sh "$R" | cut -f1), CDS archive $(du -h "$R/opt/flannel-np/app.jsa" | cut -f1)"

# ---- 6. optional docker plugin create ---------------------------------------------------------
if [[ -n "$CREATE" ]]; then
  log "docker plugin create $CREATE $DIR"
  docker plugin create "$CREATE" "$DIR" >/dev/null || die "docker plugin create $CREATE failed"
fi
if [[ -n "$PUSH" ]]; then
  ref="$PUSH"; [[ "${ref##*/}" == *:* ]] || ref="$ref:$VERSION"
  log "docker plugin create + push $ref"
  docker plugin rm -f "$ref" >/dev/null 2>&1 || true
  docker plugin create "$ref" "$DIR" >/dev/null || die "docker plugin create $ref failed"
  docker plugin push "$ref" >&2 || { docker plugin rm -f "$ref" >/dev/null 2>&1; die "docker plugin push $ref failed"; }
  docker plugin rm -f "$ref" >/dev/null
  echo "$ref"
fi
log "done: $DIR ($VERSION)"
