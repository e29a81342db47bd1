//! Human rendering of status: plain aligned tables, no colour.

use crate::supervisor::apply::ApplyStatus;
use crate::supervisor::status::{Phase, ServiceState, Status, StepState, StepStatus};
use std::fmt::Write;

/// Render a status for a person.
pub fn status(s: &Status) -> String {
    let mut out = String::new();
    let image = s.image_version.as_deref().unwrap_or("-");
    let _ = writeln!(
        out,
        "walden {}  image {}  mode {}  phase {}",
        s.version,
        image,
        s.mode,
        phase(s.phase)
    );
    let mut timing = vec![format!("up {}", duration(s.uptime_ms))];
    if let Some(k) = s.kernel_ms {
        timing.push(format!("kernel {}", duration(k)));
    }
    if let Some(r) = s.ready_ms {
        timing.push(format!("ready after {}", duration(r)));
    }
    let _ = writeln!(out, "{}", timing.join(", "));

    if !s.steps.is_empty() {
        out.push('\n');
        steps(&mut out, &s.steps);
    }
    if !s.services.is_empty() {
        let rows: Vec<[String; 5]> = s
            .services
            .iter()
            .map(|sv| {
                [
                    sv.name.clone(),
                    service_state(sv.state).to_string(),
                    sv.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    sv.restarts.to_string(),
                    sv.last_error
                        .as_deref()
                        .or(sv.last_exit.as_deref())
                        .unwrap_or("")
                        .to_string(),
                ]
            })
            .collect();
        out.push('\n');
        table(
            &mut out,
            ["SERVICE", "STATE", "PID", "RESTARTS", "LAST"],
            &rows,
        );
    }
    if !s.guests.is_empty() {
        out.push('\n');
        out.push_str(&crate::guests::runtime::cli::render(&s.guests));
    }
    if !s.network.is_empty() {
        out.push_str("\nnetwork\n");
        out.push_str(&crate::net::status::render(&s.network));
    }
    if !s.vfio.is_empty() {
        out.push('\n');
        out.push_str(&crate::vfio::render_table(&s.vfio));
    }
    if !s.mounts.is_empty() {
        out.push('\n');
        mounts(&mut out, &s.mounts);
    }
    if let Some(a) = &s.config_apply {
        let _ = writeln!(out, "\nlast config apply: {}: {}", a.state, a.message);
    }
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "\nlast error: {e}");
    }
    out
}

