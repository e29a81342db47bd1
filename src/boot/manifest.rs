//! `images/<version>/manifest.toml`: what an image is made of, written by
//! image/build.sh, and the sha256 check stage 1 runs before booting.
//!
//! ```toml
//! version = "0.1.0"
//! kernel_version = "6.1.0-26-amd64"
//! build_time = "2024-11-21T23:00:00Z"
//! packages = ["bash=5.2.15-2+b7", ...]
//!
//! [artifacts]
//! "root.squashfs" = "<sha256 hex>"
//! "vmlinuz" = "<sha256 hex>"
//! "initrd.img" = "<sha256 hex>"
//! ```

use super::BootError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// File name of the manifest inside a version directory.
pub const MANIFEST: &str = "manifest.toml";

/// The parsed manifest. Unknown keys are allowed so an older stage 1 can
/// still read a newer manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    /// Image version (the directory name under images/).
    pub version: String,
    /// `uname -r` of the kernel in the image.
    pub kernel_version: String,
    /// When the image was built (RFC 3339, UTC).
    pub build_time: String,
    /// Debian packages in the root, `name=version`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Artifact file name -> sha256 (lower-case hex).
    pub artifacts: BTreeMap<String, String>,
}

impl Manifest {
    /// Parse manifest text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, BootError> {
        let m: Manifest = toml::from_str(text).map_err(|e| BootError::Manifest {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        for (name, hash) in &m.artifacts {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BootError::Manifest {
                    path: path.to_path_buf(),
                    reason: format!("artifact {name}: {hash:?} is not a sha256 in hex"),
                });
            }
        }
        Ok(m)
    }

    /// Read and parse a manifest file.
    pub fn load(path: &Path) -> Result<Self, BootError> {
        let text = std::fs::read_to_string(path).map_err(|e| BootError::Manifest {
            path: path.to_path_buf(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// The expected sha256 of artifact `name`.
    pub fn expected(&self, name: &str, path: &Path) -> Result<String, BootError> {
        self.artifacts
            .get(name)
            .map(|h| h.to_ascii_lowercase())
            .ok_or_else(|| BootError::Manifest {
                path: path.to_path_buf(),
                reason: format!("no sha256 for {name} under [artifacts]"),
            })
    }
}

/// The sha256 (hex) and length of a file, optionally copying every byte
/// read to `copy` (walden.toram hashes and copies in one pass, so the copy
/// in RAM is exactly what was verified).
///
/// A reader thread feeds 1 MiB chunks through a small bounded channel, so
/// reading the media and hashing overlap: on a slow machine (or under TCG)
/// that roughly halves the time stage 1 spends here.
pub fn hash_file(
    path: &Path,
    mut copy: Option<&mut dyn Write>,
) -> Result<(String, u64), BootError> {
    let io = |e| BootError::io(path, e);
    let mut f = File::open(path).map_err(io)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
    let reader = std::thread::spawn(move || loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = match read_chunk(&mut f, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            return;
        }
    });
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut result = Ok(());
    for chunk in rx.iter() {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                result = Err(io(e));
                break;
            }
        };
        hasher.update(&chunk);
        if let Some(w) = copy.as_mut() {
            if let Err(e) = w.write_all(&chunk) {
                result = Err(io(e));
                break;
            }
        }
        total += chunk.len() as u64;
    }
    drop(rx);
    // The reader ends on EOF, on an error, or when the channel closes.
    let _ = reader.join();
    result?;
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, total))
}

/// Fill `buf` as far as the file allows (short only at end of file).
fn read_chunk(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A version directory on the media and what is in it.
#[derive(Debug, Clone)]
pub struct VersionDir {
    /// The version (directory name).
    pub version: String,
    /// Full path of images/<version>/.
    pub dir: PathBuf,
}

/// The versions under `images/`, newest first (compared as versions: runs
/// of digits numerically, everything else as text).
pub fn list_versions(images: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(images)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join(MANIFEST).is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| version_cmp(b, a));
    v
}

/// Compare versions like `sort -V`: digit runs as numbers.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, run)) if *ld == d => run.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys))
            }
            _ => x.1.cmp(&y.1),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Find `images/<version>/` (or the newest version when none is asked for).
