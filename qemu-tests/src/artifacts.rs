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

    /// The image's kernel decompressed: the ELF `vmlinux` inside
    /// `vmlinuz`, cached as `<build>/qemu-tests/vmlinux-<version>` (made
    /// again when `vmlinuz` is newer). QEMU boots it through its PVH entry
    /// point (Debian's kernel has the Xen PVH ELF note), which skips the
    /// bzImage's own decompression: 5-6 s of every boot under TCG
    /// (`DirectKernel::like_grub`).
    pub fn kernel_elf(&self) -> Result<PathBuf> {
        let bz = self.kernel()?;
        let out = self
            .build_dir
            .join("qemu-tests")
            .join(format!("vmlinux-{}", self.version));
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if matches!((modified(&out), modified(&bz)), (Some(o), Some(b)) if o >= b) {
            return Ok(out);
        }
        let packed = std::fs::read(&bz).map_err(|e| Error::io("read", &bz, e))?;
        let elf = unpack_kernel(&packed).ok_or_else(|| Error::Unexpected {
            what: format!("kernel {}", bz.display()),
            detail: "no xz, zstd or gzip stream in it unpacks to an ELF file (are xz-utils, zstd and gzip installed?)".into(),
        })?;
        let dir = out.parent().unwrap_or(&self.build_dir);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, elf).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &out).map_err(|e| Error::io("rename", &tmp, e))?;
        Ok(out)
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

/// The kernel ELF inside a bzImage: the payload is the first stream, by
/// offset, of a known compression that unpacks to an ELF file (Debian's
/// kernels use xz; the magic bytes may also occur by chance inside it).
fn unpack_kernel(bz: &[u8]) -> Option<Vec<u8>> {
    const FORMATS: [(&[u8], &str); 3] = [
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x1f\x8b\x08", "gzip"),
    ];
    let mut candidates: Vec<(usize, &str)> = FORMATS
        .iter()
        .flat_map(|(magic, tool)| {
            bz.windows(magic.len())
                .enumerate()
                .filter(move |(_, w)| w == magic)
                .map(move |(at, _)| (at, *tool))
        })
        .collect();
    candidates.sort();
    candidates.into_iter().find_map(|(at, tool)| {
        decompress(tool, &bz[at..]).filter(|out| out.starts_with(b"\x7fELF"))
    })
}

/// `tool -dc` over `input`; whatever it wrote, trailing data after the
/// stream being no error here (the bzImage goes on after its payload).
fn decompress(tool: &str, input: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The tool may stop reading at the end of its stream.
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    let read = child.stdout.take()?.read_to_end(&mut out);
    let _ = child.wait();
    let _ = writer.join();
    read.ok().map(|_| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data` compressed by `tool`.
    fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(tool)
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap().stdout
    }

    #[test]
    fn the_elf_kernel_is_the_first_stream_that_unpacks_to_an_elf_file() {
        let elf: Vec<u8> = b"\x7fELF"
            .iter()
            .copied()
            .chain((0..100_000u32).map(|i| (i % 251) as u8))
            .collect();
        // A setup header, a stray gzip magic that is no stream, the xz
        // payload, then more code: as in a bzImage.
        let mut bz = b"MZ setup \x1f\x8b\x08 not a stream ".to_vec();
        bz.extend(compress("xz", &elf));
        bz.extend(b"trailing decompressor code");
        assert_eq!(unpack_kernel(&bz).as_deref(), Some(elf.as_slice()));
        // A stream that unpacks to something else is no kernel.
        let mut other = b"MZ".to_vec();
        other.extend(compress("xz", b"not an ELF file"));
        assert_eq!(unpack_kernel(&other), None);
    }

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
