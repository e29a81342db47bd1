//! Signals and wake-ups for the event loop: a self-pipe that signal
//! handlers (SIGCHLD, SIGTERM, SIGINT, SIGHUP) and [`SupervisorHandle`]s write
//! to, plus one flag per cause, so the loop can `poll` with a timeout that
//! is its next timer.

use super::SupervisorError;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::SigId;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What happened since the last [`Signals::take`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wakeups {
    /// SIGCHLD: some child changed state.
    pub child: bool,
    /// SIGTERM or SIGINT, or a stop request through a handle.
    pub stop: bool,
    /// Name of the signal that asked to stop, when a signal did.
    pub stop_signal: Option<&'static str>,
    /// SIGHUP: reload the configuration.
    pub reload: bool,
}

/// Installed signal handlers and the wake-up pipe. Handlers are removed on drop.
pub struct Signals {
    rx: UnixStream,
    tx: Arc<UnixStream>,
    child: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    requested: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

/// Asks a running supervisor to stop, from any thread (tests, the control socket).
// Used by tests now and by the control socket once it can request a stop.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    requested: Arc<AtomicBool>,
    tx: Arc<UnixStream>,
}

#[allow(dead_code)]
impl SupervisorHandle {
    /// Request an orderly stop, as SIGTERM would.
    pub fn request_stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        wake(&self.tx);
    }

    /// Wake the loop so it looks at its queues (control commands).
    pub fn wake(&self) {
        wake(&self.tx);
    }
}

/// Write one wake-up byte; a full pipe already holds a pending wake-up.
#[allow(dead_code)]
fn wake(tx: &UnixStream) {
    let _ = (&*tx).write(&[1]);
}

impl Signals {
    /// Create the pipe and install the handlers.
    pub fn install() -> Result<Self, SupervisorError> {
        let (rx, tx) = UnixStream::pair().map_err(SupervisorError::WakePipe)?;
        rx.set_nonblocking(true)
            .map_err(SupervisorError::WakePipe)?;
        tx.set_nonblocking(true)
            .map_err(SupervisorError::WakePipe)?;
        let mut me = Self {
            rx,
            tx: Arc::new(tx),
            child: Arc::default(),
            term: Arc::default(),
            int: Arc::default(),
            hup: Arc::default(),
            requested: Arc::default(),
            ids: Vec::new(),
        };
        let table = [
            (SIGCHLD, "SIGCHLD", me.child.clone()),
            (SIGTERM, "SIGTERM", me.term.clone()),
            (SIGINT, "SIGINT", me.int.clone()),
            (SIGHUP, "SIGHUP", me.hup.clone()),
        ];
        for (sig, name, flag) in table {
            let err = |source| SupervisorError::Signal {
                signal: name,
                source,
            };
            // Flag first, then the wake-up byte: actions run in registration
            // order, so the loop never sees the byte before the flag.
            me.ids
                .push(signal_hook::flag::register(sig, flag).map_err(err)?);
            let tx = me.tx.try_clone().map_err(SupervisorError::WakePipe)?;
            me.ids
                .push(signal_hook::low_level::pipe::register(sig, tx).map_err(err)?);
        }
        Ok(me)
    }

    /// A handle that can request a stop from another thread.
    #[allow(dead_code)]
    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle {
            requested: self.requested.clone(),
            tx: self.tx.clone(),
        }
    }

    /// Block until a wake-up or `timeout`, whichever comes first.
    pub fn wait(&self, timeout: Duration) -> Result<(), SupervisorError> {
        // Round up so a 0.4 ms timer does not turn into a busy loop.
        let ms = timeout.as_micros().div_ceil(1000).min(60_000) as u16;
        let mut fds = [PollFd::new(self.rx.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(SupervisorError::Poll(e)),
        }
        // Drain: the flags carry the information, the bytes only wake us.
        let mut buf = [0u8; 64];
        loop {
            match (&self.rx).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Collect and clear what happened.
    pub fn take(&self) -> Wakeups {
        let term = self.term.swap(false, Ordering::SeqCst);
        let int = self.int.swap(false, Ordering::SeqCst);
        let requested = self.requested.swap(false, Ordering::SeqCst);
        Wakeups {
            child: self.child.swap(false, Ordering::SeqCst),
            stop: term || int || requested,
            stop_signal: if term {
                Some("SIGTERM")
            } else if int {
                Some("SIGINT")
            } else {
                None
            },
            reload: self.hup.swap(false, Ordering::SeqCst),
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
