//! `walden config apply` and `walden config confirm`, on the supervisor's
//! thread (DESIGN.md section 4, "Versioned").
//!
//! Apply = validate everything first (nothing is touched when any file is
//! wrong) -> install the new set on the config disk in one crash-safe step
//! (`state::journal`) -> run the config part of the bring-up table again:
//! config, hostname, host files, mounts, network, vfio, services, network
//! mounts, guests. Each of those is a reconcile: the network planner
//! changes only what differs, mounts and swap are mounted, unmounted or
//! redone only when their entry changed, vfio binds/unbinds only changed
//! devices, services are added, removed or restarted only when their
//! definition changed.
//!
//! A config that applied cleanly is recorded as a generation
//! (last-known-good). When it changed the network and `[network]
//! safe_apply` holds (the default at runtime), it is recorded only after
//! `walden config confirm`; without a confirmation within the timeout the
//! previous config set is installed and applied again, so a change that
//! cut the admin off the box undoes itself.

use super::bringup::{BringUp, Step, StepOutcome};
use super::commands::{Command, Reply};
use super::service::ServiceSpec;
use super::status::{StepState, StepStatus};
use super::Mode;
use crate::config::Config;
use crate::control::ApplyRequest;
use crate::state::store::record_good;
use crate::state::{collect_config, ConfigFiles, FsStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Marker on the config disk while a network change awaits confirmation:
/// a reboot before the confirmation boots the last-known-good set instead.
pub const UNCONFIRMED: &str = ".walden/unconfirmed";

/// Default time to wait for `walden config confirm`.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);
/// How long changed services get to stop and become ready again.
const SERVICES_TIMEOUT: Duration = Duration::from_secs(60);
/// Bring-up steps that run again on apply (the services step is replaced
/// by a reconcile of the services the config defines).
const APPLY_STEPS: &[&str] = &[
    "config",
    "hostname",
    "watchdog",
    "host-files",
    "mounts",
    "network",
    "vfio",
    "services",
    "network-mounts",
    "guests",
];

/// The last apply, for `walden status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyStatus {
    /// "applied", "awaiting-confirm", "confirmed", "reverted", "failed".
    pub state: String,
    /// Milliseconds since the supervisor started, when the apply began.
    pub started_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// One line for people.
    pub message: String,
    /// Each step that ran, like the bring-up table.
    pub steps: Vec<StepStatus>,
    /// When a network change reverts unless confirmed (supervisor ms).
    #[serde(default)]
    pub confirm_by_ms: Option<u64>,
}

/// A network change waiting for `config confirm`.
#[derive(Debug)]
struct Pending {
    deadline: Instant,
    /// The set to record as good on confirm.
    new_files: ConfigFiles,
    /// The set to go back to on timeout.
    old_files: ConfigFiles,
}

/// What the supervise loop keeps between commands.
#[derive(Debug, Default)]
pub struct ApplyState {
    pending: Option<Pending>,
}

impl ApplyState {
    /// When the loop must wake to revert an unconfirmed change.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }
}

/// Run one control command on the supervisor's thread.
pub fn handle(b: &mut BringUp, st: &mut ApplyState, mode: Mode, command: Command) -> Reply {
    match command {
        Command::Apply(req) => apply(b, st, mode, req),
        Command::Confirm => confirm(b, st),
        Command::Guest { op, name, iso } => match &b.guests {
            Some(guests) => guests.command(&op, &name, iso.as_deref()),
            None => Err(format!(
                "no guest runtime: the guests step did not run (see `walden status`); cannot {op} {name}"
            )),
        },
    }
}

