//! Tiny nested guests for the guest scenarios (issue 7): the image's own
//! Debian kernel plus a small busybox initramfs, their guest TOML, and the
//! config directory that carries them onto the image's config disk.
//!
//! The guest's `/init` (see [`init_script`]) prints `GUEST-UP <name> ...` on
//! ttyS0 once it can answer the ACPI power button (`button` + `evdev` are
//! modules in Debian's kernel, so they are loaded with `insmod`), with the
//! memory and CPUs its kernel sees; it prints `GUEST-DOWN <name> ...` and
//! powers off when the button is pressed, and optionally reports its NICs
//! (`GUEST-NIC`), its disks (`GUEST-DISK`) and whether it reaches an
//! address (`GUEST-PING`). Every line typed on its serial console comes
//! back as `GUEST-ECHO <name>: <line>` (`walden guest console`). What it is
//! told comes from its kernel command line (`walden.guest=`, `walden.ip=`,
//! `walden.ping=`, `walden.disks=`, `walden.ignore_button`), so one
//! initramfs serves every guest.
//!
//! The stub guest ([`build_stub`], qemu-tests/stub/) speaks the same
//! markers and reads the same command line without Linux: it drives
//! virtio-blk and virtio-scsi disks and an e1000 NIC itself. Under TCG
//! inside TCG the Linux guest needs 3-4 minutes to its marker, the stub
//! well under a second, so every image scenario boots the stub; the Linux
//! guest stays for the harness's own check that the image's kernel boots
//! as a guest (`harness_selftest`).
//!
//! "Crashing" a guest needs nothing inside it: the scenario kills the
//! guest's QEMU process on the host.
//!
//! Commands that must run inside the walden host during a scenario (killing
//! a QEMU, `walden config apply`) are `[[service]]` entries of the test's
//! host.toml: [`script_service`] wraps a shell script as one.

use crate::artifacts::Artifacts;
use crate::error::{Error, Result};
use crate::expect;
use crate::initramfs::Initramfs;
use crate::kernel_vm::{add_modules, kernel_release, modules_dir};
use crate::tools::run;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The static busybox the initramfs is built around (Debian `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Busybox applets `/init` uses.
pub const APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "cat", "cut", "grep", "sed", "head", "sleep", "poweroff", "ip",
    "ping", "tr", "readlink", "nproc",
];

/// Kernel modules the tiny guest loads (dependencies are added): the ACPI
/// power button and its input events, a virtio NIC, an e1000 NIC (`model =
/// "e1000"`), virtio-blk and SCSI disks on virtio-scsi (`bus = "scsi"`).
/// (Passed-through devices are checked by the stub guest's PCI list.)
pub const MODULES: &[&str] = &[
    "button",
    "evdev",
    "virtio_pci",
    "virtio_net",
    "e1000",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
];

/// Where the assets sit inside a config directory: `/config/images/tiny/`
/// on the image, as in examples/minimal/guests/tiny.toml.
pub const ASSETS_REL: &str = "images/tiny";

/// The kernel's path as guests on the image see it.
pub const KERNEL_ON_IMAGE: &str = "/config/images/tiny/vmlinuz";

/// The initramfs's path as guests on the image see it.
pub const INITRD_ON_IMAGE: &str = "/config/images/tiny/initrd.img";

/// The stub guest's multiboot kernel as guests on the image see it.
pub const STUB_ON_IMAGE: &str = "/config/images/tiny/stub.elf";

/// The stub guest's source and linker script (qemu-tests/stub/).
fn stub_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("stub")
}

/// The stub guest's C files: the boot, markers and power button
/// (stub.c), its disks (virtio.c) and its NIC (e1000.c).
pub const STUB_SOURCES: &[&str] = &["stub.c", "virtio.c", "e1000.c"];

