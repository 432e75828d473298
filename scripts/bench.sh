#!/usr/bin/env bash
# T4 and etcd 3.4 side by side in one run, reported as ratios.
#
# Builds release binaries (unless told which to use: BENCH_T4_BIN, BENCH_LOADTEST_BIN, --no-build),
# starts `t4 run` and a single-node etcd on free loopback ports, each on its own temporary data dir,
# runs the same t4-loadtest workloads against both (alternating which goes first, so neither always
# gets the cooler machine), and prints one table. Both servers and
# their data dirs are removed on exit, however the script ends. A failed run (say, a workload one
# server does not support) shows as FAILED in the table, and the script then exits non-zero.
#
# Settings (environment):
#   BENCH_WORKLOADS   space- or comma-separated WORKLOAD[:N[:CONNS]]; default
#                     "seq-put par-put:16 par-put:256 seq-get par-get:16 mixed:16 txn:16
#                      lease-churn:16 watch-latency watch-fanout:1000 watch-keys:1000 list:4
#                      count:4 list-hot:4"
#                     (WORKLOAD: seq-put par-put seq-get par-get mixed txn lease-churn watch-latency
#                     watch-fanout watch-keys list count list-hot; N is the clients, default
#                     BENCH_CLIENTS, except for watch-latency, where it is the writers, default 1,
#                     and watch-fanout and watch-keys, where it is the watchers, default 1000 (on
#                     CONNS connections, default 10, with one writer); CONNS is the connections the
#                     clients share, default N up to BENCH_CONNS_MAX, so par-put:256 runs on 16
#                     connections, as etcd's own benchmark would be run; seq-* use one client on
#                     one connection)
#   BENCH_CLIENTS     clients of par-*, mixed, txn and lease-churn when not given per workload; 16
#   BENCH_CONNS_MAX   most connections a workload's clients get unless given per workload; 16
#   BENCH_TOTAL       timed ops per run (puts of watch-latency); default 10000 (--quick: 1000)
#   BENCH_FANOUT_TOTAL  puts of each watch-fanout run (each goes to every watcher); default 500
#                     (--quick: 100)
#   BENCH_RSS_KEYS    keys written for --rss; default 1000000 (--quick: 100000)
#   BENCH_LIST_KEYS   keys of the prefix list and count read; default 50000 (--quick: 5000)
#   BENCH_LIST_VAL_SIZE  value bytes of the list workloads' keys; default 1024
#   BENCH_LIST_TOTAL  timed ops of list (pages), count and list-hot (whole lists); default 1000
#                     (--quick: 100)
#   BENCH_HOT_KEYS    list-hot: keys listed, hot keys, hot writers and untimed updates of each
#                     hot key before timing, as KEYS:HOT:WRITERS:UPDATES; default 2000:200:8:250
#                     (--quick: 2000:200:8:25)
#   BENCH_MAX_SECS    cap on each timed run; default 120 (the --rss load: 1800)
#   BENCH_LOADTEST_ARGS  extra t4-loadtest flags for every run, e.g. "--val-size 1024"
#   BENCH_T4_BIN      a t4 binary to measure instead of building one (e.g. another branch's
#                     target/release/t4, to compare builds without rebuilding between runs)
#   BENCH_LOADTEST_BIN  a t4-loadtest binary to use instead of building one; with both set,
#                     nothing is built (and cargo is not needed)
# Options:
#   --no-build        use the release binaries already in the target dir (or BENCH_*_BIN) as they
#                     are: no cargo build, so a run measures exactly what was built before
#   --quick           smaller totals (see above), so T4 and etcd both run every workload in under a
#                     minute (10-40 s on 2 shared cores, build not included; a full run: 1-2 min)
#   --rss             after the runs, write BENCH_RSS_KEYS more keys (64 B keys, 256 B values;
#                     par-put, 64 clients on 16 connections) to T4 and to etcd (not T4+S3), then
#                     report each server's resident memory (VmRSS) and the T4/etcd ratio under the
#                     table
#   --maintenance     after the runs, write BENCH_MAINT_KEYS keys (default 1000000; --quick: 100000;
#                     64 B keys, 256 B values) to T4 and to etcd, then time `etcdctl snapshot save`
#                     (and report its size), delete half the keys, compact, time `etcdctl defrag`,
#                     and report each db size (and in use) before and after
#   --with-s3         also run every workload against a third server, T4 with sync upload to moto's
#                     S3 server (scripts/s3-server.sh), and report its ratio to etcd and the S3 PUTs
#                     per second it sent during each timed phase; BENCH_T4_S3_ARGS adds flags to that
#                     server, e.g. "--wal-upload-max-in-flight 2 --wal-upload-interval-ms 10"
# For the watch workloads, ops/s counts events received by all watchers together and the
# latencies are put->event; for txn, ops/s counts successful increments and the conflicts (failed
# compares, retried) are shown per op. loadtest/README.md explains every workload. Raw results
# (one JSON line per run) are kept in target/bench/last.jsonl. Binaries are built in
# CARGO_TARGET_DIR if set, else target/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WITH_S3=0
NO_BUILD=0
QUICK=0
RSS=0
MAINT=0
for arg in "$@"; do
    case "$arg" in
    --with-s3) WITH_S3=1 ;;
    --quick) QUICK=1 ;;
    --rss) RSS=1 ;;
    --maintenance) MAINT=1 ;;
    --no-build) NO_BUILD=1 ;;
    *)
        printf 'bench.sh: unknown option %s (see the header of this script)\n' "$arg" >&2
        exit 2
        ;;
    esac
