//! `walden console-screen TTY`: what the appliance's consoles show instead
//! of a login prompt nobody can use (root has no password). A short screen
//! for whoever stands at the box: its name, phase and version, its
//! addresses, its guests, how to reach it over ssh, and how to get a shell
//! at the console when that is the only way left (`walden.rescue`).
//!
//! The screen is printed once bring-up ends (ready or maintenance), again
//! when the phase changes, and whenever Enter is pressed. It reads
//! everything from the supervisor's control socket, like `walden status`;
//! [`render`] is a pure function of that status.

use crate::supervisor::status::{Phase, ServiceState, Status};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

/// How often the phase is looked at.
const POLL: Duration = Duration::from_secs(2);

/// The screen for `status` on host `hostname`.
pub fn render(status: &Status, hostname: &str) -> String {
    let mut out = String::new();
    let phase = match status.phase {
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Maintenance => "MAINTENANCE",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
    };
    let _ = write!(
        out,
        "\n==== walden {} on {hostname}: {phase}",
        status.image_version.as_deref().unwrap_or(&status.version)
    );
    if let Some(g) = status.config_generation {
        let _ = write!(out, ", config generation {g}");
    }
    out.push_str(" ====\n");
    if let Some(b) = &status.boot_image {
        let _ = writeln!(out, "image: {}", b.summary);
    }
    if let Some(r) = &status.config_refused {
        let _ = writeln!(out, "CONFIG REFUSED: {r}");
    }
    let failed: Vec<String> = status
        .steps
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| format!("{}: {}", s.name, s.error.as_deref().unwrap_or("")))
        .collect();
    for f in &failed {
        let _ = writeln!(out, "failed: {f}");
    }
    let addresses = host_addresses(status);
    if addresses.is_empty() {
        out.push_str("addresses: none\n");
    } else {
        let list: Vec<String> = addresses.iter().map(|(l, a)| format!("{l} {a}")).collect();
        let _ = writeln!(out, "addresses: {}", list.join(", "));
    }
    if !status.guests.is_empty() {
        let list: Vec<String> = status
            .guests
            .iter()
            .map(|g| {
                let state = serde_json::to_value(g.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                format!("{} {state}", g.name)
            })
            .collect();
        let _ = writeln!(out, "guests: {}", list.join(", "));
    }
    let sshd = status
        .services
        .iter()
        .any(|s| s.name == "sshd" && s.state == ServiceState::Running);
    let v4 = addresses
        .iter()
        .map(|(_, a)| a.split('/').next().unwrap_or(a))
        .find(|a| !a.contains(':'));
    match (sshd, v4) {
        (true, Some(a)) => {
            let _ = writeln!(out, "reach it: ssh root@{a}, then `walden status`");
        }
        (true, None) => out.push_str("reach it: sshd runs, but the host has no IPv4 address yet\n"),
        (false, _) => out.push_str(
            "reach it: no ssh (add a key to [ssh] authorized_keys in host.toml on the config disk)\n",
        ),
    }
    out.push_str(
        "this console has no login; a root shell here: reboot, press e in the boot menu and add \
         walden.rescue to the linux line (docs/config-disk.md, Recovery)\n",
    );
    out.push_str("press Enter to show this again\n");
    out
}

/// Addresses of the host's own links, without IPv6 link-local ones.
fn host_addresses(status: &Status) -> Vec<(String, String)> {
    status
        .network
        .iter()
        .flat_map(|l| {
            l.addresses
                .iter()
                .filter(|a| !a.to_ascii_lowercase().starts_with("fe80:"))
                .map(|a| (l.name.clone(), a.clone()))
        })
        .collect()
}

/// Show the screen on `tty` until the supervisor goes away for good.
pub fn run(tty: &Path, socket: &Path) -> anyhow::Result<u8> {
    use anyhow::Context;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(tty)
        .with_context(|| format!("cannot open {} to write", tty.display()))?;
    let input = std::fs::File::open(tty)
        .with_context(|| format!("cannot open {} to read", tty.display()))?;
    // Enter presses arrive on a thread; the main loop also watches the phase.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(input);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => std::thread::sleep(POLL),
                Ok(_) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut out = out;
    let mut shown: Option<Phase> = None;
    loop {
        let pressed = rx.recv_timeout(POLL).is_ok();
        let status = match crate::cli::call(socket, &crate::control::Request::Status) {
            Ok(r) => r.result,
            Err(_) => None,
        };
        let Some(status) = status else {
            if pressed {
                let _ = writeln!(out, "walden: the supervisor does not answer (yet)");
            }
            continue;
        };
        let settled = matches!(status.phase, Phase::Ready | Phase::Maintenance);
        if pressed || (settled && shown != Some(status.phase)) {
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            // A serial line wants CR LF.
            let text = render(&status, &host).replace('\n', "\r\n");
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            shown = Some(status.phase);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::status::{ServiceStatus, StepState, StepStatus};

    fn link(name: &str, addresses: &[&str]) -> crate::net::LinkStatus {
        crate::net::LinkStatus {
            name: name.into(),
            kind: "bridge".into(),
            state: "up".into(),
            mac: None,
            mtu: Some(1500),
            master: None,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            members: Vec::new(),
            vlans: Vec::new(),
            dhcp: true,
        }
    }

    #[test]
    fn a_ready_box_says_where_to_ssh_to() {
        let mut s = Status::new("pid1");
        s.phase = Phase::Ready;
        s.image_version = Some("0.3.0".into());
        s.config_generation = Some(4);
        s.network = vec![
            link("br0", &["fe80::5054:ff:fe12:3456/64", "10.0.2.15/24"]),
            link("store0", &["10.98.0.1/24"]),
        ];
        s.services.push(ServiceStatus {
            name: "sshd".into(),
            state: ServiceState::Running,
            pid: Some(9),
            restarts: 0,
            last_exit: None,
            last_error: None,
        });
        let text = render(&s, "vault");
        assert!(
            text.contains("walden 0.3.0 on vault: ready, config generation 4"),
            "{text}"
        );
        assert!(
            text.contains("addresses: br0 10.0.2.15/24, store0 10.98.0.1/24"),
            "{text}"
        );
        assert!(text.contains("reach it: ssh root@10.0.2.15"), "{text}");
        assert!(text.contains("walden.rescue"), "{text}");
    }

    #[test]
    fn maintenance_without_ssh_says_what_is_wrong_and_how_to_get_in() {
        let mut s = Status::new("pid1");
        s.phase = Phase::Maintenance;
        s.steps.push(StepStatus {
            name: "config-disk".into(),
            state: StepState::Failed,
            started_ms: Some(1),
            duration_ms: Some(10_000),
            detail: None,
            error: Some("no config disk with LABEL=WALDEN-CONFIG".into()),
        });
        let text = render(&s, "walden");
        assert!(text.contains(": MAINTENANCE"), "{text}");
        assert!(
            text.contains("failed: config-disk: no config disk"),
            "{text}"
        );
        assert!(text.contains("addresses: none"), "{text}");
        assert!(text.contains("reach it: no ssh"), "{text}");
    }
}
