//! Per-service runtime state and the event journal.

use super::backoff::CrashWindow;
use super::service::ServiceSpec;
use super::status::{ServiceState, ServiceStatus};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Events kept in memory for `events()` (older ones are dropped).
const JOURNAL_CAPACITY: usize = 512;

/// A service in the table: its spec plus what is happening to it.
#[derive(Debug)]
pub(super) struct Service {
    pub spec: ServiceSpec,
    pub state: ServiceState,
    /// Main process while it runs (also its process group).
    pub pid: Option<Pid>,
    /// Process group of the last instance; may outlive `pid` (orphans).
    pub group: Option<Pid>,
    pub spawned_at: Option<Instant>,
    /// Backoff level for the next restart.
    pub level: u32,
    pub restarts: u32,
    pub crashes: CrashWindow,
    /// When a service in backoff is started again.
    pub next_start: Option<Instant>,
    /// When the current stop step (signal, then SIGKILL) times out.
    pub stop_deadline: Option<Instant>,
    pub killed: bool,
    /// Being stopped for good (removed by a config apply).
    pub retiring: bool,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
}

impl Service {
    pub fn new(spec: ServiceSpec) -> Self {
        Self {
            spec,
            state: ServiceState::Waiting,
            pid: None,
            group: None,
            spawned_at: None,
            level: 0,
            restarts: 0,
            crashes: CrashWindow::default(),
            next_start: None,
            stop_deadline: None,
            killed: false,
            retiring: false,
            last_exit: None,
            last_error: None,
        }
    }

    /// The status row for `walden status`.
    pub fn status(&self) -> ServiceStatus {
        ServiceStatus {
            name: self.spec.name.clone(),
            state: self.state,
            pid: self.pid.map(Pid::as_raw),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            last_error: self.last_error.clone(),
        }
    }

    /// Whether services `after` this one may start: it is ready, or it ran
    /// to a successful end (a one-shot setup task with restart = never).
    pub fn satisfies_dependents(&self) -> bool {
        self.state == ServiceState::Running
            || (self.state == ServiceState::Stopped && self.pid.is_none())
    }

    /// Settled for bring-up: ready, or finished one way or the other.
    pub fn settled(&self) -> bool {
        matches!(
            self.state,
            ServiceState::Running | ServiceState::Failed | ServiceState::Stopped
        )
    }
}

/// Something that happened to a service, for tests and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the supervisor started.
    pub at_ms: u64,
    /// Service name.
    pub service: String,
    /// What happened.
    pub kind: EventKind,
}

/// Kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The process was started.
    Spawned {
        /// Its pid.
        pid: i32,
    },
    /// The readiness condition was met.
    Ready,
    /// The main process exited (description as in status `last_exit`).
    Exited(String),
    /// A restart was scheduled after this delay.
    RestartScheduled(Duration),
    /// No more restarts (crash loop, failed dependency, restart = never).
    GaveUp(String),
    /// The stop signal was sent to the process group.
    StopSignal(Signal),
    /// The stop timeout passed; SIGKILL was sent.
    Killed,
    /// Stopped as part of an orderly stop.
    Stopped,
}

/// Bounded in-memory event log.
#[derive(Debug, Default)]
pub(super) struct Journal(VecDeque<Event>);

impl Journal {
    pub fn push(&mut self, event: Event) {
        if self.0.len() == JOURNAL_CAPACITY {
            self.0.pop_front();
        }
        self.0.push_back(event);
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn to_vec(&self) -> Vec<Event> {
        self.0.iter().cloned().collect()
    }
}
