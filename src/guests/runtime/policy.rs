//! Restart policy for guests: what happens when a running guest stops
//! without walden asking. Pure: decided from the policy, why it stopped,
//! how long it ran and the recent restarts.

use crate::config::RestartPolicy;
use crate::supervisor::backoff::{Backoff, CrashLimit, CrashWindow, Human};
use std::time::{Duration, Instant};

use super::hypervisor::StopReason;

/// Timing knobs of the guest runtime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Restart delays: 1 s doubling up to 60 s; a guest that ran longer
    /// than the maximum starts from 1 s again.
    pub backoff: Backoff,
    /// Crash-loop limit: 5 restarts within 10 minutes, then the guest is
    /// left off ("failed") until `walden guest start`.
    pub crash_limit: CrashLimit,
    /// How often libvirt is asked for the guests' states (dead guests are
    /// noticed within this time).
    pub poll: Duration,
    /// Longest wait for any single libvirt call.
    pub call_timeout: Duration,
    /// A guest that has not shut down is sent the ACPI power button again
    /// this often until its `shutdown_timeout` (one press is lost on a
    /// guest whose OS was still booting).
    pub acpi_repeat: Duration,
    /// Undefine domains walden defined for guests the config no longer has
    /// (removed while walden was not running). Off only where one libvirt
    /// is shared with others (tests on `test:///default`).
    pub forget_orphans: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                factor: 2.0,
            },
            crash_limit: CrashLimit {
                max_restarts: 5,
                window: Duration::from_secs(600),
            },
            poll: Duration::from_secs(1),
            call_timeout: Duration::from_secs(60),
            acpi_repeat: Duration::from_secs(15),
            forget_orphans: true,
        }
    }
}

/// What to do after a guest stopped by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart(Duration),
    /// Leave it off; it stopped cleanly and the policy does not restart.
    Stay,
    /// Leave it off as failed, with the reason for status.
    Fail(String),
}

/// Restart bookkeeping of one guest.
#[derive(Debug, Clone, Default)]
pub struct RestartState {
    /// Consecutive quick restarts (the backoff exponent).
    pub level: u32,
    /// Restarts inside the crash-limit window.
    pub crashes: CrashWindow,
}

/// Decide what follows an unexpected stop of a guest that ran for `uptime`,
/// and update the restart bookkeeping for a restart.
pub fn decide(
    policy: &Policy,
    restart: RestartPolicy,
    reason: StopReason,
    uptime: Duration,
    state: &mut RestartState,
    now: Instant,
) -> Decision {
    let wanted = match restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => reason.is_failure(),
        RestartPolicy::Never => false,
    };
    if !wanted {
        return if reason.is_failure() {
            Decision::Fail(format!("{} (restart = never)", reason.describe()))
        } else {
            Decision::Stay
        };
    }
    if policy.backoff.is_stable_run(uptime) {
        state.level = 0;
    }
    if state.crashes.exhausted(&policy.crash_limit, now) {
        return Decision::Fail(format!(
            "crash loop: {} restarts within {}; last stop: {}; `walden guest start` tries again",
            state.crashes.count(),
            Human(policy.crash_limit.window),
            reason.describe()
        ));
    }
    let delay = policy.backoff.delay(state.level);
    state.level = state.level.saturating_add(1);
    Decision::Restart(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Policy {
        Policy {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                factor: 2.0,
            },
            crash_limit: CrashLimit {
                max_restarts: 2,
                window: Duration::from_secs(60),
            },
            ..Policy::default()
        }
    }

    #[test]
    fn policy_table() {
        use RestartPolicy::*;
        use StopReason::*;
        let p = quick();
        let now = Instant::now();
        let cases = [
            (Always, Shutdown, true),
            (Always, Crashed, true),
            (OnFailure, Shutdown, false),
            (OnFailure, Crashed, true),
            (OnFailure, Destroyed, true),
            (Never, Crashed, false),
            (Never, Shutdown, false),
        ];
        for (policy, reason, restarts) in cases {
            let d = decide(
                &p,
                policy,
                reason,
                Duration::ZERO,
                &mut RestartState::default(),
                now,
            );
            assert_eq!(
                matches!(d, Decision::Restart(_)),
                restarts,
                "{policy:?} {reason:?}: {d:?}"
            );
        }
        let d = decide(
            &p,
            Never,
            Crashed,
            Duration::ZERO,
            &mut RestartState::default(),
            now,
        );
        assert_eq!(
            d,
            Decision::Fail("crashed (QEMU died) (restart = never)".into())
        );
        let d = decide(
            &p,
            OnFailure,
            Shutdown,
            Duration::ZERO,
            &mut RestartState::default(),
            now,
        );
        assert_eq!(d, Decision::Stay);
    }

    #[test]
    fn backoff_grows_then_resets_after_a_stable_run() {
        let p = quick();
        let mut s = RestartState::default();
        let now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..3 {
            match decide(
                &p,
                RestartPolicy::Always,
                StopReason::Crashed,
                Duration::ZERO,
                &mut s,
                now,
            ) {
                Decision::Restart(d) => delays.push(d.as_millis()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, [100, 200, 400]);
        let d = decide(
            &p,
            RestartPolicy::Always,
            StopReason::Crashed,
            Duration::from_secs(5),
            &mut s,
            now,
        );
        assert_eq!(d, Decision::Restart(Duration::from_millis(100)));
    }

    #[test]
    fn crash_loop_stops_restarts() {
        let p = quick();
        let mut s = RestartState::default();
        let now = Instant::now();
        s.crashes.record(&p.crash_limit, now);
        s.crashes.record(&p.crash_limit, now);
        match decide(
            &p,
            RestartPolicy::OnFailure,
            StopReason::Crashed,
            Duration::ZERO,
            &mut s,
            now,
        ) {
            Decision::Fail(msg) => assert!(
                msg.starts_with("crash loop: 2 restarts within 60s"),
                "{msg}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
