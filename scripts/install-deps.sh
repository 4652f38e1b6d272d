#!/usr/bin/env bash
# scripts/install-deps.sh demo|ci: install, on Debian 12, the packages that are missing for the
# README's two commands: `demo` for scripts/demo.sh (the lab Swarm and the plugin build), `ci` for
# `mvn -B verify` (.ci/run: everything the tests start, the hook's C, the console's browser test,
# the lab registry). Nothing is installed when everything is present (apt only runs for what is
# missing). Services the packages start on install (dockerd, etcd, docker-registry) are stopped
# again: the lab and the tests start their own, in namespaces or on loopback ports.
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
log() { printf 'install-deps: %s\n' "$*" >&2; }
case "${1:-}" in
  demo|ci) WHAT="$1" ;;
  -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) log "usage: install-deps.sh demo|ci"; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# (no pipe into grep -q: with pipefail, dpkg's SIGPIPE when grep stops reading early made a
# package that is installed count as missing, now and then)
pkg_installed() { [[ "$(dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null)" == *"install ok installed"* ]]; }

# A package counts as present if dpkg has it or its command is already on PATH.
missing=()
need() { # package command
  if ! pkg_installed "$1" && ! command -v "$2" >/dev/null 2>&1; then
    missing+=("$1")
  fi
}
# both: the lab Swarm (scripts/swarm-lab.sh) and the plugin build (scripts/build-plugin.sh)
need etcd-server etcd
need etcd-client etcdctl
need iproute2 ip
need nftables nft
need iptables iptables-save
need util-linux nsenter
need curl curl
need python3 python3
need maven mvn
need docker.io dockerd
need busybox-static busybox
need mmdebstrap mmdebstrap
if [ "$WHAT" = ci ]; then
  need dnsutils dig
  need iputils-ping ping
  need conntrack conntrack
  need procps sysctl
  need dnsmasq-base dnsmasq
  # the lab's registry: the e2e suite installs the plugin from it (docker plugin install)
  need docker-registry docker-registry
  # hook/: static C binaries (libc.a comes with libc6-dev; decided by dpkg)
  need gcc gcc
  need make make
  need libc6-dev libc6-dev-no-command
  # the admin console's browser test: Debian's Chromium driven by playwright-core (npm)
  need chromium chromium
  need nodejs node
  need npm npm
fi
# The JDK: the Debian package, or any javac of release 17 or newer already on PATH.
if ! pkg_installed openjdk-17-jdk-headless; then
  jv="$(javac -version 2>&1 | sed -n 's/^javac \([0-9]*\).*/\1/p')"
  if [ -z "$jv" ] || [ "$jv" -lt 17 ]; then
    missing+=(openjdk-17-jdk-headless)
  fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update || { log "apt-get update failed"; exit 1; }
  # only what is missing: a machine may already have a package's command from elsewhere (e.g.
  # NodeSource's nodejs, which bundles npm and conflicts with Debian's npm package)
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}" || { log "apt-get install failed"; exit 1; }
fi

systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
# Debian's docker.io starts a dockerd in the root namespace when installed with systemd running;
# it would set the host's FORWARD policy to DROP. Stopped only if this run installed it.
if [[ " ${missing[*]} " == *" docker.io "* ]] && systemd; then
  $SUDO systemctl stop docker.service docker.socket containerd.service 2>/dev/null || true
fi
# docker-registry's service would listen on the host's port 5000; the lab runs its own.
if [[ " ${missing[*]} " == *" docker-registry "* ]] && systemd; then
  $SUDO systemctl stop docker-registry.service 2>/dev/null || true
fi

# Debian's etcd-server starts a system etcd (user etcd, ports 2379/2380) when installed with an
# init system running. Tests start their own etcds as root on free ports; stop only the
# packaged one, identified by its user.
if pgrep -x -u etcd etcd >/dev/null 2>&1; then
  log "stopping the etcd service started by the etcd-server package"
  if systemd; then
    $SUDO systemctl stop etcd.service 2>/dev/null || true
  elif [ -x /etc/init.d/etcd ]; then
    $SUDO /etc/init.d/etcd stop >/dev/null 2>&1 || true
  fi
  for pid in $(pgrep -x -u etcd etcd); do
    $SUDO kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    pgrep -x -u etcd etcd >/dev/null 2>&1 || break
    sleep 0.1
  done
  for pid in $(pgrep -x -u etcd etcd); do
    $SUDO kill -KILL "$pid" 2>/dev/null || true
  done
fi
exit 0
