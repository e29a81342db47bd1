//! Reaping children: every exited child of this process, services and
//! orphans reparented to us as a subreaper alike.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fmt;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// exit(code).
    Code(i32),
    /// Killed by a signal.
    Signal {
        /// The signal.
        signal: Signal,
        /// Whether it dumped core.
        core: bool,
    },
    /// The process could not be started at all.
    SpawnFailed(String),
}

impl ExitKind {
    /// exit(0) is the only success.
    pub fn success(&self) -> bool {
        matches!(self, ExitKind::Code(0))
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit code {c}"),
            ExitKind::Signal { signal, core } => {
                write!(f, "killed by {}", signal.as_str())?;
                if *core {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
            ExitKind::SpawnFailed(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// Collect every child that has exited, without blocking. Loops until the
/// kernel says nothing is left because SIGCHLD coalesces: one signal may
/// stand for many exits.
pub fn reap_all() -> Vec<(Pid, ExitKind)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, ExitKind::Code(code))),
            Ok(WaitStatus::Signaled(pid, signal, core)) => {
                out.push((pid, ExitKind::Signal { signal, core }))
            }
            // Stop/continue reports are not requested; anything else means
            // nothing more has exited right now.
            Ok(WaitStatus::StillAlive) => break,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            // ECHILD: no children at all.
            Err(_) => break,
        }
    }
    out
}

/// Whether this process has any child left, running or exited (unreaped).
pub fn has_children() -> bool {
    use nix::sys::wait::{waitid, Id};
    // WNOWAIT: only look; the caller reaps.
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
}

/// Make this process the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER),
/// so a service's daemonised grandchildren are reparented to us, not to PID 1.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_descriptions() {
        assert_eq!(ExitKind::Code(1).to_string(), "exit code 1");
        assert_eq!(
            ExitKind::Signal {
                signal: Signal::SIGSEGV,
                core: true
            }
            .to_string(),
            "killed by SIGSEGV (core dumped)"
        );
        assert!(ExitKind::Code(0).success());
        assert!(!ExitKind::SpawnFailed("x".into()).success());
    }
}
