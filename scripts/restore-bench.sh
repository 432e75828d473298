#!/usr/bin/env bash
# How long a node that lost its disk takes to come back from object storage.
#
# Starts moto's S3 server (scripts/s3-server.sh) and `t4 run` with sync upload to it, writes
# RESTORE_KEYS keys with t4-loadtest (par-put, 64 clients), kills the node (-9), deletes its data dir,
# and times a restart until it serves; then checks the key count and revision. Three variants: the WAL
# only; a checkpoint taken after 90% of the writes (checkpoint + the WAL after it); and a node that
# wrote every key without a store and is then given one (its start uploads the local tail, timed too).
# A fourth, `restarts`: the same writes spread over RESTORE_RESTARTS runs of the node (stopped
# gracefully between them) with --checkpoint-entries at twice one run's writes, so no single run
# reaches it: restore work then depends on the schedule counting from what the store holds.
# Each line also gives the peak RSS of the starting node (VmHWM once it serves).
#   RESTORE_KEYS      keys to write; default 100000
#   RESTORE_VAL_SIZE  value bytes; default 256
#   RESTORE_CLIENTS   concurrent writers (fewer: fewer revisions per WAL object); default 64
#   RESTORE_RESTARTS  runs of the `restarts` variant; default 20
#   RESTORE_VARIANTS  which variants to run; default "wal checkpoint tail restarts"
#   T4_BIN            the t4 binary to measure; default the release build of this tree
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KEYS="${RESTORE_KEYS:-100000}"
VAL_SIZE="${RESTORE_VAL_SIZE:-256}"
CLIENTS="${RESTORE_CLIENTS:-64}"
RESTARTS="${RESTORE_RESTARTS:-20}"
VARIANTS="${RESTORE_VARIANTS:-wal checkpoint tail restarts}"
STARTUP_SECS=120

step() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'restore-bench.sh: %s\n' "$*" >&2
    exit 1
}

# shellcheck source=scripts/lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/t4-restore.XXXXXX")"
MOTO_PID=""
T4_PID=""
cleanup() {
    stop_pid "$T4_PID"
    stop_pid "$MOTO_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT

step "building release binaries"
cargo build --release -q -p t4 -p t4-loadtest
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
T4_BIN="${T4_BIN:-$TARGET_DIR/release/t4}"

step "starting moto"
start_moto t4-restore "$TMP"
export T4_S3_ACCESS_KEY_ID=restore T4_S3_SECRET_ACCESS_KEY=restore

start_node() { # prefix extra-args...; sets T4_PID and T4_EP; prefix "-": no object store
    local prefix="$1"
    shift
    local store=(--s3-bucket t4-restore --s3-endpoint "$MOTO_ENDPOINT" --s3-prefix "$prefix")
    [ "$prefix" = - ] && store=()
    start_t4 t4 "$TMP" --log info "${store[@]}" "$@"
    T4_PID="$STARTED_PID"
    T4_EP="$STARTED_EP"
}

# Peak RSS of the node so far, in MiB.
peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$T4_PID/status"
}

stop_t4() { # signal
    kill "-$1" "$T4_PID"
    wait "$T4_PID" 2>/dev/null || true
    T4_PID=""
}

seconds_since() {
    python3 -c "import sys; print(f'{$(date +%s.%N) - float(sys.argv[1]):.2f}')" "$1"
}

# Prints "<keys> <revision>" of the node at T4_EP.
state() {
    local count revision
    count="$(ETCDCTL_API=3 etcdctl --endpoints "$T4_EP" get /restore/ --prefix --limit 1 -w json |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get("count", 0))')"
    revision="$(ETCDCTL_API=3 etcdctl --endpoints "$T4_EP" endpoint status -w json |
        python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')"
    echo "$count $revision"
}

write_keys() { # count
    "$TARGET_DIR/release/t4-loadtest" --endpoints "$T4_EP" --workload par-put --clients "$CLIENTS" --total "$1" \
        --warmup-ops 0 --prefix /restore/ --val-size "$VAL_SIZE" --output jsonl >/dev/null 2>"$TMP/loadtest.err" ||
        die "loadtest: $(tail -n 5 "$TMP/loadtest.err")"
}

for variant in $VARIANTS; do
    rm -rf "$TMP/t4-data"
    extra=()
    [ "$variant" = checkpoint ] && extra=(--checkpoint-entries $((KEYS * 9 / 10)))
    [ "$variant" = restarts ] && extra=(--checkpoint-entries $((KEYS / RESTARTS * 2)))
    if [ "$variant" = tail ]; then start_node -; else start_node "$variant" "${extra[@]}"; fi
    if [ "$variant" = restarts ]; then
        step "$variant: writing $KEYS keys over $RESTARTS runs"
        for run in $(seq "$RESTARTS"); do
            [ "$run" = 1 ] || start_node "$variant" "${extra[@]}"
            write_keys $((KEYS / RESTARTS))
            [ "$run" = "$RESTARTS" ] || stop_t4 TERM
        done
    else
        step "$variant: writing $KEYS keys"
        write_keys "$KEYS"
    fi
    sleep 2 # let a checkpoint triggered by the last writes finish
    read -r keys revision < <(state)
    if [ "$variant" = tail ]; then
        stop_t4 INT
        started="$(date +%s.%N)"
        start_node "$variant"
        printf 'tail: %s keys written without a store; uploaded in %s s (peak RSS %s MiB)\n' "$keys" \
            "$(seconds_since "$started")" "$(peak_rss_mib)"
        read -r uploaded_keys uploaded_revision < <(state)
        [ "$keys $revision" = "$uploaded_keys $uploaded_revision" ] || die "tail: the state changed at the upload"
    fi
    stop_t4 9
    rm -rf "$TMP/t4-data"
    started="$(date +%s.%N)"
    start_node "$variant"
    elapsed="$(seconds_since "$started")"
    rss="$(peak_rss_mib)"
    read -r restored_keys restored_revision < <(state)
    summary="$(sed -n 's/.*restored from object storage //p' "$TMP/t4.err" | sed 's/\x1b\[[0-9;]*m//g' | tail -n1)"
    printf '%s: %s keys at revision %s; restored %s keys at revision %s in %s s, peak RSS %s MiB (%s)\n' "$variant" \
        "$keys" "$revision" "$restored_keys" "$restored_revision" "$elapsed" "$rss" "$summary"
    [ "$keys $revision" = "$restored_keys $restored_revision" ] || die "$variant: the restored state differs"
    stop_t4 TERM
done
