//! Mounting as data: early mounts are tables of [`MountSpec`] applied
//! idempotently (kata's `INIT_ROOTFS_MOUNTS`), through a [`Mounter`] so the
//! order and arguments are tested with a recording fake.

use super::BootError;
use nix::mount::MsFlags;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One entry of an early-mount table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    /// Source (device or file-system name).
    pub source: &'static str,
    /// Mount point relative to the root the table is applied under.
    pub target: &'static str,
    /// File-system type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// File-system options.
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// What stage 1 mounts in the initramfs before anything else.
pub const STAGE1_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmpfs",
        target: "run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
];

/// The side effects of mounting, behind a narrow interface.
pub trait Mounter {
    /// mount(2).
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// Create the mount point (and parents).
    fn mkdir(&mut self, path: &Path) -> std::io::Result<()>;
}

/// The real thing.
#[derive(Debug, Default)]
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, data)
    }

    fn mkdir(&mut self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }
}

/// Mount points listed in a /proc/self/mountinfo text. One parser serves
/// stage 1, stage 2 and the final shutdown ([`crate::pid1::mountinfo`]);
/// here a malformed line is skipped rather than failing the boot.
pub fn parse_mountinfo(text: &str) -> HashSet<PathBuf> {
    text.lines()
        .filter_map(|line| crate::pid1::mountinfo::parse_mountinfo(line).ok()?.pop())
        .map(|entry| entry.mount_point)
        .collect()
}

/// Apply `table` under `root`, skipping mount points already in `mounted`.
/// Returns the targets it mounted, in order.
pub fn mount_table(
    m: &mut dyn Mounter,
    root: &Path,
    table: &[MountSpec],
    mounted: &HashSet<PathBuf>,
) -> Result<Vec<String>, BootError> {
    let mut done = Vec::new();
    for spec in table {
        let target = root.join(spec.target);
        if mounted.contains(&target) {
            continue;
        }
        m.mkdir(&target).map_err(|e| BootError::io(&target, e))?;
        m.mount(spec.source, &target, spec.fstype, spec.flags, spec.data)
            .map_err(|source| BootError::Mount {
                what: spec.source.to_string(),
                target: target.clone(),
                fstype: spec.fstype.to_string(),
                source,
            })?;
        done.push(target.display().to_string());
    }
    Ok(done)
}

/// A fake [`Mounter`] that records calls, for tests here and in early.rs.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct RecordingMounter {
    /// (source, target, fstype, data) per mount call.
    pub mounts: Vec<(String, PathBuf, String, Option<String>)>,
    /// Fail mounts of this target with EBUSY.
    pub fail_on: Option<PathBuf>,
}

#[cfg(test)]
impl Mounter for RecordingMounter {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        _flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        if self.fail_on.as_deref() == Some(target) {
            return Err(nix::Error::EBUSY);
        }
        self.mounts.push((
            source.into(),
            target.into(),
            fstype.into(),
            data.map(Into::into),
        ));
        Ok(())
    }

    fn mkdir(&mut self, _path: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - rootfs rootfs rw
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
24 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,mode=755
30 22 8:1 / /mnt/with\\040space ro - vfat /dev/sda1 ro
";

    #[test]
    fn mountinfo_points_are_unescaped() {
        let m = parse_mountinfo(MOUNTINFO);
        assert!(m.contains(Path::new("/proc")));
        assert!(m.contains(Path::new("/dev")));
        assert!(m.contains(Path::new("/mnt/with space")));
        assert!(!m.contains(Path::new("/sys")));
    }

    #[test]
    fn table_skips_what_is_mounted_and_keeps_order() {
        let mut rec = RecordingMounter::default();
        let done = mount_table(
            &mut rec,
            Path::new("/"),
            STAGE1_MOUNTS,
            &parse_mountinfo(MOUNTINFO),
        )
        .unwrap();
        assert_eq!(done, vec!["/sys".to_string(), "/run".to_string()]);
        assert_eq!(rec.mounts[0].2, "sysfs");
        assert_eq!(
            rec.mounts[1],
            (
                "tmpfs".into(),
                "/run".into(),
                "tmpfs".into(),
                Some("mode=0755".into())
            )
        );
    }

    #[test]
    fn a_failed_mount_names_target_and_type() {
        let mut rec = RecordingMounter {
            fail_on: Some(PathBuf::from("/x/dev")),
            ..Default::default()
        };
        let err =
            mount_table(&mut rec, Path::new("/x"), STAGE1_MOUNTS, &HashSet::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot mount devtmpfs on /x/dev (devtmpfs): EBUSY: Device or resource busy"
        );
    }
}
