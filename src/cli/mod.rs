//! Client side of the control socket: `walden status` and friends.
//!
//! A thin client (STYLE.md): it sends one request line, reads one response
//! line, and renders it for a person or, with `--json`, passes the result
//! through for a machine.

pub(crate) mod render;
pub mod screen;

use crate::control::{Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the client waits for the supervisor to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Errors talking to the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Nothing listens on the socket.
    #[error(
        "no walden supervisor is listening on {path}: {source}; \
         is `walden supervise` running? (on the appliance it always is; on a dev box pass --socket)"
    )]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed half way.
    #[error("talking to the supervisor on {path}: {source}")]
    Io {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The answer was not understood.
    #[error("unexpected answer from the supervisor: {0}")]
    BadAnswer(String),
}

/// Send one request and return the response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, CliError> {
    call_with(socket, request, TIMEOUT)
}

/// [`call`] with its own answer timeout (commands take longer than status).
pub fn call_with(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, CliError> {
    let path = socket.display().to_string();
    let io = |source| CliError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| CliError::Connect {
        path: path.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| CliError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    // A server that refuses us (not root) answers and closes without
    // reading: the write may then fail, but its answer is still readable.
    let written = stream.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    if answer.trim().is_empty() {
        written.map_err(io)?;
        read.map_err(io)?;
    }
    if answer.trim().is_empty() {
        return Err(CliError::BadAnswer(
            "the connection closed without an answer".into(),
        ));
    }
    let response: Response = serde_json::from_str(answer.trim())
        .map_err(|e| CliError::BadAnswer(format!("{e}: {}", answer.trim())))?;
    if !response.ok {
        return Err(CliError::Refused(response.error.unwrap_or_else(|| {
            "the supervisor refused without a reason".into()
        })));
    }
    Ok(response)
}

/// `walden status [--json]`.
pub fn status(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let response = call(socket, &Request::Status)?;
    let status = response
        .result
        .ok_or_else(|| CliError::BadAnswer("status answer without a result".into()))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
    } else {
        out.write_all(render::status(&status).as_bytes())?;
    }
    Ok(0)
}

/// How long `config apply` may take on the supervisor's side (guests to
/// stop, services to become ready) before the client gives up waiting.
const APPLY_TIMEOUT: Duration = Duration::from_secs(660);

/// `walden config apply [DIR]`: send DIR's config set (or apply /config as
/// it is when DIR is the config disk) and show what happened.
pub fn config_apply(
    socket: &Path,
    dir: Option<&Path>,
    mut request: crate::control::ApplyRequest,
    json: bool,
) -> anyhow::Result<u8> {
    if let Some(dir) = dir {
        let is_config_disk = std::fs::canonicalize(dir).ok()
            == std::fs::canonicalize(crate::context::DEFAULT_CONFIG).ok();
        if !is_config_disk {
            let files = crate::state::collect_config(dir)?;
            // Checked here too, so a typo is reported without a round trip.
            if let Err(e) = crate::config::load(dir) {
                anyhow::bail!("{} is not applied:\n{e}", dir.display());
            }
            request.files = Some(
                files
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
            );
        }
    }
    let response = call_with(socket, &Request::ConfigApply(request), APPLY_TIMEOUT)?;
    command_report(response, json)
}

/// `walden config confirm`.
pub fn config_confirm(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let response = call(socket, &Request::ConfigConfirm)?;
    command_report(response, json)
}

fn command_report(response: Response, json: bool) -> anyhow::Result<u8> {
    let report = response
        .report
        .ok_or_else(|| CliError::BadAnswer("answer without a report".into()))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(0);
    }
    let failed = report["state"] == "failed";
    match serde_json::from_value::<crate::supervisor::apply::ApplyStatus>(report.clone()) {
        Ok(a) => out.write_all(render::apply(&a).as_bytes())?,
        Err(_) => writeln!(out, "{}", report["message"].as_str().unwrap_or_default())?,
    }
    Ok(if failed { 1 } else { 0 })
}