done

WORKLOADS="${BENCH_WORKLOADS:-seq-put par-put:16 par-put:256 seq-get par-get:16 mixed:16 txn:16 lease-churn:16 watch-latency watch-fanout:1000 watch-keys:1000 list:4 count:4 list-hot:4}"
CLIENTS="${BENCH_CLIENTS:-16}"
CONNS_MAX="${BENCH_CONNS_MAX:-16}"
if [ "$QUICK" -eq 1 ]; then
    TOTAL="${BENCH_TOTAL:-1000}"
    FANOUT_TOTAL="${BENCH_FANOUT_TOTAL:-100}"
    RSS_KEYS="${BENCH_RSS_KEYS:-100000}"
    MAINT_KEYS="${BENCH_MAINT_KEYS:-100000}"
    LIST_KEYS="${BENCH_LIST_KEYS:-5000}"
    LIST_TOTAL="${BENCH_LIST_TOTAL:-100}"
    HOT="${BENCH_HOT_KEYS:-2000:200:8:25}"
else
    TOTAL="${BENCH_TOTAL:-10000}"
    FANOUT_TOTAL="${BENCH_FANOUT_TOTAL:-500}"
    RSS_KEYS="${BENCH_RSS_KEYS:-1000000}"
    MAINT_KEYS="${BENCH_MAINT_KEYS:-1000000}"
    LIST_KEYS="${BENCH_LIST_KEYS:-50000}"
    LIST_TOTAL="${BENCH_LIST_TOTAL:-1000}"
    HOT="${BENCH_HOT_KEYS:-2000:200:8:250}"
fi
LIST_VAL_SIZE="${BENCH_LIST_VAL_SIZE:-1024}"
IFS=: read -r HOT_LIST_KEYS HOT_KEYS HOT_WRITERS HOT_UPDATES <<<"$HOT"
if [ -z "$HOT_UPDATES" ]; then
    printf "bench.sh: BENCH_HOT_KEYS=%s: want KEYS:HOT:WRITERS:UPDATES\n" "$HOT" >&2
    exit 2
fi
MAX_SECS="${BENCH_MAX_SECS:-120}"
RSS_MAX_SECS=1800
read -r -a EXTRA_ARGS <<<"${BENCH_LOADTEST_ARGS:-}"
read -r -a T4_S3_ARGS <<<"${BENCH_T4_S3_ARGS:-}"
STARTUP_SECS=30

step() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 1
}
# shellcheck source=scripts/lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
T4_BIN="${BENCH_T4_BIN:-$TARGET_DIR/release/t4}"
LOADTEST="${BENCH_LOADTEST_BIN:-$TARGET_DIR/release/t4-loadtest}"
# Packages to build: those no binary was given for (none with --no-build).
BUILD=()
if [ "$NO_BUILD" -eq 0 ]; then
    [ -n "${BENCH_T4_BIN:-}" ] || BUILD+=(-p t4)
    [ -n "${BENCH_LOADTEST_BIN:-}" ] || BUILD+=(-p t4-loadtest)
fi
NEEDED=(etcd etcdctl python3)
[ "${#BUILD[@]}" -eq 0 ] || NEEDED+=(cargo)
for tool in "${NEEDED[@]}"; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/test.sh installs etcd and etcdctl)"
done
# A binary given, or expected from an earlier build, must be there before anything starts.
check_binary() { # VARIABLE PATH
    [ -x "$2" ] || die "$1=$2 is not an executable file${3:-}"
}
if [ -n "${BENCH_T4_BIN:-}" ]; then check_binary BENCH_T4_BIN "$T4_BIN"; fi
if [ -n "${BENCH_LOADTEST_BIN:-}" ]; then check_binary BENCH_LOADTEST_BIN "$LOADTEST"; fi
if [ "$NO_BUILD" -eq 1 ]; then
    check_binary "--no-build: t4" "$T4_BIN" " (build it, or set BENCH_T4_BIN)"
    check_binary "--no-build: t4-loadtest" "$LOADTEST" " (build it, or set BENCH_LOADTEST_BIN)"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/t4-bench.XXXXXX")"
T4_PID=""
T4S3_PID=""
MOTO_PID=""
ETCD_PID=""
LOADTEST_PID=""

cleanup() {
    stop_pid "$LOADTEST_PID"
    stop_pid "$T4_PID"
    stop_pid "$T4S3_PID"
    stop_pid "$MOTO_PID"
    stop_pid "$ETCD_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${#BUILD[@]}" -gt 0 ]; then
    step "building release binaries (${BUILD[*]})"
    cargo build --release -q "${BUILD[@]}"
fi
step "t4: $T4_BIN, t4-loadtest: $LOADTEST"

# --- T4 -----------------------------------------------------------------------------------
step "starting t4 on a free loopback port"
start_t4 t4 "$TMP" --log info
T4_PID="$STARTED_PID"
T4_EP="$STARTED_EP"

T4S3_EP=""
MOTO_ENDPOINT=""
MOTO_BUCKET=""
if [ "$WITH_S3" -eq 1 ]; then
    step "starting moto's S3 server (scripts/s3-server.sh)"
    MOTO_BUCKET=t4-bench
    start_moto "$MOTO_BUCKET" "$TMP"
    step "starting t4-s3 on a free loopback port"
    T4_S3_ACCESS_KEY_ID=bench T4_S3_SECRET_ACCESS_KEY=bench \
        start_t4 t4-s3 "$TMP" --log info --s3-bucket "$MOTO_BUCKET" --s3-endpoint "$MOTO_ENDPOINT" --s3-prefix bench \
        "${T4_S3_ARGS[@]}"
    T4S3_PID="$STARTED_PID"
    T4S3_EP="$STARTED_EP"
fi

# wal_objects FIRST LAST: the number of WAL objects T4+S3 has stored in moto whose first revision
# lies in FIRST+1..LAST, the revisions a timed phase wrote (moto takes unsigned requests). WAL
# objects are named wal/<term>/<first revision, 20 digits>[-<sub>] (src/durability/layout.rs).
wal_objects() {
    python3 - "$MOTO_ENDPOINT" "$MOTO_BUCKET" "$1" "$2" <<'PY'
import re, sys, urllib.parse, urllib.request, xml.etree.ElementTree as ET
endpoint, bucket, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
name = re.compile(r"bench/wal/\d{10}/(\d{20})(-\d{10})?")
count, token = 0, None
for _ in range(100000):
    query = {"list-type": "2", "prefix": "bench/wal/"}
    if token:
        query["continuation-token"] = token
    with urllib.request.urlopen(f"{endpoint}/{bucket}?{urllib.parse.urlencode(query)}", timeout=30) as resp:
        root = ET.fromstring(resp.read())
    for key in root.findall(f"{ns}Contents/{ns}Key"):
        m = name.fullmatch(key.text or "")
        if m is None:
            sys.exit(f"bench.sh: unexpected WAL object name {key.text}")
        count += first < int(m.group(1)) <= last
    token = root.findtext(f"{ns}NextContinuationToken")
    if root.findtext(f"{ns}IsTruncated") != "true" or not token:
        break
print(count)
PY
}

