#!/bin/bash
# Build (or reuse) the baseline root for `make bench`: what a user would
# install instead of walden. Same Debian bookworm packages as walden's image
# (image/packages.txt), same kernel, QEMU and libvirt, plus systemd as init
# and libvirt-daemon-system (image/baseline/packages.txt).
#
# Usage: image/baseline/build.sh   -> prints the cache directory on stdout:
#   DIR/rootfs/          the root file system (no guests yet; see mkdisk.sh)
#   DIR/vmlinuz          the kernel (Debian's linux-image-amd64, as walden's)
#   DIR/initrd.img       Debian's initramfs-tools initramfs (MODULES=most)
#   DIR/kernel-version   e.g. 6.1.0-56-amd64
#   DIR/packages.list    "name=version" per installed package
#
# The directory is build/baseline/root-<hash of the inputs>; .debs are
# shared with walden's build through build/cache/apt (read) and kept in
# build/baseline/apt.
. "$(dirname "$0")/../lib.sh"
. "$IMAGE/debian-root.sh"

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap --mode=root, chroot)"
HERE="$IMAGE/baseline"
OUTDIR="$BUILD/baseline"

KEY="$(hash_inputs "$IMAGE/packages.txt" "$HERE/packages.txt" "$HERE/build.sh" "$HERE/files" \
    "$IMAGE/debian-root.sh" \
    "$REPO/bench/host/observe.sh")"
OUT="$OUTDIR/root-$KEY"
if [ -f "$OUT/.complete" ]; then
    log "baseline root: cached ($OUT)"
    echo "$OUT"
    exit 0
fi

log "baseline root: building with mmdebstrap ($OUT)"
start=$(date +%s)
mkdir -p "$OUTDIR/apt"
rm -rf "$OUT" "$OUT.tmp"
mkdir -p "$OUT.tmp"
ROOT="$OUT.tmp/rootfs"
packages="$( (list "$IMAGE/packages.txt"; list "$HERE/packages.txt") | paste -sd, -)"

# The same recipe as image/mkroot.sh (image/debian-root.sh), so the two
# roots differ only in what the baseline adds; its own .debs are kept apart.
debian_root "$ROOT" "$packages" \
    --setup-hook="sync-in '$OUTDIR/apt' /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives '$OUTDIR/apt'"

kver="$(ls "$ROOT/lib/modules" | head -n1)"
[ -n "$kver" ] || die "no kernel modules in $ROOT/lib/modules"
[ -f "$ROOT/boot/initrd.img-$kver" ] || die "no $ROOT/boot/initrd.img-$kver: initramfs-tools did not run"
cp "$ROOT/boot/vmlinuz-$kver" "$OUT.tmp/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$OUT.tmp/initrd.img"
echo "$kver" > "$OUT.tmp/kernel-version"

# An installed system, not an image many machines boot: a fixed machine id
# (an empty one would make every boot a systemd "first boot").
echo 5a1de2b0c0ffee005a1de2b0c0ffee00 > "$ROOT/etc/machine-id"
cp -a "$HERE/files/." "$ROOT/"
# The observer both hosts run (bench/README.md: how guests are observed).
install -D -m 755 "$REPO/bench/host/observe.sh" "$ROOT/usr/local/lib/bench/observe.sh"
# stdout is this script's answer (the directory, last line): what the
# chroot prints goes to stderr.
chroot "$ROOT" /bin/sh -e -c '
    systemctl enable bench-observe.service libvirtd.service libvirt-guests.service
    # No NICs on the benchmark guests, and dnsmasq (a recommend) is not
    # installed: the default NAT network would only fail to start.
    rm -f /etc/libvirt/qemu/networks/autostart/default.xml
' >&2
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/*

chroot "$ROOT" dpkg-query -W -f='${Package}=${Version}\n' | LC_ALL=C sort > "$OUT.tmp/packages.list"
touch "$OUT.tmp/.complete"
mv "$OUT.tmp" "$OUT"
for old in "$OUTDIR"/root-*; do
    [ "$old" = "$OUT" ] || rm -rf "$old"
done
log "baseline root: built in $(( $(date +%s) - start )) s, $(du -sm "$OUT/rootfs" | cut -f1) MiB unpacked"
echo "$OUT"
