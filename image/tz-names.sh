#!/bin/bash
# Regenerate src/config/tz_names.txt (the time zones `config check` accepts)
# from this machine's tzdata; run on Debian bookworm, like the image build.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
zi=/usr/share/zoneinfo/tzdata.zi
{
    echo "# Time zone names walden accepts for host.toml's \`timezone\`: every Zone and"
    echo "# Link of Debian bookworm's tzdata ($(dpkg-query -W -f='${Version}' tzdata), $zi),"
    echo "# one per line. The image build checks that each has a file in the image's"
    echo "# /usr/share/zoneinfo (image/check-root.sh). Regenerate: image/tz-names.sh"
    awk '$1=="Z"{print $2} $1=="L"{print $3}' "$zi" | LC_ALL=C sort -u
} > "$repo/src/config/tz_names.txt"
