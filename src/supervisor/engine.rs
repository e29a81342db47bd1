//! The supervisor's event loop: one thread waits on the self-pipe with the
//! next timer as timeout, reaps children, starts services whose
//! dependencies are ready, restarts crashed ones after their backoff, and on
//! stop takes services down in reverse dependency order.

use super::backoff::Human;
use super::notify::Notifier;
use super::reaper::{reap_all, ExitKind};
use super::runtime::{Event, EventKind, Journal, Service};
use super::service::{start_order, Readiness, RestartPolicy, ServiceSpec};
use super::signals::{Signals, SupervisorHandle};
use super::status::{Phase, ServiceState, SharedStatus};
use super::{spawn, SupervisorError};

mod stop;
use std::time::{Duration, Instant};

/// Longest the loop sleeps without a timer, so status uptime stays fresh
/// and a lost wake-up costs at most this long.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// How often readiness paths are checked.
const READY_POLL: Duration = Duration::from_millis(20);

/// Why [`Supervisor::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopExit {
    /// The caller's condition became true.
    Condition,
    /// The caller's deadline passed.
    Deadline,
    /// SIGTERM/SIGINT or a handle asked to stop.
    Stop,
    /// SIGHUP asked to reload the configuration.
    Reload,
}

/// The service table and the loop that keeps it running.
pub struct Supervisor {
    services: Vec<Service>,
    signals: Signals,
    status: SharedStatus,
    start: Instant,
    notifier: Notifier,
    next_watchdog: Option<Instant>,
    journal: Journal,
    started: bool,
    stopping: bool,
    stop_requested: bool,
    reload_requested: bool,
    commands: super::commands::CommandQueue,
}

impl Supervisor {
    /// A supervisor with an empty table. Installs the signal handlers.
    /// Reported milliseconds are relative to `status`'s start.
    pub fn new(status: SharedStatus, notifier: Notifier) -> Result<Self, SupervisorError> {
        let start = status.started();
        let signals = Signals::install()?;
        let commands = super::commands::CommandQueue::new(signals.handle());
        Ok(Self {
            services: Vec::new(),
            signals,
            status,
            start,
            notifier,
            next_watchdog: None,
            journal: Journal::default(),
            started: false,
            stopping: false,
            stop_requested: false,
            reload_requested: false,
            commands,
        })
    }

    /// A handle to request a stop from another thread.
    #[allow(dead_code)] // for the control socket; used by tests
    pub fn handle(&self) -> SupervisorHandle {
        self.signals.handle()
    }

    /// The queue the control server hands commands to this loop through.
    pub fn commands(&self) -> super::commands::CommandQueue {
        self.commands.clone()
    }

    /// The shared status this supervisor writes.
    pub fn status(&self) -> &SharedStatus {
        &self.status
    }

    /// Milliseconds since the supervisor started.
    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Add services to the table (checked together with those already there).
    pub fn add_services(&mut self, specs: Vec<ServiceSpec>) -> Result<(), SupervisorError> {
        let mut all: Vec<ServiceSpec> = self.services.iter().map(|s| s.spec.clone()).collect();
        all.extend(specs.iter().cloned());
        let order = start_order(&all)?;
        let mut new: Vec<Option<ServiceSpec>> = all.into_iter().map(Some).collect();
        let mut old: Vec<Option<Service>> = self.services.drain(..).map(Some).collect();
        // Keep the table in start order so ticks start services in order.
        for i in order {
            match old.get_mut(i).and_then(Option::take) {
                Some(s) => self.services.push(s),
                None => {
                    if let Some(spec) = new[i].take() {
                        self.services.push(Service::new(spec));
                    }
                }
            }
        }
        self.sync_status();
        Ok(())
    }

    /// Allow services to start (they start from the next loop turn on).
    pub fn start_services(&mut self) {
        self.started = true;
    }

    /// Whether every service is ready or finished (for bring-up).
    pub fn settled(&self) -> bool {
        self.services.iter().all(Service::settled)
    }

