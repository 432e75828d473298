# shellcheck shell=bash
# Starting and stopping the servers of scripts/bench.sh and scripts/profile.sh. Sourced, not run;
# the caller defines `die` and `STARTUP_SECS`.

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