# --- etcd ---------------------------------------------------------------------------------
step "starting etcd on free loopback ports"
start_etcd bench "$TMP"

# --- the runs -----------------------------------------------------------------------------
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
FAILED=0
run_one() { # server endpoint workload clients conns watchers total run-number [loadtest args...]
    local prefix="/bench/$8/"
    local conns_args=()
    [ -n "$5" ] && conns_args=(--conns "$5")
    local workload_args=("${@:9}")
    if [ "$3" = watch-fanout ] || [ "$3" = watch-keys ]; then
        step "$3 with $6 watchers, $7 puts against $1 ($2)"
    else
        step "$3 with $4 client(s)${5:+ on $5 connection(s)}, $7 ops against $1 ($2)"
    fi
    # In the background so that a signal to this script runs its trap at once, not after the run.
    "$LOADTEST" --endpoints "$2" --workload "$3" --clients "$4" "${conns_args[@]}" --watchers "$6" \
        --total "$7" --prefix "$prefix" --duration-max-secs "$MAX_SECS" --label "$1" --output jsonl \
        "${workload_args[@]}" "${EXTRA_ARGS[@]}" >"$TMP/run.jsonl" 2>"$TMP/run.err" </dev/null &
    LOADTEST_PID=$!
    local rc=0
    wait "$LOADTEST_PID" || rc=$?
    LOADTEST_PID=""
    cat "$TMP/run.err" >&2
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        printf 'bench.sh: t4-loadtest failed against %s (exit %s)\n' "$1" "$rc" >&2
    fi
    # One line per run in any case: its report (watch checks fail after reporting), or if there is
    # none, what failed.
    python3 - "$1" "$3" "$4" "$5" "$6" "$8" "$rc" "$TMP/run.jsonl" "$TMP/run.err" >>"$RESULTS" <<'PY'
import json, sys
label, workload, clients, conns, watchers, run, rc, report, err = sys.argv[1:]
text = open(report).read().strip()
if text:
    r = json.loads(text)
else:
    lines = open(err).read().strip().splitlines() or ["no output"]
    r = {"label": label, "workload": workload, "clients": int(clients), "first_error": lines[-1]}
    r["watchers"] = {"watch-fanout": int(watchers), "watch-keys": int(watchers), "watch-latency": 1}.get(workload)
    r["conns"] = int(conns) if conns else None
r["failed"] = rc != "0"
r["run"] = int(run)  # what pairs the runs of one workload in the table
print(json.dumps(r))
PY
}
# run_s3 ...: run_one against T4+S3, then counts the WAL objects of its timed phase: those whose
# first revision lies between the revisions the run reported before and after that phase.
run_s3() {
    run_one "$@"
    # Patch the run's line with the PUT count (run_one wrote it last).
    local revisions puts first last
    revisions="$(tail -n 1 "$RESULTS" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r.get("revision_start") or "", r.get("revision_end") or "")')"
    read -r first last <<<"$revisions"
    [ -n "$last" ] || return 0
    puts="$(wal_objects "$first" "$last")"
    python3 - "$RESULTS" "$puts" <<'PY'
import json, sys
path, puts = sys.argv[1], int(sys.argv[2])
lines = open(path).read().splitlines()
r = json.loads(lines[-1])
r["s3_puts"] = puts
lines[-1] = json.dumps(r)
open(path, "w").write("\n".join(lines) + "\n")
PY
}

