//! Tiny nested guests for the guest scenarios (issue 7): the image's own
//! Debian kernel plus a small busybox initramfs, their guest TOML, and the
//! config directory that carries them onto the image's config disk.
//!
//! The guest's `/init` (see [`init_script`]) prints `GUEST-UP <name> ...` on
//! ttyS0 once it can answer the ACPI power button (`button` + `evdev` are
//! modules in Debian's kernel, so they are loaded with `insmod`), prints
//! `GUEST-DOWN <name> ...` and powers off when the button is pressed, and
//! optionally reports its passed-through devices' kernel log lines
//! (`GUEST-KLOG`) and whether it reaches an address (`GUEST-PING`). What it
//! is told comes from its kernel command line (`walden.guest=`,
//! `walden.ip=`, `walden.ping=`), so one initramfs serves every guest.
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
    "ping", "dmesg",
];

/// Kernel modules the tiny guest loads (dependencies are added): the ACPI
/// power button and its input events, a virtio NIC, an e1000e for passthrough.
pub const MODULES: &[&str] = &["button", "evdev", "virtio_pci", "virtio_net", "e1000e"];

/// Where the assets sit inside a config directory: `/config/images/tiny/`
/// on the image, as in examples/minimal/guests/tiny.toml.
pub const ASSETS_REL: &str = "images/tiny";

/// The kernel's path as guests on the image see it.
pub const KERNEL_ON_IMAGE: &str = "/config/images/tiny/vmlinuz";

/// The initramfs's path as guests on the image see it.
pub const INITRD_ON_IMAGE: &str = "/config/images/tiny/initrd.img";

