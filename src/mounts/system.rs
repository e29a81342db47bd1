//! The side effects of mounting, behind [`System`]; [`SysSystem`] is the
//! real one. Paths in and out are the host's as host.toml writes them
//! ("/srv/data"); the real system maps them below [`Paths::root`], so a
//! test can run it against a temporary root.

use super::error::MountError;
use super::plan::MountCall;
use crate::boot::media::{self, Seen};
use crate::context::Paths;
use crate::pid1::mountinfo::{parse_mountinfo, parse_swaps, MountEntry};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long `e2fsck -p` may run: a clean file system takes a moment, a
/// journal replay seconds; a forced full check of a big disk can take
/// longer, and is then left to the operator.
pub const FSCK_LIMIT: Duration = Duration::from_secs(300);
/// How long one mount.nfs / mount.cifs may run (they retry for minutes
/// by themselves); the network step tries again until its own deadline.
pub const HELPER_LIMIT: Duration = Duration::from_secs(20);

/// What mounting needs from the machine.
pub trait System {
    /// /proc/self/mountinfo, mount points as host paths (mounts outside
    /// the root left out).
    fn mounts(&self) -> Result<Vec<MountEntry>, MountError>;
    /// The active swap areas (/proc/swaps), files as host paths.
    fn swaps(&self) -> Result<Vec<PathBuf>, MountError>;
    /// Every block device with what its superblock shows; device nodes
    /// with symlinks resolved (as mountinfo names them).
    fn block_devices(&self) -> Vec<Seen>;
    /// The device a /dev path (host.toml's, or udev's by-partuuid link)
    /// leads to, probed; None when there is no such node.
    fn device_at(&self, path: &Path) -> Option<Seen>;
    /// `e2fsck -p`: a note for the status ("clean", "repaired: ..."), or
    /// why the device must not be mounted.
    fn fsck(&mut self, device: &Path) -> Result<String, MountError>;
    /// Create the mount point and mount.
    fn mount(&mut self, call: &MountCall) -> Result<(), MountError>;
    /// umount(2).
    fn unmount(&mut self, target: &Path) -> Result<(), MountError>;
    /// Make `path` a swap area of `size` bytes unless it is one; a note of
    /// what was done ("created 4 GiB"), None when it was there.
    fn swap_file(&mut self, path: &Path, size: u64) -> Result<Option<String>, MountError>;
    /// swapon(2).
    fn swapon(&mut self, path: &Path) -> Result<(), MountError>;
    /// swapoff(2).
    fn swapoff(&mut self, path: &Path) -> Result<(), MountError>;
    /// Wait before looking again (late disks, the network).
    fn sleep(&mut self, d: Duration);
}

/// The real machine under `paths`.
#[derive(Debug, Clone)]
pub struct SysSystem {
    paths: Paths,
}

impl SysSystem {
    /// Mount under `paths.root`, read `paths.proc`, probe `paths.sys` and `paths.dev`.
    pub fn new(paths: Paths) -> Self {
        Self { paths }
    }

    /// A host path ("/srv/data") below the root.
    fn real(&self, host: &Path) -> PathBuf {
        self.paths.root.join(host.strip_prefix("/").unwrap_or(host))
    }

    /// A real path back as a host path, None when outside the root.
    fn host(&self, real: &Path) -> Option<PathBuf> {
        let rel = real.strip_prefix(&self.paths.root).ok()?;
        Some(Path::new("/").join(rel))
    }

    fn read(&self, name: &str) -> Result<String, MountError> {
        let path = self.paths.proc.join(name);
        std::fs::read_to_string(&path).map_err(|source| MountError::Read { path, source })
    }
}

fn canonical(mut s: Seen) -> Seen {
    if let Ok(c) = std::fs::canonicalize(&s.device) {
        s.device = c;
    }
    s
}

/// A path as a C string for swapon(2)/swapoff(2).
fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

impl System for SysSystem {
    fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        let text = self.read("self/mountinfo")?;
        let entries = parse_mountinfo(&text).map_err(|e| MountError::Read {
            path: self.paths.proc.join("self/mountinfo"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })?;
        Ok(entries
            .into_iter()
            .filter_map(|mut e| {
                e.mount_point = self.host(&e.mount_point)?;
                Some(e)
            })
            .collect())
    }

    fn swaps(&self) -> Result<Vec<PathBuf>, MountError> {
        let text = self.read("swaps")?;
        Ok(parse_swaps(&text)
            .into_iter()
            .map(|p| {
                // Devices stay as they are; files come back as host paths.
                if p.starts_with("/dev") {
                    p
                } else {
                    self.host(&p).unwrap_or(p)
                }
            })
            .collect())
    }

