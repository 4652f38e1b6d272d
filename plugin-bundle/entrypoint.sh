#!/bin/sh
# PID 1 of the managed plugin, replaced by the JVM through exec (so SIGTERM from
# `docker plugin disable` reaches the daemon directly).
# Docker mounts /proc/sys read-only in every plugin, but the Flannel plane writes net.* sysctls
# of the host namespace (ip_forward, send_redirects of its bridges). CAP_SYS_ADMIN lets the
# plugin make its own view of /proc/sys writable; nothing outside the plugin changes.
mount -o remount,bind,rw /proc/sys || echo "flannel-np: cannot make /proc/sys writable; sysctls will fail" >&2
# The plugin's rootfs outlives its process: a daemon Docker had to SIGKILL left Vert.x's file cache
# in /tmp. Nothing else runs in this rootfs.
rm -rf /tmp/vertx-cache-*
exec /opt/flannel-np/jre/bin/java "$@"
