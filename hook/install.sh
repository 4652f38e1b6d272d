#!/bin/bash
# hook/install.sh [--prefix DIR] [--daemon-json FILE] [--runc PATH] [--timeout-ms N] [--uninstall]
#
# Installs flannel-np's optional OCI hook on one Docker host (Docker 27 and earlier):
#   DIR/flannel-np-hook      the createContainer hook (static binary)
#   DIR/flannel-np-runtime   the runtime wrapper that adds it to every container's spec (static)
#   DIR/hooks.json           the hook configuration the wrapper reads
# and makes the wrapper Docker's default runtime in FILE (runtimes.flannel-np + default-runtime;
# Swarm tasks cannot choose a runtime). FILE is backed up to FILE.flannel-np.bak first, once.
# Defaults: DIR=/usr/local/lib/flannel-np, FILE=/etc/docker/daemon.json, runc from PATH.
# Binaries come from hook/target (run `make -C hook` first, or this script runs it).
#
# Docker reads daemon.json at start: restart it afterwards (systemctl restart docker), then set
# IS_HOOK_AVAILABLE=true on the plugin. --uninstall restores the default runtime to runc (only
# if it is still ours) and removes DIR; restart Docker again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=/usr/local/lib/flannel-np
DAEMON_JSON=/etc/docker/daemon.json
RUNC=""
TIMEOUT_MS=2000
UNINSTALL=0

die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
while (($#)); do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --daemon-json) DAEMON_JSON="${2:?--daemon-json needs a file}"; shift 2 ;;
    --runc) RUNC="${2:?--runc needs a path}"; shift 2 ;;
    --timeout-ms) TIMEOUT_MS="${2:?--timeout-ms needs a number}"; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$PREFIX" == /* && "$PREFIX" != */ ]] || die "--prefix must be an absolute directory path, got '$PREFIX'"
[[ "$TIMEOUT_MS" =~ ^[0-9]{1,6}$ ]] || die "--timeout-ms must be a number of milliseconds, got '$TIMEOUT_MS'"
command -v python3 >/dev/null || die "python3 is needed to edit $DAEMON_JSON safely"

# Edits daemon.json as JSON (keeping every other setting), never by text substitution.
edit_daemon_json() { # install|uninstall
  python3 - "$1" "$DAEMON_JSON" "$PREFIX" "$RUNC" <<'EOF'
import json, os, sys
mode, path, prefix, runc = sys.argv[1:5]
cfg = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read()
    if text.strip():
        try:
            cfg = json.loads(text)
        except ValueError as e:
            sys.exit(f"install.sh: {path} is not valid JSON ({e}); fix it first")
    if not isinstance(cfg, dict):
        sys.exit(f"install.sh: {path} must hold a JSON object")
rt = cfg.setdefault("runtimes", {})
if mode == "install":
    if cfg.get("default-runtime") not in (None, "runc", "flannel-np"):
        sys.exit(f"install.sh: {path} already sets default-runtime={cfg['default-runtime']!r}; "
                 "flannel-np's wrapper would replace it (chain it by hand with --runtime-path)")
    rt["flannel-np"] = {"path": f"{prefix}/flannel-np-runtime",
                        "runtimeArgs": ["--hook-config-path", f"{prefix}/hooks.json", "--runtime-path", runc]}
    cfg["default-runtime"] = "flannel-np"
else:
    rt.pop("flannel-np", None)
    if not rt:
        cfg.pop("runtimes")
    if cfg.get("default-runtime") == "flannel-np":
        cfg.pop("default-runtime")
tmp = path + ".flannel-np.tmp"
os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
with open(tmp, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
EOF
}

if ((UNINSTALL)); then
  [[ -f "$DAEMON_JSON" ]] && edit_daemon_json uninstall
  rm -f "$PREFIX/flannel-np-hook" "$PREFIX/flannel-np-runtime" "$PREFIX/hooks.json"
  rmdir "$PREFIX" 2>/dev/null || true
  echo "flannel-np hook removed; restart Docker (systemctl restart docker) and set IS_HOOK_AVAILABLE=false"
  exit 0
fi

if [[ -z "$RUNC" ]]; then
  RUNC="$(command -v runc || true)"
  [[ -n "$RUNC" ]] || die "runc not found on PATH; pass --runc /path/to/runc"
fi
[[ "$RUNC" == /* && -x "$RUNC" ]] || die "--runc must be an absolute path to an executable, got '$RUNC'"
[[ "$RUNC" != "$PREFIX/flannel-np-runtime" ]] || die "--runc must be the real runc, not the wrapper"

[[ -x "$HERE/target/flannel-np-hook" && -x "$HERE/target/flannel-np-runtime" ]] || make -s -C "$HERE"

install -d -m 0755 "$PREFIX"
install -m 0755 "$HERE/target/flannel-np-hook" "$PREFIX/flannel-np-hook.new"
install -m 0755 "$HERE/target/flannel-np-runtime" "$PREFIX/flannel-np-runtime.new"
# rename: a container being created right now never sees a half-written binary
mv -f "$PREFIX/flannel-np-hook.new" "$PREFIX/flannel-np-hook"
mv -f "$PREFIX/flannel-np-runtime.new" "$PREFIX/flannel-np-runtime"
cat >"$PREFIX/hooks.json.new" <<EOF
{"hooks":{"createContainer":[{"path":"$PREFIX/flannel-np-hook","args":["flannel-np-hook","--timeout-ms","$TIMEOUT_MS"]}]}}
EOF
mv -f "$PREFIX/hooks.json.new" "$PREFIX/hooks.json"

if [[ -f "$DAEMON_JSON" && ! -e "$DAEMON_JSON.flannel-np.bak" ]]; then
  cp -p "$DAEMON_JSON" "$DAEMON_JSON.flannel-np.bak"
fi
edit_daemon_json install
echo "flannel-np hook installed in $PREFIX; default-runtime set in $DAEMON_JSON (backup: $DAEMON_JSON.flannel-np.bak)"
echo "next: systemctl restart docker, then: docker plugin set <flannel-np plugin> IS_HOOK_AVAILABLE=true"