    fn block_devices(&self) -> Vec<Seen> {
        media::list(&self.paths.sys, &self.paths.dev)
            .into_iter()
            .map(canonical)
            .collect()
    }

    fn device_at(&self, path: &Path) -> Option<Seen> {
        let rel = path.strip_prefix("/dev").ok()?;
        let node = self.paths.dev.join(rel);
        let device = std::fs::canonicalize(&node).ok()?;
        let probe = std::fs::File::open(&device)
            .and_then(|mut f| media::probe(&mut f))
            .ok()
            .flatten();
        Some(Seen {
            device,
            probe,
            error: None,
        })
    }

    fn fsck(&mut self, device: &Path) -> Result<String, MountError> {
        let mut cmd = Command::new("e2fsck");
        cmd.arg("-p").arg(device);
        match crate::command::run(&mut cmd, FSCK_LIMIT) {
            Ok(f) => {
                let out = f.stdout.trim().to_string();
                match f.status.code() {
                    Some(0) => Ok("file system clean".into()),
                    Some(1 | 2) => Ok(format!("e2fsck repaired it: {out}")),
                    _ => Err(MountError::FsckErrors {
                        device: device.to_path_buf(),
                        status: f.status.to_string(),
                        output: if out.is_empty() { f.reason() } else { out },
                    }),
                }
            }
            // No e2fsck in this root: mount without the check, and say so.
            Err(crate::command::RunError::Start(e)) => Ok(format!("e2fsck not run: {e}")),
            Err(e) => Err(MountError::FsckRun {
                device: device.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    fn mount(&mut self, call: &MountCall) -> Result<(), MountError> {
        let target = self.real(call.target());
        std::fs::create_dir_all(&target).map_err(|source| MountError::MountPoint {
            target: call.target().to_path_buf(),
            source,
        })?;
        match call {
            MountCall::Local {
                device,
                fstype,
                flags,
                data,
                ..
            } => nix::mount::mount(
                Some(device.as_path()),
                &target,
                Some(fstype.as_str()),
                *flags,
                data.as_deref(),
            )
            .map_err(|source| MountError::Mount {
                what: device.display().to_string(),
                target: call.target().to_path_buf(),
                fstype: fstype.clone(),
                source,
            }),
            MountCall::Network {
                helper,
                share,
                options,
                ..
            } => {
                let mut cmd = Command::new(helper);
                cmd.arg(share).arg(&target).arg("-o").arg(options);
                crate::command::run_ok(&mut cmd, HELPER_LIMIT)
                    .map(drop)
                    .map_err(|reason| MountError::Helper {
                        helper: helper.clone(),
                        share: share.clone(),
                        target: call.target().to_path_buf(),
                        reason,
                    })
            }
        }
    }

    fn unmount(&mut self, target: &Path) -> Result<(), MountError> {
        match nix::mount::umount2(&self.real(target), nix::mount::MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::Error::EBUSY) => Err(MountError::Busy {
                target: target.to_path_buf(),
            }),
            Err(source) => Err(MountError::Unmount {
                target: target.to_path_buf(),
                source,
            }),
        }
    }

    fn swap_file(&mut self, path: &Path, size: u64) -> Result<Option<String>, MountError> {
        super::swapfile::ensure(&self.real(path), size).map_err(|reason| MountError::SwapFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn swapon(&mut self, path: &Path) -> Result<(), MountError> {
        let real = if path.starts_with("/dev") {
            path.to_path_buf()
        } else {
            self.real(path)
        };
        let err = |source| MountError::Swap {
            op: "swapon",
            path: path.to_path_buf(),
            source,
        };
        let c = c_path(&real).map_err(err)?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        if unsafe { libc::swapon(c.as_ptr(), 0) } == 0 {
            Ok(())
        } else {
            Err(err(std::io::Error::last_os_error()))
        }
    }

    fn swapoff(&mut self, path: &Path) -> Result<(), MountError> {
        let real = if path.starts_with("/dev") {
            path.to_path_buf()
        } else {
            self.real(path)
        };
        let err = |source| MountError::Swap {
            op: "swapoff",
            path: path.to_path_buf(),
            source,
        };
        let c = c_path(&real).map_err(err)?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        if unsafe { libc::swapoff(c.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(err(std::io::Error::last_os_error()))
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}
