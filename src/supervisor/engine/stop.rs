//! Orderly stop: dependents before their dependencies, each with its own
//! stop signal and timeout, then SIGKILL; finally the leftovers in the
//! services' process groups.

use super::{Supervisor, READY_POLL};
use crate::supervisor::backoff::Human;
use crate::supervisor::reaper::{has_children, reap_all};
use crate::supervisor::runtime::EventKind;
use crate::supervisor::status::{Phase, ServiceState};
use crate::supervisor::SupervisorError;
use nix::sys::signal::{killpg, Signal};
use std::time::{Duration, Instant};

/// How long to wait for a process group after SIGKILL before giving up.
const KILL_GRACE: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Orderly stop: dependents before their dependencies, each with its
    /// stop signal, then SIGKILL after its stop timeout. Returns when every
    /// service is down; then kills what is left in their process groups.
    pub fn shutdown(&mut self) -> Result<(), SupervisorError> {
        self.stopping = true;
        self.stop_requested = true;
        self.set_phase(Phase::Stopping);
        self.notifier.stopping();
        tracing::info!("stopping {} services", self.services.len());
        self.run_until(|s| s.services.iter().all(|s| s.pid.is_none()), None)?;
        for s in &self.services {
            if let Some(group) = s.group {
                // Orphans left in the group (daemonised children); the group
                // may be empty already (ESRCH).
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
        self.reap_leftovers(Duration::from_secs(1));
        self.set_phase(Phase::Stopped);
        tracing::info!("all services stopped");
        Ok(())
    }

    /// Stop the services named in `names` (dependents first, each with its
    /// stop signal and timeout, like a shutdown) and drop them from the
    /// table; the others keep running. Returns the names still running at
    /// `deadline` (they stay in the table, still being stopped).
    pub fn retire(
        &mut self,
        names: &[String],
        deadline: Instant,
    ) -> Result<Vec<String>, SupervisorError> {
        for s in &mut self.services {
            if names.contains(&s.spec.name) {
                s.retiring = true;
            }
        }
        let down = |sup: &Self| {
            sup.services
                .iter()
                .filter(|s| s.retiring)
                .all(|s| s.pid.is_none())
        };
        self.run_until(down, Some(deadline))?;
        let mut left = Vec::new();
        self.services.retain(|s| {
            if s.retiring && s.pid.is_some() {
                left.push(s.spec.name.clone());
            }
            !s.retiring || s.pid.is_some()
        });
        self.sync_status();
        Ok(left)
    }

    /// Stop service `i` once nothing that depends on it runs any more.
    pub(super) fn advance_stop(&mut self, i: usize, now: Instant) {
        let s = &self.services[i];
        let Some(pid) = s.pid else {
            if matches!(s.state, ServiceState::Waiting | ServiceState::Backoff) {
                let s = &mut self.services[i];
                s.state = ServiceState::Stopped;
                s.next_start = None;
            }
            return;
        };
        match s.stop_deadline {
            None => {
                let name = &s.spec.name;
                let blocked = self
                    .services
                    .iter()
                    .any(|o| o.pid.is_some() && o.spec.after.iter().any(|a| a == name));
                if blocked {
                    return;
                }
                let (sig, timeout) = (s.spec.stop_signal, s.spec.stop_timeout);
                tracing::info!(service = %name, "stopping with {sig} (timeout {})", Human(timeout));
                let _ = killpg(pid, sig);
                let s = &mut self.services[i];
                s.state = ServiceState::Stopping;
                s.stop_deadline = Some(now + timeout);
                self.record(i, now, EventKind::StopSignal(sig));
            }
            Some(deadline) if now >= deadline && !s.killed => {
                tracing::warn!(service = %s.spec.name, "did not stop within {}; sending SIGKILL", Human(s.spec.stop_timeout));
                let _ = killpg(pid, Signal::SIGKILL);
                let s = &mut self.services[i];
                s.killed = true;
                s.stop_deadline = Some(now + KILL_GRACE);
                self.record(i, now, EventKind::Killed);
            }
            Some(deadline) if now >= deadline => {
                let msg = format!(
                    "pid {pid} survived SIGKILL for {}; giving up on it",
                    Human(KILL_GRACE)
                );
                let s = &mut self.services[i];
                s.pid = None;
                self.give_up(i, msg, now);
            }
            Some(_) => {}
        }
    }

    /// Reap what the final SIGKILL sweep left, for at most `limit`.
    fn reap_leftovers(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while has_children() {
            for (pid, exit) in reap_all() {
                tracing::debug!("reaped leftover pid {pid}: {exit}");
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "processes outside the services' groups are still running after stop"
                );
                return;
            }
            if let Err(e) = self.signals.wait(READY_POLL) {
                tracing::warn!("waiting for leftover processes: {e}");
                return;
            }
        }
    }
}
