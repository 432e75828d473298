#!/usr/bin/env bash
# T4 and etcd 3.4 side by side in one run, reported as ratios.
#
# Builds release binaries, starts `t4 run` and a single-node etcd on free loopback ports, each on
# its own temporary data dir, runs the same t4-loadtest workloads against both (alternating which
# goes first, so neither always gets the cooler machine), and prints one table. Both servers and
# their data dirs are removed on exit, however the script ends.
#
# Settings (environment):
#   BENCH_WORKLOADS   space- or comma-separated WORKLOAD[:CLIENTS]; default "seq-put par-put:16"
#                     (WORKLOAD: seq-put par-put seq-get par-get mixed; CLIENTS default BENCH_CLIENTS)
#   BENCH_CLIENTS     clients of par-* and mixed when not given per workload; default 16
#   BENCH_TOTAL       timed operations per run; default 10000
#   BENCH_MAX_SECS    cap on each timed run; default 120
#   BENCH_LOADTEST_ARGS  extra t4-loadtest flags for every run, e.g. "--val-size 1024"
# Raw results (one JSON line per run) are kept in target/bench/last.jsonl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORKLOADS="${BENCH_WORKLOADS:-seq-put par-put:16}"
CLIENTS="${BENCH_CLIENTS:-16}"
TOTAL="${BENCH_TOTAL:-10000}"
MAX_SECS="${BENCH_MAX_SECS:-120}"
read -r -a EXTRA_ARGS <<<"${BENCH_LOADTEST_ARGS:-}"
STARTUP_SECS=30

step() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 1
}

for tool in etcd etcdctl python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/test.sh installs etcd and etcdctl)"
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/t4-bench.XXXXXX")"
T4_PID=""
ETCD_PID=""
LOADTEST_PID=""

# Stops a server we started: SIGTERM, then SIGKILL if it is still there after 10 s.
stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$LOADTEST_PID"
    stop_pid "$T4_PID"
    stop_pid "$ETCD_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "building release binaries"
cargo build --release -q -p t4 -p t4-loadtest
T4_BIN="$ROOT/target/release/t4"
LOADTEST="$ROOT/target/release/t4-loadtest"

# --- T4 -----------------------------------------------------------------------------------
step "starting t4 on a free loopback port"
"$T4_BIN" run --data-dir "$TMP/t4-data" --listen 127.0.0.1:0 >"$TMP/t4.out" 2>"$TMP/t4.err" </dev/null &
T4_PID=$!
T4_EP=""
for _ in $(seq $((STARTUP_SECS * 10))); do
    T4_EP="$(sed -n 's/^listening on //p' "$TMP/t4.out" | head -n1)"
    [ -n "$T4_EP" ] && break
    kill -0 "$T4_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$T4_EP" ] || die "t4 did not start; its stderr: $(tail -n 20 "$TMP/t4.err")"
case "$T4_EP" in 127.0.0.1:*) ;; *) die "t4 listens on $T4_EP, not loopback" ;; esac

# --- etcd ---------------------------------------------------------------------------------
step "starting etcd on free loopback ports"
read -r P1 P2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
ETCD_EP="127.0.0.1:$P1"
etcd --name bench --data-dir "$TMP/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$P1" --advertise-client-urls "http://127.0.0.1:$P1" \
    --listen-peer-urls "http://127.0.0.1:$P2" --initial-advertise-peer-urls "http://127.0.0.1:$P2" \
    --initial-cluster "bench=http://127.0.0.1:$P2" >"$TMP/etcd.log" 2>&1 </dev/null &
ETCD_PID=$!
healthy=0
for _ in $(seq $((STARTUP_SECS * 4))); do
    if ETCDCTL_API=3 etcdctl --endpoints="$ETCD_EP" --command-timeout=2s endpoint health >/dev/null 2>&1; then
        healthy=1
        break
    fi
    kill -0 "$ETCD_PID" 2>/dev/null || break
    sleep 0.25
done
[ "$healthy" -eq 1 ] || die "etcd did not become healthy; its log: $(tail -n 20 "$TMP/etcd.log")"

# --- the runs -----------------------------------------------------------------------------
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
run_one() { # server endpoint workload clients run-number
    local prefix="/bench/$5/"
    step "$3 with $4 client(s) against $1 ($2)"
    # In the background so that a signal to this script runs its trap at once, not after the run.
    "$LOADTEST" --endpoints "$2" --workload "$3" --clients "$4" --total "$TOTAL" \
        --prefix "$prefix" --duration-max-secs "$MAX_SECS" --label "$1" --output jsonl \
        "${EXTRA_ARGS[@]}" >>"$RESULTS" </dev/null &
    LOADTEST_PID=$!
    wait "$LOADTEST_PID" || die "t4-loadtest failed against $1"
    LOADTEST_PID=""
}

run=0
for spec in ${WORKLOADS//,/ }; do
    workload="${spec%%:*}"
    clients="$CLIENTS"
    [ "$spec" != "$workload" ] && clients="${spec#*:}"
    case "$workload" in seq-put | seq-get) clients=1 ;; esac
    run=$((run + 1))
    if [ $((run % 2)) -eq 1 ]; then
        run_one t4 "$T4_EP" "$workload" "$clients" "$run"
        run_one etcd "$ETCD_EP" "$workload" "$clients" "$run"
    else
        run_one etcd "$ETCD_EP" "$workload" "$clients" "$run"
        run_one t4 "$T4_EP" "$workload" "$clients" "$run"
    fi
done

mkdir -p target/bench
cp "$RESULTS" target/bench/last.jsonl

# --- the table ----------------------------------------------------------------------------
printf '\nT4 vs etcd %s, %s ops per run, %s cores, %s\n' \
    "$(etcd --version | sed -n 's/^etcd Version: //p')" "$TOTAL" "$(nproc)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
python3 - "$RESULTS" <<'EOF'
import json, sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
pairs = {}
for r in runs:
    pairs.setdefault((r["workload"], r["clients"]), {})[r["label"]] = r

head = ["workload", "clients", "T4 ops/s", "etcd ops/s", "T4/etcd", "T4 p50/p99 us", "etcd p50/p99 us", "errors T4/etcd"]
rows = []
for (workload, clients), by in pairs.items():
    t4, etcd = by["t4"], by["etcd"]
    ratio = t4["ops_per_sec"] / etcd["ops_per_sec"] if etcd["ops_per_sec"] else float("inf")
    rows.append([
        workload, str(clients),
        f'{t4["ops_per_sec"]:.0f}', f'{etcd["ops_per_sec"]:.0f}', f"{ratio:.2f}x",
        f'{t4["p50_us"]}/{t4["p99_us"]}', f'{etcd["p50_us"]}/{etcd["p99_us"]}',
        f'{t4["errors"]}/{etcd["errors"]}' + (" (capped)" if t4["stopped_early"] or etcd["stopped_early"] else ""),
    ])
widths = [max(len(x) for x in col) for col in zip(head, *rows)]
for row in [head, ["-" * w for w in widths], *rows]:
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
EOF
