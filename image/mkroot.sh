#!/bin/bash
# Build (or reuse) the cached root file system.
#
# Usage: image/mkroot.sh   -> prints the cache directory on stdout:
#   DIR/rootfs/          the unpacked root (without /boot), overlays applied
#   DIR/vmlinuz          the kernel
#   DIR/kernel-version   e.g. 6.1.0-56-amd64
#   DIR/packages.list    "name=version" per installed package
#
# The directory is keyed by a hash of everything that goes into it (package
# list, module list, overlays/base, this script), so a change to the walden
# binary alone never re-runs mmdebstrap. Downloaded .debs are kept in
# build/cache/apt and reused.
. "$(dirname "$0")/lib.sh"
. "$IMAGE/debian-root.sh"

KEY="$(hash_inputs "$IMAGE/packages.txt" "$IMAGE/modules.keep" "$REPO/overlays/base" \
    "$IMAGE/mkroot.sh" "$IMAGE/debian-root.sh" "$IMAGE/prune-modules.sh")"
OUT="$CACHE/root-$KEY"
if [ -f "$OUT/.complete" ]; then
    log "root file system: cached ($OUT)"
    echo "$OUT"
    exit 0
fi

log "root file system: building with mmdebstrap ($OUT)"
start=$(date +%s)
rm -rf "$OUT" "$OUT.tmp"
mkdir -p "$OUT.tmp"
ROOT="$OUT.tmp/rootfs"
packages="$(list "$IMAGE/packages.txt" | paste -sd, -)"

debian_root "$ROOT" "$packages" \
    --customize-hook="sync-out /var/cache/apt/archives '$CACHE/apt'"

mkdir -p "$ROOT/config"

# The kernel lives next to the squashfs, not in it.
kver="$(ls "$ROOT/lib/modules" | head -n1)"
[ -n "$kver" ] || die "no kernel modules in $ROOT/lib/modules: is linux-image-amd64 in image/packages.txt?"
cp "$ROOT/boot/vmlinuz-$kver" "$OUT.tmp/vmlinuz"
echo "$kver" > "$OUT.tmp/kernel-version"
rm -rf "$ROOT/boot"/* "$ROOT/vmlinuz" "$ROOT/vmlinuz.old" "$ROOT/initrd.img" "$ROOT/initrd.img.old"

"$IMAGE/prune-modules.sh" "$ROOT" "$kver" "$IMAGE/modules.keep"

# Users libvirt's QEMU driver runs guests as. Debian creates them in
# libvirt-daemon-system's postinst, a package left out because it depends on
# polkitd and with it systemd; same names and ids as Debian uses.
chroot "$ROOT" /bin/sh -e -c '
    getent group kvm >/dev/null || addgroup --quiet --system kvm
    getent group libvirt >/dev/null || addgroup --quiet --system libvirt
    getent group libvirt-qemu >/dev/null || addgroup --quiet --system --gid 64055 libvirt-qemu
    getent passwd libvirt-qemu >/dev/null || adduser --quiet --system --uid 64055 \
        --home /var/lib/libvirt --no-create-home --ingroup kvm --disabled-password \
        --shell /usr/sbin/nologin --gecos "Libvirt Qemu" libvirt-qemu
    adduser --quiet libvirt-qemu libvirt-qemu
'

# No machine-specific secrets or identities in an image that many machines
# boot: ssh host keys are made at first boot (onto the config disk), the
# machine id is empty.
rm -f "$ROOT"/etc/ssh/ssh_host_*
: > "$ROOT/etc/machine-id"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/debconf/*-old \
    "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/usr/share/doc/*/changelog*

# walden is init (and poweroff/reboot/halt: they signal PID 1). The
# binaries are added when the squashfs is made, so they can change without
# a new root: init is walden-init (walden built without libvirt, as in the
# initramfs), which starts the full walden for `walden supervise`.
rm -f "$ROOT/usr/sbin/init"
ln -s walden-init "$ROOT/usr/sbin/init"
for name in poweroff reboot halt; do
    rm -f "$ROOT/usr/sbin/$name"
    ln -s walden "$ROOT/usr/sbin/$name"
done

cp -a "$REPO/overlays/base/." "$ROOT/"

chroot "$ROOT" dpkg-query -W -f='${Package}=${Version}\n' | LC_ALL=C sort > "$OUT.tmp/packages.list"
touch "$OUT.tmp/.complete"
mv "$OUT.tmp" "$OUT"
# Older roots are superseded.
for old in "$CACHE"/root-*; do
    [ "$old" = "$OUT" ] || rm -rf "$old"
done
log "root file system: built in $(( $(date +%s) - start )) s, $(du -sm "$OUT/rootfs" | cut -f1) MiB unpacked"
echo "$OUT"
