//! When to restart `walden supervise`, and when to give the operator a shell.

use super::shutdown::Scope;
use std::time::Duration;

/// Delay before the first restart.
pub const INITIAL_DELAY: Duration = Duration::from_secs(1);
/// The delay doubles up to this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A child that ran this long counts as healthy: the delay starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Consecutive quick failures after which an emergency shell is offered.
pub const EMERGENCY_AFTER: u32 = 5;

/// Exponential restart backoff: 1 s, 2 s, 4 s ... 60 s, reset after a run of
/// at least [`STABLE_AFTER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: INITIAL_DELAY,
            failures: 0,
        }
    }
}

impl Backoff {
    /// The child exited (or could not start: `ran_for` zero) after
    /// `ran_for`; returns how long to wait before starting it again.
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= STABLE_AFTER {
            *self = Self::default();
        }
        self.failures = self.failures.saturating_add(1);
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        delay
    }

    /// Exits in a row that came before [`STABLE_AFTER`] (the latest one included).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

/// Whether PID 1 should start an emergency shell on the console: only as the
/// machine's real init (never in a test namespace or container), only when a
/// shell exists in the image, only one at a time, and only after the
/// supervisor failed [`EMERGENCY_AFTER`] times in a row.
pub fn wants_emergency_shell(
    failures: u32,
    scope: Scope,
    shell_exists: bool,
    shell_running: bool,
) -> bool {
    scope == Scope::InitialNamespace
        && shell_exists
        && !shell_running
        && failures >= EMERGENCY_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn doubles_to_the_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.on_exit(Duration::ZERO).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.consecutive_failures(), 9);
    }

    #[test]
    fn a_stable_run_resets() {
        let mut backoff = Backoff::default();
        for _ in 0..4 {
            backoff.on_exit(secs(1));
        }
        assert_eq!(backoff.on_exit(secs(59)), secs(16));
        assert_eq!(backoff.on_exit(secs(60)), secs(1));
        assert_eq!(backoff.consecutive_failures(), 1);
        assert_eq!(backoff.on_exit(secs(3)), secs(2));
    }

    #[test]
    fn emergency_shell_rules() {
        let init = Scope::InitialNamespace;
        assert!(wants_emergency_shell(5, init, true, false));
        assert!(wants_emergency_shell(9, init, true, false));
        assert!(!wants_emergency_shell(4, init, true, false));
        assert!(!wants_emergency_shell(5, init, false, false));
        assert!(!wants_emergency_shell(5, init, true, true));
        assert!(!wants_emergency_shell(
            5,
            Scope::ChildNamespace,
            true,
            false
        ));
    }
}
