//! The status model: what `walden status` reports.
//!
//! The supervisor owns one [`Status`] behind a [`SharedStatus`] and updates
//! it as steps and services change; the control socket hands out copies.
//! Field names are part of the control protocol (see `src/control/mod.rs`).

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Overall phase of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Bring-up steps are running.
    Starting,
    /// Every bring-up step finished (some may have failed; see `steps`).
    Ready,
    /// Bring-up could not finish; the box is up for maintenance only.
    Maintenance,
    /// Orderly stop in progress.
    Stopping,
    /// Everything is stopped.
    Stopped,
}

/// State of one bring-up step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Not started yet.
    Pending,
    /// Running now.
    Running,
    /// Finished successfully.
    Done,
    /// Not applicable here (the reason is in `detail`).
    Skipped,
    /// Failed (the reason is in `error`).
    Failed,
}

/// One bring-up step, in the order they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// Step name, e.g. "config".
    pub name: String,
    /// Current state.
    pub state: StepState,
    /// Milliseconds since the supervisor started when the step began.
    pub started_ms: Option<u64>,
    /// How long the step took, once finished.
    pub duration_ms: Option<u64>,
    /// Human detail: what was done, or why it was skipped.
    pub detail: Option<String>,
    /// Error message when failed.
    pub error: Option<String>,
}

/// State of one supervised service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Waiting for its dependencies.
    Waiting,
    /// Started, readiness not reached yet.
    Starting,
    /// Running and ready.
    Running,
    /// Exited; waiting for the backoff delay before restarting.
    Backoff,
    /// Gave up after the crash-loop limit, or a dependency failed.
    Failed,
    /// Being stopped.
    Stopping,
    /// Stopped (orderly, or exited with policy "never").
    Stopped,
}

/// One supervised service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Current state.
    pub state: ServiceState,
    /// Process id while running.
    pub pid: Option<i32>,
    /// How many times it was restarted.
    pub restarts: u32,
    /// Description of the last exit ("exit code 1", "killed by SIGSEGV").
    pub last_exit: Option<String>,
    /// Last error (spawn failure, crash loop, failed dependency).
    pub last_error: Option<String>,
}

/// Everything `walden status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// walden's own version.
    pub version: String,
    /// Image version booted, when running from a walden image.
    pub image_version: Option<String>,
    /// "pid1" (appliance), "systemd", or "standalone".
    pub mode: String,
    /// Overall phase.
    pub phase: Phase,
    /// Milliseconds from kernel start to the supervisor's start, when known.
    pub kernel_ms: Option<u64>,
    /// Milliseconds since the supervisor started.
    pub uptime_ms: u64,
    /// Milliseconds from the supervisor's start until ready, once ready.
    pub ready_ms: Option<u64>,
    /// Bring-up steps in order, with per-phase timings.
    pub steps: Vec<StepStatus>,
    /// Supervised services.
    pub services: Vec<ServiceStatus>,
    /// The most recent error anywhere, for a one-line summary.
    pub last_error: Option<String>,
    /// PCI devices selected for passthrough (`[[vfio]]`, `walden.vfio=`).
    #[serde(default)]
    pub vfio: Vec<crate::vfio::VfioDeviceStatus>,
    /// Managed network links as the "network" step left them.
    #[serde(default)]
    pub network: Vec<crate::net::LinkStatus>,
    /// Config generation running, when it is a recorded one (see `walden config history`).
    #[serde(default)]
    pub config_generation: Option<u64>,
    /// Why /config was refused at boot (`file:line:col: message`); the
    /// last-known-good generation runs instead.
    #[serde(default)]
    pub config_refused: Option<String>,
    /// The last `walden config apply` (or its revert), when there was one.
    #[serde(default)]
    pub config_apply: Option<super::apply::ApplyStatus>,
    /// The boot image: trial, rollback ("rolled back from X: reason"), health.
    #[serde(default)]
    pub boot_image: Option<crate::images::BootImageStatus>,
    /// Guests (guests/*.toml) as the guest runtime sees them.
    #[serde(default)]
    pub guests: Vec<crate::guests::runtime::GuestStatus>,
    /// host.toml's `[[mount]]`s and `[swap]`: what, where, state, detail.
    #[serde(default)]
    pub mounts: Vec<crate::mounts::MountStatus>,
}

impl Status {
    /// A fresh status for a supervisor that has not run anything yet.
    pub fn new(mode: &str) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            image_version: None,
            mode: mode.to_string(),
            phase: Phase::Starting,
            kernel_ms: None,
            uptime_ms: 0,
            ready_ms: None,
            steps: Vec::new(),
            services: Vec::new(),
            last_error: None,
            vfio: Vec::new(),
            network: Vec::new(),
            config_generation: None,
            config_refused: None,
            config_apply: None,
            boot_image: None,
            guests: Vec::new(),
            mounts: Vec::new(),
        }
    }
}

/// Status shared between the supervisor (writer) and the control socket (readers).
#[derive(Debug, Clone)]
pub struct SharedStatus(Arc<Inner>);

/// Fills in live parts of a snapshot (e.g. link state read from the kernel).
pub type Refresher = Box<dyn Fn(&mut Status) + Send + Sync>;

struct Inner {
    status: Mutex<Status>,
    /// When the supervisor started; `uptime_ms` is derived from it.
    started: Instant,
    /// Run on every snapshot, so readers see the kernel's state now rather
    /// than at the end of bring-up (a DHCP lease comes later).
    refreshers: Mutex<Vec<(&'static str, Refresher)>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("status", &self.status)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl SharedStatus {
    /// Wrap a status; the supervisor's clock starts now.
    pub fn new(status: Status) -> Self {
        Self(Arc::new(Inner {
            status: Mutex::new(status),
            started: Instant::now(),
            refreshers: Mutex::new(Vec::new()),
        }))
    }

    /// When the supervisor started.
    pub fn started(&self) -> Instant {
        self.0.started
    }

    /// Milliseconds since the supervisor started.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Lock for update. A poisoned lock (a panicking writer) is recovered:
    /// status is plain data and stays usable.
    pub fn lock(&self) -> MutexGuard<'_, Status> {
        self.0.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on every future snapshot, in place of an earlier refresher
    /// of the same `name` (a step that runs again on every `config apply`
    /// replaces its refresher instead of adding one more).
    pub fn set_refresher(&self, name: &'static str, f: Refresher) {
        let mut all = self.0.refreshers.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(n, _)| *n != name);
        all.push((name, f));
    }

    /// A copy for a reader, with `uptime_ms` and the refreshed parts filled in.
    pub fn snapshot(&self) -> Status {
        let mut s = self.lock().clone();
        s.uptime_ms = self.elapsed_ms();
        for (_, refresh) in self
            .0
            .refreshers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            refresh(&mut s);
        }
        s
    }

    /// How many refreshers run on each snapshot.
    #[cfg(test)]
    pub fn refreshers(&self) -> usize {
        self.0
            .refreshers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