/// Build the stub guest (qemu-tests/stub/, a multiboot kernel of a few
/// KiB: the markers, the power button, the console echo, its disks and a
/// ping without Linux) into `dest` with Debian's gcc and ld.
pub fn build_stub(dest: &Path) -> Result<()> {
    let src = stub_source();
    let script = format!("-Wl,-T,{}", src.join("stub.ld").display());
    let sources: Vec<String> = STUB_SOURCES
        .iter()
        .map(|f| src.join(f).display().to_string())
        .collect();
    let out = dest.display().to_string();
    run(
        "gcc",
        [
            "-m32",
            "-march=i686",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-ffreestanding",
            "-fno-pic",
            "-fno-pie",
            "-no-pie",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-nostdlib",
            "-static",
            "-Wl,--build-id=none",
            "-Wl,-z,noexecstack",
            "-Wl,--no-warn-rwx-segments",
            &script,
        ]
        .into_iter()
        .chain(sources.iter().map(String::as_str))
        .chain(["-o", &out]),
    )
    .map(drop)
}

/// The kernel and initramfs of the tiny guest, on this machine.
#[derive(Debug, Clone)]
pub struct TinyGuestAssets {
    /// The image's kernel (vmlinuz).
    pub kernel: PathBuf,
    /// The initramfs written by [`TinyGuestAssets::build`].
    pub initrd: PathBuf,
    /// The kernel release the modules belong to.
    pub release: String,
    /// The stub guest's kernel ([`build_stub`]).
    pub stub: PathBuf,
}

impl TinyGuestAssets {
    /// Build the initramfs for the image's kernel into `out_dir/tiny-initrd.cpio`
    /// (modules from the image root cache `make image` leaves).
    pub fn build(artifacts: &Artifacts, out_dir: &Path) -> Result<Self> {
        let kernel = artifacts.kernel()?;
        let release = kernel_release(&kernel)?;
        let modules = modules_dir(&artifacts.build_dir, &release)?;
        let mut initramfs = Initramfs::new();
        initramfs.busybox(Path::new(BUSYBOX), APPLETS)?;
        let order = add_modules(&mut initramfs, &modules, MODULES)?;
        initramfs.data("/init", init_script(&order), 0o755);
        // Not ".img": the harness deletes those from the test directory at
        // the end, and this file is worth keeping for a rerun by hand.
        let initrd = out_dir.join("tiny-initrd.cpio");
        initramfs.write(&initrd)?;
        let stub = out_dir.join("stub.elf");
        build_stub(&stub)?;
        Ok(Self {
            kernel,
            initrd,
            release,
            stub,
        })
    }

