//! `walden provision DEVICE [--from DIR] [--yes]`: make a config disk.
//!
//! A block device gets a GPT with one Linux partition (sfdisk) holding
//! ext4 labelled `WALDEN-CONFIG`; a regular file (an image for a VM, or a
//! test) gets the file system directly, as the qemu-tests config disk has.
//! `--from DIR` seeds the file system with a config directory (validated
//! first: a disk that cannot boot is not written). A device that already
//! has a partition table or a file system is refused unless `--yes`, or
//! the user types "yes" at the prompt on a terminal.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// util-linux's scriptable partitioner (Debian: fdisk).
pub const SFDISK: &str = "sfdisk";
/// util-linux's partition table tool (tells the kernel about partitions).
pub const PARTX: &str = "partx";
/// e2fsprogs' ext4 maker.
pub const MKFS_EXT4: &str = "mkfs.ext4";

/// The label the appliance looks for.
pub const LABEL: &str = crate::supervisor::appliance::CONFIG_LABEL;

/// Why provisioning failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The device holds data.
    #[error(
        "{device} is not empty ({what}); pass --yes to overwrite it (everything on it is lost)"
    )]
    NotEmpty {
        /// The device.
        device: PathBuf,
        /// What was found.
        what: String,
    },
    /// The user did not confirm.
    #[error("not confirmed; nothing was written to {0}")]
    NotConfirmed(PathBuf),
    /// The seed directory is not a valid config.
    #[error("refusing to seed from {dir}: {message}")]
    BadSeed {
        /// The directory.
        dir: PathBuf,
        /// The config problems.
        message: String,
    },
    /// A tool failed.
    #[error("{command} failed: {detail}")]
    Tool {
        /// What ran.
        command: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// Reading or inspecting the device failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// What is on `device` already, if anything: a partition table or a file
/// system signature in its first 128 KiB.
pub fn existing_content(device: &Path) -> Result<Option<String>, ProvisionError> {
    let io = |what, source| ProvisionError::Io {
        what,
        path: device.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(device).map_err(|e| io("open", e))?;
    let mut head = vec![0u8; 128 * 1024];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(|e| io("read", e))? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    if head.get(512..520) == Some(b"EFI PART") {
        return Ok(Some("a GPT partition table".into()));
    }
    f.seek(SeekFrom::Start(0)).map_err(|e| io("read", e))?;
    if let Ok(Some(p)) = crate::boot::media::probe(&mut f) {
        return Ok(Some(format!("a file system: {p}")));
    }
    if head.get(510..512) == Some(&[0x55, 0xaa]) {
        return Ok(Some("an MBR partition table or boot sector".into()));
    }
    Ok(None)
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<(), ProvisionError> {
    let command = format!("{cmd:?}");
    let tool = |detail: String| ProvisionError::Tool {
        command: command.clone(),
        detail,
    };
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| tool(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| tool(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| tool(e.to_string()))?;
    if !out.status.success() {
        return Err(tool(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Wait until `path` exists, at most `limit`; whether it does.
fn wait_for(path: &Path, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !path.exists() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    true
}

/// The first partition's node: sda -> sda1, nvme0n1 -> nvme0n1p1.
pub fn first_partition(device: &Path) -> PathBuf {
    let s = device.display().to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p1"))
    } else {
        PathBuf::from(format!("{s}1"))
    }
}

/// Provision `device`; `confirm` is asked when the device is not empty and
/// `yes` is false. Returns what was done.
pub fn provision(
    device: &Path,
    from: Option<&Path>,
    yes: bool,
    confirm: &mut dyn FnMut(&str) -> bool,
) -> Result<String, ProvisionError> {
    if let Some(dir) = from {
        crate::config::load(dir).map_err(|e| ProvisionError::BadSeed {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let meta = std::fs::metadata(device).map_err(|source| ProvisionError::Io {
        what: "inspect",
        path: device.to_path_buf(),
        source,
    })?;
    if let Some(what) = existing_content(device)? {
        if !yes {
            let question = format!(
                "{} holds {what}. Erase it and make a {LABEL} config disk? Type yes: ",
                device.display()
            );
            if !std::io::stdin().is_terminal() {
                return Err(ProvisionError::NotEmpty {
                    device: device.to_path_buf(),
                    what,
                });
            }
            if !confirm(&question) {
                return Err(ProvisionError::NotConfirmed(device.to_path_buf()));
            }
        }
    }
    use std::os::unix::fs::FileTypeExt;
    let target = if meta.file_type().is_block_device() {
        run(
            Command::new(SFDISK).arg("--wipe").arg("always").arg(device),
            Some("label: gpt\n,,L\n"),
        )?;
        // Wait (bounded) for the kernel to create the partition node.
        // sfdisk asks it to re-read the table (BLKRRPART); some kernels
        // ignore that for some devices (loop devices on 6.18), so after a
        // short wait the partition is added explicitly (partx, BLKPG).
        let part = first_partition(device);
        if !wait_for(&part, std::time::Duration::from_secs(2)) {
            run(Command::new(PARTX).arg("--add").arg(device), None)?;
            wait_for(&part, std::time::Duration::from_secs(10));
        }
        part
    } else {
        device.to_path_buf()
    };
    let mut mkfs = Command::new(MKFS_EXT4);
    mkfs.args(["-q", "-F", "-L", LABEL]);
    if let Some(dir) = from {
        mkfs.arg("-d").arg(dir);
    }
    mkfs.arg(&target);
    run(&mut mkfs, None)?;
    Ok(format!(
        "{} is now a {LABEL} config disk{}\n",
        target.display(),
        from.map(|d| format!(" seeded from {}", d.display()))
            .unwrap_or_default()
    ))
}

/// Ask on the terminal; true only for "yes".
pub fn ask(question: &str) -> bool {
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("-V").output().is_ok()
    }

    #[test]
    fn partition_names() {
        assert_eq!(
            first_partition(Path::new("/dev/sda")),
            Path::new("/dev/sda1")
        );
        assert_eq!(
            first_partition(Path::new("/dev/nvme0n1")),
            Path::new("/dev/nvme0n1p1")
        );
    }

    #[test]
    fn an_image_file_becomes_a_seeded_config_disk_and_is_then_refused() {
        if !have("mkfs.ext4") {
            eprintln!("SKIPPED: mkfs.ext4 (e2fsprogs) is not installed");
            assert!(std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() != Ok("1"));
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("config.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let seed = tmp.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("host.toml"), "schema = 1\nhostname = \"p\"\n").unwrap();
        let mut never = |_: &str| -> bool { panic!("an empty file needs no confirmation") };
        let done = provision(&img, Some(&seed), false, &mut never).unwrap();
        assert!(
            done.contains("WALDEN-CONFIG config disk seeded from"),
            "{done}"
        );
        let what = existing_content(&img).unwrap().unwrap();
        assert!(what.contains("WALDEN-CONFIG"), "{what}");
        let out = Command::new("debugfs")
            .args(["-R", "cat /host.toml"])
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "schema = 1\nhostname = \"p\"\n"
        );
        // Not empty now: refused without --yes (stdin is not a terminal
        // under cargo test), overwritten with it.
        let mut no = |_: &str| false;
        let err = provision(&img, None, false, &mut no).unwrap_err();
        assert!(
            matches!(
                err,
                ProvisionError::NotEmpty { .. } | ProvisionError::NotConfirmed(_)
            ),
            "{err}"
        );
        provision(&img, None, true, &mut no).unwrap();
    }

    #[test]
    fn an_invalid_seed_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("config.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        std::fs::write(tmp.path().join("host.toml"), "schema = 1\nbogus = 1\n").unwrap();
        let mut no = |_: &str| false;
        let err = provision(&img, Some(tmp.path()), true, &mut no).unwrap_err();
        assert!(err.to_string().contains("refusing to seed"), "{err}");
        assert_eq!(existing_content(&img).unwrap(), None);
    }
}