/// host.toml's mounts and swap: one row each.
fn mounts(out: &mut String, rows: &[crate::mounts::MountStatus]) {
    use crate::mounts::MountState;
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let state = match r.state {
                MountState::Mounted => "mounted",
                MountState::Active => "active",
                MountState::Waiting => "waiting",
                MountState::Failed => "FAILED",
            };
            [
                r.target.clone(),
                r.what.clone(),
                r.fstype.clone().unwrap_or_else(|| "-".into()),
                state.to_string(),
                r.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(out, ["MOUNT", "WHAT", "TYPE", "STATE", "DETAIL"], &cells);
}

/// The outcome of `walden config apply` for a person.
pub fn apply(a: &ApplyStatus) -> String {
    let mut out = String::new();
    steps(&mut out, &a.steps);
    let _ = writeln!(
        out,
        "\n{}: {} ({})",
        a.state,
        a.message,
        duration(a.duration_ms)
    );
    out
}

/// The STEP/STATE/TIME/DETAIL table of bring-up or apply steps.
fn steps(out: &mut String, steps: &[StepStatus]) {
    let rows: Vec<[String; 4]> = steps
        .iter()
        .map(|st| {
            let note = st
                .error
                .as_deref()
                .or(st.detail.as_deref())
                .unwrap_or("")
                .to_string();
            [
                st.name.clone(),
                step_state(st.state).to_string(),
                st.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
                note,
            ]
        })
        .collect();
    table(out, ["STEP", "STATE", "TIME", "DETAIL"], &rows);
}

/// `head` and `rows` as columns padded to their widest cell, two spaces
/// apart, no trailing blanks.
pub(crate) fn table<const N: usize>(out: &mut String, head: [&str; N], rows: &[[String; N]]) {
    let mut width = head.map(str::len);
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == N {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(head.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn duration(ms: u64) -> String {
    match ms {
        0..=9_999 => format!("{ms} ms"),
        10_000..=119_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Maintenance => "MAINTENANCE",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
    }
}

fn step_state(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Done => "done",
        StepState::Skipped => "skipped",
        StepState::Failed => "FAILED",
    }
}

fn service_state(s: ServiceState) -> &'static str {
    match s {
        ServiceState::Waiting => "waiting",
        ServiceState::Starting => "starting",
        ServiceState::Running => "running",
        ServiceState::Backoff => "backoff",
        ServiceState::Failed => "FAILED",
        ServiceState::Stopping => "stopping",
        ServiceState::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::status::{ServiceStatus, StepStatus};

    #[test]
    fn renders_steps_services_and_errors() {
        let mut s = Status::new("pid1");
        s.phase = Phase::Ready;
        s.ready_ms = Some(812);
        s.uptime_ms = 65_000;
        s.steps.push(StepStatus {
            name: "config".into(),
            state: StepState::Failed,
            started_ms: Some(1),
            duration_ms: Some(3),
            detail: None,
            error: Some("host.toml:3:1: bad".into()),
        });
        s.services.push(ServiceStatus {
            name: "udevd".into(),
            state: ServiceState::Running,
            pid: Some(42),
            restarts: 1,
            last_exit: Some("exit code 1".into()),
            last_error: None,
        });
        s.last_error = Some("config failed".into());
        s.guests.push(crate::guests::runtime::GuestStatus {
            name: "storage".into(),
            state: crate::guests::runtime::GuestState::Waiting,
            pid: None,
            restarts: 0,
            last_error: Some("waiting for /srv/data".into()),
            restart_pending: false,
            autostart: true,
            memory: "1GiB".into(),
            vcpus: 2,
        });
        let text = status(&s);
        assert!(
            text.contains("storage") && text.contains("waiting for /srv/data"),
            "the guests are listed: {text}"
        );
        assert!(text.contains("phase ready"), "{text}");
        assert!(text.contains("ready after 812 ms"), "{text}");
        assert!(text.contains("up 65.0 s"), "{text}");
        assert!(
            text.contains("config  FAILED  3 ms  host.toml:3:1: bad"),
            "{text}"
        );
        assert!(
            text.contains("udevd    running  42   1         exit code 1"),
            "{text}"
        );
        assert!(text.contains("last error: config failed"), "{text}");
    }

    #[test]
    fn renders_mounts_and_swap() {
        use crate::mounts::{MountState, MountStatus};
        let mut s = Status::new("pid1");
        let row = |what: &str, target: &str, state, detail: &str| MountStatus {
            what: what.into(),
            target: target.into(),
            fstype: Some("ext4".into()),
            state,
            detail: Some(detail.into()),
        };
        s.mounts = vec![
            row(
                "LABEL=DATA",
                "/srv/data",
                MountState::Failed,
                "no disk with LABEL=DATA",
            ),
            row(
                "/srv/data/swap",
                "swap",
                MountState::Waiting,
                "waiting for /srv/data",
            ),
        ];
        let text = status(&s);
        assert!(
            text.contains("MOUNT      WHAT            TYPE  STATE    DETAIL"),
            "{text}"
        );
        assert!(
            text.contains("/srv/data  LABEL=DATA      ext4  FAILED   no disk with LABEL=DATA"),
            "{text}"
        );
        // The protocol's field names.
        let json = serde_json::to_value(&s.mounts[0]).unwrap_or_default();
        assert_eq!(json["where"], "/srv/data");
        assert_eq!(json["what"], "LABEL=DATA");
        assert_eq!(json["state"], "failed");
        assert_eq!(json["detail"], "no disk with LABEL=DATA");
    }

    #[test]
    fn durations_are_readable() {
        assert_eq!(duration(5), "5 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(185_000), "3m 5s");
    }
}
