//! [`GuestHandle`]: how the rest of walden (bring-up, control socket,
//! shutdown) works with guests. Cheap to clone, usable from any thread;
//! every method returns within bounded time (libvirt calls are timed).

use super::backend::Backend;
use super::engine::{lock, Engine, StartHook};
use super::error::RuntimeError;
use super::hypervisor::{Hypervisor, Timed};
use super::policy::Policy;
use super::table::{Entry, GuestState, GuestStatus, StopOp, ThenDo};
use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest host shutdown of the guests: below PID 1's limit for the whole
/// supervisor ([`crate::pid1::SUPERVISOR_STOP_TIMEOUT`], 300 s), so the
/// services still get their stop timeouts afterwards.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(270);

/// What a reconcile did, by guest name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// New guests: defined, and started when `autostart`.
    pub added: Vec<String>,
    /// Removed guests: shutting down, then undefined.
    pub removed: Vec<String>,
    /// Redefined; running ones are marked "restart pending".
    pub changed: Vec<String>,
    /// Changed running guests restarted (`restart_changed`).
    pub restarted: Vec<String>,
    /// Left alone.
    pub unchanged: Vec<String>,
    /// Not defined yet: held back by the host (a missing device or disk),
    /// defined once the block clears.
    pub held: Vec<String>,
    /// Guests that could not be (re)defined, with why.
    pub errors: Vec<String>,
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed (restart pending)", &self.changed),
            ("restarted", &self.restarted),
            ("unchanged", &self.unchanged),
            ("held back by the host", &self.held),
        ];
        for (what, names) in rows {
            if !names.is_empty() {
                writeln!(f, "guests {what}: {}", names.join(", "))?;
            }
        }
        for e in &self.errors {
            writeln!(f, "guest error: {e}")?;
        }
        Ok(())
    }
}

/// A command's answer: `{"message": ".."}`.
fn message(text: String) -> serde_json::Value {
    serde_json::json!({ "message": text })
}

/// The guest runtime, shared.
#[derive(Clone)]
pub struct GuestHandle {
    engine: Arc<Engine>,
}

impl GuestHandle {
    /// A runtime over `hypervisor` (every call wrapped in
    /// [`Policy::call_timeout`]). No guest is touched until [`Self::reconcile`].
    pub fn new(hypervisor: Arc<dyn Hypervisor>, backend: Backend, policy: Policy) -> Self {
        let timed: Arc<dyn Hypervisor> = Arc::new(Timed::new(hypervisor, policy.call_timeout));
        Self {
            engine: Arc::new(Engine::new(timed, backend, policy)),
        }
    }

    /// Call `hook` after every successful start (tap VLANs and the like).
    pub fn set_on_start(&self, hook: StartHook) {
        *lock(&self.engine.on_start) = Some(hook);
    }

