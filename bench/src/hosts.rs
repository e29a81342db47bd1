//! The two hosts under test and how each is booted.
//!
//! Both boot the same way: QEMU's direct kernel boot (`-kernel/-initrd`,
//! no firmware menu, no GRUB), q35 under the harness's default accelerator
//! (TCG unless `WALDEN_QEMU_ACCEL=kvm`), 2 vCPUs, 2 GiB, no NIC.
//!
//! - walden: the image's kernel and initramfs with its GRUB entry's command
//!   line; the USB image attached (stage 1 finds root.squashfs there); a
//!   WALDEN-CONFIG disk with host.toml, guests/*.toml, the tiny guest's
//!   kernel and initramfs and the observer script.
//! - baseline: the same Debian kernel with Debian's initramfs-tools
//!   initramfs; an ext4 root disk on virtio-blk made by
//!   image/baseline/mkdisk.sh with the guests defined and autostarted.

use anyhow::{ensure, Context};
use qemu_tests::guest_assets::{config_dir, TinyGuest, TinyGuestAssets};
use qemu_tests::{ConfigDisk, DirectKernel, MachineBuilder, TestEnv};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which host a run boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    /// walden's image.
    Walden,
    /// Debian with systemd and libvirt-daemon-system.
    Baseline,
}

impl HostKind {
    /// "walden" or "baseline".
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Walden => "walden",
            HostKind::Baseline => "baseline",
        }
    }
}

/// Where each host's guests' serial logs are (what the observer follows).
pub fn guest_log_dir(kind: HostKind) -> &'static str {
    match kind {
        HostKind::Walden => "/var/log/walden/guests",
        HostKind::Baseline => "/var/log/libvirt/guests",
    }
}

/// The observer script both hosts run (bench/host/observe.sh).
pub fn observer_script() -> PathBuf {
    qemu_tests::artifacts::repo_root().join("bench/host/observe.sh")
}

/// Guest names of a case with `n` guests: g1..gN.
pub fn guest_names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("g{i}")).collect()
}

/// The baseline's built root (image/baseline/build.sh's output directory).
#[derive(Debug, Clone)]
pub struct BaselineRoot {
    /// The cache directory.
    pub dir: PathBuf,
}