    /// A GPT disk image at `dest` with one EFI system partition holding
    /// GRUB as `\EFI\BOOT\BOOTX64.EFI` (the path UEFI firmware boots from
    /// removable and unconfigured disks) and the stub guest, which GRUB
    /// boots with `cmdline` (`multiboot2`). Debian's tools make it:
    /// grub-mkstandalone (grub-efi-amd64-bin), mkfs.fat and mcopy
    /// (dosfstools, mtools), sfdisk.
    pub fn uefi_disk(&self, cmdline: &str, dest: &Path) -> Result<()> {
        let work = dest.with_extension("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
        let cfg = work.join("grub.cfg");
        let text = format!(
            "set timeout=0\nsearch --no-floppy --file /walden-tiny --set=root\n\
             multiboot2 /stub.elf {cmdline}\nboot\n"
        );
        std::fs::write(&cfg, text).map_err(|e| Error::io("write", &cfg, e))?;
        let marker_file = work.join("walden-tiny");
        std::fs::write(&marker_file, "").map_err(|e| Error::io("write", &marker_file, e))?;
        let efi = work.join("BOOTX64.EFI");
        let grub_cfg = format!("boot/grub/grub.cfg={}", cfg.display());
        let efi_s = efi.display().to_string();
        run(
            "grub-mkstandalone",
            [
                "-O",
                "x86_64-efi",
                "--modules=part_gpt fat search multiboot2 normal",
                "-o",
                &efi_s,
                &grub_cfg,
            ],
        )?;
        // The disk: GPT with the ESP from 1 MiB, 40 MiB of FAT.
        const ESP_MIB: u64 = 40;
        let f = std::fs::File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        f.set_len((ESP_MIB + 2) << 20)
            .map_err(|e| Error::io("size", dest, e))?;
        drop(f);
        gpt_esp(dest, ESP_MIB)?;
        let esp = format!("{}@@1M", dest.display());
        let sectors = (ESP_MIB << 20) / 512;
        run(
            "mformat",
            [
                "-i",
                &esp,
                "-F",
                "-v",
                "TINYESP",
                "-T",
                &sectors.to_string(),
                "::",
            ],
        )?;
        for dir in ["::/EFI", "::/EFI/BOOT"] {
            run("mmd", ["-i", &esp, dir])?;
        }
        let marker = work.join("walden-tiny");
        let copies = [
            (efi.as_path(), "::/EFI/BOOT/BOOTX64.EFI"),
            (marker.as_path(), "::/walden-tiny"),
            (self.stub.as_path(), "::/stub.elf"),
        ];
        for (src, to) in copies {
            let src = src.display().to_string();
            run("mcopy", ["-i", &esp, &src, to])?;
        }
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    /// Copy the kernel, initramfs and stub into `config_dir/images/tiny/`,
    /// where [`KERNEL_ON_IMAGE`], [`INITRD_ON_IMAGE`] and [`STUB_ON_IMAGE`]
    /// find them.
    pub fn install(&self, config_dir: &Path) -> Result<()> {
        let dir = config_dir.join(ASSETS_REL);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        for (src, name) in [
            (&self.kernel, "vmlinuz"),
            (&self.initrd, "initrd.img"),
            (&self.stub, "stub.elf"),
        ] {
            let dest = dir.join(name);
            std::fs::copy(src, &dest).map_err(|e| Error::io("copy to", &dest, e))?;
        }
        Ok(())
    }
}

/// Write a GPT to `disk` with one EFI system partition of `esp_mib` MiB
/// at 1 MiB (sfdisk reads its script on stdin).
fn gpt_esp(disk: &Path, esp_mib: u64) -> Result<()> {
    use std::io::Write;
    let script = format!(
        "label: gpt\nstart=2048,size={},type=U\n",
        (esp_mib << 20) / 512
    );
    let mut child = std::process::Command::new("sfdisk")
        .arg("--quiet")
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| Error::ToolMissing {
            tool: "sfdisk".into(),
            package: "fdisk",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::io("write the table of", disk, e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("wait for sfdisk on", disk, e))?;
    if !out.status.success() {
        return Err(Error::ToolFailed {
            command: format!("sfdisk --quiet {}", disk.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The command line a tiny guest named `name` boots with (plain QEMU or
/// its guest TOML); `extra` adds `walden.ip=`/`walden.ping=` and the like.
pub fn cmdline(name: &str, extra: &str) -> String {
    let mut line = format!("console=ttyS0 quiet panic=-1 walden.guest={name}");
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// `/init`: mount, load `modules` (archive paths in load order), read the
/// guest's orders from the command line, watch every "Power Button" input
/// device, print the markers, then idle as PID 1.
///
/// Orders on the command line: `walden.guest=NAME`; `walden.ip=CIDR` and
/// `walden.ping=ADDR` (configure the first NIC, ping ADDR);
/// `walden.disks=N` (wait up to 60 s for N virtio/SCSI disks, then print a
/// `GUEST-DISK` line for each); `walden.ignore_button` (a press only
/// prints `GUEST-IGNORED`: the guest never powers off by itself).
pub fn init_script(modules: &[PathBuf]) -> String {
    let insmods: String = modules
        .iter()
        .map(|m| {
            format!(
                "insmod {0} || echo \"GUEST-WARN $name: insmod {0} failed\"\n",
                m.display()
            )
        })
        .collect();
    format!(
        r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Only our own lines on the serial log (it is the guest's log file).
echo 1 > /proc/sys/kernel/printk
name=guest addr= peer= disks= ignore=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    walden.guest=*) name="${{arg#*=}}" ;;
    walden.ip=*) addr="${{arg#*=}}" ;;
    walden.ping=*) peer="${{arg#*=}}" ;;
    walden.disks=*) disks="${{arg#*=}}" ;;
    walden.ignore_button) ignore=1 ;;
  esac
done
{insmods}
# The power button: any event on its input device is a press.
watch() {{
  if [ -n "$ignore" ]; then
    while head -c 1 "$1" > /dev/null; do
      echo "{ignored} $name power button, ignored"
      sleep 1
    done
    return
  fi
  head -c 1 "$1" > /dev/null
  echo "{down} $name power button, powering off"
  poweroff -f
}}
buttons=0
for d in /sys/class/input/event*; do
  if grep -q "Power Button" "$d/device/name" 2>/dev/null; then
    watch "/dev/input/${{d##*/}}" &
    buttons=$((buttons + 1))
  fi
done
[ "$buttons" -gt 0 ] || echo "GUEST-WARN $name: no power button input device"
# The serial console answers (walden guest console): each line typed on it
# comes back with a prefix.
(while read -r line; do echo "{echo} $name: $line"; done) < /dev/ttyS0 > /dev/console 2>&1 &
# Disks: wait for the expected number (SCSI disks appear asynchronously).
if [ -n "$disks" ]; then
  try=0
  while [ "$try" -lt 60 ]; do
    n=0
    for b in /sys/block/vd* /sys/block/sd*; do [ -e "$b" ] && n=$((n + 1)); done
    [ "$n" -ge "$disks" ] && break
    sleep 1
    try=$((try + 1))
  done
  for b in /sys/block/vd* /sys/block/sd*; do
    [ -e "$b" ] || continue
    d="${{b##*/}}"
    echo "{disk} $name $d size=$(cat "$b/size") ro=$(cat "$b/ro") head=$(head -c 16 "/dev/$d" 2>/dev/null | tr -c 'A-Za-z0-9_-' '.')"
  done
fi
# NICs: address and driver.
for i in /sys/class/net/*; do
  n="${{i##*/}}"
  [ "$n" = lo ] && continue
  echo "{nic} $name $n mac=$(cat "$i/address") driver=$(readlink "$i/device/driver" | sed 's,.*/,,')"
done
mem=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
echo "{up} $name after $(cut -d' ' -f1 /proc/uptime 2>/dev/null || cat /proc/uptime) s, kernel $(cat /proc/sys/kernel/osrelease), mem $mem kB, cpus $(nproc)"
if [ -n "$addr" ]; then
  nic=
  for i in /sys/class/net/*; do
    i="${{i##*/}}"
    [ "$i" = lo ] || {{ nic="$i"; break; }}
  done
  if [ -z "$nic" ]; then
    echo "{ping} $name $peer failed: no network interface"
  else
    ip link set "$nic" up
    ip addr add "$addr" dev "$nic"
    if [ -n "$peer" ]; then
      result=failed
      for try in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        if ping -c 1 -W 3 "$peer" > /dev/null 2>&1; then result=ok; break; fi
      done
      echo "{ping} $name $peer $result (via $nic $addr)"
    fi
  fi
fi
while :; do sleep 3600; done
"#,
        up = expect::GUEST_UP,
        down = expect::GUEST_DOWN,
        ignored = expect::GUEST_IGNORED,
        echo = expect::GUEST_ECHO,
        disk = expect::GUEST_DISK,
        nic = expect::GUEST_NIC,
        ping = expect::GUEST_PING,
    )
}

/// What a `GUEST-UP` line says about the guest's hardware: MemTotal in
/// KiB and the number of online CPUs, as its own kernel sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpFacts {
    /// `MemTotal` of /proc/meminfo, KiB.
    pub mem_kib: u64,
    /// `nproc`.
    pub cpus: u32,
}

/// Parse the facts of a `GUEST-UP <name> after .. s, kernel .., mem N kB,
/// cpus M` line (None when the line has no such fields).
pub fn up_facts(line: &str) -> Option<UpFacts> {
    let mem = line.split(", mem ").nth(1)?;
    let mem_kib = mem.split_whitespace().next()?.parse().ok()?;
    let cpus = line.split(", cpus ").nth(1)?;
    let cpus = cpus.split_whitespace().next()?.parse().ok()?;
    Some(UpFacts { mem_kib, cpus })
}

/// One tiny guest's `guests/NAME.toml`.
#[derive(Debug, Clone)]
pub struct TinyGuest {
    /// The guest's name (file stem).
    pub name: String,
    /// Memory in MiB (default 128).
    pub memory_mib: u32,
    /// vcpus (default 1).
    pub vcpus: u32,
    /// `cpu = { weight = .. }` when set.
    pub cpu_weight: Option<u32>,
    /// `cpu = { max = "N%" }` when set.
    pub cpu_max_pct: Option<u32>,
    /// `autostart` (default true).
    pub autostart: bool,
    /// `balloon = true`.
    pub balloon: bool,
    /// `vnc = true`.
    pub vnc: bool,
    /// Guests that must run first.
    pub after: Vec<String>,
    /// `restart = ..` when set.
    pub restart: Option<String>,
    /// `shutdown_timeout = ..` (default "60s").
    pub shutdown_timeout: String,
    /// Extra kernel command line (see [`cmdline`]).
    pub cmdline_extra: String,
    /// The `[[nic]]` tables.
    pub nics: Vec<TinyNic>,
    /// Further TOML appended verbatim (`[[disk]]`, `[[pci]]` tables).
    pub tables: String,
    /// Boot through UEFI firmware (OVMF) from a disk instead of QEMU's
    /// direct kernel boot ([`TinyGuestAssets::uefi_disk`]).
    pub uefi: bool,
    /// Boot the stub guest ([`build_stub`]) instead of Linux: the same
    /// `GUEST-UP`/`GUEST-DOWN`/`GUEST-IGNORED`/`GUEST-ECHO` lines at once,
    /// nothing else (no NIC, disk or ping lines; its `mem` is the RAM the
    /// firmware reports, `cpus` the enabled CPUs of the ACPI MADT).
    pub stub: bool,
    /// The stub's `[boot] initrd` (a path on the image), when set: the
    /// stub reports it as `GUEST-MODULE`.
    pub stub_initrd: Option<String>,
}

/// One `[[nic]]` of a tiny guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyNic {
    /// `bridge`.
    pub bridge: String,
    /// `vlan`.
    pub vlan: Option<u16>,
    /// `mac`.
    pub mac: Option<String>,
    /// `model`.
    pub model: Option<String>,
}

