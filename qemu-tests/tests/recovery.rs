//! Getting at a box that has gone wrong, the ways docs/config-disk.md
//! ("Recovery") describes them, in one boot:
//!
//! - the config disk named by `walden.config=PARTUUID=..` (a GPT disk whose
//!   file system has another label, so only the partition UUID finds it);
//! - a host-files step that fails (the config disk's /etc has a directory
//!   where /etc/localtime must go) still leaves sshd running: a file that
//!   cannot be written must not lock the admin out;
//! - `walden.rescue` gives a root shell on the console, in which the
//!   documented recovery commands work (`walden config history`);
//! - `[swap] device = "LABEL=.."`: a swap partition made with mkswap on
//!   this machine is on, as the shell's /proc/swaps shows;
//! - a CIFS share as a `[[mount]]` (`network-mounts`): QEMU's own SMB
//!   server (`-netdev user,smb=DIR`, Samba's smbd on this machine, reached
//!   only through QEMU's user network) serves a directory of the test; the
//!   shell reads a file of it through the mount.
//!
//! The kernel and initramfs are booted directly with the GRUB entry's
//! command line plus those two parameters, as someone pressing `e` in the
//! boot menu would add them; stage 1 finds the USB media as usual.

mod common;

use anyhow::{ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::{expect, DirectKernel, TestEnv};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Size of the partitioned config disk and where its one partition starts.
const DISK_MIB: u64 = 64;
const PART_OFFSET: u64 = 1 << 20;

/// A GPT disk image with one Linux partition holding an ext4 file system
/// labelled `label` made from `dir`; returns the partition's PARTUUID.
fn partitioned_config_disk(dir: &Path, img: &Path, label: &str) -> anyhow::Result<String> {
    std::fs::write(img, vec![0u8; (DISK_MIB << 20) as usize])?;
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", &img.display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("sfdisk (Debian package fdisk)")?;
    {
        use std::io::Write;
        let mut stdin = sfdisk.stdin.take().context("sfdisk stdin")?;
        stdin.write_all(format!("label: gpt\nstart={},type=L\n", PART_OFFSET / 512).as_bytes())?;
    }
    ensure!(
        sfdisk.wait()?.success(),
        "sfdisk failed on {}",
        img.display()
    );
    let size_kib = (DISK_MIB << 10) - (PART_OFFSET >> 10) - 1024;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-E"])
        .arg(format!("offset={PART_OFFSET}"))
        .arg("-d")
        .arg(dir)
        .arg(img)
        .arg(format!("{size_kib}k"))
        .output()?;
    ensure!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("sfdisk")
        .arg("--part-uuid")
        .arg(img)
        .arg("1")
        .output()?;
    ensure!(
        out.status.success(),
        "sfdisk --part-uuid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_ascii_lowercase())
}

#[test]
fn config_disk_by_partuuid_sshd_despite_a_host_files_failure_and_a_rescue_shell(
) -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(recovery_once)
}

fn recovery_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image(
        "config_disk_by_partuuid_sshd_despite_a_host_files_failure_and_a_rescue_shell",
    )?
    else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let src = env.dir().join("config-src");
    std::fs::create_dir_all(src.join("etc/localtime/blocked"))?;
    std::fs::write(
        src.join("host.toml"),
        "schema = 1\nhostname = \"rescued\"\ntimezone = \"Europe/Berlin\"\n\
         [swap]\ndevice = \"LABEL=WSWAP\"\n\
         [[network.link]]\nname = \"smb0\"\nmatch = \"mac:52:54:00:5b:00:01\"\naddresses = [\"10.0.2.15/24\"]\n\
         [[mount]]\nwhat = \"//10.0.2.4/qemu\"\nwhere = \"/srv/share\"\nfstype = \"cifs\"\noptions = [\"guest\"]\n\
         [ssh]\nauthorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9yd2FsZGVuZXhhbXBsZXNvbmx5 t@t\"]\n",
    )?;
    let img = env.dir().join("partitioned-config.img");
    let partuuid = partitioned_config_disk(&src, &img, "NOT-THE-LABEL")?;
    let share = env.dir().join("share");
    std::fs::create_dir_all(&share)?;
    std::fs::write(share.join("hello.txt"), "hello-from-the-share\n")?;
    let swap = env.dir().join("swap.img");
    std::fs::write(&swap, vec![0u8; 32 << 20])?;
    let out = Command::new("mkswap")
        .args(["-L", "WSWAP"])
        .arg(&swap)
        .output()?;
    ensure!(
        out.status.success(),
        "mkswap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut kernel = DirectKernel::like_grub(a, &a.version)?;
    kernel.append = format!(
        "{} walden.config=PARTUUID={partuuid} walden.rescue",
        kernel.append
    );
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .direct_kernel(kernel)
        .extra_args([
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=pconfig", img.display()),
            "-device".to_string(),
            "virtio-blk-pci,drive=pconfig".to_string(),
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=swap", swap.display()),
            "-device".to_string(),
            "virtio-blk-pci,drive=swap".to_string(),
            "-netdev".to_string(),
            format!("user,id=smb,restrict=on,smb={}", share.display()),
            "-device".to_string(),
            "virtio-net-pci,netdev=smb,mac=52:54:00:5b:00:01".to_string(),
        ])
        .start()?;
    m.wait_for_console(expect::READY, BOOT_TIMEOUT)?;
    let status = m.status()?;
    eprintln!("{}", common::timings(&status));
    let disk = status.step("config-disk").context("no config-disk step")?;
    ensure!(
        disk.state == "done"
            && disk
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("label NOT-THE-LABEL")),
        "the config disk was not found by PARTUUID: {disk:?}"
    );
    let files = status.step("host-files").context("no host-files step")?;
    ensure!(
        files.state == "failed"
            && files
                .error
                .as_deref()
                .is_some_and(|e| e.contains("localtime")),
        "the host-files step should fail on /etc/localtime: {files:?}"
    );
    let sshd = status.services.iter().find(|s| s.name == "sshd");
    ensure!(
        sshd.is_some_and(|s| s.state == "running"),
        "sshd must run although host-files failed: {:?}",
        status.services
    );

    // The rescue shell: a root shell on the console, and the recovery
    // commands of docs/config-disk.md answer in it.
    std::thread::sleep(Duration::from_secs(2));
    m.send_console("\n")?;
    let (probe, answer) = expect::SHELL_PROBE;
    m.send_console(probe)?;
    m.wait_for_console(answer, Duration::from_secs(60))?;
    m.send_console("echo uid-$(id -u); walden config history | tail -n 1\n")?;
    m.wait_for_console("uid-0", Duration::from_secs(30))?;
    m.wait_for_console("last-good, = /config", Duration::from_secs(30))?;
    m.send_console("echo swap-partitions-$(grep -c partition /proc/swaps)\n")?;
    m.wait_for_console("swap-partitions-1", Duration::from_secs(30))?;
    m.send_console("grep -q ' /srv/share cifs ' /proc/mounts && cat /srv/share/hello.txt\n")?;
    m.wait_for_console("hello-from-the-share", Duration::from_secs(30))?;
    Ok(())
}
