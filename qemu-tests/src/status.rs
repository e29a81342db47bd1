//! `walden status --json` as the harness reads it.
//!
//! These structs mirror `src/supervisor/status.rs` on purpose instead of
//! depending on the walden crate: the harness checks the wire format a user
//! sees. Unknown fields are ignored and missing optional ones default, so the
//! guest can grow its status without breaking older scenarios.

use serde::Deserialize;

/// Overall supervisor phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Bring-up steps are running.
    Starting,
    /// Every bring-up step finished.
    Ready,
    /// Bring-up could not finish; up for maintenance only.
    Maintenance,
    /// Orderly stop in progress.
    Stopping,
    /// Everything stopped.
    Stopped,
    /// A phase this harness does not know yet.
    #[serde(other)]
    Unknown,
}

/// One bring-up step with its timing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Step {
    /// Step name, e.g. "config".
    pub name: String,
    /// "pending", "running", "done", "skipped" or "failed".
    pub state: String,
    /// Milliseconds since the supervisor started when the step began.
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// How long the step took, once finished.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// What was done or why it was skipped.
    #[serde(default)]
    pub detail: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// One supervised service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// "waiting", "starting", "running", "backoff", "failed", "stopping" or "stopped".
    pub state: String,
    /// Process id while running.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Restart count.
    #[serde(default)]
    pub restarts: u32,
    /// The last exit.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// The last error.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One guest in `walden status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Guest {
    /// Guest name.
    pub name: String,
    /// "running", "waiting", "failed", ...
    pub state: String,
    /// Why it waits or failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// What `walden status --json` reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    /// walden's own version.
    pub version: String,
    /// The image version booted.
    #[serde(default)]
    pub image_version: Option<String>,
    /// "pid1", "systemd" or "standalone".
    #[serde(default)]
    pub mode: String,
    /// Overall phase.
    pub phase: Phase,
    /// Kernel start to supervisor start, in ms.
    #[serde(default)]
    pub kernel_ms: Option<u64>,
    /// Supervisor uptime, in ms.
    #[serde(default)]
    pub uptime_ms: u64,
    /// Supervisor start to ready, in ms.
    #[serde(default)]
    pub ready_ms: Option<u64>,
    /// Bring-up steps in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Supervised services.
    #[serde(default)]
    pub services: Vec<Service>,
    /// The guests of the config.
    #[serde(default)]
    pub guests: Vec<Guest>,
    /// The most recent error.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Status {
    /// The step called `name`, if reported.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Steps that failed, as "name: error" lines (empty when none failed).
    pub fn failed_steps(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.state == "failed")
            .map(|s| {
                format!(
                    "{}: {}",
                    s.name,
                    s.error.as_deref().unwrap_or("(no error given)")
                )
            })
            .collect()
    }
}

/// One reply line of the control protocol.
#[derive(Debug, Clone, Deserialize)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when ok.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// The error, when not ok.
    #[serde(default)]
    pub error: Option<String>,
    /// A command's report (`config-apply`, `config-confirm`).
    #[serde(default)]
    pub report: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"ok":true,"result":{"version":"0.1.0","image_version":"0.1.0","mode":"pid1",
        "phase":"ready","kernel_ms":3900,"uptime_ms":5100,"ready_ms":1200,
        "steps":[{"name":"udev","state":"done","started_ms":0,"duration_ms":800,"detail":null,"error":null},
                 {"name":"network","state":"failed","started_ms":800,"duration_ms":5,"detail":null,"error":"no such link"}],
        "services":[{"name":"sshd","state":"running","pid":412,"restarts":0,"last_exit":null,"last_error":null}],
        "last_error":null,"future_field":{"x":1}}}"#;

    #[test]
    fn parses_a_full_status_and_ignores_unknown_fields() {
        let reply: Reply = serde_json::from_str(FULL).unwrap();
        assert!(reply.ok);
        let status: Status = serde_json::from_value(reply.result.unwrap()).unwrap();
        assert_eq!(status.phase, Phase::Ready);
        assert_eq!(status.image_version.as_deref(), Some("0.1.0"));
        assert_eq!(status.kernel_ms, Some(3900));
        assert_eq!(status.step("udev").unwrap().duration_ms, Some(800));
        assert_eq!(status.failed_steps(), ["network: no such link"]);
        assert_eq!(status.services[0].pid, Some(412));
    }

    #[test]
    fn tolerates_missing_optionals_and_new_phases() {
        let s: Status = serde_json::from_str(r#"{"version":"0.2.0","phase":"upgrading"}"#).unwrap();
        assert_eq!(s.phase, Phase::Unknown);
        assert!(s.steps.is_empty() && s.image_version.is_none());
        for (text, want) in [
            ("starting", Phase::Starting),
            ("ready", Phase::Ready),
            ("maintenance", Phase::Maintenance),
            ("stopping", Phase::Stopping),
            ("stopped", Phase::Stopped),
        ] {
            let v: Phase = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(v, want);
        }
    }

    #[test]
    fn parses_an_error_reply() {
        let r: Reply =
            serde_json::from_str(r#"{"ok":false,"error":"unknown action \"x\""}"#).unwrap();
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some("unknown action \"x\""));
    }
}