impl TinyGuest {
    /// A guest with 128 MiB, one vcpu, autostart, no NIC.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            memory_mib: 128,
            vcpus: 1,
            cpu_weight: None,
            cpu_max_pct: None,
            autostart: true,
            balloon: false,
            vnc: false,
            after: Vec::new(),
            restart: None,
            shutdown_timeout: "60s".into(),
            cmdline_extra: String::new(),
            nics: Vec::new(),
            tables: String::new(),
            uefi: false,
            stub: false,
            stub_initrd: None,
        }
    }

    /// Boot the stub guest with `path` (on the image) as its `[boot]
    /// initrd`: the stub prints its size and first bytes (`GUEST-MODULE`).
    pub fn stub_initrd(mut self, path: &str) -> Self {
        self.stub = true;
        self.stub_initrd = Some(path.to_string());
        self
    }

    /// Boot the stub guest instead of Linux (see the `stub` field): for
    /// scenarios where the guest OS does not matter.
    pub fn stub(mut self) -> Self {
        self.stub = true;
        self
    }

    /// Boot with `[boot] firmware = "uefi"` from a small EFI system disk
    /// (OVMF -> GRUB -> the stub guest), instead of QEMU's direct kernel
    /// boot; [`config_dir`] makes the disk. What such a guest proves is the
    /// firmware path, so it is always the stub (the field is set too).
    pub fn uefi(mut self) -> Self {
        self.uefi = true;
        self.stub = true;
        self
    }

    /// The UEFI disk's path as the guest on the image sees it.
    pub fn uefi_disk_on_image(&self) -> String {
        format!("/config/{ASSETS_REL}/uefi-{}.img", self.name)
    }

    /// `memory = "<mib>MiB"`.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// `vcpus = n`.
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = n;
        self
    }

    /// `cpu = { weight = weight, max = "<max_pct>%" }`.
    pub fn cpu(mut self, weight: u32, max_pct: u32) -> Self {
        self.cpu_weight = Some(weight);
        self.cpu_max_pct = Some(max_pct);
        self
    }

    /// `autostart = false`: started only by `walden guest start`.
    pub fn manual(mut self) -> Self {
        self.autostart = false;
        self
    }

    /// `balloon = true`.
    pub fn balloon(mut self) -> Self {
        self.balloon = true;
        self
    }

    /// `vnc = true`.
    pub fn vnc(mut self) -> Self {
        self.vnc = true;
        self
    }

    /// `shutdown_timeout = "<t>"`.
    pub fn shutdown_timeout(mut self, t: &str) -> Self {
        self.shutdown_timeout = t.to_string();
        self
    }

    /// The guest ignores the ACPI power button (it prints `GUEST-IGNORED`
    /// for each press and never powers off by itself).
    pub fn ignoring_the_power_button(self) -> Self {
        self.kernel_arg("walden.ignore_button")
    }

    /// Add `arg` to the guest's kernel command line.
    pub fn kernel_arg(mut self, arg: &str) -> Self {
        if !self.cmdline_extra.is_empty() {
            self.cmdline_extra.push(' ');
        }
        self.cmdline_extra.push_str(arg);
        self
    }

    /// Start only after `other` runs.
    pub fn after(mut self, other: &str) -> Self {
        self.after.push(other.to_string());
        self
    }

    /// `restart = "always" | "on-failure" | "never"`.
    pub fn restart(mut self, policy: &str) -> Self {
        self.restart = Some(policy.to_string());
        self
    }

    /// A virtio NIC on `bridge` (untagged in `vlan` when given), configured
    /// in the guest as `addr` (CIDR), pinging `peer`.
    pub fn nic_pinging(mut self, bridge: &str, vlan: Option<u16>, addr: &str, peer: &str) -> Self {
        self.nics.push(TinyNic {
            bridge: bridge.to_string(),
            vlan,
            mac: None,
            model: None,
        });
        self.kernel_arg(&format!("walden.ip={addr} walden.ping={peer}"))
    }

    /// Give the last NIC `mac = ..` and `model = ..`.
    pub fn nic_mac_model(mut self, mac: &str, model: &str) -> Self {
        if let Some(nic) = self.nics.last_mut() {
            nic.mac = Some(mac.to_string());
            nic.model = Some(model.to_string());
        }
        self
    }

    /// Pass through the host device `[[vfio]]` labels `label`.
    pub fn pci_label(mut self, label: &str) -> Self {
        let _ = write!(self.tables, "\n[[pci]]\nlabel = \"{label}\"\n");
        self
    }

    /// Pass through the host device at PCI address `addr` (a `[[vfio]]`
    /// `pci` of host.toml).
    pub fn pci_device(mut self, addr: &str) -> Self {
        let _ = write!(self.tables, "\n[[pci]]\ndevice = \"{addr}\"\n");
        self
    }

    /// A `[[disk]]` table with `keys` (TOML lines, e.g. `path = ".."`).
    pub fn disk(mut self, keys: &[&str]) -> Self {
        self.tables.push_str("\n[[disk]]\n");
        for k in keys {
            self.tables.push_str(k);
            self.tables.push('\n');
        }
        self
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        let after: Vec<String> = self.after.iter().map(|a| format!("\"{a}\"")).collect();
        let mut t = format!(
            "schema = 1\nmemory = \"{}MiB\"\nvcpus = {}\nafter = [{}]\nshutdown_timeout = \"{}\"\n",
            self.memory_mib,
            self.vcpus,
            after.join(", "),
            self.shutdown_timeout
        );
        let mut cpu = Vec::new();
        if let Some(w) = self.cpu_weight {
            cpu.push(format!("weight = {w}"));
        }
        if let Some(m) = self.cpu_max_pct {
            cpu.push(format!("max = \"{m}%\""));
        }
        if !cpu.is_empty() {
            let _ = writeln!(t, "cpu = {{ {} }}", cpu.join(", "));
        }
        if !self.autostart {
            t.push_str("autostart = false\n");
        }
        if self.balloon {
            t.push_str("balloon = true\n");
        }
        if self.vnc {
            t.push_str("vnc = true\n");
        }
        if let Some(r) = &self.restart {
            let _ = writeln!(t, "restart = \"{r}\"");
        }
        if self.uefi {
            let _ = write!(
                t,
                "\n[boot]\nfirmware = \"uefi\"\n\n[[disk]]\npath = \"{}\"\nformat = \"raw\"\nread_only = true\n",
                self.uefi_disk_on_image()
            );
        } else if self.stub {
            let _ = write!(
                t,
                "\n[boot]\nkernel = \"{STUB_ON_IMAGE}\"\ncmdline = \"{}\"\n",
                cmdline(&self.name, &self.cmdline_extra)
            );
            if let Some(i) = &self.stub_initrd {
                let _ = writeln!(t, "initrd = \"{i}\"");
            }
        } else {
            let _ = write!(
                t,
                "\n[boot]\nkernel = \"{KERNEL_ON_IMAGE}\"\ninitrd = \"{INITRD_ON_IMAGE}\"\ncmdline = \"{}\"\n",
                cmdline(&self.name, &self.cmdline_extra)
            );
        }
        for nic in &self.nics {
            let _ = write!(t, "\n[[nic]]\nbridge = \"{}\"\n", nic.bridge);
            if let Some(id) = nic.vlan {
                let _ = writeln!(t, "vlan = {id}");
            }
            if let Some(mac) = &nic.mac {
                let _ = writeln!(t, "mac = \"{mac}\"");
            }
            if let Some(model) = &nic.model {
                let _ = writeln!(t, "model = \"{model}\"");
            }
        }
        t.push_str(&self.tables);
        t
    }

    /// Write `config_dir/guests/NAME.toml`.
    pub fn write(&self, config_dir: &Path) -> Result<PathBuf> {
        let dir = config_dir.join("guests");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, self.toml()).map_err(|e| Error::io("write", &path, e))?;
        Ok(path)
    }
}