run=0
for spec in ${WORKLOADS//,/ }; do
    IFS=: read -r workload n conns extra <<<"$spec"
    [ -z "$extra" ] || die "workload $spec: want WORKLOAD[:N[:CONNS]]"
    clients="${n:-$CLIENTS}"
    watchers=1000
    total="$TOTAL"
    args=()
    case "$workload" in
    seq-put | seq-get)
        clients=1
        conns=""
        ;;
    par-put | par-get | mixed | txn | lease-churn)
        [ -n "$conns" ] || conns=$((clients < CONNS_MAX ? clients : CONNS_MAX))
        ;;
    watch-latency)
        clients="${n:-1}"
        [ -z "$conns" ] || die "workload $spec: watch-latency takes no CONNS"
        ;;
    watch-fanout)
        clients=1
        watchers="${n:-1000}"
        total="$FANOUT_TOTAL"
        ;;
    watch-keys)
        clients=1
        watchers="${n:-1000}"
        ;;
    list | count)
        [ -n "$conns" ] || conns=$((clients < CONNS_MAX ? clients : CONNS_MAX))
        total="$LIST_TOTAL"
        args=(--key-space "$LIST_KEYS" --val-size "$LIST_VAL_SIZE")
        ;;
    list-hot)
        [ -n "$conns" ] || conns=$((clients < CONNS_MAX ? clients : CONNS_MAX))
        total="$LIST_TOTAL"
        args=(--key-space "$HOT_LIST_KEYS" --val-size "$LIST_VAL_SIZE" --hot-keys "$HOT_KEYS"
            --hot-writers "$HOT_WRITERS" --hot-updates "$HOT_UPDATES")
        ;;
    *) die "unknown workload $workload in BENCH_WORKLOADS" ;;
    esac
    run=$((run + 1))
    if [ $((run % 2)) -eq 1 ]; then
        run_one t4 "$T4_EP" "$workload" "$clients" "$conns" "$watchers" "$total" "$run" "${args[@]}"
        run_one etcd "$ETCD_EP" "$workload" "$clients" "$conns" "$watchers" "$total" "$run" "${args[@]}"
    else
        run_one etcd "$ETCD_EP" "$workload" "$clients" "$conns" "$watchers" "$total" "$run" "${args[@]}"
        run_one t4 "$T4_EP" "$workload" "$clients" "$conns" "$watchers" "$total" "$run" "${args[@]}"
    fi
    if [ -n "$T4S3_EP" ]; then
        run_s3 t4-s3 "$T4S3_EP" "$workload" "$clients" "$conns" "$watchers" "$total" "$run" "${args[@]}"
    fi
done

# --- resident memory after many keys ------------------------------------------------------
# vm_rss PID: the process's resident set, in KiB.
vm_rss() {
    sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$1/status"
}
RSS_LINES="$TMP/rss.txt"
: >"$RSS_LINES"
if [ "$RSS" -eq 1 ]; then
    for server in t4 etcd; do
        if [ "$server" = t4 ]; then pid="$T4_PID" ep="$T4_EP"; else pid="$ETCD_PID" ep="$ETCD_EP"; fi
        # The pid must be the server itself, not a shell around it, or VmRSS measures the shell.
        # (comm is the executable's name cut to 15 bytes; BENCH_T4_BIN may name t4 otherwise.)
        if [ "$server" = t4 ]; then want="$(basename "$T4_BIN" | cut -c1-15)"; else want=etcd; fi
        [ "$(cat "/proc/$pid/comm")" = "$want" ] || die "pid $pid is $(cat "/proc/$pid/comm"), not $want"
        before="$(vm_rss "$pid")"
        step "writing $RSS_KEYS keys to $server ($ep) for its resident memory"
        "$LOADTEST" --endpoints "$ep" --workload par-put --clients 64 --conns 16 --total "$RSS_KEYS" \
            --warmup-ops 0 --key-size 64 --val-size 256 --prefix /bench/rss/ \
            --duration-max-secs "$RSS_MAX_SECS" --label "$server" --output jsonl \
            >"$TMP/rss.jsonl" 2>"$TMP/rss.err" </dev/null &
        LOADTEST_PID=$!
        rc=0
        wait "$LOADTEST_PID" || rc=$?
        LOADTEST_PID=""
        cat "$TMP/rss.err" >&2
        after="$(vm_rss "$pid")"
        if [ "$rc" -ne 0 ]; then
            FAILED=1
            printf 'bench.sh: writing the keys to %s failed (exit %s)\n' "$server" "$rc" >&2
        fi
        python3 - "$server" "$before" "$after" "$rc" "$TMP/rss.jsonl" >>"$RSS_LINES" <<'PY'
