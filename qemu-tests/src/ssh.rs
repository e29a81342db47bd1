//! Outside observation: the admin's way into the booted host, ssh as root
//! (issue 20).
//!
//! A machine built with [`crate::MachineBuilder::admin_ssh`] gets one more
//! NIC, [`ADMIN_MAC`], on a QEMU user network of its own ([`ADMIN_NET`],
//! `restrict=on`: nothing leaves it) whose only opening is
//! `hostfwd=tcp:127.0.0.1:PORT-:22` on a free port of this machine's
//! loopback. The scenario's host.toml gets the public half of a key pair
//! made in the scenario's directory and a `[[network.link]]` for that NIC
//! with DHCP ([`crate::host_toml::merge_admin`]); walden then runs sshd and
//! the host takes QEMU's lease on the admin net, which the forward points at.
//!
//! [`crate::Machine::exec`] runs a command through `ssh` with options that
//! keep it to that port: no user or system ssh config (`-F /dev/null`), no
//! agent or other keys, no host key prompts or files, a connect timeout, and
//! a deadline after which ssh is killed. Each exec is appended to
//! `exec.log` in the scenario's directory.
//!
//! Rejected: a shell on the serial console (its output interleaves with
//! kernel and walden lines, exit codes need markers, and it is not how an
//! admin reaches the box); a `[[service]]` script per check (runs inside
//! walden's own supervision, so it observes walden with walden).

use crate::error::{Error, Result};
use crate::tools::{render, run_bounded};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The ssh client.
pub const SSH: &str = "ssh";

/// MAC of the admin NIC (a locally administered QEMU-style address no other
/// scenario NIC uses).
pub const ADMIN_MAC: &str = "52:54:00:ad:00:01";

/// The name host.toml gives the admin NIC.
pub const ADMIN_LINK: &str = "admin0";

/// The admin NIC's user network. Not QEMU's default 10.0.2.0/24: a scenario
/// may have its own user-net NICs, and two interfaces on one subnet would
/// leave the host's replies to the forward on whichever route wins.
pub const ADMIN_NET: &str = "10.0.9.0/24";

/// QEMU's DHCP server leases the first client `.15` of [`ADMIN_NET`], and
/// a `hostfwd` without a guest address forwards to it.
pub const ADMIN_GUEST_ADDR: &str = "10.0.9.15";

/// Key pair file in the scenario's directory (`.pub` beside it).
pub const KEY_FILE: &str = "admin_ed25519";

/// The exec record in the scenario's directory.
pub const EXEC_LOG: &str = "exec.log";

/// ssh's own connect timeout, seconds.
pub const CONNECT_TIMEOUT_S: u64 = 10;

/// Time limit of ssh-keygen.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(60);

/// The admin NIC, its forward and the key that logs in through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSsh {
    /// The private key (the public key is beside it, `.pub`).
    pub key: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
    /// The port on 127.0.0.1 that QEMU forwards to the host's port 22.
    pub port: u16,
}

impl AdminSsh {
    /// Make a key pair in `dir` (ssh-keygen, replacing an old one) and pick
    /// a free port on the loopback.
    pub fn create(dir: &Path) -> Result<Self> {
        let key = dir.join(KEY_FILE);
        let public = key.with_extension("pub");
        for p in [&key, &public] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove old key", p, e))
                }
                _ => {}
            }
        }
        let mut cmd = Command::new("ssh-keygen");
        cmd.args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "qemu-tests@harness",
            "-f",
        ])
        .arg(&key);
        let line = render("ssh-keygen", cmd.get_args());
        let done = run_bounded(&mut cmd, KEYGEN_TIMEOUT).map_err(|source| Error::ToolMissing {
            tool: "ssh-keygen".into(),
            package: "openssh-client",
            source,
        })?;
        if !done.status.is_some_and(|s| s.success()) {
            return Err(Error::ToolFailed {
                command: line,
                status: done
                    .status
                    .map_or(format!("killed after {KEYGEN_TIMEOUT:?}"), |s| {
                        s.to_string()
                    }),
                stderr: String::from_utf8_lossy(&done.stderr).trim().to_string(),
            });
        }
        let public_key = std::fs::read_to_string(&public)
            .map_err(|e| Error::io("read", &public, e))?
            .trim()
            .to_string();
        Ok(Self {
            key,
            public_key,
            port: free_port()?,
        })
    }

    /// QEMU's arguments for the admin NIC and its forward.
    pub fn qemu_args(&self) -> Vec<String> {
        qemu_args(self.port)
    }

    /// `host_toml` with this key and the admin NIC added (see
    /// [`crate::host_toml::merge_admin`]); for a scenario that writes a new
    /// host.toml onto the config disk between boots.
    pub fn merge_into(&self, host_toml: &str) -> Result<String> {
        crate::host_toml::merge_admin(host_toml, &self.public_key)
    }

    /// The ssh arguments that run `command` as root on the host.
    pub fn ssh_args(&self, command: &str) -> Vec<String> {
        ssh_args(&self.key, self.port, command)
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: QEMU binds it next).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("bind a free port on", "127.0.0.1", e))?;
    let port = l
        .local_addr()
        .map_err(|e| Error::io("read the bound port of", "127.0.0.1", e))?
        .port();
    Ok(port)
}

/// `-netdev user,...,hostfwd=...` and the NIC with [`ADMIN_MAC`].
pub fn qemu_args(port: u16) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("user,id=admin,restrict=on,net={ADMIN_NET},hostfwd=tcp:127.0.0.1:{port}-:22"),
        "-device".into(),
        format!("virtio-net-pci,netdev=admin,mac={ADMIN_MAC}"),
    ]
}

