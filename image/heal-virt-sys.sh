#!/bin/bash
# Heal a stale virt-sys build: its build script asks pkg-config for libvirt
# and, when libvirt-dev is missing, succeeds without linking libvirt.
# Cargo keeps that output until an environment variable it watches changes,
# so installing libvirt-dev afterwards (make deps) does not help: walden then
# fails to link with "undefined symbol: virDomainCreate". This finds such an
# output and makes cargo run the build script again.
#
# Usage: image/heal-virt-sys.sh [TARGET_DIR]   (default: the repo's target/)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:-${CARGO_TARGET_DIR:-$repo/target}}"
stale=0
for out in "$target"/*/build/virt-sys-*/output; do
    [ -f "$out" ] || continue
    grep -q '^cargo:rustc-link-lib=virt$' "$out" && continue
    echo "virt-sys: $out was made without libvirt (libvirt-dev was missing then); building it again" >&2
    stale=1
done
if [ "$stale" = 1 ]; then
    if ! pkg-config --exists libvirt 2>/dev/null; then
        echo "virt-sys: pkg-config still finds no libvirt: run 'make deps' (installs libvirt-dev and pkgconf)" >&2
        exit 1
    fi
    (cd "$repo" && cargo clean --quiet -p virt-sys --release && cargo clean --quiet -p virt-sys)
fi
