//! Crash-safe file writes, in one place.
//!
//! Every file walden persists on the config disk goes through
//! [`atomic_write`]: write a temporary file in the same directory, fsync it,
//! rename it over the target, fsync the directory. A power cut at any point
//! leaves either the old or the new content, never a torn file. The steps
//! go through [`Io`] so tests can fail between any two of them
//! ([`FaultyIo`] in the tests) and assert old-or-new.
//!
//! A whole set of files (a journal, a generation) is written with
//! [`write_set_with`]: every file first, then one syncfs(2) for the lot
//! before the rename that commits it. That is as durable as an fsync per
//! file - nothing is renamed into place before its data is on the disk -
//! at the cost of one journal commit instead of one per file (on 200
//! guests, seconds under emulation).

use super::StateError;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file-system primitives persistent state is built from.
pub trait Io {
    /// Create (or truncate) `path` with `mode`, write `bytes`, fsync it.
    fn write_synced(&mut self, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()>;
    /// Create (or truncate) `path` with `mode` and write `bytes`, leaving
    /// durability to a later [`Io::sync_fs`].
    fn write_unsynced(&mut self, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()>;
    /// syncfs(2): make everything written to the file system holding
    /// `path` durable.
    fn sync_fs(&mut self, path: &Path) -> std::io::Result<()>;
    /// rename(2).
    fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// fsync a directory so renames and creations in it are durable.
    fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()>;
    /// mkdir -p.
    fn create_dir_all(&mut self, dir: &Path) -> std::io::Result<()>;
    /// rm -r (missing is fine).
    fn remove_dir_all(&mut self, dir: &Path) -> std::io::Result<()>;
    /// unlink (missing is fine).
    fn remove_file(&mut self, path: &Path) -> std::io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

impl Io for RealIo {
    fn write_synced(&mut self, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        write_file(path, bytes, mode)?.sync_all()
    }

    fn write_unsynced(&mut self, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        write_file(path, bytes, mode).map(drop)
    }

    fn sync_fs(&mut self, path: &Path) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let f = File::open(path)?;
        nix::unistd::syncfs(f.as_raw_fd()).map_err(std::io::Error::from)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&mut self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn remove_dir_all(&mut self, dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn remove_file(&mut self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Create (or truncate) `path` with `mode` and write `bytes`; the open file
/// is returned for an fsync.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // A leftover temp file from a crash keeps its old mode: set it.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    f.write_all(bytes)?;
    Ok(f)
}

/// The temporary name [`atomic_write`] uses for `path`: same directory, so
/// the rename never crosses a file system; a leading dot so listings skip it.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.walden-tmp"))
}

/// Replace `path` with `bytes` (mode `mode`) so that after a crash it holds
/// either the old or the new content.
pub fn atomic_write_with(
    io: &mut dyn Io,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_name(path);
    let err = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateError::Io {
            what,
            path: p,
            source,
        }
    };
    io.write_synced(&tmp, bytes, mode)
        .map_err(err("write", &tmp))?;
    io.rename(&tmp, path)
        .map_err(err("rename into place", path))?;
    io.sync_dir(dir).map_err(err("sync directory", dir))?;
    Ok(())
}

/// [`atomic_write_with`] on the real file system, mode 0644.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    atomic_write_with(&mut RealIo, path, bytes, 0o644)
}

/// Test helpers: an [`Io`] that fails after a number of operations.
/// Write every `(path, bytes)` of `files` (mode 0644; parent directories
/// created) and make them durable with one [`Io::sync_fs`] on `root`, the
/// directory they are under. The caller commits the set afterwards (a
/// rename of `root`, or renames of each file) and syncs the directories it
/// renamed in.
pub fn write_set_with<'a>(
    io: &mut dyn Io,
    root: &Path,
    files: impl IntoIterator<Item = (PathBuf, &'a [u8])>,
) -> Result<(), StateError> {
    let err = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateError::Io {
            what,
            path: p,
            source,
        }
    };
    io.create_dir_all(root).map_err(err("create", root))?;
    for (path, bytes) in files {
        let dir = path.parent().unwrap_or(root);
        if dir != root {
            io.create_dir_all(dir).map_err(err("create", dir))?;
        }
        io.write_unsynced(&path, bytes, 0o644)
            .map_err(err("write", &path))?;
    }
    io.sync_fs(root)
        .map_err(err("sync the file system of", root))
}

#[cfg(test)]
pub mod fault {
    use super::{Io, RealIo};
    use std::path::Path;

    /// Passes the first `budget` operations to the real file system, then
    /// fails every further one, as if the power was cut at that point.
    #[derive(Debug)]
    pub struct FaultyIo {
        /// Operations left before the "crash".
        pub budget: usize,
        /// Operations attempted so far.
        pub ops: usize,
    }

    impl FaultyIo {
        /// Crash after `budget` operations.
        pub fn new(budget: usize) -> Self {
            Self { budget, ops: 0 }
        }

        fn step(&mut self) -> std::io::Result<()> {
            self.ops += 1;
            if self.ops > self.budget {
                return Err(std::io::Error::other("simulated power cut"));
            }
            Ok(())
        }
    }

    impl Io for FaultyIo {
        fn write_synced(&mut self, p: &Path, b: &[u8], mode: u32) -> std::io::Result<()> {
            self.step()?;
            RealIo.write_synced(p, b, mode)
        }
        fn write_unsynced(&mut self, p: &Path, b: &[u8], mode: u32) -> std::io::Result<()> {
            self.step()?;
            RealIo.write_unsynced(p, b, mode)
        }
        fn sync_fs(&mut self, p: &Path) -> std::io::Result<()> {
            self.step()?;
            RealIo.sync_fs(p)
        }
        fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.step()?;
            RealIo.rename(from, to)
        }
        fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()> {
            self.step()?;
            RealIo.sync_dir(dir)
        }
        fn create_dir_all(&mut self, dir: &Path) -> std::io::Result<()> {
            self.step()?;
            RealIo.create_dir_all(dir)
        }
        fn remove_dir_all(&mut self, dir: &Path) -> std::io::Result<()> {
            self.step()?;
            RealIo.remove_dir_all(dir)
        }
        fn remove_file(&mut self, p: &Path) -> std::io::Result<()> {
            self.step()?;
            RealIo.remove_file(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fault::FaultyIo;
    use super::*;

    #[test]
    fn a_crash_at_any_step_leaves_old_or_new() {
        for budget in 0..4 {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("last-good");
            std::fs::write(&path, "old").unwrap();
            let mut io = FaultyIo::new(budget);
            let result = atomic_write_with(&mut io, &path, b"new", 0o644);
            let now = std::fs::read_to_string(&path).unwrap();
            assert!(now == "old" || now == "new", "budget {budget}: {now:?}");
            if result.is_ok() {
                assert_eq!(now, "new");
            }
            // Crashing before the rename keeps the old content.
            if budget < 2 {
                assert_eq!(now, "old", "budget {budget}");
            }
        }
    }

    #[test]
    fn mode_is_applied_and_temp_is_gone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("authorized_keys");
        atomic_write_with(&mut RealIo, &path, b"k", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!temp_name(&path).exists());
    }
}