/// Check the file names of a submitted set and turn it into bytes.
pub fn submitted_files(files: &BTreeMap<String, String>) -> Result<ConfigFiles, String> {
    let mut out = ConfigFiles::new();
    for (name, text) in files {
        let ok = name == "host.toml"
            || name
                .strip_prefix("guests/")
                .and_then(|n| n.strip_suffix(".toml"))
                .is_some_and(|n| {
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
        if !ok {
            return Err(format!(
                "{name}: not a config file name; a config set holds host.toml and guests/NAME.toml \
                 (NAME of letters, digits, - and _)"
            ));
        }
        out.insert(name.clone(), text.as_bytes().to_vec());
    }
    if !out.contains_key("host.toml") {
        return Err("the config set has no host.toml".into());
    }
    Ok(out)
}

fn apply(b: &mut BringUp, st: &mut ApplyState, mode: Mode, req: ApplyRequest) -> Reply {
    if let Some(p) = &st.pending {
        let left = p
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs();
        return Err(format!(
            "a network change is waiting for `walden config confirm` ({left} s left); \
             confirm it, or wait for it to revert, then apply again"
        ));
    }
    let dir = b.paths.config.clone();
    let old_files = collect_config(&dir).ok();
    let new_files = match &req.files {
        Some(files) => submitted_files(files)?,
        None => collect_config(&dir).map_err(|e| e.to_string())?,
    };
    // Validate everything before touching anything.
    let new_config = super::config_state::config_from_files(&new_files, "the new config")?;
    if req.files.is_some() && old_files.as_ref() != Some(&new_files) {
        crate::state::journal::install(&dir, &new_files)
            .map_err(|e| format!("cannot write the new config to {}: {e}", dir.display()))?;
    }
    let safe = req.safe.unwrap_or(new_config.host.network.safe_apply);
    let prev = b.config.clone();
    let started = b.supervisor.elapsed_ms();
    let t0 = Instant::now();
    let steps = run(b, mode, prev.as_ref(), req.restart_changed);
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| s.state == StepState::Failed)
        .map(|s| s.name.as_str())
        .collect();
    // Only a network step that ran on this host can cut anyone off.
    let network_ran = steps
        .iter()
        .any(|s| s.name == "network" && s.state == StepState::Done);
    let network_changed = network_ran
        && prev
            .as_ref()
            .is_none_or(|old| old.host.network != new_config.host.network);
    let mut status = ApplyStatus {
        state: String::new(),
        started_ms: started,
        duration_ms: t0.elapsed().as_millis() as u64,
        message: String::new(),
        steps: steps.clone(),
        confirm_by_ms: None,
    };
    if !failed.is_empty() {
        status.state = "failed".into();
        status.message = format!(
            "applied with failures in {}; not recorded as last-known-good (see the steps)",
            failed.join(", ")
        );
    } else if network_changed && safe && old_files.is_some() {
        let timeout = req
            .confirm_timeout_s
            .map_or(CONFIRM_TIMEOUT, Duration::from_secs);
        st.pending = Some(Pending {
            deadline: Instant::now() + timeout,
            new_files: new_files.clone(),
            old_files: old_files.clone().unwrap_or_default(),
        });
        let marker = b.paths.config.join(UNCONFIRMED);
        let note = format!(
            "a network change applied at {} ms of uptime awaits `walden config confirm`\n",
            started
        );
        if let Err(e) = crate::state::atomic::atomic_write(&marker, note.as_bytes()) {
            tracing::warn!("config apply: cannot write {}: {e}", marker.display());
        }
        status.state = "awaiting-confirm".into();
        status.confirm_by_ms = Some(b.supervisor.elapsed_ms() + timeout.as_millis() as u64);
        status.message = format!(
            "the network changed: run `walden config confirm` within {} s to keep it, \
             otherwise the previous config comes back",
            timeout.as_secs()
        );
    } else {
        status.state = "applied".into();
        status.message = record(b, &new_files)?;
    }
    tracing::info!("config apply: {}: {}", status.state, status.message);
    let report = serde_json::to_value(&status).map_err(|e| e.to_string())?;
    b.supervisor.status().lock().config_apply = Some(status);
    Ok(report)
}

fn confirm(b: &mut BringUp, st: &mut ApplyState) -> Reply {
    let Some(p) = st.pending.take() else {
        return Err("nothing to confirm: no network change is waiting".into());
    };
    let message = record(b, &p.new_files)?;
    clear_marker(b);
    let mut status = b.supervisor.status().lock();
    let report = match status.config_apply.as_mut() {
        Some(a) => {
            a.state = "confirmed".into();
            a.confirm_by_ms = None;
            a.message = format!("confirmed; {message}");
            serde_json::to_value(&*a).map_err(|e| e.to_string())?
        }
        None => serde_json::json!({ "state": "confirmed", "message": message }),
    };
    tracing::info!("config apply: confirmed; {message}");
    Ok(report)
}

/// The confirmation deadline passed: put the previous config back.
pub fn revert_if_due(b: &mut BringUp, st: &mut ApplyState, mode: Mode) {
    let due = st
        .pending
        .as_ref()
        .is_some_and(|p| Instant::now() >= p.deadline);
    if !due {
        return;
    }
    let Some(p) = st.pending.take() else { return };
    tracing::error!(
        "config apply: the network change was not confirmed in time: reverting to the previous config"
    );
    let dir = b.paths.config.clone();
    if let Err(e) = crate::state::journal::install(&dir, &p.old_files) {
        tracing::error!("config apply: cannot restore the previous config: {e}");
        return;
    }
    clear_marker(b);
    let prev = b.config.clone();
    let t0 = Instant::now();
    let started = b.supervisor.elapsed_ms();
    let steps = run(b, mode, prev.as_ref(), false);
    let failed = steps.iter().any(|s| s.state == StepState::Failed);
    b.supervisor.status().lock().config_apply = Some(ApplyStatus {
        state: "reverted".into(),
        started_ms: started,
        duration_ms: t0.elapsed().as_millis() as u64,
        message: if failed {
            "not confirmed in time; the previous config was restored but some steps failed".into()
        } else {
            "not confirmed in time; the previous config was restored and applied".into()
        },
        steps,
        confirm_by_ms: None,
    });
}

fn clear_marker(b: &BringUp) {
    let marker = b.paths.config.join(UNCONFIRMED);
    if let Err(e) = std::fs::remove_file(&marker) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("config apply: cannot remove {}: {e}", marker.display());
        }
    }
}

