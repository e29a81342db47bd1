#!/bin/bash
# Write the hybrid ISO (boots from CD and, written with dd, from a USB
# stick; BIOS and UEFI) with grub-mkrescue. Volume id WALDEN-BOOT, one
# version in images/<version>/.
#
# Usage: image/mkiso.sh OUT IMAGES_DIR VERSION
. "$(dirname "$0")/lib.sh"

out="$1" images="$2" v="$3"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/iso/boot/grub" "$work/iso/images"
cp -r "$images/$v" "$work/iso/images/$v"
rm -f "$work/iso/images/$v"/.stamp-*
grub_cfg iso "$v" > "$work/iso/boot/grub/grub.cfg"
# shellcheck disable=SC2086 # GRUB_MODULES is a word list
grub-mkrescue --quiet --modules="$GRUB_MODULES" \
    -o "$out.tmp" "$work/iso" -- -volid "$MEDIA_LABEL" 2> "$work/log" ||
    { cat "$work/log" >&2; die "grub-mkrescue failed"; }
mv "$out.tmp" "$out"
