# shellcheck shell=bash
# Shared settings and helpers of the image scripts. Sourced, not run.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="$REPO/image"
BUILD="${WALDEN_BUILD_DIR:-$REPO/build}"
CACHE="$BUILD/cache"

# The image version: Cargo.toml's package version unless WALDEN_VERSION says
# otherwise (later tests build two versions side by side).
cargo_version() {
    sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1
}
VERSION="${WALDEN_VERSION:-$(cargo_version)}"

# Debian archive. bookworm + updates + security, like the host's sources.
SUITE=bookworm
MIRROR="${WALDEN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${WALDEN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

# Label of the boot media: the USB image's ESP and the ISO's volume id.
MEDIA_LABEL=WALDEN-BOOT

# Kernel command line for every boot entry. Serial first: console= given
# last becomes /dev/console, where stage 1 and walden print.
CMDLINE="console=tty0 console=ttyS0,115200n8 panic=10 quiet${WALDEN_CMDLINE_EXTRA:+ $WALDEN_CMDLINE_EXTRA}"
# Seconds GRUB shows its menu; a grubenv variable `timeout` overrides it.
GRUB_TIMEOUT="${WALDEN_GRUB_TIMEOUT:-2}"

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

# Print the lines of a list file without comments and blank lines.
list() { sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$1"; }

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# A hash over files and whole directory trees (names, modes and contents).
hash_inputs() {
    local p
    for p in "$@"; do
        if [ -d "$p" ]; then
            (cd "$p" && find . -print0 | LC_ALL=C sort -z |
                xargs -0 stat -c '%n %a %F' && find . -type f -print0 |
                LC_ALL=C sort -z | xargs -0 -r sha256sum)
        elif [ -e "$p" ]; then
            printf '%s\n' "$p"; cat "$p"
        else
            printf 'missing %s\n' "$p"
        fi
    done | sha256sum | cut -c1-16
}

# up_to_date STAMP KEY OUTPUT...: true when every output exists and STAMP
# holds KEY (the hash of the inputs that made them).
up_to_date() {
    local stamp="$1" key="$2" out
    shift 2
    for out in "$@"; do [ -e "$out" ] || return 1; done
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]
}

mib() { echo "$(( ($(stat -c %s "$1") + 1048575) / 1048576 ))"; }

# grub_cfg KIND VERSION...: the boot menu for KIND (usb or iso) listing the
# versions newest first.
grub_cfg() {
    local kind="$1" v entries="" env=""
    shift
    for v in $(printf '%s\n' "$@" | sort -rV); do
        entries+="$(sed -e "s|@V@|$v|g" -e "s|@CMDLINE@|$CMDLINE|" "$IMAGE/grub/entry.cfg.in")"$'\n'
    done
    [ "$kind" = usb ] && env="$(cat "$IMAGE/grub/env-usb.cfg")"
    awk -v timeout="$GRUB_TIMEOUT" -v env="$env" -v entries="$entries" '
        { gsub(/@TIMEOUT@/, timeout) }
        /^@ENV@$/ { print env; next }
        /^@ENTRIES@$/ { printf "%s", entries; next }
        { print }' "$IMAGE/grub/grub.cfg.in"
}

# GRUB modules built into the core images (BIOS and UEFI).
GRUB_MODULES="part_gpt part_msdos fat iso9660 search search_label search_fs_uuid normal
    configfile linux echo test loadenv serial terminal sleep reboot halt ls cat gzio minicmd
    all_video"
