//! A small QMP client (QEMU Machine Protocol): JSON objects, one per line,
//! over a Unix socket.
//!
//! The conversation: QEMU greets with `{"QMP":{...}}`; the client sends
//! `{"execute":"qmp_capabilities"}`; then each command gets exactly one reply,
//! `{"return":...}` or `{"error":{"class":..,"desc":..}}`, carrying back the
//! `id` the client sent. Asynchronous `{"event":...}` lines may arrive at any
//! time; they are kept in [`Qmp::events`].

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one command may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A connected, negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// Events received so far (e.g. `POWERDOWN`, `SHUTDOWN`, `RESET`), oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connect to `path`, retrying until `timeout` (QEMU creates the socket
    /// shortly after it starts), read the greeting and negotiate capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let stream = crate::tools::connect_retrying(path, timeout, Duration::from_millis(50))
            .map_err(|e| Error::Qmp {
                what: format!("connect {}", path.display()),
                detail: format!("{e} (still failing after {timeout:?})"),
            })?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io("set read timeout on", path, e))?;
        let reader = BufReader::new(
            stream
                .try_clone()
                .map_err(|e| Error::io("clone", path, e))?,
        );
        let mut qmp = Self {
            path: path.to_path_buf(),
            writer: stream,
            reader,
            next_id: 1,
            events: Vec::new(),
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp {
                what: "greeting".into(),
                detail: format!("expected {{\"QMP\":...}}, got {greeting}"),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Execute `command` with optional `arguments`; return its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::Qmp {
                what: format!("send {command}"),
                detail: e.to_string(),
            })?;
        loop {
            let msg = self.read_message(command)?;
            if msg.get("event").is_some() {
                self.events.push(msg);
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                // A reply to an earlier command that timed out on our side.
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let field = |k: &str| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(Error::QmpCommand {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(Error::Qmp {
                what: format!("reply to {command}"),
                detail: format!("neither return nor error: {msg}"),
            });
        }
    }

    /// `quit`: QEMU may close the socket before or after answering; both are success.
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(Error::Qmp { detail, .. }) if detail.contains("closed") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether an event named `name` (e.g. "POWERDOWN") was received.
    pub fn saw_event(&self, name: &str) -> bool {
        self.events
            .iter()
            .any(|e| e.get("event").and_then(Value::as_str) == Some(name))
    }

    fn read_message(&mut self, during: &str) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(|e| Error::Qmp {
                what: format!("read reply to {during} from {}", self.path.display()),
                detail: match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                        format!("no reply within {REPLY_TIMEOUT:?}")
                    }
                    _ => e.to_string(),
                },
            })?;
            if n == 0 {
                return Err(Error::Qmp {
                    what: format!("read reply to {during}"),
                    detail: "connection closed by QEMU".into(),
                });
            }
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(line.trim()).map_err(|e| Error::Qmp {
                what: format!("parse reply to {during}"),
                detail: format!("{e}: {line:?}"),
            });
        }
    }
}

#[cfg(test)]
#[path = "qmp_tests.rs"]
mod tests;