/// A config directory `dir` (emptied first) with `host_toml`, the guests'
/// files and the tiny guest's kernel and initramfs: the source of the
/// scenario's config disk.
pub fn config_dir(
    dir: &Path,
    host_toml: &str,
    guests: &[TinyGuest],
    assets: &TinyGuestAssets,
) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io("clear", dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let host = dir.join("host.toml");
    std::fs::write(&host, host_toml).map_err(|e| Error::io("write", &host, e))?;
    for g in guests {
        g.write(dir)?;
    }
    assets.install(dir)?;
    for g in guests.iter().filter(|g| g.uefi) {
        let disk = dir.join(ASSETS_REL).join(format!("uefi-{}.img", g.name));
        assets.uefi_disk(&cmdline(&g.name, &g.cmdline_extra), &disk)?;
    }
    Ok(dir.to_path_buf())
}

/// A `[[service]]` table running `script` once with `/bin/sh -c` inside
/// the walden host (how a scenario acts from the host: kill a QEMU, run
/// `walden config apply`). Lines the script writes to /dev/console appear
/// on the machine's serial console.
pub fn script_service(name: &str, script: &str) -> String {
    format!(
        "\n[[service]]\nname = \"{name}\"\ncommand = [\"/bin/sh\", \"-c\", {}]\nrestart = \"never\"\n",
        toml_string(script)
    )
}

