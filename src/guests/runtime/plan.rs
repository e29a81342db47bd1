//! One monitoring turn, planned (pure): given the guest table, what libvirt
//! reports now and the time, update each guest's state and say which
//! libvirt calls to make. The engine ([`super::engine`]) makes the calls and
//! records their results.

use super::hypervisor::{DomainInfo, DomainState, StopReason};
use super::order::may_stop;
use super::policy::{decide, Decision, Policy};
use super::table::{GuestState, StopOp, Table, ThenDo};
use crate::config::GuestConfig;
use crate::supervisor::backoff::Human;
use std::collections::BTreeMap;
use std::time::Instant;

/// A libvirt call the turn needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Prepare disks, define and start.
    Start {
        /// The guest's config.
        config: Box<GuestConfig>,
        /// Its domain XML.
        xml: String,
    },
    /// ACPI shutdown.
    Shutdown(String),
    /// Force off.
    Destroy(String),
    /// Remove the definition (the entry is dropped once done).
    Undefine(String),
}

/// Why a waiting guest cannot start yet.
enum Prereq {
    Ready,
    Waiting(String),
    /// Waiting for the host (a host block, or a prerequisite held by one).
    Held(String),
    Failed(String),
}

fn prereq(table: &Table, active: &dyn Fn(&str) -> bool, g: &GuestConfig) -> Prereq {
    if let Some(why) = table.host_block(g.name.as_str()) {
        return Prereq::Held(why.to_string());
    }
    for dep in &g.after {
        let dep = dep.as_str();
        if active(dep) {
            continue;
        }
        let Some(d) = table.get(dep) else {
            // Not managed (removed from the config): nothing to wait for.
            continue;
        };
        return match d.state {
            GuestState::Failed => Prereq::Failed(format!(
                "not started: prerequisite {dep} failed ({})",
                d.last_error.as_deref().unwrap_or("see its status")
            )),
            GuestState::Stopped if !d.want => Prereq::Waiting(format!(
                "waiting for {dep}, which is stopped (`walden guest start {dep}`)"
            )),
            _ if d.held => Prereq::Held(format!(
                "waiting for {dep}, which is {}",
                d.last_error.as_deref().unwrap_or("held by the host")
            )),
            _ => Prereq::Waiting(format!("waiting for {dep} to run")),
        };
    }
    Prereq::Ready
}

