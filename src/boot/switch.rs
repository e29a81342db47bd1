//! switch_root as busybox does it: move the API file systems into the new
//! root, delete the initramfs contents (they would otherwise pin RAM
//! forever), move the new root onto `/`, chroot, exec init.

use super::BootError;
use nix::mount::MsFlags;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Move each of `mounts` (absolute paths such as "/dev") to the same path
/// under `new_root`.
pub fn move_mounts(new_root: &Path, mounts: &[&str]) -> Result<(), BootError> {
    for m in mounts {
        let target = new_root.join(m.trim_start_matches('/'));
        std::fs::create_dir_all(&target).map_err(|e| BootError::io(&target, e))?;
        nix::mount::mount(
            Some(*m),
            &target,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|source| BootError::Mount {
            what: (*m).to_string(),
            target: target.clone(),
            fstype: "move".into(),
            source,
        })?;
    }
    Ok(())
}

/// Replace the initramfs with `new_root` and exec `init` there. Only
/// returns on failure. Refuses unless `/` is the initramfs (ramfs or
/// tmpfs), since it deletes everything on the root file system.
pub fn switch_root(new_root: &Path, init: &str) -> Result<Infallible, BootError> {
    let fail = |reason: String| BootError::SwitchRoot {
        target: new_root.to_path_buf(),
        reason,
    };
    let fs = nix::sys::statfs::statfs("/").map_err(|e| fail(format!("statfs /: {e}")))?;
    #[allow(clippy::unnecessary_cast)] // the field's type differs between libcs
    let magic = fs.filesystem_type().0 as i64;
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        return Err(fail(
            "/ is not an initramfs (ramfs/tmpfs); refusing to delete it".into(),
        ));
    }
    let init_in_new = new_root.join(init.trim_start_matches('/'));
    if std::fs::metadata(&init_in_new).is_err() {
        return Err(fail(format!("{} does not exist", init_in_new.display())));
    }
    std::env::set_current_dir(new_root).map_err(|e| fail(format!("chdir: {e}")))?;
    let root_dev = std::fs::symlink_metadata("/")
        .map_err(|e| fail(format!("stat /: {e}")))?
        .dev();
    delete_contents(Path::new("/"), root_dev);
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| fail(format!("move {} to /: {e}", new_root.display())))?;
    nix::unistd::chroot(".").map_err(|e| fail(format!("chroot: {e}")))?;
    std::env::set_current_dir("/").map_err(|e| fail(format!("chdir /: {e}")))?;
    let path = CString::new(init).map_err(|_| fail("init path has a NUL byte".into()))?;
    let err = nix::unistd::execv(&path, &[&path]).unwrap_err();
    Err(fail(format!("exec {init}: {err}")))
}

/// Remove everything under `dir` that lives on device `dev`, without
/// crossing into other mounts (the new root, /dev, ...). Errors are
/// ignored: what cannot be deleted only costs some RAM.
fn delete_contents(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            delete_contents(&path, dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_contents_stays_on_its_device() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let dev = std::fs::metadata(root).unwrap().dev();
        // a different device number: nothing may be touched
        delete_contents(root, dev.wrapping_add(1));
        assert!(root.join("a/b/f").exists());
        delete_contents(root, dev);
        assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
        assert!(Path::new("/etc").exists());
    }

    #[test]
    fn refuses_outside_an_initramfs() {
        // The test runs on a real root file system, never ramfs.
        let fs = nix::sys::statfs::statfs("/").unwrap();
        #[allow(clippy::unnecessary_cast)]
        let magic = fs.filesystem_type().0 as i64;
        if magic == RAMFS_MAGIC || magic == TMPFS_MAGIC {
            eprintln!("SKIPPED: / is a ramfs/tmpfs here");
            return;
        }
        let err = switch_root(Path::new("/nonexistent"), "/sbin/init").unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}
