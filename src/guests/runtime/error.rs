//! The one error type of the guest runtime.

/// What went wrong while running guests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// No connection to libvirt.
    #[error("cannot connect to libvirt at {uri}: {message}; is libvirtd running? (`walden status` lists the libvirtd service)")]
    Connect {
        /// The connection URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// A libvirt call failed.
    #[error("libvirt could not {op} guest {guest}: {message}")]
    Libvirt {
        /// What was asked ("start", "define", ...).
        op: &'static str,
        /// The guest (domain name); empty for calls about all domains.
        guest: String,
        /// libvirt's message.
        message: String,
    },
    /// A libvirt call did not return in time.
    #[error("libvirt did not answer `{op}` for guest {guest} within {secs} s; libvirtd may be hung (see its log lines and `walden status`)")]
    Timeout {
        /// What was asked.
        op: &'static str,
        /// The guest.
        guest: String,
        /// The limit in seconds.
        secs: u64,
    },
    /// A name the config does not know.
    #[error("no guest named {name:?} in the config; `walden guest list` shows the guests")]
    UnknownGuest {
        /// The name asked for.
        name: String,
    },
    /// The domain XML could not be made.
    #[error("guest {guest}: cannot make its libvirt domain: {message}")]
    Render {
        /// The guest.
        guest: String,
        /// Why.
        message: String,
    },
    /// The disks could not be prepared.
    #[error("guest {guest}: {message}")]
    Disks {
        /// The guest.
        guest: String,
        /// Why (names the disk and what to do).
        message: String,
    },
    /// A worker thread could not be started.
    #[error("cannot start a {what} thread: {message}; too many threads or out of memory?")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        message: String,
    },
    /// Writing libvirt's config or making its directories failed.
    #[error("cannot write {path}: {message}; is the file system writable?")]
    Setup {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The OS error.
        message: String,
    },
}
