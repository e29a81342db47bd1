//! `walden provision` on a real block device (privileged): a loop device
//! over a disk image stands in for a USB stick. The binary partitions it
//! with sfdisk (GPT, one Linux partition) and makes an ext4 file system
//! labelled WALDEN-CONFIG seeded with a config directory; the result is
//! read back with util-linux's and e2fsprogs' own tools.
//!
//! Without root or loop devices the test prints "SKIPPED: reason" and
//! passes, unless WALDEN_REQUIRE_PRIVILEGED=1 (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WALDEN: &str = env!("CARGO_BIN_EXE_walden");

fn skip(test: &str, reason: &str) {
    if std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {reason} (WALDEN_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("SKIPPED: {test}: {reason}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A loop device over an image file, detached on drop.
struct Loop(PathBuf);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
    }
}

#[test]
fn provision_partitions_a_disk_and_seeds_its_config_file_system() {
    let test = "provision_partitions_a_disk_and_seeds_its_config_file_system";
    if !nix_is_root() {
        return skip(test, "needs root (losetup)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("stick.img");
    std::fs::write(&img, vec![0u8; 96 << 20]).unwrap();
    let out = run(Command::new("losetup")
        .args(["--find", "--show", "--partscan"])
        .arg(&img));
    if !out.status.success() {
        return skip(test, &format!("losetup: {}", text(&out).trim()));
    }
    let dev = Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal");
    let out = run(Command::new(WALDEN)
        .arg("provision")
        .arg(&dev.0)
        .arg("--from")
        .arg(&examples)
        .arg("--yes"));
    assert!(out.status.success(), "walden provision: {}", text(&out));

    // The partition table, as sfdisk reads it back.
    let dump = run(Command::new("sfdisk").arg("--dump").arg(&dev.0));
    let dump = text(&dump);
    assert!(dump.contains("label: gpt"), "{dump}");
    assert_eq!(
        dump.lines().filter(|l| l.contains(" : start=")).count(),
        1,
        "{dump}"
    );
    // The file system on the partition: label and content.
    let part = PathBuf::from(format!("{}p1", dev.0.display()));
    let label = run(Command::new("blkid")
        .args(["-o", "value", "-s", "LABEL"])
        .arg(&part));
    assert_eq!(text(&label).trim(), "WALDEN-CONFIG");
    let cat = run(Command::new("debugfs")
        .args(["-R", "cat /host.toml"])
        .arg(&part));
    let host = String::from_utf8_lossy(&cat.stdout);
    let want = std::fs::read_to_string(examples.join("host.toml")).unwrap();
    assert_eq!(host, want, "host.toml on the new disk");

    // A second run refuses a disk that now holds a file system.
    let out = run(Command::new(WALDEN)
        .arg("provision")
        .arg(&dev.0)
        .arg("--from")
        .arg(&examples)
        .stdin(std::process::Stdio::null()));
    assert!(
        !out.status.success(),
        "a provisioned disk was overwritten without --yes"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
