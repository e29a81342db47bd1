//! udev for stage 2: how to run udevd and the coldplug that replays the
//! "add" events of devices that appeared before udevd started.
//!
//! udevd is a supervised service (the supervisor starts it, in the
//! foreground, before calling [`coldplug`]); its argv is [`udevd_argv`]:
//! `/usr/lib/systemd/systemd-udevd` from bookworm's udev package (a link to
//! udevadm, which acts as udevd by that name). Without `--daemon` it stays
//! in the foreground and logs to stderr; it needs /run writable.

use super::BootError;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// udevd's path in the image (bookworm, merged /usr).
pub const UDEVD: &str = "/usr/lib/systemd/systemd-udevd";
/// udevadm's path in the image.
pub const UDEVADM: &str = "/usr/bin/udevadm";

/// The argv the supervisor runs udevd with (foreground, no daemonising).
pub fn udevd_argv() -> Vec<String> {
    vec![UDEVD.to_string()]
}

/// The coldplug triggers, in order: replay the "add" events of subsystems,
/// then of devices.
pub fn trigger_commands(udevadm: &Path) -> Vec<Vec<String>> {
    ["subsystems", "devices"]
        .iter()
        .map(|kind| {
            vec![
                udevadm.display().to_string(),
                "trigger".into(),
                "--action=add".into(),
                format!("--type={kind}"),
            ]
        })
        .collect()
}

/// The settle command for a timeout.
pub fn settle_command(udevadm: &Path, timeout: Duration) -> Vec<String> {
    vec![
        udevadm.display().to_string(),
        "settle".into(),
        format!("--timeout={}", timeout.as_secs().max(1)),
    ]
}

/// How long a trigger (it only writes to sysfs) may take.
const TRIGGER_LIMIT: Duration = Duration::from_secs(30);

/// Replay device events (coldplug) without waiting for udevd to handle
/// them: [`settle`] waits, later, so independent work runs meanwhile.
/// `root` is the root the image lives under ("/" on the appliance).
pub fn trigger(root: &Path) -> Result<String, BootError> {
    let udevadm: PathBuf = root.join(UDEVADM.trim_start_matches('/'));
    let start = Instant::now();
    for argv in trigger_commands(&udevadm) {
        run(&argv, TRIGGER_LIMIT)?;
    }
    Ok(format!(
        "udev coldplug: triggered subsystems and devices in {:.1} s",
        start.elapsed().as_secs_f64()
    ))
}

/// Wait until udevd has handled every queued event (at most `timeout`,
/// plus a little slack before udevadm counts as stuck).
pub fn settle(root: &Path, timeout: Duration) -> Result<String, BootError> {
    let udevadm: PathBuf = root.join(UDEVADM.trim_start_matches('/'));
    let start = Instant::now();
    run(
        &settle_command(&udevadm, timeout),
        timeout + Duration::from_secs(5),
    )?;
    Ok(format!(
        "udev events handled (settled in {:.1} s)",
        start.elapsed().as_secs_f64()
    ))
}

/// Both: trigger, then settle.
pub fn coldplug(root: &Path, timeout: Duration) -> Result<String, BootError> {
    let triggered = trigger(root)?;
    let settled = settle(root, timeout)?;
    Ok(format!("{triggered}; {settled}"))
}

/// Run `argv`, killing it after `limit`.
fn run(argv: &[String], limit: Duration) -> Result<(), BootError> {
    crate::command::run_ok(Command::new(&argv[0]).args(&argv[1..]), limit)
        .map(drop)
        .map_err(|reason| BootError::Command {
            command: argv.join(" "),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coldplug_argv() {
        let adm = Path::new("/usr/bin/udevadm");
        let cmds = trigger_commands(adm);
        assert_eq!(
            cmds[0].join(" "),
            "/usr/bin/udevadm trigger --action=add --type=subsystems"
        );
        assert_eq!(
            cmds[1].join(" "),
            "/usr/bin/udevadm trigger --action=add --type=devices"
        );
        assert_eq!(cmds.len(), 2);
        assert_eq!(
            settle_command(adm, Duration::from_secs(30)).join(" "),
            "/usr/bin/udevadm settle --timeout=30"
        );
        assert_eq!(
            udevd_argv(),
            vec!["/usr/lib/systemd/systemd-udevd".to_string()]
        );
    }

    /// A fake udevadm (a shell script) under a temporary root: the real
    /// process handling, exit codes and timeout are exercised.
    fn fake_root(script: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let adm = tmp.path().join("usr/bin/udevadm");
        std::fs::create_dir_all(adm.parent().unwrap()).unwrap();
        std::fs::write(&adm, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&adm, std::fs::Permissions::from_mode(0o755)).unwrap();
        tmp
    }

    #[test]
    fn coldplug_runs_the_three_steps() {
        let tmp = fake_root("echo \"$@\" >> \"$(dirname \"$0\")/calls\"");
        let summary = coldplug(tmp.path(), Duration::from_secs(3)).unwrap();
        assert!(summary.starts_with("udev coldplug:"), "{summary}");
        assert!(summary.contains("; udev events handled"), "{summary}");
        let calls = std::fs::read_to_string(tmp.path().join("usr/bin/calls")).unwrap();
        assert_eq!(
            calls,
            "trigger --action=add --type=subsystems\ntrigger --action=add --type=devices\nsettle --timeout=3\n"
        );
    }

    #[test]
    fn coldplug_reports_failure_and_timeout() {
        let tmp = fake_root("exit 3");
        let err = coldplug(tmp.path(), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trigger --action=add --type=subsystems: failed"),
            "{err}"
        );

        let err = run(
            &["/bin/sleep".to_string(), "5".to_string()],
            Duration::from_millis(100),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("did not finish"), "{err}");

        let err = coldplug(Path::new("/nonexistent"), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot start"), "{err}");
    }
}
