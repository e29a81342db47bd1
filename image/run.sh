#!/bin/bash
# Boot the USB image in QEMU (TCG, q35, OVMF), headless: the serial
# console is this terminal. Builds the image first if needed.
#
# Usage: image/run.sh [extra qemu arguments]
# Env:
#   WALDEN_RUN_FIRMWARE=uefi|bios   OVMF (default) or SeaBIOS
#   WALDEN_RUN_MEDIA=usb|iso        the USB image (default) or the ISO as a CD
#   WALDEN_RUN_BUS=usb|virtio       how the USB image is attached (default usb:
#                                   an emulated USB stick on xHCI)
#   WALDEN_RUN_CONFIG=DIR           config directory (default examples/minimal;
#                                   examples/appliance-qemu boots the complete
#                                   appliance, with a device passed through)
#   WALDEN_RUN_NOBUILD=1            do not run image/build.sh first
#   WALDEN_RUN_DIR=DIR              where the run's disks and sockets go
#                                   (default build/run)
#   WALDEN_RUN_SSH_PORT=PORT        forward 127.0.0.1:PORT to the box's sshd
#                                   (`ssh -p PORT root@127.0.0.1` once host.toml
#                                   has your key in [ssh] authorized_keys)
#   WALDEN_RUN_CPU=MODEL            QEMU's -cpu (default qemu64,-svm: QEMU's
#                                   own model without SVM, so nested guests run
#                                   under TCG; KVM-on-TCG has hung and crashed
#                                   QEMU 7.2, see qemu-tests/src/builder.rs)
#
# The config disk (ext4, label WALDEN-CONFIG) is made fresh from the config
# directory on every run; the boot media is a fresh copy of the built image,
# so nothing a run writes survives it. The control socket of walden is
# reachable at build/run/control.sock (virtio-serial port org.walden.control),
# QEMU's monitor (QMP) at build/run/qmp.sock: the power button from another
# terminal is
#   printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"system_powerdown"}' |
#       socat - unix-connect:build/run/qmp.sock
. "$(dirname "$0")/lib.sh"

[ -n "${WALDEN_RUN_NOBUILD:-}" ] || "$IMAGE/build.sh"

run="${WALDEN_RUN_DIR:-$BUILD/run}"
mkdir -p "$run"
firmware="${WALDEN_RUN_FIRMWARE:-uefi}"
media="${WALDEN_RUN_MEDIA:-usb}"
bus="${WALDEN_RUN_BUS:-usb}"

# Config disk.
config="${WALDEN_RUN_CONFIG:-$REPO/examples/minimal}"
if [ ! -d "$config" ]; then
    log "no $config yet; using a minimal host.toml"
    config="$run/config-default"
    mkdir -p "$config"
    printf 'schema = 1\nhostname = "walden"\n' > "$config/host.toml"
fi
# Guests booting the tiny guest of examples/minimal get it on the disk
# (the image's kernel + a busybox initramfs; qemu-tests/src/guest_assets.rs).
rm -rf "$run/config-src"
cp -a "$config" "$run/config-src"
if grep -qs '/config/images/tiny/' "$run/config-src"/guests/*.toml; then
    log "adding the tiny guest's kernel and initramfs to the config disk"
    (cd "$REPO" && cargo run --quiet -p qemu-tests --bin tiny-guest -- "$run/config-src")
fi
rm -f "$run/config.img"
truncate -s 256M "$run/config.img"
mkfs.ext4 -q -F -L WALDEN-CONFIG -d "$run/config-src" "$run/config.img"

args=(-accel tcg -cpu "${WALDEN_RUN_CPU:-qemu64,-svm}" -m 2048 -smp 2 -nographic)
# A config with [[vfio]] gets something to pass through: an emulated Intel
# IOMMU and a spare e1000e at 0000:00:10.0 (examples/appliance-qemu).
if grep -qs '^\[\[vfio\]\]' "$config/host.toml"; then
    log "host.toml has [[vfio]]: adding an IOMMU and an e1000e at 0000:00:10.0"
    args+=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on
           -device e1000e,addr=0x10,mac=52:54:00:98:00:10)
else
    args+=(-machine q35)
fi
if [ "$firmware" = uefi ]; then
    code=/usr/share/OVMF/OVMF_CODE_4M.fd
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$run/OVMF_VARS.fd"
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
           -drive "if=pflash,format=raw,unit=1,file=$run/OVMF_VARS.fd")
fi

case "$media" in
usb)
    cp --sparse=always "$BUILD/walden-$VERSION-usb.img" "$run/boot.img"
    args+=(-drive "if=none,id=boot,format=raw,file=$run/boot.img")
    if [ "$bus" = usb ]; then
        args+=(-device qemu-xhci,id=xhci -device usb-storage,bus=xhci.0,drive=boot,bootindex=0)
    else
        args+=(-device virtio-blk-pci,drive=boot,bootindex=0)
    fi
    ;;
iso)
    args+=(-drive "if=none,id=boot,media=cdrom,readonly=on,file=$BUILD/walden-$VERSION.iso"
           -device ide-cd,drive=boot,bootindex=0)
    ;;
*) die "WALDEN_RUN_MEDIA must be usb or iso, not $media" ;;
esac

rm -f "$run/control.sock" "$run/qmp.sock"
args+=(-drive "if=none,id=config,format=raw,file=$run/config.img" -device virtio-blk-pci,drive=config
       -netdev "user,id=net0${WALDEN_RUN_SSH_PORT:+,hostfwd=tcp:127.0.0.1:$WALDEN_RUN_SSH_PORT-:22}"
       -device virtio-net-pci,netdev=net0
       -device virtio-serial -device virtio-rng-pci
       -chardev "socket,id=ctl,path=$run/control.sock,server=on,wait=off"
       -device virtserialport,chardev=ctl,name=org.walden.control
       -qmp "unix:$run/qmp.sock,server=on,wait=off")

log "booting walden $VERSION ($media, $firmware) under QEMU/TCG; quit with Ctrl-A X"
exec qemu-system-x86_64 "${args[@]}" "$@"
