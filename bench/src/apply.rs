//! `walden config apply` on a config of 200 guests, measured on the booted
//! image (the real supervisor, the real libvirtd with the QEMU driver):
//! the guests are `autostart = false`, so nothing boots, but every guest is
//! validated, planned and reconciled against libvirt on each apply.
//!
//! The time is the control-channel round trip of `config-apply` (the
//! request carries the whole set; walden installs it on the config disk,
//! then reconciles), measured on this side of the virtio-serial port, plus
//! the duration walden itself reports when its reply has one.

use anyhow::Context;
use qemu_tests::guest_assets::{config_dir, TinyGuest, TinyGuestAssets};
use qemu_tests::{expect, ConfigDisk, DirectKernel, TestEnv};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Guests in the config.
pub const GUESTS: usize = 200;
/// Boot of a host with 200 guests to "ready".
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// One apply.
const APPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// What the apply scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyResult {
    /// Seconds from power-on to "walden: ready in" with 200 guests defined.
    pub ready_s: f64,
    /// Round trips of applies with nothing changed (seconds).
    pub noop_s: Vec<f64>,
    /// Round trips of applies adding one guest (seconds).
    pub add_one_s: Vec<f64>,
    /// The first reply of each kind, as walden reported it.
    pub noop_report: Value,
    /// See `noop_report`.
    pub add_one_report: Value,
    /// The console log.
    pub console_log: String,
}

/// The control socket's longest request line (src/control/server.rs MAX_LINE).
const MAX_REQUEST: usize = 64 * 1024;

/// The `config-apply` request carrying `files`, refused here when walden
/// would refuse it as too long.
fn request(files: BTreeMap<String, String>) -> anyhow::Result<Value> {
    let req = json!({"action": "config-apply", "files": files});
    let len = req.to_string().len();
    anyhow::ensure!(
        len < MAX_REQUEST,
        "the config-apply request is {len} bytes, over the control socket's {MAX_REQUEST}-byte line limit"
    );
    Ok(req)
}

/// A guest that is defined but not started: TinyGuest's file with
/// `autostart = false` among its top-level keys.
fn idle_guest(name: &str) -> String {
    TinyGuest::new(name)
        .toml()
        .replacen("\n[boot]", "autostart = false\n\n[boot]", 1)
}

/// host.toml and guests/*.toml of the config, file name -> content.
fn files(names: &[String]) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    f.insert(
        "host.toml".to_string(),
        "schema = 1\nhostname = \"bench\"\n".to_string(),
    );
    for n in names {
        f.insert(format!("guests/{n}.toml"), idle_guest(n));
    }
    f
}

/// Boot walden with 200 idle guests, then apply `runs` times unchanged and
/// `runs` times with one more guest each.
pub fn run(assets: &TinyGuestAssets, work: &Path, runs: usize) -> anyhow::Result<ApplyResult> {
    let env = TestEnv::with_image("bench-walden-apply-200")?
        .context("no walden image: run `make image` first")?;
    let mut names: Vec<String> = (1..=GUESTS).map(|i| format!("idle{i:03}")).collect();
    let dir = config_dir(&work.join("walden-config-apply"), "", &[], assets)?;
    std::fs::create_dir_all(dir.join("guests"))?;
    for (path, text) in files(&names) {
        let p = dir.join(&path);
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
    }
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .paused()
        .usb_image(a.usb_image()?)
        .direct_kernel(DirectKernel::like_grub(a, &a.version)?)
        .config_disk(ConfigDisk::from_dir(&dir))
        .start()?;
    let t0 = Instant::now();
    m.qmp("cont", None)?;
    m.wait_for_console(expect::READY, READY_TIMEOUT)?;
    let ready_s = t0.elapsed().as_secs_f64();
    let log = m.console_log().display().to_string();

    let mut apply = |files: BTreeMap<String, String>| -> anyhow::Result<(f64, Value)> {
        let req = request(files)?;
        let t = Instant::now();
        let report = m.command(&req, APPLY_TIMEOUT)?;
        Ok((t.elapsed().as_secs_f64(), report))
    };
    let mut noop_s = Vec::new();
    let mut noop_report = Value::Null;
    for i in 0..runs {
        let (s, r) = apply(files(&names)).context("apply with nothing changed")?;
        eprintln!("bench: apply 200 guests, nothing changed: {s:.3} s");
        noop_s.push(s);
        if i == 0 {
            noop_report = r;
        }
    }
    let mut add_one_s = Vec::new();
    let mut add_one_report = Value::Null;
    for i in 0..runs {
        names.push(format!("added{i}"));
        let (s, r) = apply(files(&names)).context("apply with one guest added")?;
        eprintln!("bench: apply {} guests, one added: {s:.3} s", names.len());
        add_one_s.push(s);
        if i == 0 {
            add_one_report = r;
        }
    }
    m.powerdown()?;
    let _ = m.wait_exit(Duration::from_secs(120));
    Ok(ApplyResult {
        ready_s,
        noop_s,
        add_one_s,
        noop_report,
        add_one_report,
        console_log: log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_203_guests_fits_the_control_line() {
        let names: Vec<String> = (1..=GUESTS + 3).map(|i| format!("idle{i:03}")).collect();
        request(files(&names)).unwrap();
    }

    #[test]
    fn idle_guest_is_not_autostarted_and_keeps_its_boot_table() {
        let t = idle_guest("x");
        let auto = t.find("autostart = false").unwrap();
        let boot = t.find("[boot]").unwrap();
        assert!(auto < boot, "{t}");
        assert!(t.contains("walden.guest=x"), "{t}");
    }
}
