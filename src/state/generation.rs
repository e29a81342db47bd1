//! What a generation is: the config files, their content hash, and meta.

use super::StateError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A config's files: path relative to the config directory (`host.toml`,
/// `guests/web.toml`) -> content. Sorted, so hashing is stable.
pub type ConfigFiles = BTreeMap<String, Vec<u8>>;

/// A generation's name: its number and the first 12 hex digits of its hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenerationId {
    /// Increasing number, 1 for the first.
    pub number: u64,
    /// First 12 hex digits of the content hash.
    pub hash12: String,
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.number, self.hash12)
    }
}

impl FromStr for GenerationId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, h) = s
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not <number>-<hash12>"))?;
        let number = n.parse().map_err(|_| format!("{s:?}: bad number"))?;
        if h.len() != 12 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?}: bad hash"));
        }
        Ok(Self {
            number,
            hash12: h.to_string(),
        })
    }
}

/// `meta.toml` of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// sha256 (hex) over the sorted files, see [`content_hash`].
    pub hash: String,
    /// When it was recorded, seconds since the Unix epoch.
    pub created: u64,
    /// Image version that ran it, when known.
    #[serde(default)]
    pub image_version: Option<String>,
    /// "good": it was applied and reached health.
    pub status: String,
}

/// sha256 over `files` in path order: each path, a NUL, the content length
/// as 8 little-endian bytes, the content. Renaming a file changes the hash.
pub fn content_hash(files: &ConfigFiles) -> String {
    let mut h = Sha256::new();
    for (path, bytes) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The files of config directory `dir` that make up a generation:
/// host.toml and guests/*.toml (regular files, not hidden). A missing
/// guests directory is an empty one.
pub fn collect_config(dir: &Path) -> Result<ConfigFiles, StateError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { what, path, source }
    };
    let mut files = ConfigFiles::new();
    let host = dir.join("host.toml");
    files.insert(
        "host.toml".into(),
        std::fs::read(&host).map_err(io("read", &host))?,
    );
    let gdir = dir.join("guests");
    let entries = match std::fs::read_dir(&gdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io("list", &gdir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("list", &gdir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !name.ends_with(".toml") || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        files.insert(format!("guests/{name}"), bytes);
    }
    Ok(files)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let id: GenerationId = "12-0123456789ab".parse().unwrap();
        assert_eq!(id.number, 12);
        assert_eq!(id.to_string(), "12-0123456789ab");
        for bad in ["12", "x-0123456789ab", "1-0123", "1-0123456789xz"] {
            assert!(bad.parse::<GenerationId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_depends_on_names_and_contents_not_order_of_insertion() {
        let mut a = ConfigFiles::new();
        a.insert("host.toml".into(), b"x".to_vec());
        a.insert("guests/a.toml".into(), b"y".to_vec());
        let mut b = ConfigFiles::new();
        b.insert("guests/a.toml".into(), b"y".to_vec());
        b.insert("host.toml".into(), b"x".to_vec());
        assert_eq!(content_hash(&a), content_hash(&b));
        b.insert("guests/b.toml".into(), b"y".to_vec());
        assert_ne!(content_hash(&a), content_hash(&b));
        // Moving bytes between name and content must not collide.
        let mut c = ConfigFiles::new();
        c.insert("host.tomlx".into(), Vec::new());
        let mut d = ConfigFiles::new();
        d.insert("host.toml".into(), b"x".to_vec());
        assert_ne!(content_hash(&c), content_hash(&d));
    }

    #[test]
    fn collect_takes_host_and_guest_tomls_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("host.toml"), "h").unwrap();
        std::fs::create_dir_all(tmp.path().join("guests")).unwrap();
        std::fs::write(tmp.path().join("guests/web.toml"), "w").unwrap();
        std::fs::write(tmp.path().join("guests/.web.toml.swp"), "x").unwrap();
        std::fs::write(tmp.path().join("guests/notes.txt"), "x").unwrap();
        std::fs::create_dir_all(tmp.path().join("etc")).unwrap();
        let files = collect_config(tmp.path()).unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["guests/web.toml", "host.toml"]
        );
    }
}
