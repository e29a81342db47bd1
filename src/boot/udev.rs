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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// udevd's path in the image (bookworm, merged /usr).
pub const UDEVD: &str = "/usr/lib/systemd/systemd-udevd";
/// udevadm's path in the image.
pub const UDEVADM: &str = "/usr/bin/udevadm";

/// The argv the supervisor runs udevd with (foreground, no daemonising).
pub fn udevd_argv() -> Vec<String> {
    vec![UDEVD.to_string()]
}

/// The coldplug commands, in order, for a settle timeout.
pub fn coldplug_commands(udevadm: &Path, timeout: Duration) -> Vec<Vec<String>> {
    let adm = udevadm.display().to_string();
    vec![
        vec![
            adm.clone(),
            "trigger".into(),
            "--action=add".into(),
            "--type=subsystems".into(),
        ],
        vec![
            adm.clone(),
            "trigger".into(),
            "--action=add".into(),
            "--type=devices".into(),
        ],
        vec![
            adm,
            "settle".into(),
            format!("--timeout={}", timeout.as_secs().max(1)),
        ],
    ]
}

/// Replay device events and wait until udevd has handled them (at most
/// `timeout` for the settle, plus a little for the triggers). `root` is the
/// root the image lives under ("/" on the appliance). Returns a one-line
/// summary for the log.
pub fn coldplug(root: &Path, timeout: Duration) -> Result<String, BootError> {
    let udevadm: PathBuf = root.join(UDEVADM.trim_start_matches('/'));
    let start = Instant::now();
    for argv in coldplug_commands(&udevadm, timeout) {
        // The triggers only write to sysfs; settle waits up to its own
        // --timeout. Allow some slack before declaring udevadm stuck.
        run(&argv, timeout + Duration::from_secs(5))?;
    }
    Ok(format!(
        "udev coldplug: triggered subsystems and devices, settled in {:.1} s",
        start.elapsed().as_secs_f64()
    ))
}

/// Run `argv`, killing it after `limit`.
fn run(argv: &[String], limit: Duration) -> Result<(), BootError> {
    let command = argv.join(" ");
    let fail = |reason: String| BootError::Command {
        command: command.clone(),
        reason,
    };
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(fail(format!("failed ({status})"))),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "did not finish within {} s; killed",
                    limit.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coldplug_argv() {
        let cmds = coldplug_commands(Path::new("/usr/bin/udevadm"), Duration::from_secs(30));
        assert_eq!(
            cmds[0].join(" "),
            "/usr/bin/udevadm trigger --action=add --type=subsystems"
        );
        assert_eq!(
            cmds[1].join(" "),
            "/usr/bin/udevadm trigger --action=add --type=devices"
        );
        assert_eq!(cmds[2].join(" "), "/usr/bin/udevadm settle --timeout=30");
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