    /// Domains walden defined for a guest whose file was removed while
    /// walden was not running (an offline edit of the config disk, a
    /// rollback): undefined when stopped, so `virsh list --all` and the disk
    /// of libvirt's state match the config. A running one (left from before
    /// a supervisor restart) is stopped first. Domains defined by hand are
    /// never touched.
    fn forget_orphans(&self, config: &Config, report: &mut ReconcileReport) {
        let engine = &self.engine;
        if !engine.policy.forget_orphans {
            return;
        }
        let listed = match engine.hv.list() {
            Ok(l) => l,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot look for stale guest definitions: {e}"));
                return;
            }
        };
        for d in listed {
            let known =
                config.guest(&d.name).is_some() || lock(&engine.table).get(&d.name).is_some();
            if known {
                continue;
            }
            match engine.hv.managed(&d.name) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            }
            if d.state.is_active() {
                // Forced off: it is not in the config, so nobody expects it
                // to run, and its definition is what makes it walden's.
                tracing::warn!(guest = %d.name, "runs but is not in the config; forcing it off");
                if let Err(e) = engine.hv.destroy(&d.name) {
                    report.errors.push(e.to_string());
                    continue;
                }
            }
            match engine.hv.undefine(&d.name) {
                Ok(()) => {
                    tracing::info!(guest = %d.name, "not in the config any more: definition removed");
                    report.removed.push(d.name);
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }

    /// Bring libvirt in line with `config`: define and start new guests,
    /// shut down and undefine removed ones, redefine changed ones (marked
    /// "restart pending" while running; restarted when `restart_changed`).
    /// Starts and stops happen in the background (or in [`Self::settle`]).
    pub fn reconcile(
        &self,
        config: &Config,
        restart_changed: bool,
    ) -> Result<ReconcileReport, RuntimeError> {
        let engine = &self.engine;
        let _turn = lock(&engine.turn);
        if lock(&engine.table).shutting_down {
            return Err(shutting_down());
        }
        let mut report = ReconcileReport::default();
        for guest in &config.guests {
            let name = guest.name.to_string();
            let xml = match engine.backend.render(guest, config) {
                Ok(xml) => xml,
                Err(e) => {
                    // A guest the host holds back (its device or disk is
                    // missing) often cannot be rendered either (a PCI label
                    // that selected nothing): it is kept, waiting with the
                    // host's reason, and defined by the apply that clears
                    // the block. Without an entry, guests `after` it would
                    // not know to wait for it.
                    let mut table = lock(&engine.table);
                    if table.host_block(&name).is_some() {
                        match table.get_mut(&name) {
                            Some(entry) => entry.config = guest.clone(),
                            None => table.entries.push(Entry::new(
                                guest.clone(),
                                String::new(),
                                guest.autostart,
                            )),
                        }
                        report.held.push(name);
                    } else {
                        report.errors.push(e.to_string());
                    }
                    continue;
                }
            };
            let known = lock(&engine.table).get(&name).map(|e| e.xml.clone());
            match known {
                Some(old) if old == xml => {
                    // Settings outside the domain XML (after, restart,
                    // shutdown_timeout, autostart) apply at once.
                    let mut table = lock(&engine.table);
                    if let Some(e) = table.get_mut(&name) {
                        if guest.autostart && !e.config.autostart && e.state == GuestState::Stopped
                        {
                            e.reset_for_start();
                        }
                        e.config = guest.clone();
                    }
                    report.unchanged.push(name);
                }
                Some(_) => {
                    if let Err(e) = engine.hv.define(&name, &xml) {
                        report.errors.push(e.to_string());
                        continue;
                    }
                    let mut table = lock(&engine.table);
                    if let Some(e) = table.get_mut(&name) {
                        e.config = guest.clone();
                        e.xml = xml;
                        let running = matches!(e.state, GuestState::Running | GuestState::Stopping);
                        if running && restart_changed {
                            e.restart_pending = true;
                            e.stop.get_or_insert(StopOp::new(ThenDo::Start)).then = ThenDo::Start;
                            report.restarted.push(name);
                        } else {
                            e.restart_pending = running;
                            report.changed.push(name);
                        }
                    }
                }
                None => {
                    if let Err(e) = engine.hv.define(&name, &xml) {
                        report.errors.push(e.to_string());
                        continue;
                    }
                    let entry = Entry::new(guest.clone(), xml, guest.autostart);
                    lock(&engine.table).entries.push(entry);
                    report.added.push(name);
                }
            }
        }
        let mut table = lock(&engine.table);
        for e in table.entries.iter_mut() {
            if config.guest(e.name()).is_none() {
                e.want = false;
                e.stop = Some(StopOp {
                    then: ThenDo::Undefine,
                    ..e.stop.unwrap_or(StopOp::new(ThenDo::Undefine))
                });
                report.removed.push(e.name().to_string());
            }
        }
        table.sort();
        drop(table);
        self.forget_orphans(config, &mut report);
        engine.poke();
        Ok(report)
    }

    /// Replace what host source `source` ("mounts", "vfio", ...) keeps
    /// from starting: guest name -> reason. A wanted guest with a block
    /// waits (status `waiting`, `last_error` = the reason) and is never
    /// started; once its blocks are gone the next turn starts it. Running
    /// guests are not touched.
    pub fn set_host_blocks(&self, source: &str, blocks: BTreeMap<String, String>) {
        let mut table = lock(&self.engine.table);
        if blocks.is_empty() {
            table.host_blocks.remove(source);
        } else {
            table.host_blocks.insert(source.to_string(), blocks);
        }
        drop(table);
        self.engine.poke();
    }

    /// Start guest `name` (also after a failure: the crash count starts over).
    pub fn start(&self, name: &str) -> Result<String, RuntimeError> {
        self.request(name, |e| match e.state {
            GuestState::Running => format!("{name} is already running"),
            _ => {
                e.reset_for_start();
                format!("starting {name}")
            }
        })
    }

    /// Stop guest `name`: ACPI shutdown, forced off after its
    /// `shutdown_timeout`; with `force`, forced off at once (also a guest
    /// already in its ACPI shutdown).
    pub fn stop(&self, name: &str, force: bool) -> Result<String, RuntimeError> {
        self.request(name, |e| {
            e.want = false;
            e.next_start = None;
            match e.state {
                GuestState::Running | GuestState::Stopping if force => {
                    let op = e.stop.get_or_insert(StopOp::new(ThenDo::Nothing));
                    op.then = ThenDo::Nothing;
                    if !op.destroyed {
                        // Not yet forced off: the next turn destroys it.
                        op.sent = None;
                        op.force = true;
                    }
                    format!("forcing {name} off (no ACPI shutdown: as pulling the plug)")
                }
                GuestState::Running | GuestState::Stopping => {
                    let timeout = e.config.shutdown_timeout;
                    e.stop.get_or_insert(StopOp::new(ThenDo::Nothing)).then = ThenDo::Nothing;
                    format!(
                        "stopping {name} (ACPI shutdown; forced off after {})",
                        crate::supervisor::backoff::Human(timeout)
                    )
                }
                _ => {
                    e.state = GuestState::Stopped;
                    format!("{name} is not running")
                }
            }
        })
    }

    /// Restart guest `name` with its current definition (applies a pending change).
    pub fn restart(&self, name: &str) -> Result<String, RuntimeError> {
        self.request(name, |e| match e.state {
            GuestState::Running | GuestState::Stopping => {
                e.want = true;
                e.stop.get_or_insert(StopOp::new(ThenDo::Start)).then = ThenDo::Start;
                format!("restarting {name} (ACPI shutdown, then start)")
            }
            _ => {
                e.reset_for_start();
                format!("starting {name}")
            }
        })
    }

    /// Eject the ISO from the running guest's first CD-ROM drive
    /// (`iso: None`), or insert `iso` into it. The guest's next start
    /// has the drive as its `[[cdrom]]` says again.
    pub fn media(&self, name: &str, iso: Option<&Path>) -> Result<String, String> {
        let (config, state) = {
            let table = lock(&self.engine.table);
            let e = table.get(name).ok_or_else(|| {
                RuntimeError::UnknownGuest {
                    name: name.to_string(),
                }
                .to_string()
            })?;
            (e.config.clone(), e.state)
        };
        if config.cdroms.is_empty() {
            return Err(format!(
                "guest {name} has no CD-ROM drive: add a [[cdrom]] table to guests/{name}.toml (docs/guests.md, Installing an OS)"
            ));
        }
        if !matches!(state, GuestState::Running) {
            return Err(format!(
                "guest {name} is not running; its drive holds what cdrom[0].path in guests/{name}.toml names when it starts"
            ));
        }
        if let Some(iso) = iso {
            if !iso.is_absolute() || !iso.is_file() {
                return Err(format!(
                    "{} is not an ISO file on the host: give its absolute path",
                    iso.display()
                ));
            }
        }
        let xml = crate::guests::domain::cdrom_xml(&config, 0, iso)
            .ok_or_else(|| format!("guest {name} has no CD-ROM drive"))?;
        self.engine
            .hv
            .update_device(name, &xml)
            .map_err(|e| e.to_string())?;
        let msg = match iso {
            Some(iso) => format!("inserted {} into {name}'s CD-ROM drive", iso.display()),
            None => format!("ejected the ISO from {name}'s CD-ROM drive"),
        };
        tracing::info!(guest = %name, "{msg}");
        Ok(msg)
    }

    /// A guest command from the control socket (`{"action":"guest",
    /// "op":"start|stop|force-stop|restart|eject|insert","name":"..",
    /// "iso":".."}`): the answer's report is `{"message": ".."}`.
    pub fn command(
        &self,
        op: &str,
        name: &str,
        iso: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let result = match (op, iso) {
            ("start", _) => self.start(name),
            ("stop", _) => self.stop(name, false),
            ("force-stop", _) => self.stop(name, true),
            ("restart", _) => self.restart(name),
            ("eject", _) => return self.media(name, None).map(message),
            ("insert", Some(iso)) => return self.media(name, Some(Path::new(iso))).map(message),
            ("insert", None) => return Err("insert needs the ISO image's path".into()),
            (other, _) => {
                return Err(format!(
                    "unknown guest operation {other:?}; use start, stop, force-stop, restart, eject or insert"
                ))
            }
        };
        result.map(message).map_err(|e| e.to_string())
    }

    fn request(
        &self,
        name: &str,
        f: impl FnOnce(&mut Entry) -> String,
    ) -> Result<String, RuntimeError> {
        let mut table = lock(&self.engine.table);
        if table.shutting_down {
            return Err(shutting_down());
        }
        let entry = table
            .get_mut(name)
            .ok_or_else(|| RuntimeError::UnknownGuest {
                name: name.to_string(),
            })?;
        let msg = f(entry);
        drop(table);
        tracing::info!(guest = %name, "{msg}");
        self.engine.poke();
        Ok(msg)
    }

    /// Host shutdown: ACPI shutdown to every running guest, dependents
    /// before their prerequisites, each forced off after its
    /// `shutdown_timeout`. Returns when all are off or after `limit`; the
    /// text says what happened.
    pub fn shutdown_all(&self, limit: Duration) -> String {
        let engine = &self.engine;
        lock(&engine.table).shutting_down = true;
        let deadline = Instant::now() + limit;
        let mut failures = 0;
        loop {
            match engine.turn() {
                Ok(_) => failures = 0,
                Err(_) => failures += 1,
            }
            let up: Vec<String> = lock(&engine.table)
                .entries
                .iter()
                .filter(|e| matches!(e.state, GuestState::Running | GuestState::Stopping))
                .map(|e| e.name().to_string())
                .collect();
            if up.is_empty() {
                break "all guests are off".to_string();
            }
            if failures >= 5 {
                break format!(
                    "libvirt does not answer; guests possibly still running: {}",
                    up.join(", ")
                );
            }
            if Instant::now() >= deadline {
                for name in &up {
                    let _ = engine.hv.destroy(name);
                }
                break format!("forced off after {} s: {}", limit.as_secs(), up.join(", "));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every guest's status, in start order. Reads walden's table only
    /// (refreshed every poll), so it never waits for libvirt.
    pub fn statuses(&self) -> Vec<GuestStatus> {
        lock(&self.engine.table).statuses()
    }

    /// Run turns on this thread until every wanted guest runs or failed,
    /// or `timeout` passes (bring-up).
    pub fn settle(&self, timeout: Duration) -> bool {
        self.engine.settle(timeout)
    }

    /// Start the background monitor (restarts, requested starts and
    /// stops); a second call does nothing.
    pub fn spawn_monitor(&self) -> Result<(), RuntimeError> {
        let mut started = lock(&self.engine.monitor_started);
        if *started {
            return Ok(());
        }
        *started = true;
        let engine = self.engine.clone();
        std::thread::Builder::new()
            .name("guests".into())
            .spawn(move || engine.monitor())
            .map(|_| ())
            .map_err(|e| RuntimeError::Thread {
                what: "guest monitor",
                message: e.to_string(),
            })
    }

    /// End the monitor thread (after [`Self::shutdown_all`]).
    pub fn stop_monitor(&self) {
        *lock(&self.engine.stop_monitor) = true;
        self.engine.wake.notify_all();
    }

    /// One monitoring turn on this thread (tests, bring-up).
    pub fn turn(&self) -> Result<usize, RuntimeError> {
        self.engine.turn()
    }
}

fn shutting_down() -> RuntimeError {
    RuntimeError::Libvirt {
        op: "change",
        guest: "(any)".into(),
        message: "the host is shutting down".into(),
    }
}
