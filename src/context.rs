//! Paths walden touches, as values (STYLE.md "keep real paths only at the edge").
//!
//! Every module that reads /proc, /sys, /dev, /run or /config takes a
//! [`Paths`] so tests can point it at a temporary tree.

use std::path::{Path, PathBuf};

/// The file-system locations walden works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Root of the host file system ("/" on the appliance).
    pub root: PathBuf,
    /// Config directory (the config disk's mount point, /config).
    pub config: PathBuf,
    /// Runtime directory for walden's socket and state (/run/walden).
    pub run: PathBuf,
    /// Directory for walden's own log file, when logging to a file.
    pub log_dir: Option<PathBuf>,
    /// sysfs mount (/sys).
    pub sys: PathBuf,
    /// procfs mount (/proc).
    pub proc: PathBuf,
    /// devtmpfs mount (/dev).
    pub dev: PathBuf,
}

impl Paths {
    /// The real appliance layout rooted at `root` ("/" in production).
    pub fn under(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            config: root.join("config"),
            run: root.join("run/walden"),
            log_dir: None,
            sys: root.join("sys"),
            proc: root.join("proc"),
            dev: root.join("dev"),
        }
    }

    /// The control socket inside [`Paths::run`].
    pub fn control_socket(&self) -> PathBuf {
        self.run.join("control.sock")
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self::under(Path::new("/"))
    }
}

/// Where the config disk is mounted on the appliance.
pub const DEFAULT_CONFIG: &str = "/config";

/// Default control socket path used by the CLI.
pub const DEFAULT_SOCKET: &str = "/run/walden/control.sock";