/// The kernel and initramfs of the tiny guest, on this machine.
#[derive(Debug, Clone)]
pub struct TinyGuestAssets {
    /// The image's kernel (vmlinuz).
    pub kernel: PathBuf,
    /// The initramfs written by [`TinyGuestAssets::build`].
    pub initrd: PathBuf,
    /// The kernel release the modules belong to.
    pub release: String,
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
        Ok(Self {
            kernel,
            initrd,
            release,
        })
    }

    /// A GPT disk image at `dest` with one EFI system partition holding
    /// GRUB as `\EFI\BOOT\BOOTX64.EFI` (the path UEFI firmware boots from
    /// removable and unconfigured disks), the kernel and the initramfs;
    /// GRUB boots the kernel with `cmdline`. Debian's tools make it:
    /// grub-mkstandalone (grub-efi-amd64-bin), mkfs.fat and mcopy
    /// (dosfstools, mtools), sfdisk.
    pub fn uefi_disk(&self, cmdline: &str, dest: &Path) -> Result<()> {
        let work = dest.with_extension("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
        let cfg = work.join("grub.cfg");
        let text = format!(
            "set timeout=0\nsearch --no-floppy --file /walden-tiny --set=root\n\
             linux /vmlinuz {cmdline}\ninitrd /initrd.img\nboot\n"
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
                "--modules=part_gpt fat search linux normal",
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
            (self.kernel.as_path(), "::/vmlinuz"),
            (self.initrd.as_path(), "::/initrd.img"),
            (marker.as_path(), "::/walden-tiny"),
        ];
        for (src, to) in copies {
            let src = src.display().to_string();
            run("mcopy", ["-i", &esp, &src, to])?;
        }
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    /// Copy the kernel and initramfs into `config_dir/images/tiny/`, where
    /// [`KERNEL_ON_IMAGE`] and [`INITRD_ON_IMAGE`] find them.
    pub fn install(&self, config_dir: &Path) -> Result<()> {
        let dir = config_dir.join(ASSETS_REL);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        for (src, name) in [(&self.kernel, "vmlinuz"), (&self.initrd, "initrd.img")] {
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
name=guest addr= peer=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    walden.guest=*) name="${{arg#*=}}" ;;
    walden.ip=*) addr="${{arg#*=}}" ;;
    walden.ping=*) peer="${{arg#*=}}" ;;
  esac
done
{insmods}
# The power button: any event on its input device is a press.
watch() {{
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
echo "{up} $name after $(cut -d' ' -f1 /proc/uptime 2>/dev/null || cat /proc/uptime) s, kernel $(cat /proc/sys/kernel/osrelease)"
# Passed-through devices: what the guest's kernel said about them.
dmesg | grep -i e1000e | sed "s/^/{klog} $name: /"
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
        klog = expect::GUEST_KLOG,
        ping = expect::GUEST_PING,
    )
}

/// One tiny guest's `guests/NAME.toml`.
#[derive(Debug, Clone)]
pub struct TinyGuest {
    /// The guest's name (file stem).
    pub name: String,
    /// Memory in MiB (default 128).
    pub memory_mib: u32,
    /// Guests that must run first.
    pub after: Vec<String>,
    /// `restart = ..` when set.
    pub restart: Option<String>,
    /// `shutdown_timeout = ..` (default "60s").
    pub shutdown_timeout: String,
    /// Extra kernel command line (see [`cmdline`]).
    pub cmdline_extra: String,
    /// Further TOML appended verbatim (`[[nic]]`, `[[pci]]` tables).
    pub tables: String,
    /// Boot through UEFI firmware (OVMF) from a disk instead of QEMU's
    /// direct kernel boot ([`TinyGuestAssets::uefi_disk`]).
    pub uefi: bool,
}

impl TinyGuest {
    /// A guest with 128 MiB, one vcpu, autostart, no NIC.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            memory_mib: 128,
            after: Vec::new(),
            restart: None,
            shutdown_timeout: "60s".into(),
            cmdline_extra: String::new(),
            tables: String::new(),
            uefi: false,
        }
    }

    /// Boot with `[boot] firmware = "uefi"` from a small EFI system disk
    /// (OVMF -> GRUB -> the same kernel and initramfs), instead of QEMU's
    /// direct kernel boot; [`config_dir`] makes the disk.
    /// GRUB's linux loader runs out of memory under OVMF with 256 MiB, so
    /// a UEFI tiny guest gets at least 512 MiB.
    pub fn uefi(mut self) -> Self {
        self.uefi = true;
        self.memory_mib = self.memory_mib.max(512);
        self
    }

    /// The UEFI disk's path as the guest on the image sees it.
    pub fn uefi_disk_on_image(&self) -> String {
        format!("/config/{ASSETS_REL}/uefi-{}.img", self.name)
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
        let _ = write!(self.tables, "\n[[nic]]\nbridge = \"{bridge}\"\n");
        if let Some(id) = vlan {
            let _ = writeln!(self.tables, "vlan = {id}");
        }
        self.cmdline_extra = format!("walden.ip={addr} walden.ping={peer}");
        self
    }

    /// A disk image at `path` (on the walden host) that walden creates
    /// with `size` when missing; the tiny guest ignores it.
    pub fn disk(mut self, path: &str, size: &str) -> Self {
        let _ = write!(
            self.tables,
            "\n[[disk]]\npath = \"{path}\"\nsize = \"{size}\"\n"
        );
        self
    }

    /// Pass through the host device `[[vfio]]` labels `label`.
    pub fn pci_label(mut self, label: &str) -> Self {
        let _ = write!(self.tables, "\n[[pci]]\nlabel = \"{label}\"\n");
        self
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        let after: Vec<String> = self.after.iter().map(|a| format!("\"{a}\"")).collect();
        let mut t = format!(
            "schema = 1\nmemory = \"{}MiB\"\nvcpus = 1\nafter = [{}]\nshutdown_timeout = \"{}\"\n",
            self.memory_mib,
            after.join(", "),
            self.shutdown_timeout
        );
        if let Some(r) = &self.restart {
            let _ = writeln!(t, "restart = \"{r}\"");
        }
        if self.uefi {
            let _ = write!(
                t,
                "\n[boot]\nfirmware = \"uefi\"\n\n[[disk]]\npath = \"{}\"\nformat = \"raw\"\nread_only = true\n",
                self.uefi_disk_on_image()
            );
        } else {
            let _ = write!(
                t,
                "\n[boot]\nkernel = \"{KERNEL_ON_IMAGE}\"\ninitrd = \"{INITRD_ON_IMAGE}\"\ncmdline = \"{}\"\n",
                cmdline(&self.name, &self.cmdline_extra)
            );
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
}
