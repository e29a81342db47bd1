//! Restart delays and the crash-loop limit: pure arithmetic on durations and
//! instants, unit-tested without processes.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Exponential restart delay: `initial * factor^level`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Growth per consecutive restart (values below 1.0 are treated as 1.0).
    pub factor: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling, up to 30 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The delay before restart number `level` (0 = the first restart after
    /// a quiet period).
    pub fn delay(&self, level: u32) -> Duration {
        let factor = if self.factor.is_finite() && self.factor > 1.0 {
            self.factor
        } else {
            1.0
        };
        // powi saturates to infinity for large levels; min() then caps it.
        let secs = self.initial.as_secs_f64() * factor.powi(level.min(i32::MAX as u32) as i32);
        let max = self.max.max(self.initial);
        if secs.is_finite() && secs < max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            max
        }
    }

    /// Whether a process that ran for `uptime` was stable: then the delay
    /// starts from `initial` again. "Stable" means it stayed up longer than
    /// the largest delay, so a service that crashes once a day is restarted
    /// quickly instead of after `max`.
    pub fn is_stable_run(&self, uptime: Duration) -> bool {
        uptime >= self.max
    }
}

/// At most `max_restarts` restarts within `window`; one more is a crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLimit {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// Sliding window the restarts are counted in.
    pub window: Duration,
}

impl Default for CrashLimit {
    /// 5 restarts within 60 s.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Restart instants of one service inside the crash-limit window.
#[derive(Debug, Clone, Default)]
pub struct CrashWindow {
    restarts: VecDeque<Instant>,
}

impl CrashWindow {
    /// Forget restarts older than the window, as seen at `now`.
    fn prune(&mut self, limit: &CrashLimit, now: Instant) {
        while let Some(&first) = self.restarts.front() {
            if now.saturating_duration_since(first) > limit.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether another restart at `now` would exceed the limit: the service
    /// was already restarted `max_restarts` times within the window.
    pub fn exhausted(&mut self, limit: &CrashLimit, now: Instant) -> bool {
        self.prune(limit, now);
        self.restarts.len() >= limit.max_restarts as usize
    }

    /// Record a restart at `now`.
    pub fn record(&mut self, limit: &CrashLimit, now: Instant) {
        self.prune(limit, now);
        self.restarts.push_back(now);
    }

    /// Restarts currently inside the window.
    pub fn count(&self) -> usize {
        self.restarts.len()
    }
}

/// A duration the way users write them in config: "60s", "250ms", "1.5s".
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else if ms >= 1000 {
            write!(f, "{}s", self.0.as_secs_f64())
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delay_grows_and_caps() {
        let b = Backoff {
            initial: ms(100),
            max: ms(1000),
            factor: 2.0,
        };
        let got: Vec<u128> = (0..6).map(|l| b.delay(l).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), ms(1000));
    }

    #[test]
    fn delay_with_degenerate_factor_is_constant() {
        for factor in [0.0, 0.5, 1.0, f64::NAN, f64::INFINITY] {
            let b = Backoff {
                initial: ms(50),
                max: ms(1000),
                factor,
            };
            assert_eq!(b.delay(7), ms(50), "factor {factor}");
        }
    }

    #[test]
    fn default_backoff_matches_documentation() {
        let b = Backoff::default();
        assert_eq!(b.delay(0), ms(100));
        assert_eq!(b.delay(1), ms(200));
        assert_eq!(b.delay(20), Duration::from_secs(30));
        assert!(b.is_stable_run(Duration::from_secs(31)));
        assert!(!b.is_stable_run(Duration::from_secs(5)));
    }

    #[test]
    fn crash_window_counts_restarts_inside_window() {
        let limit = CrashLimit {
            max_restarts: 3,
            window: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let mut w = CrashWindow::default();
        for i in 0..3 {
            assert!(!w.exhausted(&limit, t0 + ms(i * 100)));
            w.record(&limit, t0 + ms(i * 100));
        }
        assert!(w.exhausted(&limit, t0 + ms(500)));
        assert_eq!(w.count(), 3);
        // Once the first restarts leave the window, restarting is allowed again.
        assert!(!w.exhausted(&limit, t0 + ms(10_150)));
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn zero_restarts_allowed_means_first_crash_is_a_loop() {
        let limit = CrashLimit {
            max_restarts: 0,
            window: Duration::from_secs(1),
        };
        assert!(CrashWindow::default().exhausted(&limit, Instant::now()));
    }

    #[test]
    fn human_durations() {
        assert_eq!(Human(Duration::from_secs(60)).to_string(), "60s");
        assert_eq!(Human(ms(250)).to_string(), "250ms");
        assert_eq!(Human(ms(1500)).to_string(), "1.5s");
    }
}