    /// Names of services in `state`.
    pub fn services_in(&self, state: ServiceState) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| s.state == state)
            .map(|s| s.spec.name.clone())
            .collect()
    }

    /// Names of services not settled yet.
    pub fn unsettled(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| !s.settled())
            .map(|s| s.spec.name.clone())
            .collect()
    }

    /// Whether a stop was requested (SIGTERM, SIGINT, handle).
    pub fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    /// What happened so far (bounded; oldest events are dropped first).
    #[cfg_attr(not(test), allow(dead_code))] // diagnostics; asserted by tests
    pub fn events(&self) -> Vec<Event> {
        self.journal.to_vec()
    }

    /// The systemd notifier.
    pub fn notifier(&mut self) -> &mut Notifier {
        &mut self.notifier
    }

    /// Set the overall phase and tell systemd.
    pub fn set_phase(&mut self, phase: Phase) {
        self.status.lock().phase = phase;
        self.sync_status();
    }

    /// One-line summary for STATUS= and logs, e.g. "ready: 3/3 services running".
    pub fn summary(&self) -> String {
        let phase = self.status.lock().phase;
        let phase = serde_json::to_value(phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let running = self.services_in(ServiceState::Running).len();
        let mut line = format!(
            "{phase}: {running}/{} services running",
            self.services.len()
        );
        let failed = self.services_in(ServiceState::Failed);
        if !failed.is_empty() {
            line.push_str(&format!("; failed: {}", failed.join(", ")));
        }
        line
    }

    /// Run the loop until `done` holds, `deadline` passes, a stop is
    /// requested or a reload is asked for.
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
        deadline: Option<Instant>,
    ) -> Result<LoopExit, SupervisorError> {
        loop {
            self.turn();
            if self.stop_requested && !self.stopping {
                return Ok(LoopExit::Stop);
            }
            if self.reload_requested {
                self.reload_requested = false;
                return Ok(LoopExit::Reload);
            }
            if done(self) {
                return Ok(LoopExit::Condition);
            }
            let now = Instant::now();
            let mut timeout = self.next_timeout(now);
            if let Some(d) = deadline {
                if now >= d {
                    return Ok(LoopExit::Deadline);
                }
                timeout = timeout.min(d - now);
            }
            self.signals.wait(timeout)?;
        }
    }

    /// One loop turn: collect signals, reap, advance every service, publish.
    fn turn(&mut self) {
        let wake = self.signals.take();
        if wake.stop && !self.stop_requested {
            match wake.stop_signal {
                Some(sig) => tracing::info!("{sig} received: stopping"),
                None => tracing::info!("stop requested"),
            }
            self.stop_requested = true;
        }
        if wake.reload {
            self.reload_requested = true;
        }
        // Reap every turn, not only on SIGCHLD: cheap, and robust against a
        // wake-up lost to a full pipe.
        let now = Instant::now();
        for (pid, exit) in reap_all() {
            match self.services.iter().position(|s| s.pid == Some(pid)) {
                Some(i) => self.on_exit(i, exit, now),
                None => tracing::debug!("reaped orphan pid {pid}: {exit}"),
            }
        }
        for i in 0..self.services.len() {
            if self.stopping || self.services[i].retiring {
                self.advance_stop(i, now);
            } else {
                self.advance(i, now);
            }
        }
        if let Some(interval) = self.notifier.watchdog_interval() {
            if self.next_watchdog.is_none_or(|t| now >= t) {
                self.notifier.watchdog();
                self.next_watchdog = Some(now + interval);
            }
        }
        self.sync_status();
    }

    /// Start, restart or mark ready as timers and dependencies allow.
    fn advance(&mut self, i: usize, now: Instant) {
        match self.services[i].state {
            ServiceState::Waiting if self.started => {
                let deps = self.services[i].spec.after.clone();
                let mut ready = true;
                for dep in &deps {
                    let Some(d) = self.services.iter().find(|s| &s.spec.name == dep) else {
                        continue;
                    };
                    if d.state == ServiceState::Failed {
                        let msg = format!("dependency {dep} failed");
                        self.give_up(i, msg, now);
                        return;
                    }
                    ready &= d.satisfies_dependents();
                }
                if ready {
                    self.spawn(i, now);
                }
            }
            ServiceState::Backoff if self.services[i].next_start.is_some_and(|t| now >= t) => {
                let s = &mut self.services[i];
                s.next_start = None;
                s.crashes.record(&s.spec.crash_limit, now);
                s.restarts += 1;
                self.spawn(i, now);
            }
            ServiceState::Starting => {
                let s = &self.services[i];
                let ready = match &s.spec.ready {
                    Readiness::Started => true,
                    Readiness::Path(p) => p.exists(),
                    Readiness::Delay(d) => s.spawned_at.is_some_and(|t| now >= t + *d),
                };
                if ready {
                    self.mark_ready(i, now);
                }
            }
            _ => {}
        }
    }

    fn spawn(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        s.spawned_at = Some(now);
        match spawn::spawn(&s.spec) {
            Ok(pid) => {
                tracing::info!(service = %s.spec.name, "started (pid {pid})");
                s.pid = Some(pid);
                s.group = Some(pid);
                s.state = ServiceState::Starting;
                s.killed = false;
                self.record(i, now, EventKind::Spawned { pid: pid.as_raw() });
                if self.services[i].spec.ready == Readiness::Started {
                    self.mark_ready(i, now);
                }
            }
            Err(e) => {
                let msg = format!("{}: {e}", s.spec.argv.join(" "));
                tracing::error!(service = %s.spec.name, "cannot start {msg}");
                self.on_exit(i, ExitKind::SpawnFailed(msg), now);
            }
        }
    }

    fn mark_ready(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        s.state = ServiceState::Running;
        tracing::info!(service = %s.spec.name, "ready");
        self.record(i, now, EventKind::Ready);
    }

    /// The main process of service `i` ended (or never started).
    fn on_exit(&mut self, i: usize, exit: ExitKind, now: Instant) {
        let s = &mut self.services[i];
        s.pid = None;
        s.last_exit = Some(exit.to_string());
        if let ExitKind::SpawnFailed(e) = &exit {
            s.last_error = Some(format!("cannot start: {e}"));
        }
        self.record(i, now, EventKind::Exited(exit.to_string()));
        let s = &mut self.services[i];
        if self.stopping || s.state == ServiceState::Stopping {
            s.state = ServiceState::Stopped;
            s.stop_deadline = None;
            tracing::info!(service = %s.spec.name, "stopped ({exit})");
            self.record(i, now, EventKind::Stopped);
            return;
        }
        let restart = match s.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        if !restart {
            if exit.success() {
                tracing::info!(service = %s.spec.name, "finished ({exit})");
                s.state = ServiceState::Stopped;
            } else {
                self.give_up(i, format!("exited with {exit} (restart = never)"), now);
            }
            return;
        }
        tracing::warn!(service = %s.spec.name, "exited ({exit}); restarting");
        let uptime = s.spawned_at.map_or(Duration::ZERO, |t| now - t);
        if s.spec.backoff.is_stable_run(uptime) {
            s.level = 0;
        }
        let limit = s.spec.crash_limit;
        if s.crashes.exhausted(&limit, now) {
            let msg = format!(
                "crash loop: {} restarts within {}; last exit: {exit}",
                s.crashes.count(),
                Human(limit.window)
            );
            self.give_up(i, msg, now);
            return;
        }
        let delay = s.spec.backoff.delay(s.level);
        s.level = s.level.saturating_add(1);
        s.next_start = Some(now + delay);
        s.state = ServiceState::Backoff;
        self.record(i, now, EventKind::RestartScheduled(delay));
    }

    fn give_up(&mut self, i: usize, msg: String, now: Instant) {
        let s = &mut self.services[i];
        tracing::error!(service = %s.spec.name, "{msg}");
        s.state = ServiceState::Failed;
        s.next_start = None;
        s.last_error = Some(msg.clone());
        self.status.lock().last_error = Some(format!("{}: {msg}", s.spec.name));
        self.record(i, now, EventKind::GaveUp(msg));
    }

    /// Time until the next timer, capped at [`MAX_IDLE`].
    fn next_timeout(&self, now: Instant) -> Duration {
        let mut next = now + MAX_IDLE;
        for s in &self.services {
            let t = match (s.state, &s.spec.ready) {
                (ServiceState::Backoff, _) => s.next_start,
                (ServiceState::Starting, Readiness::Path(_)) => Some(now + READY_POLL),
                (ServiceState::Starting, Readiness::Delay(d)) => s.spawned_at.map(|t| t + *d),
                _ => None,
            };
            for t in [t, s.stop_deadline].into_iter().flatten() {
                next = next.min(t);
            }
        }
        if let Some(t) = self.next_watchdog {
            next = next.min(t);
        }
        next.saturating_duration_since(now)
    }

    fn record(&mut self, i: usize, now: Instant, kind: EventKind) {
        let at_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        let service = self.services[i].spec.name.clone();
        self.journal.push(Event {
            at_ms,
            service,
            kind,
        });
    }

    /// Publish the table to the shared status and STATUS= to systemd.
    fn sync_status(&mut self) {
        {
            let mut st = self.status.lock();
            st.services = self.services.iter().map(Service::status).collect();
            st.uptime_ms = self.elapsed_ms();
        }
        let summary = self.summary();
        self.notifier.status(&summary);
    }
}