/// ssh's arguments: root at 127.0.0.1:`port` with `key` only, nothing
/// read from or written to ssh's config and known-hosts files, no prompt,
/// stdin from /dev/null, `command` run by root's shell on the host.
pub fn ssh_args(key: &Path, port: u16, command: &str) -> Vec<String> {
    let mut a: Vec<String> = vec!["-F".into(), "/dev/null".into(), "-n".into()];
    for opt in [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=no".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_S}"),
        "ConnectionAttempts=1".into(),
        "ServerAliveInterval=5".into(),
        "ServerAliveCountMax=3".into(),
        "IdentitiesOnly=yes".into(),
        "IdentityAgent=none".into(),
        "LogLevel=ERROR".into(),
    ] {
        a.push("-o".into());
        a.push(opt);
    }
    a.extend([
        "-i".into(),
        key.display().to_string(),
        "-p".into(),
        port.to_string(),
        "root@127.0.0.1".into(),
        "--".into(),
        command.into(),
    ]);
    a
}

/// What a command run over ssh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit status on the host.
    pub status: i32,
    /// Its stdout (lossily UTF-8).
    pub stdout: String,
    /// Its stderr (lossily UTF-8).
    pub stderr: String,
}

impl ExecOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// ssh's own exit status for its failures (connection, authentication).
pub const SSH_FAILED: i32 = 255;

/// Run `command` on the host with a deadline. A remote exit status (also
/// non-zero) is `Ok`; ssh failing (status 255: refused, reset,
/// authentication), being killed at the deadline or not starting is an
/// error naming the command, the port and `console_log`.
/// `exec_log` None records nothing (the retries of [`wait_for_sshd`]).
pub fn exec(
    admin: &AdminSsh,
    command: &str,
    timeout: Duration,
    exec_log: Option<&Path>,
    console_log: &Path,
) -> Result<ExecOutput> {
    let args = admin.ssh_args(command);
    let mut cmd = Command::new(SSH);
    cmd.args(&args);
    let fail = |detail: String| Error::Ssh {
        command: command.to_string(),
        port: admin.port,
        detail,
        log: console_log.to_path_buf(),
    };
    let done = run_bounded(&mut cmd, timeout).map_err(|e| {
        fail(format!(
            "cannot run {SSH} ({e}); install openssh-client (`make deps`)"
        ))
    })?;
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
    let outcome = match done.status {
        None => format!(
            "killed after {:.1} s (limit {timeout:?})",
            done.elapsed.as_secs_f64()
        ),
        Some(s) => match s.code() {
            Some(c) => format!("exit {c} in {:.1} s", done.elapsed.as_secs_f64()),
            None => format!("{s} in {:.1} s", done.elapsed.as_secs_f64()),
        },
    };
    if let Some(log) = exec_log {
        record(log, &render(SSH, &args), &outcome, &stdout, &stderr);
    }
    let Some(status) = done.status else {
        return Err(fail(format!(
            "did not finish within {timeout:?}; ssh killed{}",
            said(&stderr)
        )));
    };
    match status.code() {
        Some(SSH_FAILED) => Err(fail(format!("ssh failed (status 255){}", said(&stderr)))),
        Some(code) => Ok(ExecOutput {
            status: code,
            stdout,
            stderr,
        }),
        None => Err(fail(format!("ssh ended by {status}{}", said(&stderr)))),
    }
}

/// Longest a single "is sshd there" attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(CONNECT_TIMEOUT_S + 10);

/// Pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Log in and run `true` until it works or `timeout` passes; `alive` is
/// asked before each attempt (a QEMU that exited ends the wait at once).
/// Returns how long it took; the outcome is one line in `exec_log`.
pub fn wait_for_sshd(
    admin: &AdminSsh,
    timeout: Duration,
    exec_log: &Path,
    console_log: &Path,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Duration> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempts = 0u32;
    loop {
        alive()?;
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = ATTEMPT_TIMEOUT.min(left).max(Duration::from_secs(1));
        let last = match exec(admin, "true", limit, None, console_log) {
            Ok(out) if out.success() => {
                let took = started.elapsed();
                let line = format!(
                    "sshd answered on 127.0.0.1:{} after {attempts} attempt(s), {:.1} s",
                    admin.port,
                    took.as_secs_f64()
                );
                record(exec_log, "(wait for sshd)", &line, "", "");
                return Ok(took);
            }
            Ok(out) => format!("`true` exited {}: {}", out.status, out.stderr.trim()),
            Err(Error::Ssh { detail, .. }) => detail,
            Err(e) => return Err(e),
        };
        if Instant::now() >= deadline {
            let detail = format!(
                "sshd did not answer within {timeout:?} ({attempts} attempts); last attempt: {last}"
            );
            record(exec_log, "(wait for sshd)", &detail, "", "");
            return Err(Error::Ssh {
                command: "true".into(),
                port: admin.port,
                detail,
                log: console_log.to_path_buf(),
            });
        }
        std::thread::sleep(RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// `: <stderr>` when ssh said something.
fn said(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// Append one exec to `exec.log` (best effort: the log must not fail a test).
pub fn record(log: &Path, command_line: &str, outcome: &str, stdout: &str, stderr: &str) {
    let mut text = format!("===== $ {command_line}\n{outcome}\n");
    for (name, body) in [("stdout", stdout), ("stderr", stderr)] {
        if body.is_empty() {
            let _ = writeln!(text, "--- {name}: (empty)");
        } else {
            let _ = writeln!(text, "--- {name}:\n{}", body.trim_end_matches('\n'));
        }
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

#[cfg(test)]
#[path = "ssh_tests.rs"]
mod tests;
