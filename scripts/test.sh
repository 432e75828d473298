#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run).
#
# On a fresh Debian machine it installs what the tests need, then runs the whole workspace's
# tests; on a machine that has them it only checks and goes straight to cargo:
#   - Debian: protobuf-compiler and libprotobuf-dev (protoc and its well-known types), ca-certificates,
#     gcc, git (glommio's build script runs it), e2fsprogs (the disk-full test's file system), etcd-server (the reference etcd 3.4 the tests compare
#     against) and etcd-client (etcdctl)
#   - a Python venv at .venv with moto[server] (an S3 stand-in for object-storage tests) and
#     etcd3gw (a real client of the JSON gateway)
# Extra arguments go to `cargo test --workspace`, e.g. `scripts/test.sh -- --nocapture`.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
VENV="$ROOT/.venv"

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
# Each check tries what the build or the tests do, not whether a command exists: a protoc without
# the well-known-type includes (Debian's libprotobuf-dev, only a "Recommends" of protobuf-compiler)
# passes `command -v protoc` and then fails the etcd-client build on google/protobuf/*.proto.
CHECK_DIR="$(mktemp -d)"
trap 'rm -rf "$CHECK_DIR"' EXIT

# protoc_with_includes: protoc compiles a file importing a well-known type (what etcd-client's
# build script needs).
protoc_with_includes() {
    printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\nmessage M { google.protobuf.FileDescriptorProto f = 1; }\n' \
        >"$CHECK_DIR/check.proto"
    protoc -I"$CHECK_DIR" --descriptor_set_out=/dev/null "$CHECK_DIR/check.proto" >/dev/null 2>&1
}
# c_toolchain: cc compiles and links a C program (the linker rustc uses; ring and others build C).
c_toolchain() {
    printf 'int main(void) { return 0; }\n' >"$CHECK_DIR/check.c"
    cc "$CHECK_DIR/check.c" -o "$CHECK_DIR/check" >/dev/null 2>&1 && "$CHECK_DIR/check"
}
# python_venv: python3 makes a venv with pip (Debian's python3 lacks ensurepip without python3-venv).
python_venv() {
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

step "checking system packages"
missing=()
protoc_with_includes || missing+=(protobuf-compiler libprotobuf-dev)
etcd --version >/dev/null 2>&1 || missing+=(etcd-server)
etcdctl version >/dev/null 2>&1 || missing+=(etcd-client)
c_toolchain || missing+=(gcc libc6-dev)
# glommio's build script runs `git submodule update` (and fails if there is no git to run).
git --version >/dev/null 2>&1 || missing+=(git)
venv_runs "$VENV" || python_venv || missing+=(python3 python3-venv)
# cargo downloads crates over https, and the S3 store's client loads the system's CA roots at start
# (it refuses to start without any, even for an http:// endpoint such as moto).
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# The disk-full test formats a small file system; the restore and inspect tests need none of these.
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v flock >/dev/null || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
protoc_with_includes || die "protoc cannot compile a proto importing google/protobuf/descriptor.proto after installing protobuf-compiler and libprotobuf-dev"
c_toolchain || die "cc cannot compile and link a C program after installing gcc and libc6-dev"

# --- Python venv: create once, reinstall only when the requirements change ------------------
if venv_up_to_date "$VENV"; then
    step ".venv is up to date (${VENV_REQUIREMENTS[*]})"
else
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
