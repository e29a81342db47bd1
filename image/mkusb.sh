#!/bin/bash
# Write the USB image: GPT with a BIOS boot partition (GRUB's core.img for
# BIOS) and a FAT32 ESP labelled WALDEN-BOOT holding GRUB for UEFI,
# grub/grub.cfg, grub/grubenv and images/<version>/ for each version given.
# Made on a plain file with sfdisk, mkfs.fat and mtools: no loop devices,
# no mounts.
#
# Usage: image/mkusb.sh OUT IMAGES_DIR VERSION...
#   IMAGES_DIR/<version>/{vmlinuz,initrd.img,root.squashfs,manifest.toml}
# Env: WALDEN_USB_SIZE_MB (default: 1024, or more when the versions need it),
#   WALDEN_BIN (the walden binary that generates grub.cfg; default: the
#   release build, which build.sh has just made)
. "$(dirname "$0")/lib.sh"

out="$1" images="$2"
shift 2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
esp="$work/esp"
mkdir -p "$esp/EFI/BOOT" "$esp/grub" "$esp/images"

for v in "$@"; do
    for f in vmlinuz initrd.img root.squashfs manifest.toml; do
        [ -f "$images/$v/$f" ] || die "$images/$v/$f missing"
    done
    cp -r "$images/$v" "$esp/images/$v"
    rm -f "$esp/images/$v"/.stamp-*
done
# grub.cfg comes from walden itself (src/images/grubcfg.rs), the same
# generator `walden image install` rewrites it with on the appliance.
walden="${WALDEN_BIN:-$REPO/target/release/walden}"
[ -x "$walden" ] || die "walden binary $walden missing (cargo build --release, or set WALDEN_BIN)"
"$walden" image grub-cfg --cmdline "$CMDLINE" --timeout "$GRUB_TIMEOUT" "$@" > "$esp/grub/grub.cfg"
grub-editenv "$esp/grub/grubenv" create
cp -r /usr/lib/grub/x86_64-efi "$esp/grub/"
cp -r /usr/lib/grub/i386-pc "$esp/grub/"
rm -f "$esp"/grub/*/*.image "$esp"/grub/*/*.img "$esp"/grub/*/*.efi "$esp"/grub/*/*.exec "$esp"/grub/*/*.module
# The core images carry image/grub/early.cfg (find the ESP by label, set
# the prefix; GRUB's embedded config may hold commands only, no comments).
# shellcheck disable=SC2086 # GRUB_MODULES is a word list
grub-mkimage -O x86_64-efi -o "$esp/EFI/BOOT/BOOTX64.EFI" -p /grub -c "$IMAGE/grub/early.cfg" $GRUB_MODULES
# shellcheck disable=SC2086
grub-mkimage -O i386-pc -o "$work/core.img" -p /grub -c "$IMAGE/grub/early.cfg" biosdisk $GRUB_MODULES

# Sizes in 512-byte sectors. Layout: 1 MiB gap, BIOS boot partition
# (1 MiB, LBA 2048), ESP from 2 MiB to 1 MiB before the end.
need_mb=$(( $(du -sm "$esp" | cut -f1) + 64 ))
size_mb="${WALDEN_USB_SIZE_MB:-1024}"
[ "$size_mb" -ge "$need_mb" ] || size_mb="$need_mb"
total=$(( size_mb * 2048 ))
esp_start=4096
esp_sectors=$(( total - esp_start - 2048 ))
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -le 2048 ] || die "GRUB core.img is $core_sectors sectors; the BIOS boot partition has 2048"

rm -f "$out.tmp"
truncate -s "${size_mb}M" "$out.tmp"
sfdisk --quiet --no-reread --no-tell-kernel "$out.tmp" <<SFDISK
label: gpt
unit: sectors
start=$esp_start, size=$esp_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="WALDEN-BOOT"
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="BIOS boot"
SFDISK

# The ESP, built as its own file then placed at its offset.
mkfs.fat -F 32 -n "$MEDIA_LABEL" -i 57a1de00 -C "$work/esp.img" $(( esp_sectors / 2 )) >/dev/null
mcopy -s -i "$work/esp.img" "$esp"/* ::/
dd if="$work/esp.img" of="$out.tmp" bs=1M seek=$(( esp_start / 2048 )) conv=notrunc,sparse status=none

# BIOS: GRUB's boot.img in the protective MBR's code area, core.img in the
# BIOS boot partition, patched the way grub-bios-setup would:
#  - boot.img 0x5c: LBA of core.img's first sector (8 bytes LE)
#  - boot.img 0x66: the floppy drive check replaced by two NOPs
#  - core.img 0x1f4: blocklist of the rest of core.img (start LBA, count)
put_le() { # FILE OFFSET BYTES VALUE
    local i hex=""
    for (( i = 0; i < $3; i++ )); do hex+="$(printf '\\x%02x' $(( ($4 >> (8 * i)) & 255 )))"; done
    printf "$hex" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
dd if=/usr/lib/grub/i386-pc/boot.img of="$out.tmp" bs=440 count=1 conv=notrunc status=none
put_le "$out.tmp" $(( 0x5c )) 8 2048
printf '\x90\x90' | dd of="$out.tmp" bs=1 seek=$(( 0x66 )) conv=notrunc status=none
dd if="$work/core.img" of="$out.tmp" bs=512 seek=2048 conv=notrunc status=none
put_le "$out.tmp" $(( 2048 * 512 + 0x1f4 )) 8 2049
put_le "$out.tmp" $(( 2048 * 512 + 0x1fc )) 2 $(( core_sectors - 1 ))
mv "$out.tmp" "$out"
