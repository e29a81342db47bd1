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
//! ```
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

pub use server::{serve, serve_virtio_port, VIRTIO_PORT};

use crate::supervisor::status::Status;
use serde::{Deserialize, Serialize};

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Request {
    /// The supervisor's full status.
    Status,
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
}

impl Response {
    /// A successful status answer.
    pub fn status(status: Status) -> Self {
        Self {
            ok: true,
            result: Some(status),
            error: None,
        }
    }

    /// An error answer.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }
}
