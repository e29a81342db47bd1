//! The error type of image operations (`walden image ...`, trial boots).

use super::grubcfg::GrubCfgError;
use super::grubenv::GrubEnvError;
use super::trial::TrialError;
use std::path::PathBuf;

/// Errors installing, listing, removing or rolling back images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file-system operation failed.
    #[error("{path}: cannot {op}", path = path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The version to install is not a usable image directory.
    #[error("{path}: not a walden image: {reason}", path = path.display())]
    BadSource {
        /// The directory or file given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The media has too little free space for the new version.
    #[error("the boot media has {free_mib} MiB free but version {version} needs {need_mib} MiB; remove an old version first (`walden image list`, `walden image remove VERSION`)")]
    NoSpace {
        /// Version to install.
        version: String,
        /// Free space.
        free_mib: u64,
        /// Space needed.
        need_mib: u64,
    },
    /// The version is on the media already.
    #[error(
        "version {0} is already on the boot media; `walden image remove {0}` first to reinstall it"
    )]
    AlreadyInstalled(String),
    /// No such version on the media.
    #[error("version {version} is not on the boot media (installed: {installed})")]
    NotInstalled {
        /// Requested version.
        version: String,
        /// What is there.
        installed: String,
    },
    /// Removing a version the machine needs.
    #[error("version {version} is {role}; it cannot be removed (roll back or install another version first)")]
    Protected {
        /// The version.
        version: String,
        /// Why it is needed ("running", "active", "the fallback of the trial").
        role: &'static str,
    },
    /// The machine booted from an ISO: one read-only version, no counters.
    #[error("this machine booted from an ISO (one version, read-only media); to {what}, write the other walden ISO to the boot medium and boot it (docs/upgrade.md)")]
    Iso {
        /// What was asked ("install a version", "roll back").
        what: &'static str,
    },
    /// The machine did not boot through walden's stage 1.
    #[error("no boot record at {path} (not booted from walden boot media); pass --media DIR to work on a mounted ESP", path = path.display())]
    NoBootRecord {
        /// Where the record was looked for.
        path: PathBuf,
    },
    /// Mounting or remounting the boot media failed.
    #[error("cannot {op} the boot media {device} at {mount}: {source}", mount = mount.display())]
    Mount {
        /// What was being done.
        op: &'static str,
        /// Device node.
        device: String,
        /// Mount point.
        mount: PathBuf,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
    /// Manifest or hash check failed.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
    /// grubenv could not be read or written.
    #[error(transparent)]
    GrubEnv(#[from] GrubEnvError),
    /// A trial transition was refused.
    #[error(transparent)]
    Trial(#[from] TrialError),
    /// grub.cfg could not be generated.
    #[error(transparent)]
    GrubCfg(#[from] GrubCfgError),
}

impl ImageError {
    /// An `Io` error for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
