# shellcheck shell=bash
# The project's Python venv at <repo>/.venv (moto, the S3 stand-in of the tests), shared by
# scripts/test.sh and scripts/s3-server.sh. Sourced, not run. `ensure_venv` is idempotent and safe
# to call from parallel tests: installers take turns on a lock, and a venv that is up to date costs
# one `python -c ''`.

# The Python requirements of .venv; changing this line makes the next run reinstall them.
VENV_REQUIREMENTS=("moto[server]>=5,<6" "etcd3gw>=2,<3" "prometheus-client>=0.20,<1" "etcd3==0.12.0" "protobuf<4" "tenacity<7")

# The lock installers take turns on: this file itself, so the work tree gains no lock file.
VENV_LOCK_FILE="${BASH_SOURCE[0]}"
# How long an installer waits for another one (a first install downloads a few dozen packages).
VENV_LOCK_TIMEOUT_S=900

# venv_runs VENV: whether VENV's python starts.
venv_runs() {
    [ -x "$1/bin/python" ] && "$1/bin/python" -c '' >/dev/null 2>&1
}

# venv_up_to_date VENV: whether VENV runs and holds exactly VENV_REQUIREMENTS.
venv_up_to_date() {
    venv_runs "$1" && [ -f "$1/.t4-requirements" ] && [ "$(cat "$1/.t4-requirements")" = "${VENV_REQUIREMENTS[*]}" ]
}

# ensure_venv VENV: creates VENV if missing and installs VENV_REQUIREMENTS if they changed. Progress
# goes to stderr (callers' stdout stays theirs). Fails if python3 cannot make venvs (Debian:
# python3-venv) or pip cannot reach the package index.
ensure_venv() {
    local venv="$1"
    venv_up_to_date "$venv" && return 0
    (
        exec 9<"$VENV_LOCK_FILE"
        if ! flock -w "$VENV_LOCK_TIMEOUT_S" 9; then
            echo "venv.sh: another installer held the .venv lock for ${VENV_LOCK_TIMEOUT_S}s" >&2
            exit 1
        fi
        venv_up_to_date "$venv" && exit 0
        if ! venv_runs "$venv"; then
            if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
                echo "venv.sh: python3 cannot create venvs (Debian: apt-get install python3-venv; scripts/test.sh does)" >&2
                exit 1
            fi
            echo "==> creating Python venv at $venv" >&2
            rm -rf "$venv"
            python3 -m venv "$venv"
        fi
        echo "==> installing ${VENV_REQUIREMENTS[*]} into $venv" >&2
        if ! PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
            "$venv/bin/python" -m pip install -q "${VENV_REQUIREMENTS[@]}" >&2; then
            echo "venv.sh: pip could not install ${VENV_REQUIREMENTS[*]} (is the package index reachable?)" >&2
            exit 1
        fi
        printf '%s' "${VENV_REQUIREMENTS[*]}" >"$venv/.t4-requirements"
    )
}
