//! systemd integration (`walden supervise --systemd`): READY=1 after
//! bring-up, STATUS= when the summary changes, WATCHDOG=1 at half the unit's
//! WatchdogSec, STOPPING=1 on stop. Without NOTIFY_SOCKET every call is a
//! no-op, so the same code runs outside systemd.

use sd_notify::NotifyState;
use std::time::Duration;

/// Sends sd_notify messages when enabled.
#[derive(Debug, Default)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    last_status: String,
}

impl Notifier {
    /// Never sends anything (appliance and standalone modes).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// systemd mode: notify through NOTIFY_SOCKET; ping the watchdog when
    /// WATCHDOG_USEC/WATCHDOG_PID name this process. The variables stay set
    /// (services do not inherit them: they get a clean environment).
    pub fn from_env() -> Self {
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2))
            .filter(|d| !d.is_zero());
        Self {
            enabled: true,
            watchdog,
            last_status: String::new(),
        }
    }

    /// How often to send WATCHDOG=1 (half the unit's interval), if at all.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled)
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            // systemd going away must not take the supervisor with it.
            tracing::warn!("sd_notify failed: {e}; is NOTIFY_SOCKET right?");
        }
    }

    /// READY=1 together with the current summary.
    pub fn ready(&mut self, summary: &str) {
        self.last_status = summary.to_string();
        self.send(&[NotifyState::Ready, NotifyState::Status(summary)]);
    }

    /// STATUS=summary, only when it differs from the last one sent.
    pub fn status(&mut self, summary: &str) {
        if self.last_status != summary {
            self.last_status = summary.to_string();
            self.send(&[NotifyState::Status(summary)]);
        }
    }

    /// WATCHDOG=1.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// STOPPING=1.
    pub fn stopping(&mut self) {
        self.last_status = "stopping".to_string();
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
