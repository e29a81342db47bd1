//! The boot's side of trial boots, as two bring-up steps (appliance.rs):
//!
//! - "image-boot" (right after the boot record): classify this boot from
//!   grubenv ([`TrialState::after_boot`]): normal, on trial, manual choice in
//!   the menu, or a rollback by GRUB. A rollback is settled on the media
//!   (the failed version recorded as bad) and reported on the console and in
//!   status as "rolled back from X: reason".
//! - "health" (last): publish the watchdog timeout for PID 1, then wait
//!   until the boot is healthy (config applied, network up, services and
//!   guests running, `[health] command` exits 0) within `[health] timeout`
//!   since kernel start (a boot that is not on trial checks once and
//!   reports). A healthy trial is marked good in grubenv. An
//!   unhealthy trial records why in grubenv (the version booted after the
//!   rollback reports it) and, with `on_failure = "reboot"` (default),
//!   reboots so the next try starts. A normal boot only reports: rebooting
//!   a known-good version would loop.

use super::media::{MediaKind, MediaRw};
use super::store::{Esp, VAR_REASON};
use super::trial::{BootOutcome, TrialState};
use crate::boot::record::{BootRecord, BOOT_RECORD};
use crate::config::HealthFailure;
use crate::supervisor::bringup::{BringUp, Step, StepError, StepOutcome};
use crate::supervisor::engine::LoopExit;
use crate::supervisor::status::{ServiceState, Status, StepState};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// File in the run directory where the supervisor tells PID 1 the watchdog
/// timeout from host.toml (seconds, one line).
pub const WATCHDOG_TIMEOUT_FILE: &str = "watchdog.timeout";
/// How often health is re-checked while waiting.
const POLL: Duration = Duration::from_secs(2);
/// Longest a `[health] command` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bring-up steps whose failure means "not healthy".
const HEALTH_STEPS: &[&str] = &["config", "network", "vfio", "services", "guests"];

/// What `walden status` says about the boot image (field `boot_image`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootImageStatus {
    /// "usb" or "iso".
    pub media: String,
    /// "normal", "trial", "rolled-back", "manual" or "single-version".
    pub state: String,
    /// Boots left for the trial (after this one), while on trial.
    #[serde(default)]
    pub tries_left: Option<u8>,
    /// The version that failed its trial, after a rollback.
    #[serde(default)]
    pub rolled_back_from: Option<String>,
    /// Why it failed, after a rollback.
    #[serde(default)]
    pub rollback_reason: Option<String>,
    /// Health of this boot: "marked good", "healthy", "not healthy: ...".
    #[serde(default)]
    pub health: Option<String>,
    /// One line for humans.
    pub summary: String,
}

/// State shared by the "image-boot" and "health" steps.
#[derive(Debug, Default, Clone)]
pub struct ImageSteps {
    boot: Rc<RefCell<Option<(BootRecord, BootOutcome)>>>,
}

impl ImageSteps {
    /// The "image-boot" step.
    pub fn boot_step(&self) -> Step {
        let boot = self.boot.clone();
        Step::new("image-boot", move |b: &mut BringUp| image_boot(b, &boot))
    }

    /// The "health" step.
    pub fn health_step(&self) -> Step {
        let boot = self.boot.clone();
        Step::new("health", move |b: &mut BringUp| health(b, &boot))
    }
}

fn set_status(b: &BringUp, f: impl FnOnce(&mut BootImageStatus)) {
    let mut st = b.supervisor.status().lock();
    let mut img = st.boot_image.clone().unwrap_or_default();
    f(&mut img);
    st.boot_image = Some(img);
}

