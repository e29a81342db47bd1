#!/bin/bash
# Assemble the initramfs: walden as /init (stage 1) with the libraries it
# links, the kernel modules needed to reach the boot media, and a static
# busybox for the emergency shell only.
#
# Usage: image/mkinitramfs.sh ROOTFS KVER WALDEN_BIN OUT
#   ROOTFS      the image root (libraries and modules are taken from it, so
#               they match what the squashfs has)
#   OUT         zstd-compressed newc cpio
. "$(dirname "$0")/lib.sh"

rootfs="$1" kver="$2" bin="$3" out="$4"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mods="lib/modules/$kver"
mkdir -p "$work"/{bin,dev,proc,sys,run,newroot,etc/walden,"$mods"}

install -m 0755 "$bin" "$work/init"

# Shared libraries of walden, from the image root (same Debian libc).
ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
    src="$rootfs$lib"
    [ -e "$src" ] || { log "warning: $lib not in the image root; copying the host's"; src="$lib"; }
    mkdir -p "$work$(dirname "$lib")"
    cp -L "$src" "$work$lib"
done

# busybox, statically linked, for the emergency shell.
busybox="${WALDEN_BUSYBOX:-/bin/busybox}"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install busybox-static (it replaces busybox)"
fi
install -m 0755 "$busybox" "$work/bin/busybox"
for applet in $("$work/bin/busybox" --list); do
    [ -e "$work/bin/$applet" ] || ln -s busybox "$work/bin/$applet"
done

# Modules and their dependencies, as modprobe in the image resolves them.
list "$IMAGE/initramfs-modules.txt" > "$work/etc/walden/modules"
while read -r m; do
    deps="$(chroot "$rootfs" modprobe --set-version "$kver" --show-depends "$m" 2>&1)" ||
        die "module $m: $deps"
    printf '%s\n' "$deps" | awk '$1 == "insmod" { print $2 }'
done < "$work/etc/walden/modules" | sort -u | while read -r path; do
    mkdir -p "$work$(dirname "$path")"
    cp "$rootfs$path" "$work$path"
done
# modules.dep restricted to what is here; modules.builtin whole.
(cd "$work/$mods" && find kernel -name '*.ko*' | LC_ALL=C sort) > "$work/present"
awk -F: 'NR==FNR { have[$1]=1; next } ($1 in have)' "$work/present" "$rootfs/$mods/modules.dep" \
    > "$work/$mods/modules.dep"
rm "$work/present"
cp "$rootfs/$mods/modules.builtin" "$work/$mods/"

# The kernel opens /dev/console for /init before devtmpfs is mounted.
mknod -m 600 "$work/dev/console" c 5 1

# Reproducible archive: sorted names, fixed times.
find "$work" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
(cd "$work" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --reproducible --quiet) | zstd -q -19 -T0 > "$out.tmp"
mv "$out.tmp" "$out"
