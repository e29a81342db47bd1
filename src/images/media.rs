//! The boot media as stage 1 left it: mounted read-only at
//! /run/walden/media (also with `walden.toram`, where only the root runs
//! from the copy in RAM), or not mounted at all. Changing it
//! (grubenv, grub.cfg, images/) takes a [`MediaRw`] guard: it remounts the
//! media read-write (or mounts it there on demand), and on drop syncs and
//! puts it back the way it was. A lock file keeps the CLI and the
//! supervisor from remounting under each other.

use super::error::ImageError;
use crate::boot::record::BootRecord;
use nix::mount::{mount, umount, MsFlags};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What the boot media is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// The GPT USB image with a FAT ESP: several versions, trial boots.
    Usb,
    /// The ISO: one version, read-only, no counters.
    Iso,
}

impl MediaKind {
    /// From the boot record's `boot_kind`.
    pub fn of(rec: &BootRecord) -> Self {
        if rec.boot_kind == "iso" || rec.media_fstype == "iso9660" {
            Self::Iso
        } else {
            Self::Usb
        }
    }
}

/// How the guard got write access, so drop can undo exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Was mounted read-only: remounted read-write.
    Remounted,
    /// Was not mounted: mounted read-write here.
    Mounted,
    /// A plain directory (tests, `--media DIR`): nothing to do.
    Directory,
}

/// Write access to the boot media while it lives.
#[derive(Debug)]
pub struct MediaRw {
    mount: PathBuf,
    device: String,
    how: How,
    _lock: Option<File>,
}

impl MediaRw {
    /// Make the media of `rec` writable at its mount point. `proc` is the
    /// proc mount (for mountinfo); `lock` the lock file to hold meanwhile.
    pub fn open(rec: &BootRecord, proc: &Path, lock: &Path) -> Result<Self, ImageError> {
        let lock = lock_file(lock)?;
        let target = PathBuf::from(&rec.media_mount);
        let info = std::fs::read_to_string(proc.join("self/mountinfo"))
            .map_err(|e| ImageError::io("read", proc.join("self/mountinfo"), e))?;
        let mounted = crate::boot::mount::parse_mountinfo(&info).contains(&target);
        let fail = |op, source| ImageError::Mount {
            op,
            device: rec.media_device.clone(),
            mount: target.clone(),
            source,
        };
        let how = if mounted {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_NOATIME,
                None::<&str>,
            )
            .map_err(|e| fail("remount read-write", e))?;
            How::Remounted
        } else {
            std::fs::create_dir_all(&target).map_err(|e| ImageError::io("create", &target, e))?;
            mount(
                Some(rec.media_device.as_str()),
                &target,
                Some(rec.media_fstype.as_str()),
                MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                None::<&str>,
            )
            .map_err(|e| fail("mount", e))?;
            How::Mounted
        };
        Ok(Self {
            mount: target,
            device: rec.media_device.clone(),
            how,
            _lock: Some(lock),
        })
    }

    /// A plain directory standing in for the media (`--media DIR`, tests).
    pub fn directory(dir: &Path) -> Self {
        Self {
            mount: dir.to_path_buf(),
            device: String::new(),
            how: How::Directory,
            _lock: None,
        }
    }

    /// Where the media is mounted.
    pub fn root(&self) -> &Path {
        &self.mount
    }
}

impl Drop for MediaRw {
    fn drop(&mut self) {
        if self.how == How::Directory {
            return;
        }
        // Everything written is on the stick before it goes read-only again.
        if let Ok(f) = File::open(&self.mount) {
            // SAFETY: syncfs(2) on a valid, open descriptor owned by `f`.
            unsafe { libc::syncfs(f.as_raw_fd()) };
        }
        let res = match self.how {
            How::Remounted => mount(
                None::<&str>,
                &self.mount,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            ),
            How::Mounted => umount(&self.mount),
            How::Directory => Ok(()),
        };
        if let Err(e) = res {
            tracing::warn!(
                "cannot put the boot media {} at {} back read-only: {e}",
                self.device,
                self.mount.display()
            );
        }
    }
}

/// Open and flock(2) the lock file, waiting for the other holder.
fn lock_file(path: &Path) -> Result<File, ImageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ImageError::io("create", dir, e))?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ImageError::io("open", path, e))?;
    // SAFETY: flock(2) on a valid descriptor owned by `f`; released on close.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(ImageError::io(
            "lock",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}
