#!/bin/bash
# Delete the kernel modules an appliance does not need.
# Usage: image/prune-modules.sh ROOT KVER KEEP_LIST
# KEEP_LIST holds globs under /lib/modules/KVER/kernel/; a module is kept
# when it matches one or when a kept module depends on it (modules.dep
# lists dependencies transitively). depmod is re-run afterwards.
. "$(dirname "$0")/lib.sh"

root="$1" kver="$2" keep_list="$3"
mods="$root/lib/modules/$kver"
[ -f "$mods/modules.dep" ] || die "$mods/modules.dep missing"
keep="$(mktemp)"
trap 'rm -f "$keep" "$keep.all"' EXIT

(
    cd "$mods"
    while read -r pattern; do
        # shellcheck disable=SC2086 # the pattern is a glob on purpose
        for p in kernel/$pattern; do
            if [ -e "$p" ]; then find "$p" -name '*.ko*'; fi
        done
    done < <(list "$keep_list")
) | LC_ALL=C sort -u > "$keep"

# Add dependencies: modules.dep lines are "path: dep dep ...".
awk -F': *' 'NR==FNR { want[$1]=1; next }
    ($1 in want) { print $1; n=split($2, d, " "); for (i=1;i<=n;i++) print d[i] }' \
    "$keep" "$mods/modules.dep" | LC_ALL=C sort -u > "$keep.all"

before=$(find "$mods/kernel" -name '*.ko*' | wc -l)
(cd "$mods" && find kernel -name '*.ko*' | LC_ALL=C sort | comm -23 - "$keep.all" | xargs -r rm -f)
find "$mods/kernel" -type d -empty -delete
chroot "$root" depmod "$kver"
after=$(find "$mods/kernel" -name '*.ko*' | wc -l)
log "kernel modules: kept $after of $before ($(du -sm "$mods" | cut -f1) MiB)"
