//! Errors of the boot stages. Each message says what failed and where, so
//! stage 1 can print it as the one line a user sees on the console.

use std::path::PathBuf;

/// Everything that can stop stage 1 or the early mounts of stage 2.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A `walden.*` kernel parameter has a value stage 1 cannot use.
    #[error("kernel command line: {param}: {reason}")]
    Cmdline {
        /// The parameter as written, e.g. `walden.media=FOO`.
        param: String,
        /// What is wrong with it and what would be accepted.
        reason: String,
    },
    /// No block device matched the media spec before the wait ran out.
    #[error("no boot media with {spec} after waiting {waited_s} s; looked at: {seen}")]
    MediaNotFound {
        /// The spec, e.g. `LABEL=WALDEN-BOOT`.
        spec: String,
        /// How long stage 1 waited for late devices.
        waited_s: u64,
        /// The block devices seen, with what was probed on each.
        seen: String,
    },
    /// The requested version directory does not exist on the media.
    #[error("images/{version}/ not found on {device} (available: {available})")]
    VersionNotFound {
        /// The version asked for.
        version: String,
        /// The media device.
        device: String,
        /// Versions that do exist, comma separated, or "none".
        available: String,
    },
    /// The manifest is missing, unreadable or malformed.
    #[error("manifest {path}: {reason}")]
    Manifest {
        /// Path of manifest.toml.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// root.squashfs does not hash to what the manifest says.
    #[error(
        "root.squashfs in images/{version}/ on {device} does not match its manifest \
         (sha256 {got}, expected {want}); refusing to boot it"
    )]
    Mismatch {
        /// The version directory.
        version: String,
        /// The media device.
        device: String,
        /// The hash computed.
        got: String,
        /// The hash from the manifest.
        want: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A mount (or move, or unmount) failed.
    #[error("cannot mount {what} on {target} ({fstype}): {source}")]
    Mount {
        /// What was being mounted (device, file system name).
        what: String,
        /// Mount point.
        target: PathBuf,
        /// File system type, or "move"/"bind".
        fstype: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Attaching a loop device failed.
    #[error("cannot attach {file} to a loop device: {reason}")]
    Loop {
        /// The backing file.
        file: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The new root lacks something it must have.
    #[error("{what} not found in {image}; the image is incomplete, rebuild it with `make image`")]
    RootIncomplete {
        /// What is missing, e.g. `/sbin/init`.
        what: String,
        /// Which image, e.g. `images/0.1.0/root.squashfs`.
        image: String,
    },
    /// switch_root or exec of the new init failed.
    #[error("switch_root to {target} failed: {reason}")]
    SwitchRoot {
        /// The new root.
        target: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A helper program (udevadm) failed or timed out.
    #[error("{command}: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status, timeout or spawn error.
        reason: String,
    },
}

impl BootError {
    /// Shorthand for [`BootError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BootError::Io {
            path: path.into(),
            source,
        }
    }
}