import json, sys
server, before, after, rc, report = sys.argv[1:]
text = open(report).read().strip()
r = json.loads(text) if text else {}
print(json.dumps({"rss_of": server, "rss_before_kib": int(before), "rss_after_kib": int(after),
                  "keys_ok": r.get("ok", 0), "ops_per_sec": r.get("ops_per_sec"),
                  "stopped_early": r.get("stopped_early", False), "failed": rc != "0"}))
PY
    done
    cat "$RSS_LINES" >>"$RESULTS"
fi

# --- snapshot and defragment of many keys --------------------------------------------------
# db_sizes EP: "size in_use" as the server's Status reports them.
db_sizes() {
    ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint status -w json |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; print(s["dbSize"], s.get("dbSizeInUse", s["dbSize"]))'
}
# key_of I: the loadtest's key number I under /bench/maint/ (zero-padded to 64 bytes).
key_of() { printf '/bench/maint/%051d' "$1"; }
now_ms() { date +%s%3N; }
MAINT_LINES="$TMP/maint.txt"
: >"$MAINT_LINES"
if [ "$MAINT" -eq 1 ]; then
    for server in t4 etcd; do
        if [ "$server" = t4 ]; then ep="$T4_EP"; else ep="$ETCD_EP"; fi
        E=(env ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout 600s)
        step "writing $MAINT_KEYS keys to $server ($ep) for snapshot and defragment"
        rc=0
        "$LOADTEST" --endpoints "$ep" --workload par-put --clients 64 --conns 16 --total "$MAINT_KEYS" \
            --warmup-ops 0 --key-size 64 --val-size 256 --prefix /bench/maint/ \
            --duration-max-secs "$RSS_MAX_SECS" --label "$server" --output jsonl \
            >"$TMP/maint.jsonl" 2>"$TMP/maint.err" </dev/null || rc=$?
        [ "$rc" -eq 0 ] || { FAILED=1; cat "$TMP/maint.err" >&2; continue; }
        read -r full full_in_use <<<"$(db_sizes "$ep")"
        step "etcdctl snapshot save from $server"
        t0="$(now_ms)"
        "${E[@]}" snapshot save "$TMP/$server.snap" >/dev/null 2>"$TMP/snap.err" || { FAILED=1; cat "$TMP/snap.err" >&2; }
        snap_ms=$(($(now_ms) - t0))
        snap_bytes="$(stat -c %s "$TMP/$server.snap" 2>/dev/null || echo 0)"
        rm -f "$TMP/$server.snap"
        step "deleting half the keys of $server, compacting"
        half=$((MAINT_KEYS / 2))
        chunk=50000
        for ((from = 0; from < half; from += chunk)); do
            to=$((from + chunk < half ? from + chunk : half))
            "${E[@]}" del "$(key_of "$from")" "$(key_of "$to")" >/dev/null
        done
        rev="$("${E[@]}" get none -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')"
        "${E[@]}" compact "$rev" --physical >/dev/null
        read -r deleted deleted_in_use <<<"$(db_sizes "$ep")"
        step "etcdctl defrag of $server"
        t0="$(now_ms)"
        "${E[@]}" defrag >/dev/null || FAILED=1
        defrag_ms=$(($(now_ms) - t0))
        read -r defragged defragged_in_use <<<"$(db_sizes "$ep")"
        printf '{"maint_of": "%s", "keys": %s, "snapshot_bytes": %s, "snapshot_ms": %s, "db_full": %s, "in_use_full": %s, "db_after_delete": %s, "in_use_after_delete": %s, "db_after_defrag": %s, "in_use_after_defrag": %s, "defrag_ms": %s}\n' \
            "$server" "$MAINT_KEYS" "$snap_bytes" "$snap_ms" "$full" "$full_in_use" "$deleted" "$deleted_in_use" \
            "$defragged" "$defragged_in_use" "$defrag_ms" >>"$MAINT_LINES"
    done
    cat "$MAINT_LINES" >>"$RESULTS"
