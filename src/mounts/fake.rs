//! A recording [`System`] for the tests: a machine with scripted block
//! devices whose mount table and swap list follow the calls made, so a
//! second run observes what the first did.

use super::error::MountError;
use super::plan::MountCall;
use super::system::System;
use crate::boot::media::{FsType, Probe, Seen};
use crate::pid1::mountinfo::MountEntry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fake machine.
#[derive(Debug, Default)]
pub struct Fake {
    /// Every call, in order ("mount /dev/vdb /srv/data ext4", ...).
    pub calls: Vec<String>,
    /// The mount table (host paths).
    pub mounts: Vec<MountEntry>,
    /// Active swap areas.
    pub swaps: Vec<PathBuf>,
    /// Block devices seen by the probe.
    pub devices: Vec<Seen>,
    /// Devices that show up only after this many sleeps (a late USB disk).
    pub late: Vec<(u32, Seen)>,
    /// /dev paths device_at resolves.
    pub dev_links: BTreeMap<PathBuf, Seen>,
    /// Devices whose e2fsck finds errors it cannot repair.
    pub fsck_errors: BTreeSet<PathBuf>,
    /// Mount points whose umount says EBUSY.
    pub busy: BTreeSet<PathBuf>,
    /// Mount calls that fail before one works (the network coming up).
    pub mount_failures: u32,
    sleeps: u32,
    next_id: u64,
}

/// A device `name` with a file system `fstype` labelled `label`.
pub fn disk(name: &str, fstype: FsType, label: &str) -> Seen {
    Seen {
        device: PathBuf::from("/dev").join(name),
        probe: Some(Probe {
            fstype,
            label: Some(label.to_string()),
            uuid: Some(format!("0000-{name}")),
        }),
        error: None,
    }
}

impl Fake {
    /// A machine with these disks and the root, /proc, /config mounted.
    pub fn with(devices: Vec<Seen>) -> Self {
        let mut f = Self {
            devices,
            ..Self::default()
        };
        for (p, fs, src) in [
            ("/", "overlay", "overlay"),
            ("/proc", "proc", "proc"),
            ("/config", "ext4", "/dev/vda"),
        ] {
            f.add_mount(Path::new(p), fs, src);
        }
        f
    }

    fn add_mount(&mut self, target: &Path, fs: &str, source: &str) {
        self.next_id += 1;
        self.mounts.push(MountEntry {
            id: self.next_id,
            parent_id: 1,
            mount_point: target.to_path_buf(),
            fs_type: fs.to_string(),
            source: source.to_string(),
        });
    }

    /// The calls that change something (no sleeps).
    pub fn effects(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| !c.starts_with("sleep"))
            .cloned()
            .collect()
    }
}

impl System for Fake {
    fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        Ok(self.mounts.clone())
    }

    fn swaps(&self) -> Result<Vec<PathBuf>, MountError> {
        Ok(self.swaps.clone())
    }

    fn block_devices(&self) -> Vec<Seen> {
        let mut all = self.devices.clone();
        all.extend(
            self.late
                .iter()
                .filter(|(after, _)| self.sleeps >= *after)
                .map(|(_, d)| d.clone()),
        );
        all
    }

    fn device_at(&self, path: &Path) -> Option<Seen> {
        self.dev_links.get(path).cloned()
    }

    fn fsck(&mut self, device: &Path) -> Result<String, MountError> {
        self.calls.push(format!("fsck {}", device.display()));
        if self.fsck_errors.contains(device) {
            return Err(MountError::FsckErrors {
                device: device.to_path_buf(),
                status: "exit status: 4".into(),
                output: "UNEXPECTED INCONSISTENCY".into(),
            });
        }
        Ok("file system clean".into())
    }

    fn mount(&mut self, call: &MountCall) -> Result<(), MountError> {
        let (line, fs, source) = match call {
            MountCall::Local {
                device,
                target,
                fstype,
                data,
                ..
            } => (
                format!(
                    "mount {} {} {fstype}{}",
                    device.display(),
                    target.display(),
                    data.as_deref().map(|d| format!(" {d}")).unwrap_or_default()
                ),
                fstype.clone(),
                device.display().to_string(),
            ),
            MountCall::Network {
                helper,
                share,
                target,
                options,
            } => (
                format!("{helper} {share} {} -o {options}", target.display()),
                helper.trim_start_matches("mount.").to_string(),
                share.clone(),
            ),
        };
        self.calls.push(line);
        if self.mount_failures > 0 {
            self.mount_failures -= 1;
            return Err(MountError::Helper {
                helper: "mount".into(),
                share: source,
                target: call.target().to_path_buf(),
                reason: "No route to host".into(),
            });
        }
        self.add_mount(call.target(), &fs, &source);
        Ok(())
    }

    fn unmount(&mut self, target: &Path) -> Result<(), MountError> {
        self.calls.push(format!("umount {}", target.display()));
        if self.busy.contains(target) {
            return Err(MountError::Busy {
                target: target.to_path_buf(),
            });
        }
        match self.mounts.iter().rposition(|m| m.mount_point == target) {
            Some(i) => {
                self.mounts.remove(i);
                Ok(())
            }
            None => Err(MountError::Unmount {
                target: target.to_path_buf(),
                source: nix::Error::EINVAL,
            }),
        }
    }

    fn swap_file(&mut self, path: &Path, size: u64) -> Result<Option<String>, MountError> {
        self.calls
            .push(format!("swapfile {} {size}", path.display()));
        Ok(Some(format!("created {size} bytes")))
    }

    fn swapon(&mut self, path: &Path) -> Result<(), MountError> {
        self.calls.push(format!("swapon {}", path.display()));
        self.swaps.push(path.to_path_buf());
        Ok(())
    }

    fn swapoff(&mut self, path: &Path) -> Result<(), MountError> {
        self.calls.push(format!("swapoff {}", path.display()));
        self.swaps.retain(|s| s != path);
        Ok(())
    }

    fn sleep(&mut self, d: Duration) {
        self.sleeps += 1;
        self.calls.push(format!("sleep {d:?}"));
    }
}
