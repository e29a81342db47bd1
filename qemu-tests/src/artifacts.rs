//! Finding what `make image` built.
//!
//! Layout (image/build.sh): `<build>/images/<version>/{vmlinuz,initrd.img,
//! root.squashfs,manifest.toml}`, `<build>/walden-<version>-usb.img` and
//! `<build>/walden-<version>.iso`. `<build>` is `$WALDEN_BUILD_DIR` or the
//! repository's `build/`; the version is `$WALDEN_VERSION` or read from the
//! single `walden-*-usb.img` present.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The build directory: `$WALDEN_BUILD_DIR` or `<repo>/build`.
pub fn build_dir() -> PathBuf {
    match std::env::var_os("WALDEN_BUILD_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("build"),
    }
}

/// The built image of one version.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The build directory.
    pub build_dir: PathBuf,
    /// The image version, e.g. "0.1.0".
    pub version: String,
}

impl Artifacts {
    /// Locate the artifacts; the USB image must exist (the others are
    /// checked by their accessors, so a scenario fails on what it needs).
    pub fn locate() -> Result<Self> {
        let build_dir = build_dir();
        let version = match std::env::var("WALDEN_VERSION") {
            Ok(v) if !v.is_empty() => v,
            _ => single_usb_version(&build_dir)?,
        };
        let artifacts = Self { build_dir, version };
        artifacts.usb_image()?;
        Ok(artifacts)
    }

    /// `walden-<version>-usb.img`.
    pub fn usb_image(&self) -> Result<PathBuf> {
        self.existing("USB image", format!("walden-{}-usb.img", self.version))
    }

    /// `walden-<version>.iso`.
    pub fn iso(&self) -> Result<PathBuf> {
        self.existing("ISO", format!("walden-{}.iso", self.version))
    }

    /// `images/<version>/vmlinuz`.
    pub fn kernel(&self) -> Result<PathBuf> {
        self.existing("kernel", self.image_file("vmlinuz"))
    }

    /// `images/<version>/initrd.img`.
    pub fn initrd(&self) -> Result<PathBuf> {
        self.existing("initramfs", self.image_file("initrd.img"))
    }

    fn image_file(&self, name: &str) -> String {
        format!("images/{}/{name}", self.version)
    }

    fn existing(&self, what: &str, rel: String) -> Result<PathBuf> {
        let path = self.build_dir.join(rel);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ArtifactMissing {
                what: what.to_string(),
                path,
            })
        }
    }
}

/// The version of the only `walden-<version>-usb.img` in `dir`.
fn single_usb_version(dir: &Path) -> Result<String> {
    let missing = || Error::ArtifactMissing {
        what: "USB image (walden-<version>-usb.img)".into(),
        path: dir.to_path_buf(),
    };
    let entries = std::fs::read_dir(dir).map_err(|_| missing())?;
    let mut versions: Vec<String> = entries
        .flatten()
        .filter_map(|e| version_of_usb_name(&e.file_name().to_string_lossy()))
        .collect();
    versions.sort();
    match versions.len() {
        0 => Err(missing()),
        1 => Ok(versions.remove(0)),
        _ => Err(Error::AmbiguousVersion {
            dir: dir.to_path_buf(),
            found: versions.join(", "),
        }),
    }
}

/// "walden-0.1.0-usb.img" -> "0.1.0".
fn version_of_usb_name(name: &str) -> Option<String> {
    let v = name.strip_prefix("walden-")?.strip_suffix("-usb.img")?;
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_usb_image_name() {
        let cases = [
            ("walden-0.1.0-usb.img", Some("0.1.0")),
            ("walden-1.2.3-rc1-usb.img", Some("1.2.3-rc1")),
            ("walden-0.1.0.iso", None),
            ("walden--usb.img", None),
            ("other-0.1.0-usb.img", None),
        ];
        for (name, want) in cases {
            assert_eq!(version_of_usb_name(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn single_image_is_picked_and_several_are_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let err = single_usb_version(dir.path()).unwrap_err();
        assert!(err.to_string().contains("run `make image` first"), "{err}");
        std::fs::write(dir.path().join("walden-0.1.0-usb.img"), b"").unwrap();
        std::fs::write(dir.path().join("walden-0.1.0.iso"), b"").unwrap();
        assert_eq!(single_usb_version(dir.path()).unwrap(), "0.1.0");
        std::fs::write(dir.path().join("walden-0.2.0-usb.img"), b"").unwrap();
        let err = single_usb_version(dir.path()).unwrap_err();
        assert!(err.to_string().contains("WALDEN_VERSION"), "{err}");
    }

    #[test]
    fn missing_artifact_says_make_image() {
        let a = Artifacts {
            build_dir: PathBuf::from("/nonexistent"),
            version: "9.9.9".into(),
        };
        let err = a.kernel().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/images/9.9.9/vmlinuz"), "{err}");
        assert!(err.contains("run `make image` first"), "{err}");
    }
}
