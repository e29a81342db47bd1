//! The real [`Machine`]: syscalls and /proc reads for the final shutdown.

use super::shutdown::Machine;
use super::{console, Action};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the wait loops poll for exited children.
const POLL: Duration = Duration::from_millis(50);

/// The machine PID 1 runs on; `proc` is the procfs mount (Paths::proc).
pub struct RealMachine {
    /// procfs mount point.
    pub proc: PathBuf,
}

/// Reap every exited child without blocking; returns false once there are
/// no children left at all (ECHILD).
pub fn reap_exited(mut on_exit: impl FnMut(Pid, WaitStatus)) -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    on_exit(pid, status);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn to_io(err: Errno) -> io::Error {
    io::Error::from_raw_os_error(err as i32)
}

impl Machine for RealMachine {
    fn log(&self, line: &str) {
        console(line);
    }

    fn kill_all(&self, signal: Signal) -> io::Result<()> {
        kill(Pid::from_raw(-1), signal).map_err(to_io)
    }

    fn wait_all_exited(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !reap_exited(|_, _| {}) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    fn read_swaps(&self) -> io::Result<String> {
        std::fs::read_to_string(self.proc.join("swaps"))
    }

    fn swapoff(&self, path: &Path) -> io::Result<()> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
        let rc = unsafe { libc::swapoff(c_path.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn read_mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string(self.proc.join("self/mountinfo"))
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        umount2(target, flags).map_err(to_io)
    }

    fn remount_ro(&self, target: &Path) -> io::Result<()> {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(to_io)
    }

    fn sync(&self) {
        nix::unistd::sync();
    }

    fn reboot(&self, action: Action) -> io::Error {
        let mode = match action {
            Action::Reboot => RebootMode::RB_AUTOBOOT,
            Action::Halt => RebootMode::RB_HALT_SYSTEM,
            Action::PowerOff => RebootMode::RB_POWER_OFF,
        };
        match nix::sys::reboot::reboot(mode) {
            Ok(never) => match never {},
            Err(err) => to_io(err),
        }
    }
}
