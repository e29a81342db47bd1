//! Make a guest's disks exist before it starts: create missing images
//! (a thin qcow2 overlay on `base`, or an empty image of `size`) with
//! qemu-img, and refuse to start when a block device, a base or a
//! CD-ROM's ISO image is missing.
//!
//! Existing images are never touched: walden does not grow, convert or
//! rebase them.

use crate::config::{DiskConfig, DiskFormat, DiskSource, GuestConfig};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one qemu-img call may take (create is metadata only).
/// QEMU's disk image tool (Debian: qemu-utils), found through PATH.
pub const QEMU_IMG: &str = "qemu-img";
const QEMU_IMG_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a guest's disks are not ready.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// `base` does not exist.
    #[error(
        "guest {guest}: {at}: base image {base} does not exist; copy the image there or fix `base`"
    )]
    MissingBase {
        /// Guest name.
        guest: String,
        /// The disk ("guests/NAME.toml disk[0]").
        at: String,
        /// The missing base.
        base: PathBuf,
    },
    /// A `device` that does not exist or is not a block device.
    #[error("guest {guest}: {at}: {device} is not a block device ({reason}); check the disk is attached and the /dev/disk/by-id name in `device`")]
    BadDevice {
        /// Guest name.
        guest: String,
        /// The disk.
        at: String,
        /// The device path.
        device: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A missing image without `base` or `size` to create it from.
    #[error("guest {guest}: {at}: image {path} does not exist and has no `base` or `size` to create it; copy the image there or add size = \"20GiB\"")]
    CannotCreate {
        /// Guest name.
        guest: String,
        /// The disk.
        at: String,
        /// The missing image.
        path: PathBuf,
    },
    /// A `[[cdrom]] path` that is not an ISO file here.
    #[error("guest {guest}: {at}: ISO image {path} {reason}; copy the ISO there, fix `path`, or remove it for an empty drive")]
    BadIso {
        /// Guest name.
        guest: String,
        /// The drive ("guests/NAME.toml cdrom[0]").
        at: String,
        /// The path.
        path: PathBuf,
        /// "does not exist" or "is not a regular file".
        reason: &'static str,
    },
    /// `path` exists but is not a regular file.
    #[error("guest {guest}: {at}: {path} exists but is not a regular file; point `path` at an image file or use `device` for block devices")]
    NotAFile {
        /// Guest name.
        guest: String,
        /// The disk.
        at: String,
        /// The path.
        path: PathBuf,
    },
    /// The image's directory could not be created.
    #[error("guest {guest}: {at}: cannot create directory {dir}")]
    CreateDir {
        /// Guest name.
        guest: String,
        /// The disk.
        at: String,
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// qemu-img failed, could not run or took too long.
    #[error("guest {guest}: {at}: `{command}` failed: {detail}")]
    QemuImg {
        /// Guest name.
        guest: String,
        /// The disk.
        at: String,
        /// The command line.
        command: String,
        /// Exit status and stderr, or why it did not run.
        detail: String,
    },
}

/// Create the missing images of `guest` (see the module docs). Returns one
/// line per action taken ("created /x.qcow2 as an overlay of /base.qcow2");
/// empty when everything existed.
pub fn prepare(guest: &GuestConfig) -> Result<Vec<String>, DiskError> {
    prepare_with(guest, Path::new(QEMU_IMG))
}

/// [`prepare`] with a chosen qemu-img binary.
pub fn prepare_with(guest: &GuestConfig, qemu_img: &Path) -> Result<Vec<String>, DiskError> {
    for c in &guest.cdroms {
        let Some(iso) = &c.path else { continue };
        let reason = match std::fs::metadata(iso) {
            Ok(m) if m.is_file() => continue,
            Ok(_) => "is not a regular file",
            Err(_) => "does not exist",
        };
        return Err(DiskError::BadIso {
            guest: guest.name.as_str().to_string(),
            at: c.at.to_string(),
            path: iso.clone(),
            reason,
        });
    }
    let mut done = Vec::new();
    for d in &guest.disks {
        if let Some(line) = prepare_disk(guest.name.as_str(), d, qemu_img)? {
            done.push(line);
        }
    }
    Ok(done)
}

fn prepare_disk(guest: &str, d: &DiskConfig, qemu_img: &Path) -> Result<Option<String>, DiskError> {
    let at = d.at.to_string();
    let ctx = Ctx {
        guest,
        at: &at,
        qemu_img,
    };
    match &d.source {
        DiskSource::Device(device) => {
            let reason = match std::fs::metadata(device) {
                Ok(m) if m.file_type().is_block_device() => return Ok(None),
                Ok(_) => "it is not a block device".to_string(),
                Err(e) => e.to_string(),
            };
            Err(DiskError::BadDevice {
                guest: guest.into(),
                at,
                device: device.clone(),
                reason,
            })
        }
        DiskSource::File {
            path,
            base,
            size,
            format,
        } => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_file() => return Ok(None),
                Ok(m) if m.file_type().is_symlink() && path.is_file() => return Ok(None),
                Ok(_) => {
                    return Err(DiskError::NotAFile {
                        guest: guest.into(),
                        at,
                        path: path.clone(),
                    })
                }
                Err(_) => {}
            }
            let size = size.map(|s| s.bytes().to_string());
            let mut args: Vec<String> = vec!["create".into(), "-q".into(), "-f".into()];
            let what = match base {
                Some(base) => {
                    if !base.is_file() {
                        return Err(DiskError::MissingBase {
                            guest: guest.into(),
                            at,
                            base: base.clone(),
                        });
                    }
                    let base_format = ctx.format_of(base)?;
                    args.extend(["qcow2".into(), "-F".into(), base_format, "-b".into()]);
                    args.push(base.to_string_lossy().into_owned());
                    format!("as a thin overlay of {}", base.display())
                }
                None if size.is_some() => {
                    let f = match format {
                        DiskFormat::Qcow2 => "qcow2",
                        DiskFormat::Raw => "raw",
                    };
                    args.push(f.into());
                    format!("as an empty {f} image")
                }
                None => {
                    return Err(DiskError::CannotCreate {
                        guest: guest.into(),
                        at,
                        path: path.clone(),
                    })
                }
            };
            args.push(path.to_string_lossy().into_owned());
            args.extend(size.clone());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| DiskError::CreateDir {
                    guest: guest.into(),
                    at: at.clone(),
                    dir: dir.to_path_buf(),
                    source,
                })?;
            }
            ctx.run(&args)?;
            let size = size.map(|b| format!(" of {b} bytes")).unwrap_or_default();
            Ok(Some(format!("created {}{size} {what}", path.display())))
        }
    }
}

