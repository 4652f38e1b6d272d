#!/usr/bin/env bash
# node-init.sh I DIR IP [ROOT] : internal to swarm-lab.sh. Runs already inside lab node I's netns
# and a fresh mount + UTS namespace (started as `setsid nsenter --net=… unshare --mount --uts
# --propagation slave node-init.sh …`), gives that namespace the private paths a Docker host
# has, then execs dockerd, keeping the PID swarm-lab.sh recorded.
# ROOT (optional): a Debian root holding another Docker engine (swarm-lab.sh engine_root); the
# node's / becomes an overlay of it. FNP_LAB_HOOK_DIR (optional): the OCI hook's directory, made
# visible at the same path inside ROOT.
# Every mount uses -n: before /run is replaced, libmount would write the host's /run/mount/utab.
set -euo pipefail
i="$1"; dir="$2"; ip="$3"; root="${4:-}"; prefix="${FNP_LAB_PREFIX:-fnp}"

hostname "$prefix$i"

# sysfs of this netns (/sys/class/net), with the cgroup mounts re-bound under it.
mkdir -p "$dir/.cg"
mount -n --rbind /sys/fs/cgroup "$dir/.cg"
mount -n -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -n --rbind "$dir/.cg" /sys/fs/cgroup
umount -n -R "$dir/.cg"
rmdir "$dir/.cg"

# Own /run: dockerd hard-codes /run/docker/plugins, containerd its shim sockets under
# /run/containerd/s, and the plugin mounts /run/docker.sock and /run/docker/netns.
mount -n --bind "$dir/run" /run
ln -sfn /dev/shm /run/shm
mkdir -p /run/lock /run/docker/netns

# Own /etc/docker (engine ID, daemon.json).
keyopt=()
cfg="$dir/etc/daemon.json"
if [[ -d /etc/docker ]]; then
  mount -n --bind "$dir/etc" /etc/docker
  cfg=/etc/docker/daemon.json
else
  keyopt=(--deprecated-key-path "$dir/etc/key.json")
fi

# Own /var/lib/docker on tmpfs, below an overlay of /var/lib (libnetwork hard-codes
# /var/lib/docker/network/files, so the data root must really be /var/lib/docker).
mkdir -p "$dir/varlib/upper" "$dir/varlib/work"
mount -n -t overlay fnp-varlib -o "lowerdir=/var/lib,upperdir=$dir/varlib/upper,workdir=$dir/varlib/work" /var/lib
mkdir -p /var/lib/docker
mount -n -t tmpfs -o mode=0711,size=8g fnp-lib /var/lib/docker

# What `swarm-lab.sh dockerd-start` needs to start this dockerd again after a SIGKILL: its
# arguments, and a process that keeps the node's namespaces (and so its mounts) alive meanwhile.
# Both before the pivot below: DIR is a host path (the keeper is pivoted along with us).
[[ -z "$root" ]] || { cfg=/etc/docker/daemon.json; keyopt=(); }
args=(dockerd --data-root /var/lib/docker --exec-root /run/docker --pidfile /run/docker.pid
  -H unix:///run/docker.sock --config-file "$cfg" "${keyopt[@]}"
  --swarm-default-advertise-addr "$ip" --log-level "${FNP_LAB_LOGLEVEL:-info}")
printf '%s\0' "${args[@]}" >"$dir/dockerd.args"
setsid sleep infinity </dev/null >/dev/null 2>&1 &
echo $! >"$dir/keeper.pid"

# Another engine: the node's / becomes an overlay of ROOT (writes stay in DIR, the cached root is
# never changed) with this node's /sys, /run, /etc/docker and /var/lib/docker mounted in. Then
# pivot_root, not chroot: runc pivots into each container's root itself, which fails with EINVAL
# when its own root is a chroot. Tools run later in this mount namespace (swarm-lab.sh exec) come
# from ROOT.
if [[ -n "$root" ]]; then
  m="$dir/root"
  mkdir -p "$dir/rootup" "$dir/rootwork" "$m"
  mount -n -t overlay fnp-root -o "lowerdir=$root,upperdir=$dir/rootup,workdir=$dir/rootwork" "$m"
  mount -n -t proc proc "$m/proc"
  mount -n --rbind /sys "$m/sys"
  mount -n --rbind /dev "$m/dev"
  mount -n --rbind /run "$m/run"
  mkdir -p "$m/etc/docker" "$m/var/lib/docker"
  mount -n --bind "$dir/etc" "$m/etc/docker"
  mount -n --rbind /var/lib/docker "$m/var/lib/docker"
  if [[ -n "${FNP_LAB_HOOK_DIR:-}" ]]; then
    mkdir -p "$m$FNP_LAB_HOOK_DIR"
    mount -n --bind -o ro "$FNP_LAB_HOOK_DIR" "$m$FNP_LAB_HOOK_DIR"
  fi
  cd "$m"
  mkdir -p .oldroot
  pivot_root . .oldroot
  cd /
  umount -n -l /.oldroot
  rmdir /.oldroot
fi

# Shared propagation as on a systemd host, so netns files Docker mounts later reach the plugin
# through its rslave mount of /run/docker/netns.
mount -n --make-rshared /

exec "${args[@]}"
