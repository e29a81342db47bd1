//! Running a helper program (udevadm, ssh-keygen, qemu-img, modprobe, the
//! operator's health command) with a time limit: PID 1 never waits on a
//! child for good. The child's stdin is /dev/null; its stdout and stderr are
//! read on their own threads (so a chatty child cannot fill a pipe and stall)
//! and kept up to [`KEEP`] bytes each.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of each output stream is kept; the rest is read and dropped.
pub const KEEP: usize = 64 * 1024;

/// How often the child is polled.
const POLL: Duration = Duration::from_millis(20);

/// A child that exited within its limit.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Its stderr, trimmed, or its status when stderr is empty.
    pub fn reason(&self) -> String {
        let err = self.stderr.trim();
        if err.is_empty() {
            self.status.to_string()
        } else {
            format!("{}: {err}", self.status)
        }
    }
}

/// Why a child did not finish.
#[derive(Debug)]
pub enum RunError {
    /// It could not be started.
    Start(std::io::Error),
    /// Waiting for it failed.
    Wait(std::io::Error),
    /// It ran past its limit and was killed.
    TimedOut(Duration),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Start(e) => write!(f, "cannot start: {e}"),
            RunError::Wait(e) => write!(f, "cannot wait for it: {e}"),
            RunError::TimedOut(limit) if limit.subsec_millis() == 0 => {
                write!(f, "did not finish within {} s; killed", limit.as_secs())
            }
            RunError::TimedOut(limit) => write!(
                f,
                "did not finish within {:.1} s; killed",
                limit.as_secs_f64()
            ),
        }
    }
}

/// Run `cmd`, killing it after `limit`. Any exit counts as finished; the
/// caller judges the status.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Finished, RunError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Start)?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = wait(&mut child, limit);
    // Killed or exited, the pipes close (unless the child left a grandchild
    // holding them; the readers are then left to finish on their own).
    let collect = |h: Option<JoinHandle<String>>| match status {
        Ok(_) => h.and_then(|h| h.join().ok()).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    Ok(Finished {
        status: status?,
        stdout,
        stderr,
    })
}

/// Run `cmd` and require exit status 0: its stdout, or a one-line reason.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    match run(cmd, limit) {
        Ok(f) if f.status.success() => Ok(f.stdout),
        Ok(f) => Err(format!("failed ({})", f.reason())),
        Err(e) => Err(e.to_string()),
    }
}

fn wait(child: &mut Child, limit: Duration) -> Result<ExitStatus, RunError> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::TimedOut(limit));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Wait(e));
            }
        }
    }
}

/// Read a pipe to its end on a thread, keeping the first [`KEEP`] bytes.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = KEEP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_and_status_are_returned() {
        let f = run(
            &mut sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(f.status.code(), Some(3));
        assert_eq!(f.stdout, "out\n");
        assert_eq!(f.reason(), "exit status: 3: err");
        assert_eq!(
            run_ok(&mut sh("echo hi"), Duration::from_secs(10)).unwrap(),
            "hi\n"
        );
        assert_eq!(
            run_ok(&mut sh("exit 1"), Duration::from_secs(10)).unwrap_err(),
            "failed (exit status: 1)"
        );
    }

    #[test]
    fn a_child_past_its_limit_is_killed() {
        let start = Instant::now();
        let e = run(&mut sh("sleep 30"), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, RunError::TimedOut(_)), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(e.to_string(), "did not finish within 0.3 s; killed");
    }

    #[test]
    fn a_missing_program_is_a_start_error() {
        let e = run(
            &mut Command::new("/nonexistent/walden-helper"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("cannot start: "), "{e}");
    }

    #[test]
    fn big_output_neither_stalls_nor_is_kept_whole() {
        // 1 MiB on stdout: far more than a pipe holds.
        let f = run(
            &mut sh("head -c 1048576 /dev/zero | tr '\\0' x"),
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(f.status.success());
        assert_eq!(f.stdout.len(), KEEP);
    }
}
