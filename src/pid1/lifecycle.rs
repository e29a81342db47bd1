//! The PID 1 state machine: keep `walden supervise` running, turn shutdown
//! requests into "stop the supervisor, then the final shutdown", reap all.

use super::machine::{reap_exited, RealMachine};
use super::restart::{self, Backoff};
use super::shutdown::{self, Scope};
use super::signals::{self, Event};
use super::{console, power_button, Action, SUPERVISOR_STOP_TIMEOUT};
use crate::context::Paths;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest sleep of the loop: a lost signal delays nothing by more than this.
const TICK: Duration = Duration::from_secs(1);

/// Where PID 1 is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Keeping the supervisor running.
    Running,
    /// SIGTERM sent to the supervisor; waiting for it until `deadline`.
    Stopping { action: Action, deadline: Instant },
    /// Final shutdown due.
    Final(Action),
    /// reboot(2) failed on the real machine: nothing left but reaping.
    Stuck,
}

/// PID 1's state.
pub(super) struct Init {
    signals: SigSet,
    scope: Scope,
    paths: Paths,
    exe: PathBuf,
    args: Vec<OsString>,
    /// The supervise child and when it started.
    supervisor: Option<(Pid, Instant)>,
    next_start: Instant,
    backoff: Backoff,
    phase: Phase,
    shell: Option<Pid>,
    power_button: Option<JoinHandle<()>>,
}

impl Init {
    /// A fresh PID 1 that will start `<exe> supervise <args>` right away.
    pub(super) fn new(
        signals: SigSet,
        scope: Scope,
        paths: Paths,
        exe: PathBuf,
        args: Vec<OsString>,
    ) -> Self {
        Self {
            signals,
            scope,
            paths,
            exe,
            args,
            supervisor: None,
            next_start: Instant::now(),
            backoff: Backoff::default(),
            phase: Phase::Running,
            shell: None,
            power_button: None,
        }
    }

    /// An orderly shutdown is under way (the hardware watchdog is disarmed).
    pub(super) fn shutting_down(&self) -> bool {
        !matches!(self.phase, Phase::Running)
    }

    /// One turn: wait for a signal (at most a tick), reap, move on.
    pub(super) fn step(&mut self) {
        let timeout = match self.phase {
            Phase::Running if self.supervisor.is_none() => {
                self.next_start.saturating_duration_since(Instant::now())
            }
            Phase::Final(_) => Duration::ZERO,
            _ => TICK,
        };
        if let Some(signal) = signals::wait(&self.signals, timeout.min(TICK)) {
            self.on_signal(signal);
        }
        self.reap();
        self.advance();
    }

    fn on_signal(&mut self, signal: Signal) {
        match signals::event_for(signal) {
            Some(Event::Shutdown(action)) => self.on_shutdown_request(signal, action),
            Some(Event::Rescan) => self.start_power_button(),
            Some(Event::ChildExited) | None => {}
        }
    }

    fn on_shutdown_request(&mut self, signal: Signal, action: Action) {
        console(&format!("{signal} received: {}", action.verb()));
        match self.phase {
            Phase::Running | Phase::Stuck => {
                if let Some((pid, _)) = self.supervisor {
                    console("stopping supervisor");
                    let _ = kill(pid, Signal::SIGTERM);
                    let deadline = Instant::now() + SUPERVISOR_STOP_TIMEOUT;
                    self.phase = Phase::Stopping { action, deadline };
                } else {
                    self.phase = Phase::Final(action);
                }
            }
            Phase::Stopping { deadline, .. } => {
                console(&format!(
                    "already stopping; will {} afterwards",
                    action.verb()
                ));
                self.phase = Phase::Stopping { action, deadline };
            }
            Phase::Final(_) => self.phase = Phase::Final(action),
        }
    }

    fn reap(&mut self) {
        let mut exited = Vec::new();
        reap_exited(|pid, status| exited.push((pid, status)));
        let mut supervisor_failed = false;
        for (pid, status) in exited {
            let how = match status {
                WaitStatus::Exited(_, code) => format!("exited with status {code}"),
                WaitStatus::Signaled(_, signal, _) => format!("was killed by {signal}"),
                // Stop/continue reports are not exits (no WUNTRACED anyway).
                _ => continue,
            };
            if self.shell == Some(pid) {
                console(&format!("emergency shell {how}"));
                self.shell = None;
            }
            let Some((child, started)) = self.supervisor else {
                continue;
            };
            if child != pid {
                continue;
            }
            self.supervisor = None;
            if self.phase != Phase::Running {
                console(&format!("supervisor (pid {pid}) {how}"));
                continue;
            }
            let delay = self.backoff.on_exit(started.elapsed());
            self.next_start = Instant::now() + delay;
            console(&format!(
                "supervise (pid {pid}) {how}; restarting in {}s",
                delay.as_secs()
            ));
            supervisor_failed = true;
        }
        if supervisor_failed {
            self.maybe_emergency_shell();
        }
    }

