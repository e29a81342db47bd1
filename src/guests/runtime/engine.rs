//! The engine: runs monitoring turns ([`super::plan`]) against the
//! hypervisor and records the results; a background thread turns every
//! [`Policy::poll`] (libvirt's lifecycle events are not used: the `virt`
//! crate has no safe wrapper for them and they need an event-loop thread
//! of their own; a 1 s poll notices a dead guest soon enough).
//!
//! Locking: `turn` serialises whole turns (including their libvirt calls,
//! each bounded by [`super::hypervisor::Timed`]); `table` is held only to
//! plan and to record, never across a libvirt call.

use super::backend::Backend;
use super::error::RuntimeError;
use super::hypervisor::{DomainInfo, Hypervisor};
use super::plan::{plan, Action};
use super::policy::{decide, Decision, Policy};
use super::table::{GuestState, Table};
use crate::config::GuestConfig;
use crate::supervisor::backoff::Human;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long bring-up keeps trying an unreachable libvirt.
const UNREACHABLE_GIVE_UP: Duration = Duration::from_secs(15);

/// Called after a guest started (e.g. to put its tap devices on their VLANs).
pub type StartHook = Arc<dyn Fn(&GuestConfig) -> Result<(), String> + Send + Sync>;

/// Shared state behind a [`super::GuestHandle`].
pub struct Engine {
    pub(super) hv: Arc<dyn Hypervisor>,
    pub(super) backend: Backend,
    pub(super) policy: Policy,
    pub(super) table: Mutex<Table>,
    /// Serialises turns, reconciles and shutdowns.
    pub(super) turn: Mutex<()>,
    /// Wakes the monitor thread early (after a request).
    pub(super) wake: Condvar,
    /// Set to end the monitor thread.
    pub(super) stop_monitor: Mutex<bool>,
    /// Whether the monitor thread was started (it is started once).
    pub(super) monitor_started: Mutex<bool>,
    pub(super) on_start: Mutex<Option<StartHook>>,
    /// Last libvirt listing error, logged once per distinct message.
    last_list_error: Mutex<Option<String>>,
}

