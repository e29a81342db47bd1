//! `[[service]]` of host.toml: extra processes walden supervises.

use super::ids::Name;
use super::reader::{Tbl, Val};
use super::source::At;
use super::units::HumanDuration;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// When a guest or service that stopped is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Whenever it stops.
    Always,
    /// Only when it failed (non-zero exit, killed, crashed).
    OnFailure,
    /// Never.
    Never,
}

/// Accepted spellings of [`RestartPolicy`].
pub(crate) const RESTART: &[(&str, RestartPolicy)] = &[
    ("always", RestartPolicy::Always),
    ("on-failure", RestartPolicy::OnFailure),
    ("never", RestartPolicy::Never),
];

/// When a service counts as ready (services `after` it wait for that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// As soon as the process was started.
    Started,
    /// When this path exists (a socket, a pid file).
    Path(PathBuf),
    /// This long after the start.
    Delay(Duration),
}

/// An extra supervised service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Origin in host.toml.
    pub at: At,
    /// Unique name.
    pub name: Name,
    /// Program (absolute path) and arguments.
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Services that must be ready first.
    pub after: Vec<Name>,
    /// Readiness condition (default: started).
    pub ready: Readiness,
    /// Restart policy (default always).
    pub restart: RestartPolicy,
    /// Signal that asks it to stop (default SIGTERM).
    pub stop_signal: Signal,
    /// Time between the stop signal and SIGKILL (default 10s).
    pub stop_timeout: Duration,
}

fn command(v: &Val<'_>) -> Vec<String> {
    let hint = "write the program's absolute path and its arguments, e.g. [\"/usr/bin/node_exporter\", \"--web.listen-address=:9100\"]";
    let Some(items) = v.array() else {
        return Vec::new();
    };
    if items.is_empty() {
        v.error::<()>("the command is empty", hint);
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(s) = item.str() else { continue };
        if i == 0 && !s.starts_with('/') {
            item.error::<()>(format!("{s:?} is not an absolute path"), hint);
        }
        out.push(s.to_string());
    }
    out
}

fn env(v: &Val<'_>) -> BTreeMap<String, String> {
    let Some(t) = v.table() else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (k, val) in t.entries() {
        let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            val.error::<()>(
                format!("invalid environment variable name {k:?}"),
                "use letters, digits and '_', not starting with a digit",
            );
            continue;
        }
        if let Some(s) = val.str() {
            out.insert(k, s.to_string());
        }
    }
    out
}

fn ready(v: &Val<'_>) -> Option<Readiness> {
    let t = v.table()?;
    let path = t.opt("path").and_then(|p| p.abs_path());
    let delay = t.opt("delay").and_then(|d| d.parse::<HumanDuration>());
    let out = match (t.opt("path").is_some(), t.opt("delay").is_some()) {
        (true, true) => {
            t.error(
                "give `path` or `delay`, not both",
                "e.g. ready = { path = \"/run/x.sock\" }",
            );
            None
        }
        (false, false) => {
            t.error(
                "`ready` needs `path` or `delay`",
                "e.g. ready = { path = \"/run/x.sock\" } or ready = { delay = \"2s\" }",
            );
            None
        }
        (true, false) => path.map(Readiness::Path),
        (false, true) => delay.map(|d| Readiness::Delay(d.0)),
    };
    t.finish();
    out
}

fn signal(v: &Val<'_>) -> Option<Signal> {
    let s = v.str()?;
    let full = if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    };
    full.parse::<Signal>().ok().or_else(|| {
        v.error(
            format!("unknown signal {s:?}"),
            "use a signal name such as \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\"",
        )
    })
}

/// Read one `[[service]]` table.
pub(crate) fn read(t: Tbl<'_>) -> Option<ServiceConfig> {
    let name = t
        .req("name", "e.g. name = \"node-exporter\"")
        .and_then(|v| v.parse::<Name>());
    let command = t
        .req("command", "e.g. command = [\"/usr/bin/node_exporter\"]")
        .map(|v| command(&v))
        .unwrap_or_default();
    let env = t.opt("env").map(|v| env(&v)).unwrap_or_default();
    let after = t.opt("after").map(|v| v.parse_list()).unwrap_or_default();
    let ready = t
        .opt("ready")
        .and_then(|v| ready(&v))
        .unwrap_or(Readiness::Started);
    let restart = t
        .opt("restart")
        .and_then(|v| v.choice(RESTART))
        .unwrap_or(RestartPolicy::Always);
    let stop_signal = t
        .opt("stop_signal")
        .and_then(|v| signal(&v))
        .unwrap_or(Signal::SIGTERM);
    let stop_timeout = t
        .opt("stop_timeout")
        .and_then(|v| v.parse::<HumanDuration>())
        .map_or(Duration::from_secs(10), |d| d.0);
    let at = t.at();
    t.finish();
    Some(ServiceConfig {
        at,
        name: name?,
        command,
        env,
        after,
        ready,
        restart,
        stop_signal,
        stop_timeout,
    })
}
