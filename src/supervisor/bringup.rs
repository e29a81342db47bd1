//! The ordered bring-up: a table of named steps run one after the other,
//! each timed and recorded in the status. A failed step is logged and
//! bring-up goes on, unless the step is `required` (then: maintenance).

use super::engine::{LoopExit, Supervisor};
use super::service::ServiceSpec;
use super::status::{Phase, ServiceState, StepState, StepStatus};
use crate::config::Config;
use crate::context::Paths;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// What a successful step reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Done; the detail says what was done.
    Done(String),
    /// Not applicable here; the reason says why.
    Skipped(String),
}

/// Why a step failed: a complete, user-facing message (what, where, what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    message: String,
    /// The box is in maintenance mode, but bring-up goes on (so the
    /// console login still starts); see [`StepError::maintenance`].
    maintenance: bool,
}

impl StepError {
    /// A step failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            maintenance: false,
        }
    }

    /// A failure that puts the box in maintenance mode while the remaining
    /// steps still run (no config disk: the console login must still come up).
    pub fn maintenance(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            maintenance: true,
        }
    }
}

impl From<super::SupervisorError> for StepError {
    fn from(e: super::SupervisorError) -> Self {
        Self::new(e.to_string())
    }
}

impl From<anyhow::Error> for StepError {
    fn from(e: anyhow::Error) -> Self {
        Self::new(format!("{e:#}"))
    }
}

/// The body of a step.
pub type StepFn = Box<dyn FnMut(&mut BringUp) -> Result<StepOutcome, StepError>>;

/// One named bring-up step.
pub struct Step {
    /// Name shown in status ("config", "services", ...).
    pub name: &'static str,
    /// A failure stops bring-up and enters maintenance.
    pub required: bool,
    /// What the step does.
    pub run: StepFn,
}

impl Step {
    /// An optional step: its failure is recorded and bring-up continues.
    pub fn new(
        name: &'static str,
        run: impl FnMut(&mut BringUp) -> Result<StepOutcome, StepError> + 'static,
    ) -> Self {
        Self {
            name,
            required: false,
            run: Box::new(run),
        }
    }

