//! The `[swap] file`: made when missing (or of another size, or not a swap
//! area): created mode 0600, allocated with fallocate(2) (written with
//! zeroes where the file system cannot allocate), synced, then mkswap.

use crate::boot::fsprobe::probe_swap;
use crate::config::Size;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// mkswap writes one page; it never takes long.
const MKSWAP_LIMIT: Duration = Duration::from_secs(60);

/// What an existing file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    /// Its length.
    pub len: u64,
    /// Whether it carries a swap signature.
    pub is_swap: bool,
}

/// Why the file must be (re)made, or None when it can be used as it is.
pub fn remake(existing: Option<Existing>, size: u64) -> Option<&'static str> {
    match existing {
        None => Some("missing"),
        Some(e) if e.len != size => Some("of another size"),
        Some(e) if !e.is_swap => Some("not a swap area"),
        Some(_) => None,
    }
}

fn inspect(path: &Path) -> Option<Existing> {
    let meta = std::fs::metadata(path).ok()?;
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    Some(Existing {
        len: meta.len(),
        is_swap: n == head.len() && probe_swap(&head).is_some(),
    })
}

/// Make `path` (a real path) a swap area of `size` bytes unless it is one.
/// Returns a note of what was done, None when nothing was.
pub fn ensure(path: &Path, size: u64) -> Result<Option<String>, String> {
    let existing = inspect(path);
    let Some(why) = remake(existing, size) else {
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod 600: {e}"))?;
            return Ok(Some(format!("mode {mode:o} set to 600")));
        }
        return Ok(None);
    };
    if existing.is_some() {
        std::fs::remove_file(path).map_err(|e| format!("cannot remove the old file: {e}"))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let made = allocate(path, size).and_then(|()| mkswap(path));
    if let Err(e) = made {
        // No half-made swap file is left to be mistaken for a good one.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(Some(format!("created {} ({why} before)", Size(size))))
}

fn allocate(path: &Path, size: u64) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("create: {e}"))?;
    let len = i64::try_from(size).map_err(|_| "size too large".to_string())?;
    let fd = f.as_raw_fd();
    match nix::fcntl::fallocate(fd, nix::fcntl::FallocateFlags::empty(), 0, len) {
        Ok(()) => {}
        // Not every file system allocates (a swap file needs real blocks, a
        // sparse file will not do): write zeroes instead.
        Err(nix::Error::EOPNOTSUPP) => {
            let chunk = vec![0u8; 1 << 20];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])
                    .map_err(|e| format!("write: {e}"))?;
                left -= n as u64;
            }
        }
        Err(e) => return Err(format!("fallocate {}: {e}", Size(size))),
    }
    f.sync_all().map_err(|e| format!("fsync: {e}"))
}

fn mkswap(path: &Path) -> Result<(), String> {
    let mut cmd = std::process::Command::new("mkswap");
    cmd.arg(path);
    crate::command::run_ok(&mut cmd, MKSWAP_LIMIT)
        .map(drop)
        .map_err(|e| format!("mkswap {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remake_table() {
        let e = |len, is_swap| Some(Existing { len, is_swap });
        assert_eq!(remake(None, 10), Some("missing"));
        assert_eq!(remake(e(5, true), 10), Some("of another size"));
        assert_eq!(remake(e(10, false), 10), Some("not a swap area"));
        assert_eq!(remake(e(10, true), 10), None);
    }

    #[test]
    fn a_swap_file_is_made_once_and_kept() {
        if std::process::Command::new("mkswap")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: mkswap (util-linux) is not installed");
            assert!(std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() != Ok("1"));
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/swapfile");
        let note = ensure(&path, 1 << 20).unwrap().unwrap();
        assert_eq!(note, "created 1MiB (missing before)");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(inspect(&path).unwrap().is_swap);
        assert_eq!(ensure(&path, 1 << 20).unwrap(), None, "kept as it is");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            ensure(&path, 1 << 20).unwrap().as_deref(),
            Some("mode 644 set to 600")
        );
        let note = ensure(&path, 2 << 20).unwrap().unwrap();
        assert!(note.contains("of another size"), "{note}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 20);
    }
}