struct Ctx<'a> {
    guest: &'a str,
    at: &'a str,
    qemu_img: &'a Path,
}

impl Ctx<'_> {
    /// The format qemu-img detects for `image` (the backing format must be
    /// given explicitly: qemu refuses to probe it).
    fn format_of(&self, image: &Path) -> Result<String, DiskError> {
        let args = vec![
            "info".into(),
            // -U: the base is usually open (read-only) by running guests.
            "-U".into(),
            "--output=json".into(),
            image.to_string_lossy().into_owned(),
        ];
        let out = self.run(&args)?;
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v.get("format")?.as_str().map(str::to_string))
            .ok_or_else(|| self.error(&args, "no \"format\" in its JSON output".into()))
    }

    fn error(&self, args: &[String], detail: String) -> DiskError {
        DiskError::QemuImg {
            guest: self.guest.into(),
            at: self.at.into(),
            command: format!("{} {}", self.qemu_img.display(), args.join(" ")),
            detail,
        }
    }

    /// Run qemu-img with a timeout; its stdout on success.
    fn run(&self, args: &[String]) -> Result<String, DiskError> {
        match crate::command::run(Command::new(self.qemu_img).args(args), QEMU_IMG_TIMEOUT) {
            Ok(f) if f.status.success() => Ok(f.stdout),
            Ok(f) => Err(self.error(args, f.reason())),
            Err(e) => Err(self.error(args, e.to_string())),
        }
    }
}

#[cfg(test)]
#[path = "disks_tests.rs"]
mod tests;
