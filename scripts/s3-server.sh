#!/usr/bin/env bash
# Runs moto's S3 server on 127.0.0.1 (an S3 stand-in with atomic conditional writes) for tests and
# local runs, in the project's venv at .venv, which it creates and fills if needed (as
# scripts/test.sh does, through scripts/lib/venv.sh).
#
#   scripts/s3-server.sh [--port N] [--bucket NAME] [--exit-on-stdin-eof]
#
# Once the server answers and the bucket (default `t4-test`) exists, prints one line on stdout:
#   endpoint=http://127.0.0.1:PORT bucket=NAME pid=PID
# then serves until SIGTERM or SIGINT, or, with --exit-on-stdin-eof, until its stdin closes (so a
# test harness that dies cannot leave it behind). The port is a free one unless --port is given.
# Any access key is accepted. The request log goes to stderr.
#
# The script ends by exec'ing the server, so PID is this script's own process: the signals that
# stop the script stop moto, with no child left to clean up, and SIGSTOP/SIGCONT pause it whole.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
    printf 's3-server.sh: %s\n' "$*" >&2
    exit 2
}

PORT=0
BUCKET=t4-test
EXIT_ON_STDIN_EOF=0
while [ "$#" -gt 0 ]; do
    case "$1" in
    --port)
        [ "$#" -ge 2 ] || die "--port needs a number"
        PORT="$2"
        shift 2
        ;;
    --bucket)
        [ "$#" -ge 2 ] || die "--bucket needs a name"
        BUCKET="$2"
        shift 2
        ;;
    --exit-on-stdin-eof)
        EXIT_ON_STDIN_EOF=1
        shift
        ;;
    -h | --help)
        sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ "$PORT" -gt 65535 ]; then
    die "--port $PORT is not a port number"
fi
# S3's rule, which moto enforces: 3 to 63 of a-z 0-9 . -, starting and ending alphanumeric.
[[ "$BUCKET" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "--bucket $BUCKET is not a valid S3 bucket name"

# shellcheck source=scripts/lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
ensure_venv "$ROOT/.venv" || die "the Python venv at $ROOT/.venv is not usable (see above)"

read -r -d '' SERVER <<'PY' || true
import os, signal, sys, threading, urllib.error, urllib.request

from moto.server import ThreadedMotoServer

port, bucket, exit_on_stdin_eof = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())

# Binds before start() returns; port 0 lets the kernel pick a free one.
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
endpoint = "http://%s:%d" % server.get_host_and_port()
# The first request both proves the server answers and creates the bucket (moto needs no signature).
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    direct.open(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=30).close()
except urllib.error.HTTPError as e:
    sys.exit(f"s3-server.sh: creating bucket {bucket} failed: HTTP {e.code}: {e.read().decode(errors='replace')}")
print(f"endpoint={endpoint} bucket={bucket} pid={os.getpid()}", flush=True)

if exit_on_stdin_eof:
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.wait(timeout=1.0):
    pass
server.stop()
PY

exec "$ROOT/.venv/bin/python" -c "$SERVER" "$PORT" "$BUCKET" "$EXIT_ON_STDIN_EOF"
