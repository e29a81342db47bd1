//! Shared by the scenarios: the config every boot uses, timeouts, and the
//! checks that "booted to ready" means.

// Each scenario file compiles this module; not all use every helper.
#![allow(dead_code)]

use anyhow::{ensure, Context};
use qemu_tests::artifacts::repo_root;
use qemu_tests::guest_assets::TinyGuestAssets;
use qemu_tests::{expect, ConfigDisk, Machine, Phase, Status, TestEnv};
use std::time::{Duration, Instant};

/// The example config directory every boot gets on its config disk, as a
/// user would attach it.
pub const EXAMPLE_CONFIG: &str = "examples/minimal";

/// Firmware + GRUB + kernel + stage 1 (hashing the squashfs under TCG) +
/// bring-up. Generous: TCG on two shared cores. Scaled by
/// WALDEN_QEMU_TIMEOUT_SCALE.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Stage 1 failing happens before the squashfs is mounted.
pub const STAGE1_TIMEOUT: Duration = Duration::from_secs(240);

/// The example's autostart guest (guests/tiny.toml).
pub const EXAMPLE_GUEST: &str = "tiny";

/// The name the example's guest gives itself in its markers (its command
/// line's `walden.guest=`).
pub const EXAMPLE_GUEST_MARKER_NAME: &str = "guest";

/// How long a nested guest may take from the host's ready to its marker
/// (libvirt starting QEMU, then its firmware and kernel under TCG in TCG:
/// seconds for the stub guest, minutes for the tiny Linux guest).
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The config disk made from [`EXAMPLE_CONFIG`].
pub fn example_config() -> ConfigDisk {
    ConfigDisk::from_dir(EXAMPLE_CONFIG)
}

/// [`EXAMPLE_CONFIG`] with the stub guest (and the tiny Linux guest's
/// files) under images/tiny/, where its guest boots from (as `make run`
/// puts them there), so the example's autostart guest really runs.
pub fn example_config_with_guest(env: &TestEnv) -> anyhow::Result<ConfigDisk> {
    let dir = env.scratch().join("example-config");
    qemu_tests::disk::copy_dir(&repo_root().join(EXAMPLE_CONFIG), &dir)?;
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    assets.install(&dir)?;
    Ok(ConfigDisk::from_dir(dir))
}

/// `walden status` lists guest `name` as running.
pub fn assert_guest_running(m: &mut Machine, name: &str) -> anyhow::Result<()> {
    let s = m.status_json()?;
    let guest = s["guests"]
        .as_array()
        .and_then(|list| list.iter().find(|g| g["name"] == name))
        .with_context(|| format!("guest {name} is not in walden status: {}", s["guests"]))?;
    ensure!(
        guest["state"] == "running",
        "guest {name} is not running: {guest}"
    );
    Ok(())
}

/// The serial log of guest `name` on the host (under /var, so on the
/// config disk at the same path).
pub fn guest_log(name: &str) -> String {
    format!("/var/log/walden/guests/{name}.log")
}

/// Read `path` on the host over ssh until it contains `needle` (every 3 s,
/// at most `timeout`, scaled); returns the file's text.
pub fn wait_for_host_file(
    m: &mut Machine,
    path: &str,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let timeout = qemu_tests::scaled(timeout);
    let deadline = Instant::now() + timeout;
    let command = format!("cat {path}");
    loop {
        let out = m.exec(&command)?;
        if out.success() && out.stdout.contains(needle) {
            return Ok(out.stdout);
        }
        ensure!(
            Instant::now() < deadline,
            "{path} on the host did not show {needle:?} within {timeout:?}; last read (exit {}): {}{} \
             (exec log {})",
            out.status,
            out.stdout.trim(),
            out.stderr.trim(),
            m.exec_log().display()
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Wait for walden's ready line, then check what `walden status --json`
/// says: the version booted, phase ready, no failed step, and timings for
/// every phase; then the console checks on the boot so far.
pub fn assert_boots_to_ready(m: &mut Machine, version: &str) -> anyhow::Result<Status> {
    let line = m.wait_for_console(expect::READY, BOOT_TIMEOUT)?;
    eprintln!("console: {line}");
    let status = m
        .status()
        .context("reading walden status over virtio-serial")?;
    eprintln!("{}", timings(&status));
    assert_status_ready(&status, version, &[])?;
    m.check_console()?;
    Ok(status)
}

/// The checks on a status of a machine that reached ready. A bring-up
/// step in state `failed` fails them unless its name is in `may_fail`
/// (for a scenario that breaks that step on purpose).
pub fn assert_status_ready(
    status: &Status,
    version: &str,
    may_fail: &[&str],
) -> anyhow::Result<()> {
    ensure!(
        status.phase == Phase::Ready,
        "phase is {:?}, not ready: {status:?}",
        status.phase
    );
    ensure!(
        status.image_version.as_deref() == Some(version),
        "status reports image version {:?}, booted {version}",
        status.image_version
    );
    ensure!(
        status.mode == "pid1",
        "walden runs in mode {:?}, not as PID 1",
        status.mode
    );
    ensure!(status.ready_ms.is_some(), "no ready_ms in {status:?}");
    ensure!(!status.steps.is_empty(), "no bring-up steps reported");
    let failed: Vec<String> = status
        .steps
        .iter()
        .filter(|s| s.state == "failed" && !may_fail.contains(&s.name.as_str()))
        .map(|s| {
            format!(
                "{}: {}",
                s.name,
                s.error.as_deref().unwrap_or("(no error given)")
            )
        })
        .collect();
    ensure!(
        failed.is_empty(),
        "bring-up steps failed: {failed:?} (a scenario that expects that names the step in may_fail)"
    );
    for step in &status.steps {
        if step.state == "done" || step.state == "failed" {
            ensure!(
                step.started_ms.is_some() && step.duration_ms.is_some(),
                "step {} finished without timings: {step:?}",
                step.name
            );
        }
    }
    Ok(())
}

/// Per-phase timings as a short table (shown with --nocapture or on failure).
pub fn timings(status: &Status) -> String {
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    let mut out = format!(
        "walden {} (image {}), phase {:?}: kernel {}, bring-up {}\n",
        status.version,
        status.image_version.as_deref().unwrap_or("?"),
        status.phase,
        ms(status.kernel_ms),
        ms(status.ready_ms)
    );
    for s in &status.steps {
        out.push_str(&format!(
            "  {:<14} {:<8} {:>9}  {}\n",
            s.name,
            s.state,
            ms(s.duration_ms),
            s.detail.as_deref().or(s.error.as_deref()).unwrap_or("")
        ));
    }
    out
}