fi

mkdir -p target/bench
cp "$RESULTS" target/bench/last.jsonl

# --- the table ----------------------------------------------------------------------------
printf '\nT4 vs etcd %s, %s ops per run (watch-fanout: %s puts)%s, %s cores, %s\n' \
    "$(etcd --version | sed -n 's/^etcd Version: //p')" "$TOTAL" "$FANOUT_TOTAL" \
    "$([ "$QUICK" -eq 1 ] && printf ' (--quick)')" "$(nproc)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
python3 - "$RESULTS" "$RSS_KEYS" <<'EOF'
import json, sys

lines = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = [r for r in lines if "rss_of" not in r and "maint_of" not in r]
rss = {r["rss_of"]: r for r in lines if "rss_of" in r}
maint = {r["maint_of"]: r for r in lines if "maint_of" in r}
pairs = {}
for r in runs:
    pairs.setdefault(r["run"], {})[r["label"]] = r

def measured(r):
    return r is not None and "ops_per_sec" in r

def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"

def ops(r):
    return f'{r["ops_per_sec"]:.0f}' + ("" if not r["failed"] else " FAILED") if measured(r) else "FAILED"

def latency(r):
    return f'{r["p50_us"]}/{r["p99_us"]}' if measured(r) else "-"

def errors(r):
    return str(r["errors"]) if measured(r) else "-"

def conflicts_per_op(r):
    return f'{r["conflicts"] / max(r["ok"], 1):.1f}' if measured(r) and r.get("conflicts") is not None else "-"

def clients_cell(workload, clients, conns, watchers):
    if workload in ("watch-fanout", "watch-keys"):
        return f"{watchers} watchers"
    return f"{clients} on {conns} conns" if conns and conns != clients else str(clients)

head = ["workload", "clients", "T4 ops/s", "etcd ops/s", "T4/etcd ops", "T4 p50/p99 us", "etcd p50/p99 us",
        "T4/etcd p50", "errors T4/etcd"]
rows, failures = [], []
workloads = set()
for by in pairs.values():
    any_run = next(iter(by.values()))
    workload, clients, conns, watchers = (any_run.get(k) for k in ("workload", "clients", "conns", "watchers"))
    workloads.add(workload)
    t4, etcd = by.get("t4"), by.get("etcd")
    both = measured(t4) and measured(etcd)
    capped = any(measured(r) and r["stopped_early"] for r in (t4, etcd))
    notes = f" (conflicts/op {conflicts_per_op(t4)}/{conflicts_per_op(etcd)})" if workload == "txn" else ""
    rows.append([
        workload, clients_cell(workload, clients, conns, watchers),
        ops(t4), ops(etcd), ratio(t4["ops_per_sec"], etcd["ops_per_sec"]) if both else "-",
        latency(t4), latency(etcd), ratio(t4["p50_us"], etcd["p50_us"]) if both else "-",
        f"{errors(t4)}/{errors(etcd)}" + (" (capped)" if capped else "") + notes,
    ])
    failures += [f'{r["label"]} {workload}: {r.get("first_error")}' for r in (t4, etcd) if r and r.get("first_error")]
    s3 = by.get("t4-s3")
    if s3 is not None:
        s3_both = measured(s3) and measured(etcd)
        rows[-1] += [ops(s3), ratio(s3["ops_per_sec"], etcd["ops_per_sec"]) if s3_both else "-", latency(s3)]
        puts_per_sec = s3["s3_puts"] / s3["elapsed_secs"] if measured(s3) and "s3_puts" in s3 and s3["elapsed_secs"] else None
        rows[-1].append(f"{puts_per_sec:.0f}" if puts_per_sec is not None else "-")
        if s3.get("first_error"):
            failures.append(f't4-s3 {workload}: {s3.get("first_error")}')
if any("t4-s3" in by for by in pairs.values()):
    head += ["T4+S3 ops/s", "T4+S3/etcd ops", "T4+S3 p50/p99 us", "S3 PUTs/s"]