/// At boot: a network change that was never confirmed (the box went down
/// while it waited) is undone by installing the last-known-good set.
pub fn undo_unconfirmed(config: &std::path::Path) -> Option<String> {
    let marker = config.join(UNCONFIRMED);
    if !marker.exists() {
        return None;
    }
    let store = FsStore::for_config(config);
    let result = (|| -> Result<String, String> {
        use crate::state::store::Store;
        let id = store
            .last_good()
            .map_err(|e| e.to_string())?
            .ok_or("no last-known-good generation")?;
        let files = store.files(&id).map_err(|e| e.to_string())?;
        crate::state::journal::install(config, &files).map_err(|e| e.to_string())?;
        Ok(format!(
            "a network change was never confirmed before the restart: back to generation {id}"
        ))
    })();
    let _ = std::fs::remove_file(&marker);
    Some(
        result
            .unwrap_or_else(|e| format!("an unconfirmed network change could not be undone: {e}")),
    )
}

fn record(b: &mut BringUp, files: &ConfigFiles) -> Result<String, String> {
    let image = b.supervisor.status().lock().image_version.clone();
    let mut store = FsStore::for_config(&b.paths.config);
    let (id, new) = record_good(&mut store, files, image)
        .map_err(|e| format!("applied, but the generation could not be recorded: {e}"))?;
    let mut status = b.supervisor.status().lock();
    status.config_generation = Some(id.number);
    status.config_refused = None;
    Ok(if new {
        format!("recorded config generation {id} as last-known-good")
    } else {
        format!("config unchanged since generation {id}")
    })
}

/// The services a config makes walden run (host.toml's, DHCP clients and,
/// on the appliance, sshd).
fn managed(config: Option<&Config>, root: &std::path::Path, mode: Mode) -> Vec<ServiceSpec> {
    let Some(c) = config else { return Vec::new() };
    let mut specs: Vec<ServiceSpec> = c.host.services.iter().map(ServiceSpec::from).collect();
    specs.extend(crate::net::dhcp_services(&c.host.network));
    if mode == Mode::Pid1 {
        specs.extend(super::host_files::sshd_service(root, &c.host));
    }
    specs
}

/// Which managed services to stop and which to start.
pub fn service_changes(
    old: &[ServiceSpec],
    new: &[ServiceSpec],
) -> (Vec<String>, Vec<ServiceSpec>) {
    let stop = old
        .iter()
        .filter(|o| new.iter().all(|n| n != *o))
        .map(|o| o.name.clone())
        .collect();
    let start = new
        .iter()
        .filter(|n| old.iter().all(|o| o != *n))
        .cloned()
        .collect();
    (stop, start)
}

fn services_reconcile(old: Vec<ServiceSpec>, mode: Mode) -> Step {
    Step::new("services", move |b: &mut BringUp| {
        // The config and network steps queued what the new config wants.
        b.services.clear();
        let new = managed(b.config.as_ref(), &b.paths.root, mode);
        let (stop, start) = service_changes(&old, &new);
        if stop.is_empty() && start.is_empty() {
            return Ok(StepOutcome::Done("services unchanged".into()));
        }
        let deadline = Instant::now() + SERVICES_TIMEOUT;
        let left = b.supervisor.retire(&stop, deadline)?;
        if !left.is_empty() {
            return Err(super::bringup::StepError::new(format!(
                "{} did not stop in time",
                left.join(", ")
            )));
        }
        let names: Vec<String> = start.iter().map(|s| s.name.clone()).collect();
        b.supervisor.add_services(start)?;
        b.supervisor.start_services();
        let ready = |s: &super::engine::Supervisor| s.settled();
        b.supervisor.run_until(ready, Some(deadline))?;
        let failed: Vec<String> = b
            .supervisor
            .services_in(super::status::ServiceState::Failed)
            .into_iter()
            .filter(|n| names.contains(n))
            .collect();
        if !failed.is_empty() {
            return Err(super::bringup::StepError::new(format!(
                "services failed: {}; see `walden status`",
                failed.join(", ")
            )));
        }
        Ok(StepOutcome::Done(format!(
            "stopped {}; started {}",
            if stop.is_empty() {
                "none".into()
            } else {
                stop.join(", ")
            },
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )))
    })
}

