#!/usr/bin/env bash
# Runs scripts/test.sh as on a fresh Debian machine: in a minimal debootstrap chroot (bookworm,
# `minbase`) holding only Debian's required packages and the host's Rust toolchain, bind-mounted
# read-only. Catches prerequisites the host happens to have and test.sh does not install (it is how
# the missing libprotobuf-dev was found). Needs root, debootstrap and the Debian mirror.
#
#   scripts/fresh-check.sh [CHROOT_DIR [TEST_ARGS...]]   (default /var/tmp/t4-fresh; reused if it exists)
#
# The committed HEAD is cloned into the chroot (uncommitted changes are not tested). The chroot's
# own CARGO_HOME starts empty, so crates are downloaded as on a new machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHROOT="${1:-/var/tmp/t4-fresh}"
shift || true
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
RUSTUP_HOME_HOST="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_BIN_HOST="${CARGO_HOME:-$HOME/.cargo}/bin"

die() {
    printf 'fresh-check.sh: %s\n' "$*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "needs root (chroot, mounts)"
command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
[ -d "$RUSTUP_HOME_HOST/toolchains" ] || die "no rustup toolchain at $RUSTUP_HOME_HOST"

if [ ! -x "$CHROOT/bin/bash" ]; then
    echo "==> debootstrap --variant=minbase $SUITE $CHROOT"
    debootstrap --variant=minbase "$SUITE" "$CHROOT" "$MIRROR" >"$CHROOT.debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $CHROOT.debootstrap.log"
fi

MOUNTS=()
bind() { # bind SRC DST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    MOUNTS=("$2" "${MOUNTS[@]}")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
cleanup() {
    for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

bind /proc "$CHROOT/proc"
bind /sys "$CHROOT/sys"
bind /dev "$CHROOT/dev"
bind /dev/pts "$CHROOT/dev/pts"
bind "$RUSTUP_HOME_HOST" "$CHROOT/opt/rustup" ro
bind "$CARGO_BIN_HOST" "$CHROOT/opt/cargo-bin" ro
# Name resolution is the machine's too: debootstrap leaves /etc/hosts out, so `localhost` would not
# resolve, which no real installation lacks.
cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
cp /etc/hosts "$CHROOT/etc/hosts"
# The host's own CA certificates (an egress proxy's, say) belong to the network, not to the project:
# the chroot trusts them too, or no https download could succeed behind such a proxy.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$CHROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$CHROOT/usr/local/share/ca-certificates/"
    if [ -x "$CHROOT/usr/sbin/update-ca-certificates" ]; then
        chroot "$CHROOT" /usr/sbin/update-ca-certificates >/dev/null
    fi
fi

rm -rf "$CHROOT/src/t4"
mkdir -p "$CHROOT/src"
git clone -q "$ROOT" "$CHROOT/src/t4"
echo "==> scripts/test.sh in $CHROOT at $(git -C "$CHROOT/src/t4" rev-parse --short HEAD)"
chroot "$CHROOT" /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo \
    bash -c 'cd /src/t4 && time scripts/test.sh "$@"' fresh-check "$@"