pub fn select_version(
    media_root: &Path,
    version: Option<&str>,
    device: &str,
) -> Result<VersionDir, BootError> {
    let images = media_root.join("images");
    let available = list_versions(&images);
    let chosen = match version {
        Some(v) if images.join(v).join(MANIFEST).is_file() => Some(v.to_string()),
        Some(_) => None,
        None => available.first().cloned(),
    };
    match chosen {
        Some(v) => Ok(VersionDir {
            dir: images.join(&v),
            version: v,
        }),
        None => Err(BootError::VersionNotFound {
            version: version.unwrap_or("<newest>").to_string(),
            device: device.to_string(),
            available: if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn manifest_text(hash: &str) -> String {
        format!(
            "version = \"0.1.0\"\nkernel_version = \"6.1.0-26-amd64\"\n\
             build_time = \"2024-11-21T23:00:00Z\"\npackages = [\"bash=5.2\"]\n\
             future_key = 1\n\n[artifacts]\n\"root.squashfs\" = \"{hash}\"\n"
        )
    }

    #[test]
    fn parses_and_verifies_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("images/0.1.0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("root.squashfs"), b"hello").unwrap();
        std::fs::write(dir.join(MANIFEST), manifest_text(HELLO_SHA)).unwrap();

        let m = Manifest::load(&dir.join(MANIFEST)).unwrap();
        assert_eq!(m.version, "0.1.0");
        assert_eq!(m.packages, vec!["bash=5.2".to_string()]);
        let want = m.expected("root.squashfs", &dir).unwrap();
        let mut copy = Vec::new();
        let (got, len) = hash_file(&dir.join("root.squashfs"), Some(&mut copy)).unwrap();
        assert_eq!(got, want);
        assert_eq!(len, 5);
        assert_eq!(copy, b"hello");
        let err = m.expected("vmlinuz", &dir).unwrap_err().to_string();
        assert!(err.contains("no sha256 for vmlinuz"), "{err}");
    }

    #[test]
    fn hashes_files_larger_than_a_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big");
        let data: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let mut copy = Vec::new();
        let (got, len) = hash_file(&p, Some(&mut copy)).unwrap();
        let want: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!((got, len), (want, data.len() as u64));
        assert_eq!(copy, data);
        assert!(hash_file(&tmp.path().join("nope"), None).is_err());
    }

    #[test]
    fn rejects_malformed_manifests() {
        let p = Path::new("/m/manifest.toml");
        let err = Manifest::parse(&manifest_text("abc"), p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/m/manifest.toml") && err.contains("not a sha256"),
            "{err}"
        );
        let err = Manifest::parse("version = 1", p).unwrap_err().to_string();
        assert!(err.contains("/m/manifest.toml"), "{err}");
        let err = Manifest::load(Path::new("/nonexistent/manifest.toml")).unwrap_err();
        assert!(err.to_string().contains("cannot read it"));
    }

    #[test]
    fn versions_sort_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        for v in ["0.9.0", "0.10.0", "0.2.1", "junk"] {
            let d = tmp.path().join("images").join(v);
            std::fs::create_dir_all(&d).unwrap();
            if v != "junk" {
                std::fs::write(d.join(MANIFEST), "").unwrap();
            }
        }
        assert_eq!(
            list_versions(&tmp.path().join("images")),
            vec!["0.10.0", "0.9.0", "0.2.1"]
        );
        let v = select_version(tmp.path(), None, "/dev/vda1").unwrap();
        assert_eq!(v.version, "0.10.0");
        let v = select_version(tmp.path(), Some("0.2.1"), "/dev/vda1").unwrap();
        assert_eq!(v.dir, tmp.path().join("images/0.2.1"));
        let err = select_version(tmp.path(), Some("1.0"), "/dev/vda1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "images/1.0/ not found on /dev/vda1 (available: 0.10.0, 0.9.0, 0.2.1)"
        );
        let err = select_version(&tmp.path().join("x"), None, "/dev/sr0").unwrap_err();
        assert!(err.to_string().contains("available: none"));
    }
}
