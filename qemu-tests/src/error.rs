//! The harness's one error type.
//!
//! The harness is test support, not product code, so one enum covers its
//! concerns; each variant names what failed, where, and what to do. Scenarios
//! return `anyhow::Result<()>` so these messages (multi-line console tails
//! included) print readably when a test fails.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building disks, running QEMU and
/// talking to the guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image artifacts the scenarios boot are not there.
    #[error("{what} not found at {path}: run `make image` first (or set WALDEN_QEMU_TESTS=skip to skip the QEMU scenarios)")]
    ArtifactMissing {
        /// Which artifact ("USB image", "ISO", "kernel", ...).
        what: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// More than one USB image and no WALDEN_VERSION to choose.
    #[error("several USB images in {dir} ({found}): set WALDEN_VERSION to pick one")]
    AmbiguousVersion {
        /// The build directory.
        dir: PathBuf,
        /// The image file names found.
        found: String,
    },
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the harness was doing ("create", "read", ...).
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An external program (qemu-img, mkfs.ext4, mtools, sfdisk) could not run.
    #[error("cannot run {tool}: {source}; install it (`apt-get install {package}`)")]
    ToolMissing {
        /// The program.
        tool: String,
        /// The Debian package that provides it.
        package: &'static str,
        /// The spawn error.
        source: std::io::Error,
    },
    /// An external program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        /// The command line, for copy and paste.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Output of an external program or a file the harness parses was not as expected.
    #[error("unexpected {what}: {detail}")]
    Unexpected {
        /// What was parsed.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// QEMU itself could not be started.
    #[error("cannot start QEMU ({command}): {source}")]
    QemuSpawn {
        /// The program.
        command: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// QEMU exited while the harness still expected it to run.
    #[error("QEMU exited ({status}) while {during}; its stderr: {stderr}\nconsole log: {log}")]
    QemuExited {
        /// Exit status.
        status: String,
        /// What the harness was waiting for.
        during: String,
        /// The end of QEMU's stderr.
        stderr: String,
        /// The console log file.
        log: PathBuf,
    },
    /// A console pattern did not appear in time.
    #[error("console did not show {pattern:?} within {timeout:?}; last console lines are printed above; full log: {log}")]
    ConsoleTimeout {
        /// The awaited text.
        pattern: String,
        /// How long the harness waited.
        timeout: Duration,
        /// The console log file.
        log: PathBuf,
    },
    /// A fail-fast pattern (e.g. a kernel panic) appeared while waiting.
    #[error("console showed {line:?} (matched fail-fast pattern {fatal:?}) while waiting for {pattern:?}; full log: {log}")]
    ConsoleFatal {
        /// The awaited text.
        pattern: String,
        /// The fail-fast pattern that matched.
        fatal: String,
        /// The console line containing it.
        line: String,
        /// The console log file.
        log: PathBuf,
    },
    /// The console ended (QEMU's stdout closed) before the pattern appeared.
    #[error("console closed (QEMU gone) before it showed {pattern:?}; last console lines are printed above; full log: {log}")]
    ConsoleClosed {
        /// The awaited text.
        pattern: String,
        /// The console log file.
        log: PathBuf,
    },
    /// The QMP conversation broke (connect, framing, timeout).
    #[error("QMP {what}: {detail}")]
    Qmp {
        /// What the harness was doing.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// QEMU answered a QMP command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    QmpCommand {
        /// The command executed.
        command: String,
        /// QMP error class.
        class: String,
        /// QMP error description.
        desc: String,
    },
    /// The walden control channel (virtio-serial) failed or timed out.
    #[error("walden control channel {path}: {detail}")]
    Control {
        /// The host side socket.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// walden answered a control request with `{"ok":false}`.
    #[error("walden refused {action:?}: {error}")]
    ControlRefused {
        /// The action requested.
        action: String,
        /// walden's error message.
        error: String,
    },
    /// ssh into the host (the admin NIC's forward) failed or ran too long.
    #[error("ssh root@127.0.0.1 -p {port} `{command}`: {detail}\nconsole log: {log}")]
    Ssh {
        /// The command run on the host.
        command: String,
        /// The forwarded port on this machine's loopback.
        port: u16,
        /// What went wrong (ssh's stderr, the deadline).
        detail: String,
        /// The machine's console log.
        log: PathBuf,
    },
    /// A command run over ssh exited non-zero where success was required.
    #[error(
        "`{command}` on the host exited {status}: {stderr}(stdout: {stdout})\nexec log: {log}"
    )]
    ExecFailed {
        /// The command run on the host.
        command: String,
        /// Its exit status.
        status: i32,
        /// What it printed on stderr.
        stderr: String,
        /// What it printed on stdout.
        stdout: String,
        /// The scenario's exec.log.
        log: PathBuf,
    },
    /// The console showed kernel or program trouble (an oops, a warning
    /// with a stack trace, a Rust panic, a segfault, the OOM killer).
    #[error("the console showed {count} line(s) of trouble (a scenario that provokes them on purpose declares them with MachineBuilder::allow_console):\n{lines}\nfull log: {log}")]
    ConsoleTrouble {
        /// How many lines.
        count: usize,
        /// The lines, one per line, with what each is.
        lines: String,
        /// The console log file.
        log: PathBuf,
    },
    /// Some other wait ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
    },
}

/// Shorthand used throughout the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with the operation and path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Unexpected`] from anything printable.
    pub fn unexpected(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Unexpected {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
