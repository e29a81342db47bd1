# shellcheck shell=bash
# The one mmdebstrap recipe of both roots, walden's (image/mkroot.sh) and
# the bench baseline's (image/baseline/build.sh), so they differ only in
# their packages. Sourced after lib.sh; part of both roots' cache keys.
#
# debian_root ROOT PACKAGES [MMDEBSTRAP_ARG...]
#   Debian $SUITE minbase into ROOT with PACKAGES (comma-separated): no
#   recommends or suggests; no man pages, info, docs, translations or
#   lintian overrides (copyright files stay); /usr merged by the merged-usr
#   hook with usr-is-merged instead of the usrmerge package, which would
#   drag perl in. Downloaded .debs come from and go back to $CACHE/apt and
#   none is left in the root. Extra arguments (more hooks) run before the
#   .debs are removed.
debian_root() {
    local root="$1" packages="$2"
    shift 2
    mkdir -p "$CACHE/apt"
    mmdebstrap --variant=minbase --mode=root --format=directory \
        --aptopt='Apt::Install-Recommends "false"' \
        --aptopt='Apt::Install-Suggests "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --include="$packages" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --skip=download/empty --skip=essential/unlink \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
        --setup-hook="sync-in '$CACHE/apt' /var/cache/apt/archives/" \
        "$@" \
        --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
        "$SUITE" "$root" \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY_MIRROR $SUITE-security main" >&2
}
