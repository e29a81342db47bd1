//! Running the host tools the harness needs (qemu-img, mkfs.ext4, mtools,
//! sfdisk, qemu-io), with errors that name the command and the package.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The Debian package providing a tool, for the "install it" hint.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "qemu-img" | "qemu-io" => "qemu-utils",
        "mkfs.ext4" | "debugfs" => "e2fsprogs",
        "mkfs.xfs" => "xfsprogs",
        "sfdisk" => "fdisk",
        "gcc" => "gcc",
        t if t.starts_with('m') => "mtools",
        t if t.starts_with("qemu-system") => "qemu-system-x86",
        _ => "the package providing it",
    }
}

/// Render a command line for messages (copy-pasteable enough to rerun by hand).
pub fn render<I, S>(tool: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut line = tool.to_string();
    for a in args {
        let a = a.as_ref().to_string_lossy();
        line.push(' ');
        if a.contains(' ') || a.is_empty() {
            line.push_str(&format!("'{a}'"));
        } else {
            line.push_str(&a);
        }
    }
    line
}

/// Run `tool args...` to completion and return its stdout; a non-zero exit
/// is an error carrying stderr. mtools' sanity check on partition offsets is
/// disabled because the harness addresses partitions with `-i file@@offset`.
pub fn run<I, S>(tool: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let output = Command::new(tool)
        .args(args.clone())
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::ToolMissing {
            tool: tool.to_string(),
            package: package_of(tool),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::ToolFailed {
            command: render(tool, args),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Connect to the Unix socket QEMU creates at `path`, retrying every
/// `poll` until `timeout` (QEMU makes its sockets shortly after it starts).
/// Returns the last connection error when time runs out.
pub fn connect_retrying(
    path: &std::path::Path,
    timeout: std::time::Duration,
    poll: std::time::Duration,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(poll),
        }
    }
}

/// How a program run with [`run_bounded`] ended.
#[derive(Debug)]
pub struct Bounded {
    /// Its exit status, or None when it ran past its limit and was killed.
    pub status: Option<ExitStatus>,
    /// Everything it wrote on stdout (up to the kill).
    pub stdout: Vec<u8>,
    /// Everything it wrote on stderr (up to the kill).
    pub stderr: Vec<u8>,
    /// From the start to its exit or the kill.
    pub elapsed: Duration,
}

impl Bounded {
    /// Whether it ran past its limit.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

/// How often [`run_bounded`] polls the child.
const POLL: Duration = Duration::from_millis(20);

/// Run `cmd` with stdin from /dev/null, its stdout and stderr read on their
/// own threads (a chatty child cannot stall on a full pipe), and kill it
/// when it runs past `timeout`. Errors only when it cannot be started or
/// waited for; running too long is [`Bounded::timed_out`].
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::io::Result<Bounded> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = read_on_thread(child.stdout.take());
    let err = read_on_thread(child.stderr.take());
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    };
    let elapsed = started.elapsed();
    Ok(Bounded {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    })
}

/// Read a child's pipe to its end on a thread of its own.
fn read_on_thread(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_tool_reports_command_and_stderr() {
        let err = run("sh", ["-c", "echo oops >&2; exit 3"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c 'echo oops >&2; exit 3'"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
    }

    #[test]
    fn missing_tool_names_the_package() {
        let err = run("qemu-img-does-not-exist", ["x"]).unwrap_err();
        assert!(err.to_string().contains("cannot run"), "{err}");
        assert_eq!(package_of("mshowfat"), "mtools");
        assert_eq!(package_of("qemu-img"), "qemu-utils");
    }

    #[test]
    fn bounded_run_keeps_both_streams_and_the_status() {
        let r = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 4"]),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(r.status.and_then(|s| s.code()), Some(4));
        assert_eq!(
            (r.stdout.as_slice(), r.stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    fn bounded_run_kills_a_child_past_its_limit() {
        let r = run_bounded(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(500),
        )
        .unwrap();
        assert!(r.timed_out(), "{r:?}");
        assert!(r.elapsed < Duration::from_secs(10), "{r:?}");
        assert_eq!(r.stdout, b"started\n");
    }

    #[test]
    fn successful_tool_returns_stdout() {
        assert_eq!(run("echo", ["hi"]).unwrap(), "hi\n");
    }
}
