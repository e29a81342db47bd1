//! Running the host tools the harness needs (qemu-img, mkfs.ext4, mtools,
//! sfdisk, qemu-io), with errors that name the command and the package.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// The Debian package providing a tool, for the "install it" hint.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "qemu-img" | "qemu-io" => "qemu-utils",
        "mkfs.ext4" | "debugfs" => "e2fsprogs",
        "sfdisk" => "fdisk",
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
    fn successful_tool_returns_stdout() {
        assert_eq!(run("echo", ["hi"]).unwrap(), "hi\n");
    }
}
