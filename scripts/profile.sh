#!/usr/bin/env bash
# Where the CPU goes under one t4-loadtest workload, for T4 and etcd 3.4 side by side.
#
# Builds release binaries, starts `t4 run` and a single-node etcd on free loopback ports (fresh data
# dirs), runs the same workload against each, and reports per operation:
#   - the server's CPU, user and kernel, from /proc/PID/stat before and after the run;
#   - the load generator's CPU, user and kernel, from the shell's accounting of the child;
#   - with --perf (needs `perf`, Debian package linux-perf): the server's syscalls per operation
#     and thread (`perf trace -s`), and the share of the machine's CPU time per thread and binary
#     (`perf record -a`), from two more runs, each traced separately so the tracing does not skew
#     the CPU figures above.
# Both servers and their data dirs are removed on exit.
#
# Usage: scripts/profile.sh [--perf] [t4-loadtest flags...]
#   default flags: --workload par-put --clients 16 --total 20000
#   T4_* variables reach `t4 run` (e.g. T4_CORES=1 T4_SPIN_BEFORE_PARK_US=300).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
STARTUP_SECS=30

step() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'profile.sh: %s\n' "$*" >&2
    exit 1
}
# shellcheck source=scripts/lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"

PERF=0
if [ "${1:-}" = --perf ]; then
    PERF=1
    shift
fi
if [ "$#" -eq 0 ]; then
    set -- --workload par-put --clients 16 --total 20000
fi
LOADTEST_ARGS=("$@")

for tool in etcd etcdctl python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/test.sh installs etcd and etcdctl)"
done
if [ "$PERF" -eq 1 ]; then
    command -v perf >/dev/null || die "--perf needs perf (Debian: apt-get install linux-perf)"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/t4-profile.XXXXXX")"
T4_PID=""
ETCD_PID=""
cleanup() {
    stop_pid "$T4_PID"
    stop_pid "$ETCD_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "building release binaries"
cargo build --release -q -p t4 -p t4-loadtest
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
T4_BIN="$TARGET_DIR/release/t4"
LOADTEST="$TARGET_DIR/release/t4-loadtest"

step "starting t4 on a free loopback port"
start_t4 t4 "$TMP" --log warn
T4_PID="$STARTED_PID"
T4_EP="$STARTED_EP"

step "starting etcd on free loopback ports"
start_etcd profile "$TMP"

CLK_TCK="$(getconf CLK_TCK)"
# cpu_ticks PID: user and system clock ticks the process has used so far.
cpu_ticks() {
    # Fields 14 and 15 of /proc/PID/stat, counted after the command name's closing parenthesis.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'
}

# run_load NAME ENDPOINT PREFIX: one run of the workload; sets OPS (timed ops), RATE (ops/s) and
# CLIENT_USER/CLIENT_SYS (the load generator's CPU seconds, warm-up included).
run_load() {
    local out="$TMP/$1-$3.txt" times="$TMP/$1-$3.times"
    step "${LOADTEST_ARGS[*]} against $1 ($2)"
    (
        TIMEFORMAT='%U %S'
        time "$LOADTEST" --endpoints "$2" --prefix "/profile/$3/" --json "$TMP/$1-$3.json" \
            "${LOADTEST_ARGS[@]}" >"$out" 2>"$TMP/$1-$3.err"
    ) 2>"$times" || die "the load failed against $1: $(tail -n 5 "$TMP/$1-$3.err" "$out")"
    read -r OPS RATE < <(python3 -c '
import json, sys
run = json.loads(open(sys.argv[1]).readline())
print(run["ok"], run["ops_per_sec"])' "$TMP/$1-$3.json")
    read -r CLIENT_USER CLIENT_SYS <"$times"
}

ROWS="$TMP/rows.txt"
: >"$ROWS"
PERF_REPORTS=()
for server in t4 etcd; do
    if [ "$server" = t4 ]; then pid="$T4_PID" ep="$T4_EP"; else pid="$ETCD_PID" ep="$ETCD_EP"; fi
    read -r u0 s0 < <(cpu_ticks "$pid")
    run_load "$server" "$ep" cpu
    read -r u1 s1 < <(cpu_ticks "$pid")
    python3 - "$server" "$OPS" "$RATE" "$((u1 - u0))" "$((s1 - s0))" "$CLK_TCK" "$CLIENT_USER" "$CLIENT_SYS" >>"$ROWS" <<'PY'
import sys
name, ops, rate, su, ss, tck, cu, cs = sys.argv[1:]
ops, tck = int(ops), int(tck)
per = lambda seconds: seconds * 1e6 / ops
print(f"{name:6} {float(rate):9.0f} {per(int(su) / tck):9.1f} {per(int(ss) / tck):9.1f} "
      f"{per(float(cu)):9.1f} {per(float(cs)):9.1f}")
PY
    if [ "$PERF" -eq 1 ]; then
        perf trace -s -p "$pid" -o "$TMP/$server.trace" &
        trace_pid=$!
        sleep 0.5
        run_load "$server" "$ep" trace
        kill -INT "$trace_pid"
        wait "$trace_pid" 2>/dev/null || true
        PERF_REPORTS+=("$server" "$OPS" "$TMP/$server.trace")
        perf record -a -g -o "$TMP/$server.perf" -- "$LOADTEST" --endpoints "$ep" --prefix /profile/record/ \
            "${LOADTEST_ARGS[@]}" >/dev/null 2>"$TMP/$server-record.err" ||
            die "perf record failed: $(tail -n 5 "$TMP/$server-record.err")"
    fi
done

printf '\n%s, %s CPUs; CPU microseconds per op (the client'"'"'s include its warm-up)\n' \
    "${LOADTEST_ARGS[*]}" "$(nproc)"
printf '%-6s %9s %9s %9s %9s %9s\n' server ops/s srv_user srv_sys cli_user cli_sys
cat "$ROWS"

if [ "$PERF" -eq 1 ]; then
    set -- "${PERF_REPORTS[@]}"
    while [ "$#" -gt 0 ]; do
        printf '\n%s: syscalls per op by thread (perf trace -s; tracing slows the run)\n' "$1"
        python3 - "$2" "$3" <<'PY'
import re, sys
from collections import defaultdict
ops, path = int(sys.argv[1]), sys.argv[2]
# Threads of one name (etcd's goroutine threads are all "etcd") are summed.
calls, msecs, order = defaultdict(int), defaultdict(float), []
thread = None
for line in open(path):
    head = re.match(r"\s*(\S.*) \(\d+\), \d+ events", line)
    if head:
        thread = head.group(1)
        continue
    row = re.match(r"\s+([a-z_0-9]+)\s+(\d+)\s+\d+\s+([\d.]+)", line)
    if thread and row:
        key = (thread, row.group(1))
        if key not in calls:
            order.append(key)
        calls[key] += int(row.group(2))
        msecs[key] += float(row.group(3))
for key in order:
    if calls[key] >= ops // 20:
        print(f"  {key[0]:20} {key[1]:16} {calls[key] / ops:6.2f}/op  {msecs[key] * 1000 / calls[key]:8.1f} us/call")
PY
        printf '\n%s: share of all CPU time by thread and binary (perf record -a)\n' "$1"
        perf report -i "${3%.trace}.perf" --no-children --sort comm,dso --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -n 15
        shift 3
    done
fi
