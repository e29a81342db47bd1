//! A minimal initramfs assembled from host files, written as the `newc`
//! cpio archive the kernel unpacks (`-initrd` of a direct kernel boot).
//!
//! Used to run programs under the image's kernel without the image itself
//! (see [`crate::kernel_vm`]): files keep their absolute host paths, so a
//! test binary that embeds `env!("CARGO_BIN_EXE_...")` finds its binary.
//! The archive is written in Rust rather than with `cpio`/`find`, so it
//! needs no extra host tool and no staging copy of the (large) binaries.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    /// Contents read from a host file when the archive is written.
    File {
        source: PathBuf,
        mode: u32,
    },
    Data {
        bytes: Vec<u8>,
        mode: u32,
    },
    Symlink(PathBuf),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

/// The archive's members by path (relative to `/`). Parents are added
/// automatically; the `BTreeMap` order puts every directory before its
/// contents, as the kernel's unpacker needs.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Initramfs {
    /// An archive with the mount points an `/init` script uses (`/proc`,
    /// `/sys`, `/dev`, `/run`, `/tmp`) and `/dev/console`, so `/init` has a
    /// console before devtmpfs is mounted.
    pub fn new() -> Self {
        let mut me = Self::default();
        for d in ["/proc", "/sys", "/dev", "/run", "/tmp"] {
            me.dir(d);
        }
        me.insert(
            Path::new("/dev/console"),
            Entry::CharDevice { major: 5, minor: 1 },
        );
        me
    }

    /// Add a directory (and its parents).
    pub fn dir(&mut self, path: impl AsRef<Path>) {
        self.insert(path.as_ref(), Entry::Dir);
    }

    /// Add host file `source` at `dest` with the source's permission bits
    /// (symlinks followed). Read when the archive is written.
    pub fn file(&mut self, dest: impl AsRef<Path>, source: impl AsRef<Path>) -> Result<()> {
        let source = source.as_ref();
        let meta = std::fs::metadata(source).map_err(|e| Error::io("stat", source, e))?;
        if !meta.is_file() {
            return Err(Error::unexpected(
                "initramfs member",
                format!("{} is not a regular file", source.display()),
            ));
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(
            dest.as_ref(),
            Entry::File {
                source: source.to_path_buf(),
                mode,
            },
        );
        Ok(())
    }

    /// Add a file with these contents and permission bits (e.g. `/init`, 0o755).
    pub fn data(&mut self, dest: impl AsRef<Path>, bytes: impl Into<Vec<u8>>, mode: u32) {
        let bytes = bytes.into();
        self.insert(dest.as_ref(), Entry::Data { bytes, mode });
    }

    /// Add a symbolic link `dest -> target`.
    pub fn symlink(&mut self, dest: impl AsRef<Path>, target: impl AsRef<Path>) {
        let target = target.as_ref().to_path_buf();
        self.insert(dest.as_ref(), Entry::Symlink(target));
    }

    /// Add a dynamically linked program at its own absolute path, with every
    /// shared library `ldd` names (also at their own paths).
    pub fn executable(&mut self, path: &Path) -> Result<()> {
        self.file(path, path)?;
        for lib in shared_libraries(path)? {
            self.file(&lib, &lib)?;
        }
        Ok(())
    }

    /// Add the regular files and directories under host directory `source`
    /// at the same absolute paths (symlinks and special files are skipped).
    pub fn tree(&mut self, source: &Path) -> Result<()> {
        self.dir(source);
        let entries = std::fs::read_dir(source).map_err(|e| Error::io("list", source, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", source, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
            if kind.is_dir() {
                self.tree(&path)?;
            } else if kind.is_file() {
                self.file(&path, &path)?;
            }
        }
        Ok(())
    }

    /// Add a static busybox as `/bin/busybox` and `/bin/<applet>` links.
    pub fn busybox(&mut self, busybox: &Path, applets: &[&str]) -> Result<()> {
        self.file("/bin/busybox", busybox)?;
        for applet in applets {
            self.symlink(format!("/bin/{applet}"), "busybox");
        }
        Ok(())
    }

    /// Whether `path` is a member.
    pub fn contains(&self, path: impl AsRef<Path>) -> bool {
        self.entries.contains_key(&relative(path.as_ref()))
    }

    /// Write the `newc` cpio archive to `out` (uncompressed: the kernel
    /// takes it as is and TCG spends no time inflating it).
    pub fn write(&self, out: &Path) -> Result<()> {
        let file = File::create(out).map_err(|e| Error::io("create", out, e))?;
        let mut w = BufWriter::new(file);
        let io = |e| Error::io("write", out, e);
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let name = path.to_string_lossy();
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir => header(&mut w, &name, ino, S_IFDIR | 0o755, 0, (0, 0)).map_err(io)?,
                Entry::Data { bytes, mode } => {
                    header(&mut w, &name, ino, S_IFREG | mode, bytes.len(), (0, 0)).map_err(io)?;
                    body(&mut w, bytes).map_err(io)?;
                }
                Entry::Symlink(target) => {
                    let t = target.to_string_lossy();
                    header(&mut w, &name, ino, S_IFLNK | 0o777, t.len(), (0, 0)).map_err(io)?;
                    body(&mut w, t.as_bytes()).map_err(io)?;
                }
                Entry::CharDevice { major, minor } => {
                    let dev = (*major, *minor);
                    header(&mut w, &name, ino, S_IFCHR | 0o600, 0, dev).map_err(io)?;
                }
                Entry::File { source, mode } => {
                    let bytes = std::fs::read(source).map_err(|e| Error::io("read", source, e))?;
                    header(&mut w, &name, ino, S_IFREG | mode, bytes.len(), (0, 0)).map_err(io)?;
                    body(&mut w, &bytes).map_err(io)?;
                }
            }
        }
        header(&mut w, "TRAILER!!!", 0, 0, 0, (0, 0)).map_err(io)?;
        w.flush().map_err(io)
    }

    fn insert(&mut self, path: &Path, entry: Entry) {
        let rel = relative(path);
        let mut parent = rel.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries.entry(p.to_path_buf()).or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(rel, entry);
    }
}

/// `/a/b` -> `a/b` (cpio names are relative to the root).
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// A `newc` header ("070701", 13 fields of 8 hex digits) and the name,
/// NUL-terminated and padded to 4 bytes.
fn header(
    w: &mut impl Write,
    name: &str,
    ino: u32,
    mode: u32,
    size: usize,
    rdev: (u32, u32),
) -> std::io::Result<()> {
    let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize as u32,
        0,
    ];
    write!(w, "070701")?;
    for f in fields {
        write!(w, "{f:08x}")?;
    }
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 110 + namesize)
}

fn body(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes)?;
    pad(w, bytes.len())
}

fn pad(w: &mut impl Write, len: usize) -> std::io::Result<()> {
    w.write_all(&[0; 3][..(4 - len % 4) % 4])
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `binary`;
/// empty for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::ToolMissing {
            tool: "ldd".into(),
            package: "libc-bin",
            source,
        })?;
    // ldd exits 1 with "not a dynamic executable" for static binaries.
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

/// Paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x..)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x..)`; `linux-vdso.so.1` has none.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
#[path = "initramfs_tests.rs"]
mod tests;