    /// Mark the step required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// What steps work on and hand to later steps (the config step fills
/// `config` and `services`).
pub struct BringUp {
    /// File-system locations.
    pub paths: Paths,
    /// The service table and event loop.
    pub supervisor: Supervisor,
    /// Services the "services" step will start.
    pub services: Vec<ServiceSpec>,
    /// The validated config, once the config step loaded it.
    pub config: Option<Config>,
    /// During `config apply --restart-changed`: restart guests whose
    /// definition changed instead of marking them "restart pending".
    pub restart_changed: bool,
    /// The guest runtime, once the "guests" step made it (for the control
    /// socket and the orderly shutdown).
    pub guests: Option<crate::guests::runtime::GuestHandle>,
    /// What the mounts steps mounted and turned on, and their rows.
    pub mounts: crate::mounts::MountsState,
    /// Guests the host keeps from starting, by source ("mounts", ...):
    /// guest -> reason. Steps fill it; the guests step hands it to the
    /// runtime ([`crate::guests::runtime::GuestHandle::set_host_blocks`]).
    pub host_blocks: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// `[network]` as the "network" step last applied it: what a later
    /// apply compares with to undo removed keys (`net::undo`).
    pub network_applied: Option<crate::config::NetworkConfig>,
}

impl BringUp {
    /// Nothing brought up yet.
    pub fn new(paths: Paths, supervisor: Supervisor) -> Self {
        Self {
            paths,
            supervisor,
            services: Vec::new(),
            config: None,
            restart_changed: false,
            guests: None,
            mounts: Default::default(),
            host_blocks: BTreeMap::new(),
            network_applied: None,
        }
    }
}

#[cfg(test)]
impl BringUp {
    /// A bring-up under `root` (a temporary directory) with a fresh
    /// supervisor, `config` parsed from host.toml text.
    pub fn for_tests(root: &std::path::Path, host_toml: &str) -> Self {
        let status = super::status::SharedStatus::new(super::status::Status::new("pid1"));
        let sup = Supervisor::new(status, super::notify::Notifier::disabled())
            .expect("supervisor for tests");
        let mut b = Self::new(Paths::under(root), sup);
        b.config = Some(crate::config::from_strs(host_toml, &[]).expect("test host.toml"));
        b
    }
}

/// "services": start the queued services in dependency order and wait up
/// to `ready_timeout` until each is ready or has failed.
pub fn services_step(ready_timeout: Duration) -> Step {
    Step::new("services", move |b: &mut BringUp| {
        let specs = std::mem::take(&mut b.services);
        let sup = &mut b.supervisor;
        sup.add_services(specs)?;
        sup.start_services();
        let deadline = Instant::now() + ready_timeout;
        match sup.run_until(Supervisor::settled, Some(deadline))? {
            LoopExit::Condition | LoopExit::Reload => {}
            LoopExit::Stop => return Err(StepError::new("stop requested while starting services")),
            LoopExit::Deadline => {
                return Err(StepError::new(format!(
                    "services not ready after {}s: {}; see their log lines",
                    ready_timeout.as_secs(),
                    sup.unsettled().join(", ")
                )))
            }
        }
        let failed = sup.services_in(ServiceState::Failed);
        if !failed.is_empty() {
            return Err(StepError::new(format!(
                "services failed: {}; see `walden status` for why",
                failed.join(", ")
            )));
        }
        let running = sup.services_in(ServiceState::Running).len();
        Ok(StepOutcome::Done(format!("{running} services ready")))
    })
}

/// Run `steps` in order, recording each in the status; returns the phase
/// reached (Ready or Maintenance) and sends READY=1 in systemd mode.
pub fn run_steps(b: &mut BringUp, mut steps: Vec<Step>) -> Phase {
    let status = b.supervisor.status().clone();
    status.lock().steps = steps.iter().map(|s| pending(s.name)).collect();
    let mut phase = Phase::Ready;
    for (i, step) in steps.iter_mut().enumerate() {
        if b.supervisor.stop_requested() {
            skip_rest(b, i, "stop requested");
            phase = Phase::Stopping;
            break;
        }
        let started = b.supervisor.elapsed_ms();
        set_step(b, i, |s| {
            s.state = StepState::Running;
            s.started_ms = Some(started);
        });
        let t0 = Instant::now();
        // A panicking step must not take PID 1's supervisor down.
        let result = catch_unwind(AssertUnwindSafe(|| (step.run)(b)))
            .unwrap_or_else(|_| Err(StepError::new(format!("step {} panicked", step.name))));
        let took = t0.elapsed().as_millis() as u64;
        set_step(b, i, |s| {
            s.duration_ms = Some(took);
            match &result {
                Ok(StepOutcome::Done(d)) => {
                    (s.state, s.detail) = (StepState::Done, Some(d.clone()))
                }
                Ok(StepOutcome::Skipped(r)) => {
                    (s.state, s.detail) = (StepState::Skipped, Some(r.clone()))
                }
                Err(e) => (s.state, s.error) = (StepState::Failed, Some(e.to_string())),
            }
        });
        match result {
            Ok(StepOutcome::Done(d)) => tracing::info!(step = step.name, "{d} ({took} ms)"),
            Ok(StepOutcome::Skipped(r)) => tracing::info!(step = step.name, "skipped: {r}"),
            Err(e) => {
                tracing::error!(step = step.name, "failed: {e}");
                status.lock().last_error = Some(format!("{}: {e}", step.name));
                if e.maintenance {
                    phase = Phase::Maintenance;
                }
                if step.required {
                    skip_rest(b, i + 1, &format!("required step {} failed", step.name));
                    phase = Phase::Maintenance;
                    break;
                }
            }
        }
    }
    // A stop during the last step: not ready, just stopping.
    if phase == Phase::Stopping || b.supervisor.stop_requested() {
        return Phase::Stopping;
    }
    let ready_ms = b.supervisor.elapsed_ms();
    status.lock().ready_ms = Some(ready_ms);
    b.supervisor.set_phase(phase);
    match phase {
        Phase::Maintenance => tracing::error!("maintenance mode after {ready_ms} ms"),
        _ => tracing::info!("ready in {ready_ms} ms"),
    }
    let summary = b.supervisor.summary();
    b.supervisor.notifier().ready(&summary);
    phase
}

fn pending(name: &str) -> StepStatus {
    StepStatus {
        name: name.to_string(),
        state: StepState::Pending,
        started_ms: None,
        duration_ms: None,
        detail: None,
        error: None,
    }
}

fn set_step(b: &BringUp, i: usize, f: impl FnOnce(&mut StepStatus)) {
    if let Some(s) = b.supervisor.status().lock().steps.get_mut(i) {
        f(s);
    }
}

fn skip_rest(b: &BringUp, from: usize, reason: &str) {
    for s in b.supervisor.status().lock().steps.iter_mut().skip(from) {
        s.state = StepState::Skipped;
        s.detail = Some(reason.to_string());
    }
}
