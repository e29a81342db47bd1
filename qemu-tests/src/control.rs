//! The host end of walden's control protocol over virtio-serial.
//!
//! QEMU exposes the guest port `org.walden.control` as a Unix socket in
//! server mode; the harness connects and speaks the same JSON lines as
//! `walden status --json` does on the guest's control socket. The guest
//! opens its end only once walden serves it, so a request may sit unanswered
//! for a while: the client resends on a short period until an overall
//! deadline, and drops replies left over from earlier attempts before each
//! new request.

use crate::error::{Error, Result};
use crate::status::{Reply, Status};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the guest's virtio-serial port.
pub const PORT_NAME: &str = "org.walden.control";

/// How long to wait for one reply before sending the request again.
const RESEND_AFTER: Duration = Duration::from_secs(3);

/// A connection to the control channel.
#[derive(Debug)]
pub struct ControlChannel {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl ControlChannel {
    /// Connect to QEMU's socket at `path`, retrying until `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let stream = crate::tools::connect_retrying(path, timeout, Duration::from_millis(100))
            .map_err(|e| Error::Control {
                path: path.to_path_buf(),
                detail: format!("cannot connect within {timeout:?}: {e}"),
            })?;
        let reader = stream
            .try_clone()
            .map_err(|e| Error::io("clone control socket", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: stream,
            reader: BufReader::new(reader),
        })
    }

    /// Send `{"action": action}` and return the `result` of the reply,
    /// resending until `timeout` while the guest does not answer.
    pub fn request(&mut self, action: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let request = format!("{}\n", serde_json::json!({ "action": action }));
        loop {
            self.drain_stale()?;
            self.writer
                .write_all(request.as_bytes())
                .map_err(|e| self.err(format!("send {action}: {e}")))?;
            let attempt_end = (Instant::now() + RESEND_AFTER).min(deadline);
            if let Some(reply) = self.read_reply(attempt_end)? {
                return if reply.ok {
                    reply
                        .result
                        .ok_or_else(|| self.err("reply has ok=true but no result".into()))
                } else {
                    Err(Error::ControlRefused {
                        action: action.to_string(),
                        error: reply.error.unwrap_or_else(|| "(no error given)".into()),
                    })
                };
            }
            if Instant::now() >= deadline {
                return Err(self.err(format!(
                    "no reply to {action:?} within {timeout:?}: walden is not serving {PORT_NAME} (not up yet, or the port is not served)"
                )));
            }
        }
    }

    /// Send a command such as `{"action":"config-apply",...}` once (commands
    /// change the machine, so they are not resent) and return its report.
    /// The channel must already be answering (ask for the status first).
    pub fn command(
        &mut self,
        request: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let action = request["action"].as_str().unwrap_or("?").to_string();
        self.send(request)?;
        match self.read_reply(Instant::now() + timeout)? {
            Some(reply) if reply.ok => reply
                .report
                .ok_or_else(|| self.err(format!("{action}: reply has ok=true but no report"))),
            Some(reply) => Err(Error::ControlRefused {
                action,
                error: reply.error.unwrap_or_else(|| "(no error given)".into()),
            }),
            None => Err(self.err(format!("no reply to {action:?} within {timeout:?}"))),
        }
    }

    /// Send one request line without waiting for the reply (a test that
    /// cuts the power in the middle of a command).
    pub fn send(&mut self, request: &serde_json::Value) -> Result<()> {
        self.drain_stale()?;
        let line = format!("{request}\n");
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.err(format!("send {request}: {e}")))
    }

    /// Ask for the status.
    pub fn status(&mut self, timeout: Duration) -> Result<Status> {
        let value = self.request("status", timeout)?;
        serde_json::from_value(value.clone())
            .map_err(|e| self.err(format!("status does not parse ({e}): {value}")))
    }

    /// Read lines until one parses as a reply or `until` passes.
    fn read_reply(&mut self, until: Instant) -> Result<Option<Reply>> {
        let mut line = String::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| self.err(format!("set timeout: {e}")))?;
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err(self.err("QEMU closed the socket".into())),
                Ok(_) => {
                    if let Ok(reply) = serde_json::from_str::<Reply>(line.trim()) {
                        return Ok(Some(reply));
                    }
                    // Not a reply (noise from a half-open port): keep reading.
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) => return Err(self.err(format!("read: {e}"))),
            }
        }
    }

    /// Throw away replies to earlier, resent requests.
    fn drain_stale(&mut self) -> Result<()> {
        while self
            .read_reply(Instant::now() + Duration::from_millis(20))?
            .is_some()
        {}
        Ok(())
    }

    fn err(&self, detail: String) -> Error {
        Error::Control {
            path: self.path.clone(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    const STATUS: &str = r#"{"ok":true,"result":{"version":"0.1.0","image_version":"0.1.0","mode":"pid1","phase":"ready","uptime_ms":10,"steps":[],"services":[]}}"#;

    /// A guest that ignores the first `ignore` requests (port not open yet),
    /// then answers each with `reply`.
    fn guest(path: &Path, ignore: usize, reply: &'static str) -> std::thread::JoinHandle<usize> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut seen = 0;
            for line in BufReader::new(stream).lines() {
                let line = line.unwrap();
                assert_eq!(line, r#"{"action":"status"}"#);
                seen += 1;
                if seen > ignore {
                    out.write_all(reply.as_bytes()).unwrap();
                    out.write_all(b"\n").unwrap();
                    break;
                }
            }
            seen
        })
    }

    #[test]
    fn status_is_read_after_resending_to_a_late_guest() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let g = guest(&sock, 1, STATUS);
        let mut ch = ControlChannel::connect(&sock, Duration::from_secs(5)).unwrap();
        let status = ch.status(Duration::from_secs(20)).unwrap();
        assert_eq!(status.image_version.as_deref(), Some("0.1.0"));
        assert_eq!(g.join().unwrap(), 2, "the request was sent twice");
    }

    #[test]
    fn refusal_is_reported_with_walden_message() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let g = guest(&sock, 0, r#"{"ok":false,"error":"not now"}"#);
        let mut ch = ControlChannel::connect(&sock, Duration::from_secs(5)).unwrap();
        let err = ch.status(Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("not now"), "{err}");
        g.join().unwrap();
    }

    #[test]
    fn silent_guest_times_out_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let _g = guest(&sock, usize::MAX, STATUS);
        let mut ch = ControlChannel::connect(&sock, Duration::from_secs(5)).unwrap();
        let err = ch.status(Duration::from_millis(500)).unwrap_err();
        assert!(err.to_string().contains(PORT_NAME), "{err}");
    }
}