/// Run the apply steps; return their rows.
fn run(
    b: &mut BringUp,
    mode: Mode,
    prev: Option<&Config>,
    restart_changed: bool,
) -> Vec<StepStatus> {
    b.restart_changed = restart_changed;
    let old_services = managed(prev, &b.paths.root, mode);
    let mut steps: Vec<Step> = super::appliance::steps(mode)
        .into_iter()
        .filter(|s| APPLY_STEPS.contains(&s.name))
        .collect();
    if let Some(s) = steps.iter_mut().find(|s| s.name == "services") {
        *s = services_reconcile(old_services, mode);
    }
    let mut rows = Vec::new();
    for step in &mut steps {
        let t0 = Instant::now();
        let started_ms = b.supervisor.elapsed_ms();
        let result = catch_unwind(AssertUnwindSafe(|| (step.run)(b)))
            .unwrap_or_else(|_| Err(super::bringup::StepError::new("step panicked")));
        let mut row = StepStatus {
            name: step.name.to_string(),
            state: StepState::Done,
            started_ms: Some(started_ms),
            duration_ms: Some(t0.elapsed().as_millis() as u64),
            detail: None,
            error: None,
        };
        match result {
            Ok(StepOutcome::Done(d)) => row.detail = Some(d),
            Ok(StepOutcome::Skipped(r)) => (row.state, row.detail) = (StepState::Skipped, Some(r)),
            Err(e) => {
                tracing::error!(step = step.name, "apply: {e}");
                (row.state, row.error) = (StepState::Failed, Some(e.to_string()));
            }
        }
        let stop = step.name == "config" && row.state == StepState::Failed;
        rows.push(row);
        if stop {
            break;
        }
    }
    b.restart_changed = false;
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_outside_the_config_set_are_refused() {
        for bad in [
            "../etc/passwd",
            "guests/../x.toml",
            "guests/.toml",
            "etc/shadow",
            "guests/a/b.toml",
        ] {
            let files = BTreeMap::from([
                ("host.toml".to_string(), "schema = 1\n".to_string()),
                (bad.to_string(), String::new()),
            ]);
            let e = submitted_files(&files).unwrap_err();
            assert!(e.starts_with(bad) && e.contains("guests/NAME.toml"), "{e}");
        }
        let none = BTreeMap::from([("guests/a.toml".to_string(), String::new())]);
        assert!(submitted_files(&none).unwrap_err().contains("no host.toml"));
        let ok = BTreeMap::from([
            ("host.toml".to_string(), "schema = 1\n".to_string()),
            (
                "guests/web-1_a.toml".to_string(),
                "schema = 1\n".to_string(),
            ),
        ]);
        assert_eq!(submitted_files(&ok).unwrap().len(), 2);
    }

    #[test]
    fn only_changed_services_are_stopped_and_started() {
        let a = ServiceSpec::new("a", &["/bin/a"]);
        let b = ServiceSpec::new("b", &["/bin/b"]);
        let b2 = ServiceSpec::new("b", &["/bin/b", "--new"]);
        let c = ServiceSpec::new("c", &["/bin/c"]);
        let (stop, start) =
            service_changes(&[a.clone(), b.clone()], &[a.clone(), b2.clone(), c.clone()]);
        assert_eq!(stop, vec!["b".to_string()]);
        assert_eq!(start, vec![b2, c]);
        let same = [a];
        let (stop, start) = service_changes(&same, &same);
        assert!(stop.is_empty() && start.is_empty());
    }

    #[test]
    fn an_unconfirmed_change_is_undone_at_the_next_boot() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let good = ConfigFiles::from([("host.toml".to_string(), b"schema = 1\n".to_vec())]);
        crate::state::journal::install(dir, &good).unwrap();
        record_good(&mut FsStore::for_config(dir), &good, None).unwrap();
        assert_eq!(undo_unconfirmed(dir), None, "no marker, nothing to do");
        let changed = ConfigFiles::from([
            (
                "host.toml".to_string(),
                b"schema = 1\nhostname = \"x\"\n".to_vec(),
            ),
            ("guests/a.toml".to_string(), b"schema = 1\n".to_vec()),
        ]);
        crate::state::journal::install(dir, &changed).unwrap();
        crate::state::atomic::atomic_write(&dir.join(UNCONFIRMED), b"waiting\n").unwrap();
        let msg = undo_unconfirmed(dir).unwrap();
        assert!(msg.contains("back to generation 1-"), "{msg}");
        assert_eq!(collect_config(dir).unwrap(), good);
        assert!(!dir.join(UNCONFIRMED).exists());
    }
}