/// A TOML basic string (quoted, with `\`, `"` and control characters escaped).
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_toml_boots_the_assets_with_its_name() {
        let t = TinyGuest::new("b").after("a").restart("always").toml();
        assert!(t.contains("memory = \"128MiB\""), "{t}");
        assert!(t.contains("after = [\"a\"]"), "{t}");
        assert!(t.contains("restart = \"always\""), "{t}");
        assert!(
            t.contains(&format!("kernel = \"{KERNEL_ON_IMAGE}\"")),
            "{t}"
        );
        assert!(t.contains("walden.guest=b"), "{t}");
    }

    #[test]
    fn stub_guest_boots_the_stub_without_an_initrd() {
        let t = TinyGuest::new("s").stub().toml();
        assert!(t.contains(&format!("kernel = \"{STUB_ON_IMAGE}\"")), "{t}");
        assert!(!t.contains("initrd"), "{t}");
    }

    #[test]
    fn nic_and_pci_tables_follow_the_boot_table() {
        let t = TinyGuest::new("v")
            .nic_pinging("br0", Some(20), "10.20.0.2/24", "10.20.0.1")
            .pci_label("nic")
            .toml();
        let boot = t.find("[boot]").unwrap();
        assert!(t.find("[[nic]]").unwrap() > boot, "{t}");
        assert!(t.contains("vlan = 20\n"), "{t}");
        assert!(t.contains("label = \"nic\""), "{t}");
        assert!(
            t.contains("walden.ip=10.20.0.2/24 walden.ping=10.20.0.1"),
            "{t}"
        );
    }

    #[test]
    fn script_service_escapes_the_script() {
        let s = script_service("x", "echo \"a\\b\"\nexit 0");
        assert!(
            s.contains(r#"command = ["/bin/sh", "-c", "echo \"a\\b\"\nexit 0"]"#),
            "{s}"
        );
    }

    #[test]
    fn init_script_loads_modules_before_printing_up() {
        let s = init_script(&[PathBuf::from("/lib/modules/x/button.ko")]);
        let insmod = s.find("insmod /lib/modules/x/button.ko").unwrap();
        let up = s.find(expect::GUEST_UP).unwrap();
        assert!(insmod < up);
        assert!(s.contains("poweroff -f"));
    }

    #[test]
    fn init_script_reports_memory_cpus_disks_and_nics_before_up() {
        let s = init_script(&[]);
        let up_line = s.lines().find(|l| l.contains(expect::GUEST_UP)).unwrap();
        assert!(
            up_line.contains(", mem $mem kB, cpus $(nproc)"),
            "{up_line}"
        );
        assert!(s.contains("MemTotal"), "{s}");
        let up = s.find(expect::GUEST_UP).unwrap();
        for marker in [expect::GUEST_DISK, expect::GUEST_NIC] {
            let at = s.find(&format!("echo \"{marker} ")).unwrap();
            assert!(at < up, "{marker} after {}", expect::GUEST_UP);
        }
        assert!(s.contains("walden.disks=*"), "{s}");
        // An ignoring guest prints a line per press and never powers off.
        let ignore = s.find("if [ -n \"$ignore\" ]").unwrap();
        let ignored = s.find(expect::GUEST_IGNORED).unwrap();
        let poweroff = s.find("poweroff -f").unwrap();
        assert!(ignore < ignored && ignored < poweroff, "{s}");
        assert!(
            s.contains(&format!("{} $name: $line", expect::GUEST_ECHO)),
            "{s}"
        );
        for applet in ["tr ", "readlink ", "nproc"] {
            assert!(s.contains(applet), "{applet}");
            assert!(
                APPLETS.contains(&applet.trim()),
                "{applet} is not in APPLETS"
            );
        }
    }

    #[test]
    fn up_facts_reads_memory_and_cpus() {
        let line =
            "guest-log: GUEST-UP z after 31.42 s, kernel 6.1.0-57-amd64, mem 187604 kB, cpus 2";
        assert_eq!(
            up_facts(line),
            Some(UpFacts {
                mem_kib: 187604,
                cpus: 2
            })
        );
        assert_eq!(up_facts("GUEST-UP a after 3 s, kernel 6.1"), None);
    }

    #[test]
    fn guest_toml_has_every_set_key() {
        let t = TinyGuest::new("z")
            .memory_mib(200)
            .vcpus(2)
            .cpu(600, 30)
            .balloon()
            .vnc()
            .manual()
            .shutdown_timeout("10s")
            .ignoring_the_power_button()
            .disk(&["path = \"/x.qcow2\"", "size = \"64MiB\""])
            .toml();
        for want in [
            "memory = \"200MiB\"\n",
            "vcpus = 2\n",
            "cpu = { weight = 600, max = \"30%\" }\n",
            "balloon = true\n",
            "vnc = true\n",
            "autostart = false\n",
            "shutdown_timeout = \"10s\"\n",
            "walden.guest=z walden.ignore_button\"",
            "\n[[disk]]\npath = \"/x.qcow2\"\nsize = \"64MiB\"\n",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
        let plain = TinyGuest::new("a").toml();
        for absent in ["cpu =", "balloon", "vnc", "autostart", "[[disk]]"] {
            assert!(!plain.contains(absent), "{absent} in\n{plain}");
        }
        // The top-level keys come before the first table.
        assert!(t.find("vnc = true").unwrap() < t.find("[boot]").unwrap());
    }

    #[test]
    fn nic_mac_and_model_and_pci_device() {
        let t = TinyGuest::new("v")
            .nic_pinging("br0", Some(20), "10.20.0.2/24", "10.20.0.1")
            .nic_mac_model("52:54:00:ab:cd:20", "e1000")
            .pci_device("0000:00:11.0")
            .toml();
        assert!(
            t.contains("[[nic]]\nbridge = \"br0\"\nvlan = 20\nmac = \"52:54:00:ab:cd:20\"\nmodel = \"e1000\"\n"),
            "{t}"
        );
        assert!(t.contains("[[pci]]\ndevice = \"0000:00:11.0\"\n"), "{t}");
    }
}