fn image_boot(
    b: &mut BringUp,
    boot: &RefCell<Option<(BootRecord, BootOutcome)>>,
) -> Result<StepOutcome, StepError> {
    let path = b.paths.root.join(BOOT_RECORD.trim_start_matches('/'));
    if !path.exists() {
        return Ok(StepOutcome::Skipped(format!("no {}", path.display())));
    }
    let rec = BootRecord::load(&path).map_err(|e| StepError::new(e.to_string()))?;
    if MediaKind::of(&rec) == MediaKind::Iso {
        let summary = format!(
            "{} from an ISO: single version, no trial counters; roll back by booting the previous ISO",
            rec.version
        );
        set_status(b, |s| {
            s.media = "iso".into();
            s.state = "single-version".into();
            s.summary = summary.clone();
        });
        return Ok(StepOutcome::Done(summary));
    }
    let esp = Esp::new(&rec.media_mount);
    let (env, mut state) = esp.load().map_err(|e| StepError::new(e.to_string()))?;
    let before = state.clone();
    let outcome = state.after_boot(&rec.version);
    let (kind, tries_left, from, reason, summary) = match &outcome {
        BootOutcome::Normal => (
            "normal",
            None,
            None,
            None,
            format!("{} (known good)", rec.version),
        ),
        BootOutcome::Trial { tries_left } => (
            "trial",
            Some(*tries_left),
            None,
            None,
            format!(
                "{} on trial, {tries_left} more tries before falling back to {}",
                rec.version,
                before.previous.as_deref().unwrap_or("?")
            ),
        ),
        BootOutcome::Manual { booted } => (
            "manual",
            None,
            None,
            None,
            format!(
                "{booted} chosen in the boot menu; the active version stays {}",
                before.active.as_deref().unwrap_or("?")
            ),
        ),
        BootOutcome::RolledBack { from, to } => {
            let reason = env
                .get(VAR_REASON)
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "it never reported health in {} tries (a hang, a kernel panic or a watchdog reset)",
                        super::trial::TRIES
                    )
                });
            let line = format!("rolled back from {from}: {reason}");
            tracing::error!("{line}; running {to}, {from} is marked bad");
            ("rolled-back", None, Some(from.clone()), Some(reason), line)
        }
    };
    if state != before {
        let rw = MediaRw::open(
            &rec,
            &b.paths.proc,
            &b.paths.run.join(super::cli::MEDIA_LOCK),
        )
        .map_err(|e| StepError::new(e.to_string()))?;
        Esp::new(rw.root())
            .save(env, &state)
            .map_err(|e| StepError::new(format!("cannot settle the rollback in grubenv: {e}")))?;
    }
    if from.is_some() {
        b.supervisor.status().lock().last_error = Some(format!("image: {summary}"));
    }
    if let BootOutcome::Trial { tries_left } = &outcome {
        // Until this try's health step decides, what a rollback after it
        // reports is that it never did: a reason recorded by an earlier
        // try would otherwise be shown for a try that hung.
        if let Err(e) = record_reason(b, &rec, &no_verdict(*tries_left)) {
            tracing::warn!("cannot record the trial's start on the boot media: {e}");
        }
    }
    set_status(b, |s| {
        s.media = "usb".into();
        s.state = kind.into();
        s.tries_left = tries_left;
        s.rolled_back_from = from.clone();
        s.rollback_reason = reason.clone();
        s.summary = summary.clone();
    });
    *boot.borrow_mut() = Some((rec, outcome));
    Ok(StepOutcome::Done(summary))
}

/// Which try of [`super::trial::TRIES`] a trial boot with `tries_left` is
/// (GRUB counts down before booting it: the first try has TRIES - 1 left).
fn try_number(tries_left: u8) -> u8 {
    super::trial::TRIES.saturating_sub(tries_left)
}

/// The reason a trial try records when it starts, replaced by its health
/// step's verdict: what a rollback reports if that step never decides.
pub(super) fn no_verdict(tries_left: u8) -> String {
    format!(
        "try {} of {} never reported health (a hang, a kernel panic or a watchdog reset)",
        try_number(tries_left),
        super::trial::TRIES
    )
}

/// The reason an unhealthy trial try records: which try, and why.
fn try_failed(tries_left: u8, why: &str) -> String {
    format!(
        "try {} of {}: {why}",
        try_number(tries_left),
        super::trial::TRIES
    )
}

