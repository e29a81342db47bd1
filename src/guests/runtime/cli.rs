//! `walden guest list|start|stop|restart|eject|insert|console NAME`: a thin client of the
//! control socket; `console` runs `virsh console` (Ctrl-] leaves).

use super::libvirt::SYSTEM_URI;
use super::table::GuestStatus;
use crate::control::Request;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

/// libvirt's shell (Debian: libvirt-clients), found through PATH.
pub const VIRSH: &str = "virsh";

/// How long start/stop/restart wait for the supervisor's answer.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `walden guest ...`.
#[derive(Debug, clap::Subcommand)]
pub enum GuestCommand {
    /// Show every guest: state, pid, restarts, memory, vcpus, why not running.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a guest (also one that failed: the crash count starts over).
    Start {
        /// Guest name (guests/NAME.toml).
        name: String,
    },
    /// Stop a guest: ACPI shutdown, forced off after its shutdown_timeout.
    Stop {
        /// Guest name.
        name: String,
        /// Force it off at once, without the ACPI shutdown (as pulling the
        /// plug: for a guest that hangs or has no OS to answer).
        #[arg(long)]
        force: bool,
    },
    /// Restart a guest (applies a pending config change).
    Restart {
        /// Guest name.
        name: String,
    },
    /// Eject the ISO from a running guest's first CD-ROM drive (until its
    /// next start, which has the drive as its [[cdrom]] says).
    Eject {
        /// Guest name.
        name: String,
    },
    /// Put an ISO image (a path on this host) into a running guest's first
    /// CD-ROM drive (until its next start).
    Insert {
        /// Guest name.
        name: String,
        /// The ISO image, an absolute path on the host.
        iso: String,
    },
    /// Attach to a guest's serial console; Ctrl-] leaves.
    Console {
        /// Guest name.
        name: String,
    },
}

/// Run a `walden guest` command against the supervisor on `socket`.
pub fn command(cmd: GuestCommand, socket: &Path) -> anyhow::Result<u8> {
    match cmd {
        GuestCommand::List { json } => list(socket, json),
        GuestCommand::Start { name } => op(socket, "start", &name, None),
        GuestCommand::Stop { name, force: false } => op(socket, "stop", &name, None),
        GuestCommand::Stop { name, force: true } => op(socket, "force-stop", &name, None),
        GuestCommand::Restart { name } => op(socket, "restart", &name, None),
        GuestCommand::Eject { name } => op(socket, "eject", &name, None),
        GuestCommand::Insert { name, iso } => op(socket, "insert", &name, Some(iso)),
        GuestCommand::Console { name } => {
            // exec only returns on failure.
            let err = std::process::Command::new(VIRSH)
                .args(["-c", SYSTEM_URI, "console", &name])
                .exec();
            anyhow::bail!("cannot run virsh console {name}: {err}; is libvirt-clients installed?")
        }
    }
}

fn list(socket: &Path, json: bool) -> anyhow::Result<u8> {
    let response = crate::cli::call(socket, &Request::Status)?;
    let guests = response.result.map(|s| s.guests).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &guests)?;
        writeln!(out)?;
    } else {
        out.write_all(render(&guests).as_bytes())?;
    }
    Ok(0)
}

/// The `walden guest list` table.
pub fn render(guests: &[GuestStatus]) -> String {
    if guests.is_empty() {
        return "no guests\n".into();
    }
    let mut rows = Vec::new();
    for g in guests {
        let state = serde_json::to_value(g.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut note = g.last_error.clone().unwrap_or_default();
        if g.restart_pending {
            note = format!(
                "restart pending{}{note}",
                if note.is_empty() { "" } else { "; " }
            );
        }
        rows.push([
            g.name.clone(),
            state,
            g.pid.map_or("-".into(), |p| p.to_string()),
            g.restarts.to_string(),
            g.memory.clone(),
            g.vcpus.to_string(),
            note,
        ]);
    }
    let mut out = String::new();
    crate::cli::render::table(
        &mut out,
        [
            "NAME", "STATE", "PID", "RESTARTS", "MEMORY", "VCPUS", "NOTE",
        ],
        &rows,
    );
    out
}

/// Send `{"action":"guest","op":..,"name":..}` and print the answer's message.
fn op(socket: &Path, op: &str, name: &str, iso: Option<String>) -> anyhow::Result<u8> {
    let request = Request::Guest {
        op: op.to_string(),
        name: name.to_string(),
        iso,
    };
    let response = crate::cli::call_with(socket, &request, TIMEOUT)?;
    let message = response
        .report
        .as_ref()
        .and_then(|r| r["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{op} {name}: done"));
    println!("{message}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guests::runtime::GuestState;

    #[test]
    fn list_table_shows_state_pid_and_why() {
        let g = |name: &str, state, pid, err: Option<&str>, pending| GuestStatus {
            name: name.into(),
            state,
            pid,
            restarts: 1,
            last_error: err.map(str::to_string),
            restart_pending: pending,
            autostart: true,
            memory: "512MiB".into(),
            vcpus: 2,
        };
        let text = render(&[
            g("alpha", GuestState::Running, Some(42), None, true),
            g("beta", GuestState::Failed, None, Some("crash loop"), false),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME   STATE    PID"), "{text}");
        assert!(
            lines[1].contains("running")
                && lines[1].contains("42")
                && lines[1].ends_with("restart pending"),
            "{text}"
        );
        assert!(
            lines[2].contains("failed") && lines[2].ends_with("crash loop"),
            "{text}"
        );
        assert_eq!(render(&[]), "no guests\n");
    }
}
