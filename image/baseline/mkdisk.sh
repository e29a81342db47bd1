#!/bin/bash
# Make the baseline's root disk with tiny guests defined and set to
# autostart, the way `virsh define` + `virsh autostart` leave them: domain
# XML in /etc/libvirt/qemu/, a symlink in /etc/libvirt/qemu/autostart/.
#
# Usage: image/baseline/mkdisk.sh ROOTDIR OUT.img KERNEL INITRD GUEST...
#   ROOTDIR  what image/baseline/build.sh printed
#   KERNEL, INITRD  the tiny guest's (qemu-tests/src/guest_assets.rs),
#            copied to /var/lib/libvirt/images/tiny/
#   GUEST    names; each boots like walden's guests/NAME.toml of the bench:
#            128 MiB, 1 vcpu, q35, direct kernel boot, serial log file
#
# OUT.img is a raw ext4 file system labelled BASELINE-ROOT (the kernel
# command line says root=LABEL=BASELINE-ROOT).
. "$(dirname "$0")/../lib.sh"

[ "$#" -ge 4 ] || die "usage: $0 ROOTDIR OUT.img KERNEL INITRD GUEST..."
rootdir="$1" out="$2" kernel="$3" initrd="$4"
shift 4
[ -f "$rootdir/.complete" ] || die "$rootdir is not a built baseline root (run image/baseline/build.sh)"

stage="$out.stage"
rm -rf "$stage"
trap 'rm -rf "$stage"' EXIT
# Hard links: only new files are written below, the cached root stays as it is.
cp -al "$rootdir/rootfs" "$stage"

logdir=/var/log/libvirt/guests
images=/var/lib/libvirt/images/tiny
install -d "$stage$logdir" "$stage$images" "$stage/etc/libvirt/qemu/autostart"
install -m 644 "$kernel" "$stage$images/vmlinuz"
install -m 644 "$initrd" "$stage$images/initrd.img"
printf 'BENCH_LOG_DIR=%s\nBENCH_GUESTS="%s"\n' "$logdir" "$*" > "$stage/etc/default/bench-observe"

for name in "$@"; do
    uuid="$(cat /proc/sys/kernel/random/uuid)"
    # The same machine as walden's domain XML (src/guests/domain.rs) for a
    # guest without disks or NICs; TCG inside the TCG host (no /dev/kvm).
    cat > "$stage/etc/libvirt/qemu/$name.xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <memory unit='KiB'>131072</memory>
  <currentMemory unit='KiB'>131072</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$images/vmlinuz</kernel>
    <initrd>$images/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 walden.guest=$name</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'>
      <log file='$logdir/$name.log' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
    ln -s "/etc/libvirt/qemu/$name.xml" "$stage/etc/libvirt/qemu/autostart/$name.xml"
done

size_mib=$(( $(du -sm "$stage" | cut -f1) + 512 ))
rm -f "$out"
mkfs.ext4 -q -F -L BASELINE-ROOT -d "$stage" "$out" "${size_mib}M"
log "baseline disk: $out ($size_mib MiB, guests: $*)"