    fn advance(&mut self) {
        match self.phase {
            Phase::Running => {
                if self.supervisor.is_none() && Instant::now() >= self.next_start {
                    self.start_supervisor();
                }
            }
            Phase::Stopping { action, deadline } => {
                if self.supervisor.is_none() {
                    self.phase = Phase::Final(action);
                } else if Instant::now() >= deadline {
                    console(&format!(
                        "supervisor did not stop within {}s; going on without it",
                        SUPERVISOR_STOP_TIMEOUT.as_secs()
                    ));
                    self.phase = Phase::Final(action);
                }
            }
            Phase::Final(action) => self.finish(action),
            Phase::Stuck => {}
        }
    }

    fn start_supervisor(&mut self) {
        let mut command = Command::new(&self.exe);
        command.arg("supervise").args(&self.args);
        signals::unblock_in_child(&mut command);
        let spawned = command.spawn();
        match spawned {
            Ok(child) => {
                let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                // Dropping `child` neither waits nor kills: reap() collects it.
                self.supervisor = Some((pid, Instant::now()));
                console(&format!("started supervise (pid {pid})"));
            }
            Err(err) => {
                let delay = self.backoff.on_exit(Duration::ZERO);
                self.next_start = Instant::now() + delay;
                console(&format!(
                    "cannot start {} supervise: {err}; retrying in {}s",
                    self.exe.display(),
                    delay.as_secs()
                ));
                self.maybe_emergency_shell();
            }
        }
    }

    /// Called after each supervisor failure, so a shell that cannot start is
    /// retried (and logged) at the supervisor's backoff pace, not every tick.
    fn maybe_emergency_shell(&mut self) {
        let shell = self.paths.root.join("bin/sh");
        if !restart::wants_emergency_shell(
            self.backoff.consecutive_failures(),
            self.scope,
            shell.exists(),
            self.shell.is_some(),
        ) {
            return;
        }
        console("supervise keeps failing; starting an emergency shell on the console");
        match spawn_shell(&shell, &self.paths.dev.join("console")) {
            Ok(pid) => self.shell = Some(pid),
            Err(err) => console(&format!("cannot start the emergency shell: {err}")),
        }
    }

    /// (Re)start the power button watcher unless one is running; real init only.
    pub(super) fn start_power_button(&mut self) {
        if self.scope != Scope::InitialNamespace
            || self.power_button.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        let dir = self.paths.dev.join("input");
        let on_press = || {
            console("power button pressed");
            let _ = kill(nix::unistd::getpid(), Signal::SIGUSR2);
        };
        match power_button::watch(&dir, on_press) {
            Ok(handle) => self.power_button = Some(handle),
            Err(err) => console(&format!("cannot watch the power button: {err}")),
        }
    }

    fn finish(&mut self, action: Action) {
        let machine = RealMachine {
            proc: self.paths.proc.clone(),
        };
        let err = shutdown::final_shutdown(&machine, action, self.scope);
        console(&format!("reboot(2) for {} failed: {err}", action.verb()));
        match self.scope {
            Scope::ChildNamespace => {
                console("leaving the PID namespace by exiting instead");
                std::process::exit(0);
            }
            Scope::InitialNamespace => {
                console("staying up; switch the machine off by hand");
                self.phase = Phase::Stuck;
            }
        }
    }
}

/// Start `shell` on `console` in a session of its own with the console as
/// its controlling terminal.
fn spawn_shell(shell: &std::path::Path, console: &std::path::Path) -> std::io::Result<Pid> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(console)?;
    let mut command = Command::new(shell);
    command
        .stdin(tty.try_clone()?)
        .stdout(tty.try_clone()?)
        .stderr(tty)
        .env("PS1", "walden-emergency# ");
    signals::unblock_in_child(&mut command);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // setsid(2) and ioctl(2), both async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            // Best effort, without stealing the console from another session.
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok(Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)))
}
