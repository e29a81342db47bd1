//! `walden poweroff|reboot|halt` (or argv[0] poweroff/reboot/halt): ask PID 1
//! by signal, the busybox way (SIGUSR2 / SIGTERM / SIGUSR1).
//!
//! Safety check: the same signals mean other things to other inits (SIGTERM
//! to systemd re-executes it, SIGUSR2 dumps state), so the request is refused
//! unless PID 1 runs the same binary as this process (same device and inode
//! of `/proc/1/exe` and `/proc/self/exe`), or is the image's `walden-init`
//! whose `walden supervise` program ([`super::supervise_exe`]) is this one.

use super::{signals, Action};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a power request was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// /proc/1/exe could not be read (usually: not root).
    #[error("{verb}: cannot inspect PID 1 ({path}): {source}; run as root")]
    Inspect {
        /// The command asked for.
        verb: &'static str,
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// PID 1 is some other init.
    #[error(
        "{verb}: PID 1 is not walden (it is {comm:?}) and would misread the signal; \
         use that init's own command, e.g. `systemctl {systemctl}`"
    )]
    NotWalden {
        /// The command asked for.
        verb: &'static str,
        /// Contents of /proc/1/comm.
        comm: String,
        /// Matching systemctl verb, for the hint.
        systemctl: &'static str,
    },
    /// kill(2) said EPERM.
    #[error("{verb}: permission denied signalling PID 1; run as root")]
    PermissionDenied {
        /// The command asked for.
        verb: &'static str,
    },
    /// kill(2) failed otherwise.
    #[error("{verb}: signalling PID 1 failed: {source}")]
    Signal {
        /// The command asked for.
        verb: &'static str,
        /// The errno.
        source: Errno,
    },
}

/// Refuse unless PID 1 (as seen through the procfs at `proc`) runs the same
/// executable as this process.
pub fn check_pid1_is_walden(proc: &Path, action: Action) -> Result<(), RequestError> {
    let verb = action.command();
    let stat = |path: PathBuf| {
        std::fs::metadata(&path).map_err(|source| RequestError::Inspect { verb, path, source })
    };
    let pid1 = stat(proc.join("1/exe"))?;
    let me = stat(proc.join("self/exe"))?;
    let same = |m: &std::fs::Metadata| (m.dev(), m.ino()) == (me.dev(), me.ino());
    if same(&pid1) {
        return Ok(());
    }
    // PID 1 is walden-init (built without libvirt) and this is the full
    // walden it runs beside it.
    if let Ok(pid1_path) = std::fs::read_link(proc.join("1/exe")) {
        let full = super::supervise_exe(pid1_path.clone(), false);
        if full != pid1_path && std::fs::metadata(&full).is_ok_and(|m| same(&m)) {
            return Ok(());
        }
    }
    let comm = std::fs::read_to_string(proc.join("1/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    Err(RequestError::NotWalden {
        verb,
        comm,
        systemctl: action.systemctl(),
    })
}

/// Check PID 1 and send it the signal for `action`.
pub fn send(proc: &Path, action: Action) -> Result<(), RequestError> {
    check_pid1_is_walden(proc, action)?;
    let verb = action.command();
    match kill(Pid::from_raw(1), signals::signal_for(action)) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => Err(RequestError::PermissionDenied { verb }),
        Err(source) => Err(RequestError::Signal { verb, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake procfs with 1/exe and self/exe pointing at the given files.
    fn fake_proc(pid1_exe: &Path, self_exe: &Path) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, exe) in [("1", pid1_exe), ("self", self_exe)] {
            std::fs::create_dir(dir.path().join(pid)).unwrap();
            symlink(exe, dir.path().join(pid).join("exe")).unwrap();
        }
        std::fs::write(dir.path().join("1/comm"), "systemd\n").unwrap();
        dir
    }

    #[test]
    fn same_binary_passes() {
        let exe = tempfile::NamedTempFile::new().unwrap();
        let proc = fake_proc(exe.path(), exe.path());
        check_pid1_is_walden(proc.path(), Action::PowerOff).unwrap();
    }

    #[test]
    fn walden_init_as_pid1_accepts_the_full_walden_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("walden-init");
        let full = dir.path().join("walden");
        std::fs::write(&init, "lean").unwrap();
        std::fs::write(&full, "full").unwrap();
        let proc = fake_proc(&init, &full);
        check_pid1_is_walden(proc.path(), Action::Reboot).unwrap();
        // Another program beside walden-init is not walden.
        let other = dir.path().join("other");
        std::fs::write(&other, "other").unwrap();
        let proc = fake_proc(&init, &other);
        let err = check_pid1_is_walden(proc.path(), Action::Reboot).unwrap_err();
        assert!(matches!(err, RequestError::NotWalden { .. }), "{err}");
    }

    #[test]
    fn other_init_is_refused_with_a_hint() {
        let ours = tempfile::NamedTempFile::new().unwrap();
        let theirs = tempfile::NamedTempFile::new().unwrap();
        let proc = fake_proc(theirs.path(), ours.path());
        let err = check_pid1_is_walden(proc.path(), Action::Reboot).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RequestError::NotWalden { .. }), "{text}");
        assert!(text.contains("\"systemd\""), "{text}");
        assert!(text.contains("systemctl reboot"), "{text}");
    }

    #[test]
    fn unreadable_pid1_says_run_as_root() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_pid1_is_walden(dir.path(), Action::Halt).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("halt: cannot inspect PID 1"), "{text}");
        assert!(text.ends_with("run as root"), "{text}");
    }
}
