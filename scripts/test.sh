#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run).
#
# On a fresh Debian machine it installs what the tests need, then runs the whole workspace's
# tests; on a machine that has them it only checks and goes straight to cargo:
#   - Debian: protobuf-compiler (protoc), etcd-server (the reference etcd 3.4 the tests compare
#     against) and etcd-client (etcdctl)
#   - a Python venv at .venv with moto[server] (an S3 stand-in for object-storage tests)
# Extra arguments go to `cargo test --workspace`, e.g. `scripts/test.sh -- --nocapture`.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '==> %s\n' "$*"; }
die() {
    printf 'test.sh: %s\n' "$*" >&2
    exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: cannot install Debian packages"
    SUDO=(sudo -n)
fi

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        step "apt-get update"
        "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq
        APT_UPDATED=1
    fi
    step "apt-get install $*"
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@"
}

# --- Debian packages: install only what is missing -------------------------------------------
step "checking system packages"
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# --- Python venv: create once, reinstall only when the requirements change ------------------
# shellcheck source=scripts/lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
VENV="$ROOT/.venv"
if venv_up_to_date "$VENV"; then
    step ".venv is up to date (${VENV_REQUIREMENTS[*]})"
else
    # Debian's own python3 has venv without ensurepip (pip) unless python3-venv is installed.
    if ! venv_runs "$VENV" && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    step "preparing .venv (${VENV_REQUIREMENTS[*]})"
    ensure_venv "$VENV"
fi

# --- Rust tests ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found (the machine's Rust toolchain is expected)"

step "cargo test --workspace $*"
exec cargo test --workspace "$@"