/// Why `status` is not healthy, or `None` when it is.
pub fn unhealthy(status: &Status) -> Option<String> {
    let step = |name: &str| status.steps.iter().find(|s| s.name == name);
    match step("config") {
        Some(s) if s.state == StepState::Done => {}
        Some(s) if s.state == StepState::Skipped => {
            return Some(format!(
                "no config applied ({})",
                s.detail.as_deref().unwrap_or("skipped")
            ))
        }
        Some(s) => {
            return Some(format!(
                "config not applied: {}",
                s.error.as_deref().unwrap_or("not done")
            ))
        }
        None => return Some("no config step ran".into()),
    }
    if let Some(refused) = &status.config_refused {
        return Some(format!("config refused by this version: {refused}"));
    }
    for s in &status.steps {
        if HEALTH_STEPS.contains(&s.name.as_str()) && s.state == StepState::Failed {
            return Some(format!(
                "step {} failed: {}",
                s.name,
                s.error.as_deref().unwrap_or("?")
            ));
        }
    }
    for s in &status.services {
        if matches!(s.state, ServiceState::Failed | ServiceState::Backoff) {
            return Some(format!(
                "service {} is {:?}{}",
                s.name,
                s.state,
                s.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    None
}

/// Run the operator's `[health] command`; `None` when it exited 0.
fn command_fails(argv: &[String]) -> Option<String> {
    let (prog, args) = argv.split_first()?;
    match crate::command::run(Command::new(prog).args(args), COMMAND_TIMEOUT) {
        Ok(f) if f.status.success() => None,
        Ok(f) => Some(format!("health command {prog} failed ({})", f.reason())),
        Err(e) => Some(format!("health command {prog}: {e}")),
    }
}

/// Seconds since kernel start.
fn uptime(proc: &Path) -> Duration {
    std::fs::read_to_string(proc.join("uptime"))
        .ok()
        .and_then(|t| crate::boot::record::parse_uptime(&t))
        .map_or(Duration::ZERO, Duration::from_secs_f64)
}

/// The "watchdog" step (right after the config is loaded, and again on
/// every `config apply`): tell PID 1 the `[watchdog] timeout` of host.toml,
/// which it applies to /dev/watchdog on its next turn.
pub fn watchdog_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let wd = b
        .config
        .as_ref()
        .map(|c| c.host.watchdog.clone())
        .unwrap_or_default();
    let file = b.paths.run.join(WATCHDOG_TIMEOUT_FILE);
    let text = format!("{}\n", wd.timeout.as_secs());
    if std::fs::read_to_string(&file).is_ok_and(|old| old == text) {
        return Ok(StepOutcome::Done(format!(
            "timeout {} s (unchanged)",
            wd.timeout.as_secs()
        )));
    }
    crate::state::atomic::atomic_write(&file, text.as_bytes()).map_err(|e| {
        StepError::new(format!(
            "cannot tell PID 1 the watchdog timeout in {}: {e}",
            file.display()
        ))
    })?;
    Ok(StepOutcome::Done(format!(
        "timeout {} s published for PID 1",
        wd.timeout.as_secs()
    )))
}

fn health(
    b: &mut BringUp,
    boot: &RefCell<Option<(BootRecord, BootOutcome)>>,
) -> Result<StepOutcome, StepError> {
    let hc = match &b.config {
        Some(c) => c.host.health.clone(),
        None => Default::default(),
    };
    let tries_left = match boot.borrow().as_ref() {
        Some((_, BootOutcome::Trial { tries_left })) => Some(*tries_left),
        _ => None,
    };
    let on_trial = tries_left.is_some();
    let left = hc.timeout.saturating_sub(uptime(&b.paths.proc));
    let deadline = Instant::now() + left;
    let started = Instant::now();
    let verdict = loop {
        let why = {
            let st = b.supervisor.status().lock();
            unhealthy(&st)
        }
        .or_else(|| command_fails(&hc.command));
        let Some(why) = why else { break Ok(()) };
        // Only a trial waits: a known-good boot reports at once rather
        // than hold "ready" back for up to the whole timeout.
        if !on_trial || Instant::now() >= deadline {
            break Err(why);
        }
        let until = (Instant::now() + POLL).min(deadline);
        match b.supervisor.run_until(|_| false, Some(until))? {
            LoopExit::Stop => {
                return Err(StepError::new("stop requested while waiting for health"))
            }
            LoopExit::Deadline | LoopExit::Condition | LoopExit::Reload => {}
        }
    };
    let rec = boot.borrow().as_ref().map(|(r, _)| r.clone());
    match verdict {
        Ok(()) => {
            let mut detail = format!("healthy after {} ms", started.elapsed().as_millis());
            if let (true, Some(rec)) = (on_trial, &rec) {
                mark_good(b, rec).map_err(|e| StepError::new(format!("healthy, but {e}")))?;
                detail = format!("{detail}; {} marked good", rec.version);
                tracing::info!("image {} passed its trial and is marked good", rec.version);
            }
            let h = if on_trial { "marked good" } else { "healthy" };
            set_status(b, |s| s.health = Some(h.into()));
            Ok(StepOutcome::Done(detail))
        }
        Err(why) => {
            let line = if on_trial {
                format!(
                    "not healthy within [health] timeout {} s of boot: {why}",
                    hc.timeout.as_secs()
                )
            } else {
                format!("not healthy at the end of bring-up: {why}")
            };
            set_status(b, |s| s.health = Some(line.clone()));
            let Some((rec, tries_left)) = rec.zip(tries_left) else {
                return Err(StepError::new(line));
            };
            let recorded = try_failed(tries_left, &why);
            if let Err(e) = record_reason(b, &rec, &recorded) {
                tracing::warn!("cannot record the trial failure on the boot media: {e}");
            }
            if hc.on_failure == HealthFailure::Reboot {
                tracing::error!(
                    "trial of {} failed: {line}; rebooting (the next try, or the previous version)",
                    rec.version
                );
                if let Err(e) = crate::pid1::request(crate::pid1::Action::Reboot) {
                    tracing::error!("cannot ask PID 1 to reboot: {e:#}");
                }
            }
            Err(StepError::new(format!("trial of {}: {line}", rec.version)))
        }
    }
}

fn mark_good(b: &BringUp, rec: &BootRecord) -> Result<(), super::error::ImageError> {
    let rw = MediaRw::open(
        rec,
        &b.paths.proc,
        &b.paths.run.join(super::cli::MEDIA_LOCK),
    )?;
    let esp = Esp::new(rw.root());
    let (mut env, mut state): (_, TrialState) = esp.load()?;
    state.mark_good(&rec.version)?;
    env.unset(VAR_REASON);
    esp.save(env, &state)
}

fn record_reason(b: &BringUp, rec: &BootRecord, why: &str) -> Result<(), super::error::ImageError> {
    let rw = MediaRw::open(
        rec,
        &b.paths.proc,
        &b.paths.run.join(super::cli::MEDIA_LOCK),
    )?;
    Esp::new(rw.root()).record_reason(why)
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
