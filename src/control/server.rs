//! Control socket server: accept, check the peer, answer JSON lines.

use super::{Request, Response};
use crate::context::Paths;
use crate::supervisor::commands::{Command, CommandQueue};
use crate::supervisor::status::SharedStatus;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Name of the virtio-serial port the control protocol is also served on.
pub const VIRTIO_PORT: &str = "org.walden.control";

/// Longest request line accepted; anything longer is refused.
const MAX_LINE: usize = 64 * 1024;

/// How long a client may take to send a request before it is dropped, so a
/// stuck client cannot pin a thread forever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors starting the control server.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket's directory could not be created.
    #[error("control socket: cannot create directory {dir}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Binding or configuring the socket failed.
    #[error("control socket: cannot listen on {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Longest a client waits for a command (an apply with guests to stop).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// What the server answers from: the status, and the supervisor's command
/// queue (None where nothing may be changed, e.g. tests of the protocol).
#[derive(Debug, Clone)]
pub struct Ctl {
    /// The status `status` requests read.
    pub status: SharedStatus,
    /// Where `config-apply` and `config-confirm` go.
    pub commands: Option<CommandQueue>,
}

impl Ctl {
    /// A server that answers `status` only.
    #[cfg(test)]
    pub fn status_only(status: SharedStatus) -> Self {
        Self {
            status,
            commands: None,
        }
    }
}

/// A running control server. Dropping it stops accepting and removes the
/// socket file.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Start serving `status` on a Unix socket at `path` (mode 0666, owner as
/// created; SO_PEERCRED admits uid 0 only). Returns once the socket is
/// listening; connections are handled on background threads.
pub fn serve(path: &Path, ctl: Ctl) -> Result<Server, ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ControlError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    // A socket file left by a previous supervisor would make bind fail.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(bind_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(bind_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = Server {
        path: path.to_path_buf(),
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(listener, ctl, stop))
        .map_err(bind_err)?;
    Ok(server)
}

fn accept_loop(listener: UnixListener, ctl: Ctl, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                let ctl = ctl.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || handle_unix(stream, &ctl));
                if let Err(e) = spawned {
                    tracing::warn!("control socket: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn handle_unix(stream: UnixStream, ctl: &Ctl) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("control socket: {e}");
            return;
        }
    };
    match peer_uid(&stream) {
        Ok(0) => {}
        Ok(uid) => {
            let msg = format!(
                "permission denied: the walden control socket accepts only root (uid 0), \
                 you are uid {uid}; run the command as root (sudo walden ...)"
            );
            let _ = write_response(&mut writer, &Response::error(msg));
            return;
        }
        Err(e) => {
            let _ = write_response(
                &mut writer,
                &Response::error(format!("cannot identify the peer: {e}")),
            );
            return;
        }
    }
    // Commands may take minutes (guests shutting down): the write side
    // must not give up before the answer is ready.
    let _ = writer.set_write_timeout(Some(COMMAND_TIMEOUT));
    serve_lines(BufReader::new(stream), &mut writer, ctl);
}

/// Answer request lines from `reader` until EOF or an I/O error.
fn serve_lines(mut reader: impl BufRead, writer: &mut impl Write, ctl: &Ctl) {
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::Read::take(&mut reader, MAX_LINE as u64 + 1).read_line(&mut line) {
            Ok(0) => return,
            Ok(n) if n > MAX_LINE => {
                let _ = write_response(writer, &Response::error("request line too long"));
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        if line.trim().is_empty() {
            continue;
        }
        let response = answer(line.trim(), ctl);
        if write_response(writer, &response).is_err() {
            return;
        }
    }
}

/// The handler: one request line in, one response out.
pub(crate) fn answer(line: &str, ctl: &Ctl) -> Response {
    let command = match serde_json::from_str::<Request>(line) {
        Ok(Request::Status) => return Response::status(ctl.status.snapshot()),
        Ok(Request::ConfigApply(req)) => Command::Apply(req),
        Ok(Request::ConfigConfirm) => Command::Confirm,
        Ok(Request::Guest { op, name, iso }) => Command::Guest { op, name, iso },
        Err(e) => {
            return Response::error(format!(
            "bad request: {e}; expected one JSON object per line such as {{\"action\":\"status\"}}"
        ))
        }
    };
    match &ctl.commands {
        Some(queue) => Response::command(queue.submit(command, COMMAND_TIMEOUT)),
        None => Response::error(
            "this supervisor takes no commands (it only reports status); \
             run the command on the appliance",
        ),
    }
}

fn write_response(w: &mut impl Write, r: &Response) -> std::io::Result<()> {
    let mut buf = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    buf.push(b'\n');
    w.write_all(&buf)?;
    w.flush()
}

fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(stream, PeerCredentials).map_err(std::io::Error::from)?;
    Ok(cred.uid())
}