/// Plan one turn. `observed` maps domain names to what libvirt reports;
/// a name missing from it has no domain.
pub fn plan(
    table: &mut Table,
    observed: &BTreeMap<String, DomainInfo>,
    policy: &Policy,
    now: Instant,
) -> Vec<Action> {
    let is_active = |name: &str| observed.get(name).is_some_and(|o| o.state.is_active());
    let mut actions = Vec::new();
    // Running guests' configs, for the stop order of a host shutdown.
    let active_configs: Vec<GuestConfig> = table
        .entries
        .iter()
        .filter(|e| is_active(e.name()))
        .map(|e| e.config.clone())
        .collect();
    for i in 0..table.entries.len() {
        let shutting_down = table.shutting_down;
        let verdict = {
            let e = &table.entries[i];
            if e.want && matches!(e.state, GuestState::Waiting | GuestState::Failed) {
                Some(prereq(table, &is_active, &e.config))
            } else {
                None
            }
        };
        let e = &mut table.entries[i];
        e.held = matches!(verdict, Some(Prereq::Held(_)));
        let name = e.name().to_string();
        let obs = observed.get(&name);
        let active = is_active(&name);
        e.pid = if active {
            obs.and_then(|o| o.pid)
        } else {
            None
        };

        // A stop walden asked for.
        if let Some(mut op) = e.stop {
            if !active {
                e.stop = None;
                e.started_at = None;
                tracing::info!(guest = %name, "stopped");
                match op.then {
                    ThenDo::Undefine => actions.push(Action::Undefine(name)),
                    ThenDo::Start if !shutting_down => {
                        e.state = GuestState::Waiting;
                        e.want = true;
                    }
                    ThenDo::Start | ThenDo::Nothing => e.state = GuestState::Stopped,
                }
                continue;
            }
            e.state = GuestState::Stopping;
            match op.sent {
                None if op.force => {
                    tracing::warn!(guest = %name, "forcing it off (stop --force)");
                    op.sent = Some(now);
                    op.destroyed = true;
                    actions.push(Action::Destroy(name));
                }
                None => {
                    op.sent = Some(now);
                    op.pressed = Some(now);
                    actions.push(Action::Shutdown(name));
                }
                Some(t) if !op.destroyed && now >= t + e.config.shutdown_timeout => {
                    tracing::warn!(guest = %name, "did not shut down within {}; forcing it off", Human(e.config.shutdown_timeout));
                    op.destroyed = true;
                    actions.push(Action::Destroy(name));
                }
                Some(_)
                    if !op.destroyed
                        && op.pressed.is_none_or(|p| now >= p + policy.acpi_repeat) =>
                {
                    op.pressed = Some(now);
                    actions.push(Action::Shutdown(name));
                }
                Some(_) => {}
            }
            e.stop = Some(op);
            continue;
        }

        // Host shutdown: dependents first, then their prerequisites.
        if shutting_down {
            if active {
                if may_stop(&name, &active_configs) {
                    e.stop = Some(StopOp {
                        sent: Some(now),
                        pressed: Some(now),
                        ..StopOp::new(ThenDo::Nothing)
                    });
                    e.state = GuestState::Stopping;
                    actions.push(Action::Shutdown(name));
                }
            } else if !matches!(e.state, GuestState::Failed) {
                e.state = GuestState::Stopped;
                e.next_start = None;
            }
            continue;
        }

        if active {
            if e.state != GuestState::Running {
                // Started elsewhere (virsh), or still running from before a
                // supervisor restart: from now on it is supervised.
                tracing::info!(guest = %name, "running (adopted)");
                e.state = GuestState::Running;
                e.want = true;
                e.last_error = None;
                e.started_at.get_or_insert(now);
            }
            continue;
        }

        match e.state {
            GuestState::Running => {
                let reason = match obs.map(|o| o.state) {
                    Some(DomainState::ShutOff(r)) => r,
                    _ => StopReason::Other,
                };
                let uptime = e.started_at.map_or(Default::default(), |t| now - t);
                e.started_at = None;
                match decide(
                    policy,
                    e.config.restart,
                    reason,
                    uptime,
                    &mut e.restart_state,
                    now,
                ) {
                    Decision::Restart(delay) => {
                        tracing::warn!(guest = %name, "{}; restarting in {}", reason.describe(), Human(delay));
                        e.state = GuestState::Backoff;
                        e.next_start = Some(now + delay);
                        e.last_error = Some(format!("{}; restarting", reason.describe()));
                    }
                    Decision::Stay => {
                        tracing::info!(guest = %name, "{}", reason.describe());
                        e.state = GuestState::Stopped;
                        e.want = false;
                    }
                    Decision::Fail(msg) => {
                        tracing::error!(guest = %name, "{msg}");
                        e.state = GuestState::Failed;
                        e.want = false;
                        e.last_error = Some(msg);
                    }
                }
                continue;
            }
            GuestState::Backoff if e.next_start.is_some_and(|t| now >= t) => {
                e.next_start = None;
                e.restart_state.crashes.record(&policy.crash_limit, now);
                e.restarts += 1;
                e.state = GuestState::Waiting;
                // Starts on the next turn, once prerequisites are checked.
                continue;
            }
            GuestState::Stopping => e.state = GuestState::Stopped,
            _ => {}
        }

        match verdict {
            Some(Prereq::Ready) => actions.push(Action::Start {
                config: Box::new(e.config.clone()),
                xml: e.xml.clone(),
            }),
            Some(Prereq::Waiting(why)) => {
                e.state = GuestState::Waiting;
                e.last_error = Some(why);
            }
            Some(Prereq::Held(why)) => {
                if e.last_error.as_deref() != Some(why.as_str()) {
                    tracing::warn!(guest = %name, "not started: {why}");
                }
                e.state = GuestState::Waiting;
                e.last_error = Some(why);
            }
            Some(Prereq::Failed(why)) => {
                if e.state != GuestState::Failed {
                    tracing::error!(guest = %name, "{why}");
                }
                e.state = GuestState::Failed;
                e.last_error = Some(why);
            }
            None => {}
        }
    }
    actions
}
