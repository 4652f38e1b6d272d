# Shared by the Java benchmarks in scripts/bench/ (sourced, not run). Needs ROOT (the repository).

# bench_classpath MODULE DIR: compiles MODULE (src: the core module; verticles: the daemon, with
# the core module through the reactor) with its tests, offline first, and prints a classpath of
# private copies of the classes in DIR, so a build started in this tree during the run cannot
# change them under it. Nothing is installed to ~/.m2. SKIP_BUILD=1 skips the compile (the
# classes must exist).
bench_classpath() {
  local module="$1" dir="$2" pl=(-pl "$1") goals=(test-compile) m cp
  case "$module" in
    src) ;;
    verticles) pl+=(-am) ;;
    *) echo "bench_classpath: module must be src or verticles, not '$module'" >&2; return 2 ;;
  esac
  [[ "${SKIP_BUILD:-}" == 1 ]] && goals=()
  _bench_build() {
    (cd "$ROOT" && mvn -B -q "$@" "${pl[@]}" "${goals[@]}" dependency:build-classpath -Dmdep.includeScope=test \
      -Dmdep.outputFile="$dir/cp") >"$dir/build.log" 2>&1
  }
  if ! _bench_build -o; then
    echo "offline build failed; retrying online" >&2
    _bench_build || { tail -30 "$dir/build.log" >&2; echo "build failed (log above)" >&2; return 1; }
  fi
  cp="$(cat "$dir/cp")"
  for m in src verticles; do
    [[ $module == src && $m == verticles ]] && continue
    mkdir -p "$dir/$m"
    cp -r "$ROOT/$m/target/classes" "$dir/$m/classes"
    cp -r "$ROOT/$m/target/test-classes" "$dir/$m/test-classes"
    # the reactor names the core module's own output directory in the daemon's classpath
    cp="${cp//$ROOT\/$m\/target\/classes/$dir/$m/classes}"
  done
  if [[ $module == src ]]; then
    printf '%s' "$dir/src/classes:$dir/src/test-classes:$cp"
  else
    printf '%s' "$dir/verticles/test-classes:$dir/verticles/classes:$dir/src/test-classes:$cp"
  fi
}

# bench_stop PID [GRACE]: TERM to exactly this process, then KILL after GRACE seconds (10).
bench_stop() {
  local pid="$1" grace="${2:-10}" end
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  end=$((SECONDS + grace))
  while [[ -d "/proc/$pid" ]] && ((SECONDS < end)); do sleep 0.1; done
  if [[ -d "/proc/$pid" ]]; then
    echo "pid $pid still running after ${grace} s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# bench_kill_etcd PID DIR: an etcd a killed benchmark JVM left behind (it records PID and DIR):
# killed only if it is that etcd (its command line names DIR/data), DIR removed only if it is one
# of the test etcd directories (fnp-etcd-*).
bench_kill_etcd() {
  local pid="$1" dir="$2"
  if [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] \
      && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "--data-dir $dir/data"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  case "$(basename "$dir")" in fnp-etcd-*) rm -rf -- "$dir" ;; esac
}
