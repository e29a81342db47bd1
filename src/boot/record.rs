//! `/run/walden/boot.toml`: what stage 1 booted and how, for stage 2 to
//! report (`walden status`) and for the image tools to find the media.
//!
//! ```toml
//! version = "0.1.0"              # images/<version>/ that was booted
//! kernel_version = "6.1.0-26-amd64"
//! media_device = "/dev/vda2"     # block device holding the boot media
//! media_fstype = "vfat"          # vfat (USB image) or iso9660 (ISO)
//! media_label = "WALDEN-BOOT"
//! media_mount = "/run/walden/media"  # mounted read-only; remount rw to write grubenv
//! boot_kind = "usb"              # "usb" (GPT + ESP) or "iso"
//! toram = false                  # root.squashfs was copied to RAM
//! squashfs_sha256 = "..."        # verified against manifest.toml
//! stage1_start_s = 1.92          # /proc/uptime when stage 1 started
//! stage1_end_s = 4.31            # /proc/uptime just before exec of /sbin/init
//! ```

use super::BootError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where stage 1 writes the record (in the initramfs /run, which becomes
/// the real root's /run).
pub const BOOT_RECORD: &str = "/run/walden/boot.toml";

/// How the machine booted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The image version booted.
    pub version: String,
    /// Kernel release from the manifest.
    pub kernel_version: String,
    /// Device node of the boot media.
    pub media_device: String,
    /// File-system type of the boot media.
    pub media_fstype: String,
    /// Label of the boot media, if it has one.
    pub media_label: Option<String>,
    /// Where the media stays mounted (read-only).
    pub media_mount: String,
    /// "usb" for the GPT image with an ESP, "iso" for the ISO.
    pub boot_kind: String,
    /// Whether root.squashfs runs from RAM.
    pub toram: bool,
    /// sha256 of the root.squashfs that was verified.
    pub squashfs_sha256: String,
    /// Seconds since kernel start when stage 1 began.
    pub stage1_start_s: f64,
    /// Seconds since kernel start when stage 1 handed over to /sbin/init.
    pub stage1_end_s: f64,
}

impl BootRecord {
    /// Serialise to TOML.
    pub fn to_toml(&self) -> String {
        // A struct of strings, bools and floats always serialises.
        toml::to_string(self).unwrap_or_default()
    }

    /// Write the record to `path`, creating the directory.
    pub fn write(&self, path: &Path) -> Result<(), BootError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BootError::io(dir, e))?;
        }
        std::fs::write(path, self.to_toml()).map_err(|e| BootError::io(path, e))
    }

    /// Read a record written by stage 1.
    pub fn load(path: &Path) -> Result<Self, BootError> {
        let text = std::fs::read_to_string(path).map_err(|e| BootError::io(path, e))?;
        toml::from_str(&text).map_err(|e| BootError::Manifest {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }
}

/// Seconds since boot from a /proc/uptime text ("12.34 56.78").
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let r = BootRecord {
            version: "0.1.0".into(),
            kernel_version: "6.1.0-26-amd64".into(),
            media_device: "/dev/vda2".into(),
            media_fstype: "vfat".into(),
            media_label: Some("WALDEN-BOOT".into()),
            media_mount: "/run/walden/media".into(),
            boot_kind: "usb".into(),
            toram: false,
            squashfs_sha256: "ab".repeat(32),
            stage1_start_s: 1.5,
            stage1_end_s: 3.25,
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/walden/boot.toml");
        r.write(&path).unwrap();
        assert_eq!(BootRecord::load(&path).unwrap(), r);
        assert!(r.to_toml().contains("boot_kind = \"usb\""));
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("12.34 56.78\n"), Some(12.34));
        assert_eq!(parse_uptime(""), None);
    }
}