impl BaselineRoot {
    /// Build (or reuse) the baseline root.
    pub fn build() -> anyhow::Result<Self> {
        let script = qemu_tests::artifacts::repo_root().join("image/baseline/build.sh");
        let out = Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        ensure!(
            out.status.success(),
            "{} failed ({}); its messages are above",
            script.display(),
            out.status
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        ensure!(
            dir.join(".complete").is_file(),
            "{} printed {dir:?}, not a built root",
            script.display()
        );
        Ok(Self { dir })
    }

    /// The kernel.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// Debian's initramfs.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    /// The unpacked root file system.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// A prepared case: what both hosts boot for `guests`.
#[derive(Debug, Clone)]
pub struct Case {
    /// Guest names.
    pub guests: Vec<String>,
    /// walden's config directory (source of its config disk).
    pub walden_config: PathBuf,
    /// The baseline's root disk (raw ext4, attached through an overlay).
    pub baseline_disk: PathBuf,
}

/// walden's host.toml for the bench: the observer as a service.
pub fn walden_host_toml(guests: &[String]) -> String {
    let mut command = vec![
        "/bin/sh".to_string(),
        "/config/bench/observe.sh".to_string(),
        guest_log_dir(HostKind::Walden).to_string(),
    ];
    command.extend(guests.iter().cloned());
    let quoted: Vec<String> = command
        .iter()
        .map(|c| qemu_tests::guest_assets::toml_string(c))
        .collect();
    format!(
        "schema = 1\nhostname = \"bench\"\n\n[[service]]\nname = \"bench-observe\"\ncommand = [{}]\nrestart = \"never\"\n",
        quoted.join(", ")
    )
}

/// Prepare both hosts' disks for a case with `n` guests under `work`.
pub fn prepare_case(
    n: usize,
    work: &Path,
    assets: &TinyGuestAssets,
    baseline: &BaselineRoot,
) -> anyhow::Result<Case> {
    let guests = guest_names(n);
    let tiny: Vec<TinyGuest> = guests.iter().map(|g| TinyGuest::new(g)).collect();
    let dir = config_dir(
        &work.join(format!("walden-config-{n}")),
        &walden_host_toml(&guests),
        &tiny,
        assets,
    )?;
    let bench_dir = dir.join("bench");
    std::fs::create_dir_all(&bench_dir)?;
    std::fs::copy(observer_script(), bench_dir.join("observe.sh"))
        .context("copy bench/host/observe.sh onto the config disk")?;

    let disk = work.join(format!("baseline-root-{n}.raw"));
    let script = qemu_tests::artifacts::repo_root().join("image/baseline/mkdisk.sh");
    let status = Command::new(&script)
        .arg(&baseline.dir)
        .arg(&disk)
        .arg(&assets.kernel)
        .arg(&assets.initrd)
        .args(&guests)
        .status()
        .with_context(|| format!("run {}", script.display()))?;
    ensure!(status.success(), "{} failed ({status})", script.display());
    Ok(Case {
        guests,
        walden_config: dir,
        baseline_disk: disk,
    })
}

/// The machine of `kind` for `case`, paused (the run starts the clock and
/// then resumes it: power-on is the QMP `cont`).
pub fn machine(
    env: &TestEnv,
    kind: HostKind,
    case: &Case,
    baseline: &BaselineRoot,
) -> anyhow::Result<MachineBuilder> {
    let a = env.artifacts()?;
    let walden_kernel = DirectKernel::like_grub(a, &a.version)?;
    let b = env.machine().paused();
    Ok(match kind {
        HostKind::Walden => b
            .usb_image(a.usb_image()?)
            .direct_kernel(walden_kernel)
            .config_disk(ConfigDisk::from_dir(&case.walden_config)),
        HostKind::Baseline => {
            // The overlay keeps the raw disk unchanged across runs; it is
            // in the run's directory, which the harness cleans up.
            let overlay = env.dir().join("baseline-root.qcow2");
            qemu_tests::disk::overlay(&case.baseline_disk, &overlay)?;
            b.direct_kernel(DirectKernel {
                kernel: baseline.kernel(),
                initrd: baseline.initrd(),
                append: baseline_cmdline(&walden_kernel.append),
            })
            .extra_args([
                "-drive".to_string(),
                format!("file={},format=qcow2,if=none,id=root", overlay.display()),
                "-device".to_string(),
                "virtio-blk-pci,drive=root".to_string(),
            ])
        }
    })
}

/// walden's command line without its own `walden.*` arguments, plus the
/// root file system: console, panic and quiet stay the same for both.
pub fn baseline_cmdline(walden_append: &str) -> String {
    let mut args: Vec<&str> = walden_append
        .split_whitespace()
        .filter(|a| !a.starts_with("walden."))
        .collect();
    args.extend(["root=LABEL=BASELINE-ROOT", "ro"]);
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_cmdline_keeps_console_and_drops_walden_args() {
        let c = baseline_cmdline(
            "console=tty0 console=ttyS0,115200n8 panic=10 quiet walden.version=0.1.0",
        );
        assert_eq!(
            c,
            "console=tty0 console=ttyS0,115200n8 panic=10 quiet root=LABEL=BASELINE-ROOT ro"
        );
    }

    #[test]
    fn host_toml_runs_the_observer_on_every_guest() {
        let t = walden_host_toml(&guest_names(2));
        assert!(
            t.contains(r#"command = ["/bin/sh", "/config/bench/observe.sh", "/var/log/walden/guests", "g1", "g2"]"#),
            "{t}"
        );
    }
}
