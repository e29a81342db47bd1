#!/bin/bash
# Install the host packages of image/build-deps.txt that are missing.
# Usage: image/deps.sh
. "$(dirname "$0")/lib.sh"

missing=()
while read -r pkg; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done < <(list "$IMAGE/build-deps.txt")

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
