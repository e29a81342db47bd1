//! The control socket: how `walden status` (and later `config apply`,
//! `guest ...`, `image ...`) talk to the running supervisor.
//!
//! # Protocol
//!
//! A Unix stream socket, by default `/run/walden/control.sock`, carrying JSON
//! lines. The client writes one request object per line; the server answers
//! each with one response object on one line, in order. Requests:
//!
//! ```text
//! {"action":"status"}
//! {"action":"config-apply","files":{"host.toml":"..."},"restart_changed":false}
//! {"action":"config-confirm"}
//! {"action":"guest","op":"start|stop|restart","name":"web"}
//! ```
//!
//! Commands other than `status` are queued to the supervisor's loop (one
//! at a time, in order) and answered with `{"ok":true,"report":{...}}`.
//!
//! Responses:
//!
//! ```text
//! {"ok":true,"result":{ ...Status... }}
//! {"ok":false,"error":"what went wrong and what to do"}
//! ```
//!
//! `Status` is `crate::supervisor::status::Status`: `version`,
//! `image_version`, `mode`, `phase`, `kernel_ms`, `uptime_ms`, `ready_ms`,
//! `steps[]` (`name`, `state`, `started_ms`, `duration_ms`, `detail`,
//! `error`), `services[]` (`name`, `state`, `pid`, `restarts`, `last_exit`,
//! `last_error`), `last_error`. Fields are only ever added.
//!
//! Only root may use the socket: the server checks the peer's uid with
//! `SO_PEERCRED` before reading anything and answers anyone else with an
//! error line, then closes. The socket file itself is mode 0666 on purpose,
//! so a non-root user gets that clear answer instead of a bare EACCES.
//!
//! On the appliance the same protocol is also served on the virtio-serial
//! port `org.walden.control` when the hypervisor provides one: only whoever
//! runs the VM can reach it, which is how the qemu-tests read status.

mod server;

pub use server::{serve, serve_virtio_port, Ctl, VIRTIO_PORT};

use crate::supervisor::status::Status;
use serde::{Deserialize, Serialize};

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Request {
    /// The supervisor's full status.
    Status,
    /// Validate a config and apply it to the running host (`walden config
    /// apply`). With `files`, that set (host.toml, guests/NAME.toml) is
    /// installed on the config disk first; without, /config is applied as
    /// it is.
    ConfigApply(ApplyRequest),
    /// Keep a runtime network change that awaits confirmation.
    ConfigConfirm,
    /// `walden guest start|stop [--force]|restart|eject NAME`,
    /// `walden guest insert NAME ISO`.
    Guest {
        /// "start", "stop", "force-stop" (`stop --force`), "restart",
        /// "eject" or "insert".
        op: String,
        /// Guest name.
        name: String,
        /// The ISO image of "insert" (a path on the host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iso: Option<String>,
    },
}

/// What `config-apply` carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The new config set, file name -> content; None: /config as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<std::collections::BTreeMap<String, String>>,
    /// Restart guests whose definition changed (otherwise they are marked
    /// "restart pending").
    #[serde(default)]
    pub restart_changed: bool,
    /// Override `[network] safe_apply` for this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe: Option<bool>,
    /// Seconds to wait for `config confirm` before a network change is
    /// reverted (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_timeout_s: Option<u64>,
}

/// A response on the control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Status>,
    /// What went wrong, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The outcome of a command other than `status` (an apply report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl Response {
    /// A successful status answer.
    pub fn status(status: Status) -> Self {
        Self {
            ok: true,
            result: Some(status),
            error: None,
            report: None,
        }
    }

    /// An error answer.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(message.into()),
            report: None,
        }
    }

    /// A command's answer: its report, or what went wrong.
    pub fn command(reply: Result<serde_json::Value, String>) -> Self {
        match reply {
            Ok(report) => Self {
                ok: true,
                result: None,
                error: None,
                report: Some(report),
            },
            Err(e) => Self::error(e),
        }
    }
}
