# shellcheck shell=bash
# Starting and stopping the servers of scripts/bench.sh, scripts/profile.sh and
# scripts/restore-bench.sh. Sourced, not run; the caller defines `die`, `STARTUP_SECS` and `ROOT`
# (the repository), and `T4_BIN` (the t4 binary) before it calls start_t4.

# stop_pid PID: SIGTERM, then SIGKILL if the process is still there after 10 s.
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

# start_t4 NAME DIR ARGS...: `t4 run ARGS` on a free loopback port, data dir DIR/NAME-data, stdout
# and stderr in DIR/NAME.out and DIR/NAME.err; waits until it listens (polled every 10 ms, so a
# timed start is timed to that). Sets STARTED_PID and STARTED_EP.
start_t4() {
    local name="$1" dir="$2"
    shift 2
    "$T4_BIN" run --data-dir "$dir/$name-data" --listen 127.0.0.1:0 "$@" \
        >"$dir/$name.out" 2>"$dir/$name.err" </dev/null &
    STARTED_PID=$!
    STARTED_EP=""
    for _ in $(seq $((STARTUP_SECS * 100))); do
        STARTED_EP="$(sed -n 's/^listening on //p' "$dir/$name.out" | head -n1)"
        [ -n "$STARTED_EP" ] && break
        kill -0 "$STARTED_PID" 2>/dev/null || break
        sleep 0.01
    done
    [ -n "$STARTED_EP" ] || die "$name did not start; its stderr: $(tail -n 20 "$dir/$name.err")"
    case "$STARTED_EP" in 127.0.0.1:*) ;; *) die "$name listens on $STARTED_EP, not loopback" ;; esac
}

# start_moto BUCKET DIR: moto's S3 server (scripts/s3-server.sh) on a free loopback port with
# BUCKET created, output in DIR/moto.out and DIR/moto.err; waits until it serves. Sets MOTO_PID
# and MOTO_ENDPOINT.
start_moto() {
    local bucket="$1" dir="$2"
    "$ROOT/scripts/s3-server.sh" --bucket "$bucket" >"$dir/moto.out" 2>"$dir/moto.err" </dev/null &
    MOTO_PID=$!
    MOTO_ENDPOINT=""
    for _ in $(seq $((STARTUP_SECS * 10))); do
        MOTO_ENDPOINT="$(sed -n 's/^endpoint=\([^ ]*\) .*/\1/p' "$dir/moto.out" | head -n1)"
        [ -n "$MOTO_ENDPOINT" ] && break
        kill -0 "$MOTO_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$MOTO_ENDPOINT" ] || die "moto did not start; its stderr: $(tail -n 20 "$dir/moto.err")"
}

# start_etcd NAME DIR: a single-node etcd on two free loopback ports, data and log in DIR; waits
# until it is healthy. Sets ETCD_PID and ETCD_EP.
start_etcd() {
    local name="$1" dir="$2" p1 p2
    read -r p1 p2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
    ETCD_EP="127.0.0.1:$p1"
    etcd --name "$name" --data-dir "$dir/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$p1" --advertise-client-urls "http://127.0.0.1:$p1" \
        --listen-peer-urls "http://127.0.0.1:$p2" --initial-advertise-peer-urls "http://127.0.0.1:$p2" \
        --initial-cluster "$name=http://127.0.0.1:$p2" >"$dir/etcd.log" 2>&1 </dev/null &
    ETCD_PID=$!
    local healthy=0
    for _ in $(seq $((STARTUP_SECS * 4))); do
        if ETCDCTL_API=3 etcdctl --endpoints="$ETCD_EP" --command-timeout=2s endpoint health >/dev/null 2>&1; then
            healthy=1
            break
        fi
        kill -0 "$ETCD_PID" 2>/dev/null || break
        sleep 0.25
    done
    [ "$healthy" -eq 1 ] || die "etcd did not become healthy; its log: $(tail -n 20 "$dir/etcd.log")"
}
