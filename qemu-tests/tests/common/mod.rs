//! Shared by the scenarios: the config every boot uses, timeouts, and the
//! checks that "booted to ready" means.

// Each scenario file compiles this module; not all use every helper.
#![allow(dead_code)]

use anyhow::{ensure, Context};
use qemu_tests::{expect, ConfigDisk, Machine, Phase, Status};
use std::time::Duration;

/// The example config directory every boot gets on its config disk, as a
/// user would attach it.
pub const EXAMPLE_CONFIG: &str = "examples/minimal";

/// Firmware + GRUB + kernel + stage 1 (hashing the squashfs under TCG) +
/// bring-up. Generous: TCG on two shared cores. Scaled by
/// WALDEN_QEMU_TIMEOUT_SCALE.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Stage 1 failing happens before the squashfs is mounted.
pub const STAGE1_TIMEOUT: Duration = Duration::from_secs(240);

/// The config disk made from [`EXAMPLE_CONFIG`].
pub fn example_config() -> ConfigDisk {
    ConfigDisk::from_dir(EXAMPLE_CONFIG)
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