/// Find the virtio-serial port named [`VIRTIO_PORT`] through sysfs
/// (`<sys>/class/virtio-ports/vportNpM/name`), so it works before udev has
/// made the `/dev/virtio-ports/` symlinks.
pub fn find_virtio_port(sys: &Path, dev: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys.join("class/virtio-ports")).ok()?;
    entries.flatten().find_map(|e| {
        let name = std::fs::read_to_string(e.path().join("name")).ok()?;
        (name.trim() == VIRTIO_PORT).then(|| dev.join(e.file_name()))
    })
}

/// Serve the protocol on the virtio-serial port, if the hypervisor gave us
/// one. The port is reachable only by whoever runs the VM, so no credential
/// check applies. Returns the device path served, or None when there is no
/// such port.
pub fn serve_virtio_port(paths: &Paths, ctl: Ctl) -> Option<PathBuf> {
    let port = find_virtio_port(&paths.sys, &paths.dev)?;
    let served = port.clone();
    let spawned = std::thread::Builder::new()
        .name("control-virtio".into())
        .spawn(move || loop {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&port)
            {
                Ok(file) => match file.try_clone() {
                    Ok(mut writer) => serve_lines(BufReader::new(file), &mut writer, &ctl),
                    Err(e) => tracing::warn!("control port {}: {e}", port.display()),
                },
                Err(e) => tracing::debug!("control port {}: {e}", port.display()),
            }
            // EOF means the host side is not connected; look again shortly.
            std::thread::sleep(Duration::from_millis(250));
        });
    spawned.ok().map(|_| served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::status::Status;

    #[test]
    fn virtio_port_is_found_by_name_in_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        for (port, name) in [
            ("vport0p1", "org.qemu.guest_agent.0"),
            ("vport1p1", VIRTIO_PORT),
        ] {
            let d = sys.join("class/virtio-ports").join(port);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        let dev = tmp.path().join("dev");
        assert_eq!(find_virtio_port(&sys, &dev), Some(dev.join("vport1p1")));
        assert_eq!(find_virtio_port(&tmp.path().join("nosys"), &dev), None);
    }

    #[test]
    fn status_request_gets_status() {
        let shared = SharedStatus::new(Status::new("standalone"));
        let r = answer(r#"{"action":"status"}"#, &Ctl::status_only(shared.clone()));
        assert!(r.ok);
        assert_eq!(r.result.map(|s| s.mode), Some("standalone".to_string()));
    }

    #[test]
    fn status_answers_run_the_refreshers_each_time() {
        let shared = SharedStatus::new(Status::new("standalone"));
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = calls.clone();
        let refresher = move |s: &mut Status| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            s.last_error = Some(format!("refresh {n}"));
        };
        // Set twice under one name (as a step run again on every apply):
        // one refresher, run once per snapshot.
        shared.set_refresher("test", Box::new(refresher.clone()));
        shared.set_refresher("test", Box::new(refresher));
        assert_eq!(shared.refreshers(), 1);
        for n in 1..=2 {
            let r = answer(r#"{"action":"status"}"#, &Ctl::status_only(shared.clone()));
            let status = r.result.unwrap_or_else(|| Status::new("none"));
            assert_eq!(status.last_error, Some(format!("refresh {n}")));
        }
        // The stored status is untouched: refreshers only fill snapshots.
        assert_eq!(shared.lock().last_error, None);
    }

    #[test]
    fn unknown_action_is_an_error_naming_the_format() {
        let shared = SharedStatus::new(Status::new("standalone"));
        let r = answer(r#"{"action":"explode"}"#, &Ctl::status_only(shared.clone()));
        assert!(!r.ok);
        let e = r.error.unwrap_or_default();
        assert!(e.contains("bad request") && e.contains("explode"), "{e}");
    }

    #[test]
    fn lines_are_answered_in_order_and_blank_lines_skipped() {
        let shared = SharedStatus::new(Status::new("standalone"));
        let input = b"{\"action\":\"status\"}\n\nnot json\n".to_vec();
        let mut out = Vec::new();
        serve_lines(
            BufReader::new(&input[..]),
            &mut out,
            &Ctl::status_only(shared.clone()),
        );
        let text = String::from_utf8(out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("{\"ok\":true"));
        assert!(lines[1].starts_with("{\"ok\":false"));
    }
}