/// Lock, recovering from a poisoned mutex (plain data; a panicking turn
/// must not take the guest runtime down).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// A new engine; nothing is running yet.
    pub fn new(hv: Arc<dyn Hypervisor>, backend: Backend, policy: Policy) -> Self {
        Self {
            hv,
            backend,
            policy,
            table: Mutex::new(Table::default()),
            turn: Mutex::new(()),
            wake: Condvar::new(),
            stop_monitor: Mutex::new(false),
            monitor_started: Mutex::new(false),
            on_start: Mutex::new(None),
            last_list_error: Mutex::new(None),
        }
    }

    /// What libvirt reports now, by name.
    pub(super) fn observe(&self) -> Result<BTreeMap<String, DomainInfo>, RuntimeError> {
        let list = self.hv.list();
        let mut last = lock(&self.last_list_error);
        match list {
            Ok(list) => {
                if last.take().is_some() {
                    tracing::info!("libvirt answers again");
                }
                Ok(list.into_iter().map(|d| (d.name.clone(), d)).collect())
            }
            Err(e) => {
                let msg = e.to_string();
                if last.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("guests: {msg}");
                    *last = Some(msg);
                }
                Err(e)
            }
        }
    }

    /// One monitoring turn; returns how many libvirt actions it took.
    pub fn turn(&self) -> Result<usize, RuntimeError> {
        let _turn = lock(&self.turn);
        self.turn_locked()
    }

    /// A turn by a caller that holds `self.turn`.
    pub(super) fn turn_locked(&self) -> Result<usize, RuntimeError> {
        let observed = match self.observe() {
            Ok(o) => o,
            Err(e) => {
                // Waiting guests say why they do not start.
                let msg = e.to_string();
                for entry in lock(&self.table).entries.iter_mut() {
                    if entry.want && entry.state == GuestState::Waiting {
                        entry.last_error = Some(msg.clone());
                    }
                }
                return Err(e);
            }
        };
        let actions = plan(
            &mut lock(&self.table),
            &observed,
            &self.policy,
            Instant::now(),
        );
        let n = actions.len();
        let (starts, others): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Start { .. }));
        for action in others {
            self.execute(action);
        }
        self.start_side_by_side(starts);
        Ok(n)
    }

    /// Start every guest whose prerequisites hold at once, each on a thread
    /// of its own: a start waits for QEMU to come up (seconds on a loaded
    /// or emulated host), which should not hold back guests that do not
    /// depend on it; libvirt starts different domains concurrently. A
    /// guest whose thread cannot be created starts on this one.
    fn start_side_by_side(&self, starts: Vec<Action>) {
        if starts.len() < 2 {
            starts.into_iter().for_each(|a| self.execute(a));
            return;
        }
        std::thread::scope(|scope| {
            for action in starts {
                let name = match &action {
                    Action::Start { config, .. } => config.name.to_string(),
                    _ => String::new(),
                };
                // Shared with the thread, so the action is still here to run
                // when the thread cannot be created.
                let slot = Arc::new(Mutex::new(Some(action)));
                let theirs = slot.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("start-{name}"))
                    .spawn_scoped(scope, move || {
                        if let Some(a) = lock(&theirs).take() {
                            self.execute(a);
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(guest = %name, "starting on the monitor thread: no thread: {e}");
                    if let Some(a) = lock(&slot).take() {
                        self.execute(a);
                    }
                }
            }
        });
    }

    fn execute(&self, action: Action) {
        match action {
            Action::Start { config, xml } => {
                let name = config.name.to_string();
                let result = self.start_now(&config, &xml);
                self.record_start(&name, result);
            }
            Action::Shutdown(name) => {
                tracing::info!(guest = %name, "ACPI shutdown");
                if let Err(e) = self.hv.shutdown(&name) {
                    // The timeout still applies: the guest is forced off then.
                    tracing::warn!(guest = %name, "{e}");
                    self.note_error(&name, e.to_string());
                }
            }
            Action::Destroy(name) => {
                if let Err(e) = self.hv.destroy(&name) {
                    tracing::error!(guest = %name, "{e}");
                    self.note_error(&name, e.to_string());
                }
            }
            Action::Undefine(name) => {
                match self.hv.undefine(&name) {
                    Ok(()) => tracing::info!(guest = %name, "undefined (removed from the config)"),
                    Err(e) => tracing::warn!(guest = %name, "{e}"),
                }
                lock(&self.table).entries.retain(|e| e.name() != name);
            }
        }
    }

    fn start_now(&self, config: &GuestConfig, xml: &str) -> Result<(), RuntimeError> {
        let name = config.name.as_str();
        for done in self.backend.prepare(config)? {
            tracing::info!(guest = %name, "{done}");
        }
        self.hv.define(name, xml)?;
        self.hv.start(name)?;
        tracing::info!(guest = %name, "started");
        let hook = lock(&self.on_start).clone();
        if let Some(hook) = hook {
            if let Err(e) = hook(config) {
                tracing::warn!(guest = %name, "after start: {e}");
                self.note_error(name, e);
            }
        }
        Ok(())
    }

    fn record_start(&self, name: &str, result: Result<(), RuntimeError>) {
        let now = Instant::now();
        let mut table = lock(&self.table);
        let Some(e) = table.get_mut(name) else { return };
        match result {
            Ok(()) => {
                e.state = GuestState::Running;
                e.started_at = Some(now);
                e.restart_pending = false;
                if e.last_error
                    .as_deref()
                    .is_some_and(|m| !m.starts_with("after start"))
                {
                    e.last_error = None;
                }
            }
            Err(err) => {
                tracing::error!(guest = %name, "cannot start: {err}");
                // A failed start counts like a crash: backoff, then the crash limit.
                let restart = e.config.restart;
                match decide(
                    &self.policy,
                    restart,
                    super::hypervisor::StopReason::Failed,
                    Duration::ZERO,
                    &mut e.restart_state,
                    now,
                ) {
                    Decision::Restart(delay) => {
                        e.state = GuestState::Backoff;
                        e.next_start = Some(now + delay);
                        e.last_error =
                            Some(format!("cannot start: {err}; retrying in {}", Human(delay)));
                    }
                    Decision::Stay => {
                        e.state = GuestState::Failed;
                        e.want = false;
                        e.last_error = Some(format!("cannot start: {err}"));
                    }
                    // The crash-loop limit (or restart = never) says why it
                    // stays off; the start error is the last straw.
                    Decision::Fail(why) => {
                        e.state = GuestState::Failed;
                        e.want = false;
                        e.last_error = Some(format!("{why}; last start: {err}"));
                    }
                }
            }
        }
    }

    fn note_error(&self, name: &str, message: String) {
        if let Some(e) = lock(&self.table).get_mut(name) {
            e.last_error = Some(message);
        }
    }

    /// Run turns until every wanted guest runs or failed, or `timeout`
    /// passes; returns whether they settled.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut failing_since: Option<Instant> = None;
        loop {
            let took = match self.turn() {
                Ok(n) => {
                    failing_since = None;
                    n
                }
                Err(_) => {
                    failing_since.get_or_insert_with(Instant::now);
                    0
                }
            };
            if self.settled() {
                return true;
            }
            // libvirt unreachable: do not hold bring-up for the whole timeout.
            let unreachable = failing_since.is_some_and(|t| t.elapsed() >= UNREACHABLE_GIVE_UP);
            if Instant::now() >= deadline || unreachable {
                return false;
            }
            if took == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Every wanted guest is running, failed, or held back by the host.
    pub fn settled(&self) -> bool {
        lock(&self.table).settled()
    }

    /// The monitor thread's body: a turn every poll interval (sooner when
    /// woken), until told to stop.
    pub fn monitor(self: Arc<Self>) {
        loop {
            {
                let stop = lock(&self.stop_monitor);
                if *stop {
                    return;
                }
                let (stop, _) = self
                    .wake
                    .wait_timeout(stop, self.policy.poll)
                    .unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
            }
            // A turn that acted (a start) is followed at once by another,
            // so a dependent starts right after its prerequisite.
            if lock(&self.table).entries.is_empty() {
                // No guests (yet): do not bother libvirt.
                continue;
            }
            for _ in 0..8 {
                match self.turn() {
                    Ok(n) if n > 0 => continue,
                    _ => break,
                }
            }
        }
    }

    /// Wake the monitor thread for an early turn.
    pub fn poke(&self) {
        let _guard = lock(&self.stop_monitor);
        self.wake.notify_all();
    }
}
