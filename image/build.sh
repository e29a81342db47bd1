#!/bin/bash
# Build the walden image: build/images/<version>/{vmlinuz,initrd.img,
# root.squashfs,manifest.toml}, build/walden-<version>-usb.img and
# build/walden-<version>.iso. `make image` runs this.
#
# Every step is skipped when its inputs did not change (hash stamps), so a
# second run with nothing changed only checks; a changed walden binary
# re-squashes the cached root without running mmdebstrap again.
#
# Env: WALDEN_STAGE1_BIN (the initramfs's walden; default: a build without
#      libvirt, or WALDEN_BIN when that is set),
#      WALDEN_VERSION (default: Cargo.toml's version), WALDEN_BIN (use this
# binary instead of `cargo build --release`), WALDEN_USB_SIZE_MB,
# WALDEN_GRUB_TIMEOUT, WALDEN_CMDLINE_EXTRA, WALDEN_SQUASHFS_LEVEL,
# WALDEN_USB_VERSIONS (versions on the USB image, default: this one),
# WALDEN_MIRROR, WALDEN_BUILD_DIR.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap --mode=root, mknod, chroot)"
t0=$(date +%s)
"$IMAGE/deps.sh"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}"

# Two builds of the one walden program: the initramfs gets one without
# libvirt (stage 1 never runs guests; linking libvirt would pull ~20 MiB of
# libraries into the initramfs), the root file system the full one and the
# lean one again as walden-init, PID 1 (src/pid1: it starts the full one). Built
# in this order so target/release/walden ends up the full binary.
if [ -n "${WALDEN_BIN:-}" ]; then
    bin="$WALDEN_BIN"
    stage1="${WALDEN_STAGE1_BIN:-$WALDEN_BIN}"
else
    "$IMAGE/heal-virt-sys.sh"
    (cd "$REPO" && cargo build --release --quiet --bin walden --no-default-features &&
        cp target/release/walden target/release/walden-stage1 &&
        cargo build --release --quiet --bin walden)
    bin="$REPO/target/release/walden"
    stage1="$REPO/target/release/walden-stage1"
fi
[ -x "$bin" ] || die "walden binary $bin missing"
[ -x "$stage1" ] || die "stage 1 walden binary $stage1 missing"

rootdir="$("$IMAGE/mkroot.sh")"
kver="$(cat "$rootdir/kernel-version")"
# Every program walden starts and every file it hands to libvirt/QEMU
# (OVMF, qemu-img, sshd, the time zones `config check` accepts, ...) must be
# in the root: a missing package is a build error, not a failure on the box.
"$bin" check-root "$rootdir/rootfs" || die "the root lacks what walden needs (above)"
out="$BUILD/images/$VERSION"
mkdir -p "$out"

# Kernel.
cmp -s "$rootdir/vmlinuz" "$out/vmlinuz" || cp "$rootdir/vmlinuz" "$out/vmlinuz"

# Root squashfs: the cached root plus the walden binary and the release
# file, added as pseudo files so the cached root is never modified.
level="${WALDEN_SQUASHFS_LEVEL:-15}"
key="$(hash_inputs "$bin" "$stage1" "$IMAGE/build.sh"; echo "$rootdir $VERSION $level")"
if ! up_to_date "$out/.stamp-squashfs" "$key" "$out/root.squashfs"; then
    log "root.squashfs: compressing (zstd level $level)"
    t=$(date +%s)
    rm -f "$out/root.squashfs.tmp"
    mksquashfs "$rootdir/rootfs" "$out/root.squashfs.tmp" -noappend -quiet -no-progress \
        -comp zstd -Xcompression-level "$level" -b 1M \
        -p "usr/sbin/walden f 755 0 0 cat '$bin'" \
        -p "usr/sbin/walden-init f 755 0 0 cat '$stage1'" \
        -p "etc/walden-release f 644 0 0 echo VERSION=$VERSION" >/dev/null
    mv "$out/root.squashfs.tmp" "$out/root.squashfs"
    echo "$key" > "$out/.stamp-squashfs"
    log "root.squashfs: $(mib "$out/root.squashfs") MiB in $(( $(date +%s) - t )) s"
fi

# Initramfs.
key="$(hash_inputs "$stage1" "$IMAGE/mkinitramfs.sh" "$IMAGE/initramfs-modules.txt" \
    "${WALDEN_BUSYBOX:-/bin/busybox}"; echo "$rootdir")"
if ! up_to_date "$out/.stamp-initrd" "$key" "$out/initrd.img"; then
    log "initrd.img: assembling"
    "$IMAGE/mkinitramfs.sh" "$rootdir/rootfs" "$kver" "$stage1" "$out/initrd.img"
    echo "$key" > "$out/.stamp-initrd"
fi

# Manifest: rewritten only when an artifact changed, so build_time says
# when this content was built.
sums="$(cd "$out" && sha256sum vmlinuz initrd.img root.squashfs)"
key="$(printf '%s\n%s\n' "$sums" "$VERSION" | sha256sum | cut -c1-16)"
if ! up_to_date "$out/.stamp-manifest" "$key" "$out/manifest.toml"; then
    {
        printf 'version = "%s"\n' "$VERSION"
        printf 'kernel_version = "%s"\n' "$kver"
        printf 'build_time = "%s"\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'packages = [\n'
        sed 's/.*/    "&",/' "$rootdir/packages.list"
        printf ']\n\n[artifacts]\n'
        printf '%s\n' "$sums" | awk '{ printf "\"%s\" = \"%s\"\n", $2, $1 }'
    } > "$out/manifest.toml"
    echo "$key" > "$out/.stamp-manifest"
fi

# Boot media.
usb="$BUILD/walden-$VERSION-usb.img"
iso="$BUILD/walden-$VERSION.iso"
media_key="$(hash_inputs "$out/manifest.toml" "$IMAGE/grub" "$IMAGE/lib.sh"; echo "$CMDLINE $GRUB_TIMEOUT")"
# WALDEN_USB_VERSIONS puts several built versions side by side on the ESP.
usb_versions="${WALDEN_USB_VERSIONS:-$VERSION}"
usb_manifests=()
for v in $usb_versions; do usb_manifests+=("$BUILD/images/$v/manifest.toml"); done
key="$(hash_inputs "$IMAGE/mkusb.sh" "${usb_manifests[@]}"; echo "$media_key ${WALDEN_USB_SIZE_MB:-} $usb_versions")"
if ! up_to_date "$out/.stamp-usb" "$key" "$usb"; then
    log "USB image: writing $usb ($usb_versions)"
    # shellcheck disable=SC2086 # a list of versions
    "$IMAGE/mkusb.sh" "$usb" "$BUILD/images" $usb_versions
    echo "$key" > "$out/.stamp-usb"
fi
key="$(hash_inputs "$IMAGE/mkiso.sh"; echo "$media_key")"
if ! up_to_date "$out/.stamp-iso" "$key" "$iso"; then
    log "ISO: writing $iso"
    "$IMAGE/mkiso.sh" "$iso" "$BUILD/images" "$VERSION"
    echo "$key" > "$out/.stamp-iso"
fi

log "walden $VERSION (kernel $kver), done in $(( $(date +%s) - t0 )) s:"
log "  root.squashfs  $(mib "$out/root.squashfs") MiB (budget 200 MiB)"
log "  initrd.img     $(mib "$out/initrd.img") MiB"
log "  vmlinuz        $(mib "$out/vmlinuz") MiB"
log "  $(basename "$usb")  $(mib "$usb") MiB ($(du -m "$usb" | cut -f1) MiB allocated)"
log "  $(basename "$iso")  $(mib "$iso") MiB"