widths = [max(len(x) for x in col) for col in zip(head, *rows)]
for row in [head, ["-" * w for w in widths], *rows]:
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
print("T4/etcd ops above 1x and T4/etcd p50 below 1x favour T4.")
if any("t4-s3" in by for by in pairs.values()):
    print("T4+S3: sync upload to moto on loopback (a write is acknowledged once its WAL object is stored);")
    print("S3 PUTs/s: WAL objects of the timed phase (by their revisions: set-up and warm-up left out)")
    print("per second of it; at $0.005 per 1,000 PUTs, 1 PUT/s sustained costs about $13 per month.")
if any(w.startswith("watch-") for w in workloads):
    print("watch-*: ops/s are events received by all watchers together; latencies are put->event.")
if "txn" in workloads:
    print("txn: ops/s are successful compare-and-swap increments of shared counters (1 unless BENCH_LOADTEST_ARGS sets --key-space); conflicts are retries.")
if "lease-churn" in workloads:
    print("lease-churn: an op is lease grant + put with the lease + revoke.")
if "watch-keys" in workloads:
    print("watch-keys: each watcher watches one key of its own; one writer puts them in turn.")
list_runs = {r["workload"]: r for r in runs if r.get("pages") is not None}
if "list" in list_runs:
    r = list_runs["list"]
    print(f'list: an op is one page (limit {r["page_size"]}) of a paged walk of {r["key_space"]} keys of {r["val_size"]} B, at its first page\'s revision.')
if "count" in list_runs:
    print(f'count: an op is a count_only range over {list_runs["count"]["key_space"]} keys.')
if "list-hot" in list_runs:
    r = list_runs["list-hot"]
    print(f'list-hot: an op is a whole paged list of {r["key_space"]} keys while {r["hot_writers"]} writers update {r["hot_keys"]} of them (each updated {r["hot_updates"]} times before).')
if rss:
    def mib(kib):
        return f"{kib / 1024:.0f} MiB"
    t4, etcd = rss.get("t4"), rss.get("etcd")
    keys = int(sys.argv[2])
    for r in (t4, etcd):
        if r is None:
            continue
        rate = f', {r["ops_per_sec"]:.0f} puts/s' if r.get("ops_per_sec") else ""
        state = " FAILED" if r["failed"] else (" (capped)" if r["stopped_early"] else "")
        print(f'RSS of {r["rss_of"]}: {mib(r["rss_before_kib"])} after the workloads, {mib(r["rss_after_kib"])} after '
              f'{r["keys_ok"]} of {keys} more keys{rate}{state}')
    if t4 and etcd and etcd["rss_after_kib"]:
        print(f'RSS T4/etcd after {keys} keys: {t4["rss_after_kib"] / etcd["rss_after_kib"]:.2f}x (target: 0.5x or less)')
if maint:
    def mb(n):
        return f"{n / 1e6:.1f} MB"
    for r in maint.values():
        print(f'{r["maint_of"]}, {r["keys"]} keys: snapshot {mb(r["snapshot_bytes"])} in {r["snapshot_ms"] / 1000:.1f} s; '
              f'db {mb(r["db_full"])} (in use {mb(r["in_use_full"])}), half deleted and compacted {mb(r["db_after_delete"])} '
              f'(in use {mb(r["in_use_after_delete"])}), defragmented in {r["defrag_ms"] / 1000:.1f} s: '
              f'{mb(r["db_after_defrag"])} (in use {mb(r["in_use_after_defrag"])})')
    t4, etcd = maint.get("t4"), maint.get("etcd")
    if t4 and etcd and etcd["snapshot_ms"] and etcd["snapshot_bytes"]:
        print(f'snapshot T4/etcd: time {t4["snapshot_ms"] / etcd["snapshot_ms"]:.2f}x, size {t4["snapshot_bytes"] / etcd["snapshot_bytes"]:.2f}x')
for failure in failures:
    print(f"first error of {failure}")
EOF
[ "$FAILED" -eq 0 ] || die "some runs failed; see the table"
