//! Why a mount, an unmount or a swap area did not work. Each message names
//! the mount point or file and says what to do; it becomes the `detail` of
//! the entry in `walden status` and a line of the step's report.

use std::path::PathBuf;

/// Everything that can go wrong with one `[[mount]]` or `[swap]`.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No block device carries the file system `what` names.
    #[error("no disk with {spec} (waited {waited_s} s; looked at: {seen})")]
    NotFound {
        /// `LABEL=..`, `UUID=..`, `PARTUUID=..` or the /dev path.
        spec: String,
        /// How long walden waited for it to appear.
        waited_s: u64,
        /// The block devices seen, with what is on each.
        seen: String,
    },
    /// The probe found no file system and `fstype` is not set.
    #[error("cannot tell the file system on {device}; set fstype in its [[mount]]")]
    UnknownFs {
        /// The device.
        device: PathBuf,
    },
    /// e2fsck -p found damage it does not repair on its own.
    #[error(
        "e2fsck -p {device} found errors it does not repair by itself ({status}): {output}; \
         run `e2fsck {device}` by hand, then `walden config apply`"
    )]
    FsckErrors {
        /// The device.
        device: PathBuf,
        /// e2fsck's exit status.
        status: String,
        /// What it printed (trimmed).
        output: String,
    },
    /// e2fsck could not run to its end (killed after its time limit, ...).
    #[error("e2fsck -p {device}: {reason}; not mounted: run `e2fsck {device}` by hand")]
    FsckRun {
        /// The device.
        device: PathBuf,
        /// What happened.
        reason: String,
    },
    /// The mount point could not be made.
    #[error("cannot create the mount point {target}: {source}")]
    MountPoint {
        /// The mount point.
        target: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// mount(2) failed.
    #[error("cannot mount {what} on {target} ({fstype}): {source}")]
    Mount {
        /// The device.
        what: String,
        /// The mount point.
        target: PathBuf,
        /// The file system type.
        fstype: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// mount.nfs or mount.cifs failed or did not finish.
    #[error("{helper} {share} {target}: {reason}")]
    Helper {
        /// mount.nfs, mount.nfs4 or mount.cifs.
        helper: String,
        /// The share.
        share: String,
        /// The mount point.
        target: PathBuf,
        /// Its exit status and message, or the time limit.
        reason: String,
    },
    /// umount(2) said EBUSY.
    #[error(
        "cannot unmount {target}: something uses it (open files, a running guest's disk, \
         a swap file); stop what uses it (`fuser -vm {target}` shows it) and apply again"
    )]
    Busy {
        /// The mount point.
        target: PathBuf,
    },
    /// umount(2) failed otherwise.
    #[error("cannot unmount {target}: {source}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The swap file could not be made.
    #[error("cannot make the swap file {path}: {reason}")]
    SwapFile {
        /// The file.
        path: PathBuf,
        /// The step that failed and why.
        reason: String,
    },
    /// swapon(2) or swapoff(2) failed.
    #[error("{op} {path}: {source}")]
    Swap {
        /// "swapon" or "swapoff".
        op: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A /proc file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
