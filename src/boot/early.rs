//! Stage 2 early mounts: the API file systems walden needs as PID 1 in the
//! squashfs root, as a table applied idempotently. Stage 1 already moved
//! /dev, /proc, /sys and /run into the new root, so on the appliance this
//! mostly adds /dev/pts, /dev/shm, the cgroup2 tree and /tmp; under another
//! initramfs (or a container) it mounts whatever is missing.

use super::mount::{mount_table, parse_mountinfo, MountSpec, Mounter, SysMounter};
use super::BootError;
use crate::context::Paths;
use nix::mount::MsFlags;
use std::path::Path;

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The stage 2 table; targets are relative to [`Paths::root`]. proc comes
/// first: the others are checked against its mountinfo.
pub const STAGE2_MOUNTS: &[MountSpec] = &[
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
        source: "devpts",
        target: "dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        // gid 5 is Debian's tty group.
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
    },
    MountSpec {
        source: "tmpfs",
        target: "dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "cgroup2",
        target: "sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
    MountSpec {
        source: "tmpfs",
        target: "tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
];

/// Mount what is missing of [`STAGE2_MOUNTS`] under `paths.root`.
/// Returns the mount points it mounted (empty when all were there).
pub fn mount_early(paths: &Paths) -> Result<Vec<String>, BootError> {
    mount_early_with(&mut SysMounter, paths)
}

/// [`mount_early`] with an explicit [`Mounter`].
pub fn mount_early_with(m: &mut dyn Mounter, paths: &Paths) -> Result<Vec<String>, BootError> {
    let mountinfo = paths.proc.join("self/mountinfo");
    let mut done = Vec::new();
    if !mountinfo.exists() {
        // Without /proc there is no mountinfo to consult: mount proc first.
        done = mount_table(m, &paths.root, &STAGE2_MOUNTS[..1], &Default::default())?;
    }
    let mounted = read_mounted(&mountinfo)?;
    done.extend(mount_table(
        m,
        &paths.root,
        &STAGE2_MOUNTS[done.len()..],
        &mounted,
    )?);
    Ok(done)
}

fn read_mounted(
    mountinfo: &Path,
) -> Result<std::collections::HashSet<std::path::PathBuf>, BootError> {
    match std::fs::read_to_string(mountinfo) {
        Ok(text) => Ok(parse_mountinfo(&text)),
        // A recording mounter in tests mounts nothing for real.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(BootError::io(mountinfo, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::mount::RecordingMounter;
    use super::*;

    #[test]
    fn mounts_everything_on_a_bare_root_proc_first() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::under(tmp.path());
        let mut rec = RecordingMounter::default();
        let done = mount_early_with(&mut rec, &paths).unwrap();
        assert_eq!(done.len(), STAGE2_MOUNTS.len());
        assert_eq!(rec.mounts[0].2, "proc");
        assert_eq!(rec.mounts[6].1, tmp.path().join("sys/fs/cgroup"));
    }

    #[test]
    fn skips_what_mountinfo_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let paths = Paths::under(root);
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        let line =
            |id: u32, p: &str| format!("{id} 1 0:{id} / {} rw - x x rw\n", root.join(p).display());
        let info = [
            line(1, "proc"),
            line(2, "sys"),
            line(3, "dev"),
            line(4, "run"),
        ]
        .concat();
        std::fs::write(root.join("proc/self/mountinfo"), info).unwrap();
        let mut rec = RecordingMounter::default();
        let done = mount_early_with(&mut rec, &paths).unwrap();
        let targets: Vec<_> = rec.mounts.iter().map(|m| m.1.clone()).collect();
        assert_eq!(
            targets,
            vec![
                root.join("dev/pts"),
                root.join("dev/shm"),
                root.join("sys/fs/cgroup"),
                root.join("tmp")
            ]
        );
        assert_eq!(done.len(), 4);
    }

    #[test]
    fn really_mounts_a_tmpfs_tree_when_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: mounting needs root");
            assert!(std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() != Ok("1"));
            return;
        }
        // A private mount namespace would be cleaner, but unshare in a
        // multi-threaded test runner is not allowed; mount a tmpfs table
        // entry directly and unmount it again.
        let tmp = tempfile::tempdir().unwrap();
        let table = [STAGE2_MOUNTS[7]];
        let done = mount_table(&mut SysMounter, tmp.path(), &table, &Default::default()).unwrap();
        assert_eq!(done, vec![tmp.path().join("tmp").display().to_string()]);
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(parse_mountinfo(&info).contains(&tmp.path().join("tmp")));
        // mounted again: skipped
        let again =
            mount_table(&mut SysMounter, tmp.path(), &table, &parse_mountinfo(&info)).unwrap();
        assert!(again.is_empty());
        nix::mount::umount(&tmp.path().join("tmp")).unwrap();
    }
}
