//! Signals PID 1 understands (busybox init conventions, DESIGN.md section 2)
//! and the small wrappers to block and wait for them.
//!
//! PID 1 blocks these signals before it starts any thread and collects them
//! with `sigtimedwait(2)` in its loop: no handlers, no self-pipe. Blocked
//! signals are queued even for init (the kernel drops only *unblocked*
//! default-disposition signals sent to PID 1). The mask is inherited over
//! fork and exec, and `std::process::Command` keeps it (since Rust 1.66), so
//! every child PID 1 starts goes through [`unblock_in_child`].

use super::Action;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::time::Duration;

/// What a received signal asks PID 1 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Orderly shutdown ending in `Action`.
    Shutdown(Action),
    /// A child changed state: reap.
    ChildExited,
    /// Rescan input devices for the power button.
    Rescan,
}

/// The signals PID 1 blocks and waits for.
pub const HANDLED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
    Signal::SIGHUP,
];

/// Map a signal to what PID 1 does about it: SIGTERM = reboot, SIGINT
/// (Ctrl-Alt-Del once it is disabled in the kernel) = reboot, SIGUSR1 =
/// halt, SIGUSR2 = power off, SIGCHLD = reap, SIGHUP = rescan devices.
pub fn event_for(signal: Signal) -> Option<Event> {
    match signal {
        Signal::SIGTERM | Signal::SIGINT => Some(Event::Shutdown(Action::Reboot)),
        Signal::SIGUSR1 => Some(Event::Shutdown(Action::Halt)),
        Signal::SIGUSR2 => Some(Event::Shutdown(Action::PowerOff)),
        Signal::SIGCHLD => Some(Event::ChildExited),
        Signal::SIGHUP => Some(Event::Rescan),
        _ => None,
    }
}

/// The signal `walden poweroff|reboot|halt` sends to PID 1 for `action`.
pub fn signal_for(action: Action) -> Signal {
    match action {
        Action::Reboot => Signal::SIGTERM,
        Action::Halt => Signal::SIGUSR1,
        Action::PowerOff => Signal::SIGUSR2,
    }
}

/// The set of [`HANDLED`] signals.
pub fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    set
}

/// Block the handled signals in the calling thread (and every thread it
/// starts afterwards).
pub fn block(set: &SigSet) -> nix::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(set), None)
}

/// Make `command` start with an empty signal mask (PID 1's blocked signals
/// would otherwise stay blocked in the supervisor and everything it starts).
pub fn unblock_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; it only builds a sigset on
    // the stack and calls sigemptyset(3) and pthread_sigmask(3), which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
            libc::sigemptyset(empty.as_mut_ptr());
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::from_raw_os_error(rc))
            }
        });
    }
}

/// Wait up to `timeout` for one of the blocked signals in `set`; `None` on
/// timeout or interruption.
pub fn wait(set: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 1e9, so it fits a c_long even where that is 32 bits.
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid, initialised sigset_t owned by the caller,
    // siginfo may be NULL per sigtimedwait(2), and `ts` lives across the call.
    let number = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if number < 0 {
        return None;
    }
    Signal::try_from(number).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_table() {
        let cases = [
            (Signal::SIGTERM, Some(Event::Shutdown(Action::Reboot))),
            (Signal::SIGINT, Some(Event::Shutdown(Action::Reboot))),
            (Signal::SIGUSR1, Some(Event::Shutdown(Action::Halt))),
            (Signal::SIGUSR2, Some(Event::Shutdown(Action::PowerOff))),
            (Signal::SIGCHLD, Some(Event::ChildExited)),
            (Signal::SIGHUP, Some(Event::Rescan)),
            (Signal::SIGQUIT, None),
            (Signal::SIGPIPE, None),
        ];
        for (signal, want) in cases {
            assert_eq!(event_for(signal), want, "{signal}");
        }
    }

    #[test]
    fn request_signals_round_trip() {
        for action in [Action::Reboot, Action::Halt, Action::PowerOff] {
            assert_eq!(event_for(signal_for(action)), Some(Event::Shutdown(action)));
        }
    }

    #[test]
    fn every_handled_signal_has_an_event() {
        let set = handled_set();
        for signal in HANDLED {
            assert!(set.contains(signal));
            assert!(event_for(signal).is_some(), "{signal}");
        }
    }

    #[test]
    fn wait_returns_a_blocked_pending_signal() {
        // A thread of its own so the mask change does not leak into other tests.
        std::thread::spawn(|| {
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            block(&set).unwrap();
            assert_eq!(wait(&set, Duration::from_millis(10)), None);
            // raise(3) is thread-directed: no other test thread can receive it.
            nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
            assert_eq!(wait(&set, Duration::from_secs(1)), Some(Signal::SIGUSR1));

            // A child of this thread starts with the signal unblocked.
            let mut command = std::process::Command::new("grep");
            command.args(["^SigBlk:", "/proc/self/status"]);
            unblock_in_child(&mut command);
            let out = command.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(text.trim(), "SigBlk:\t0000000000000000");
        })
        .join()
        .unwrap();
    }
}
