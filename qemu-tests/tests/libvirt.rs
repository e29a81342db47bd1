//! libvirt on the booted image (issue 7, runtime part): the "libvirt" step
//! writes qemu.conf and queues virtlogd + libvirtd as walden services, both
//! become ready on their sockets, `virsh -c qemu:///system` works inside the
//! host, and a libvirtd restart (SIGKILL, restarted by walden) leaves the
//! daemon usable again. Guests themselves are covered by `guests.rs`.

mod common;

use anyhow::{ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::guest_assets::script_service;
use qemu_tests::{expect, ConfigDisk, TestEnv};
use std::time::Duration;

/// Runs inside the host once services start: waits for libvirtd's socket,
/// lists domains, kills libvirtd and checks walden brought it back.
const SCRIPT: &str = r#"
say() { echo "$@" > /dev/console; }
wait_sock() { for i in $(seq 120); do [ -S /run/libvirt/libvirt-sock ] && return 0; sleep 1; done; return 1; }
wait_sock || { say LIBVIRT-NO-SOCKET; exit 1; }
if virsh -c qemu:///system list --all >/tmp/virsh.out 2>&1; then say VIRSH-LIST-OK; else say "VIRSH-LIST-FAILED $(cat /tmp/virsh.out)"; fi
say "QEMU-CONF-USER $(grep -c '^user = .libvirt-qemu.$' /etc/libvirt/qemu.conf)"
pid=$(pgrep -x libvirtd)
kill -9 $pid
sleep 3
wait_sock || { say LIBVIRT-NOT-BACK; exit 1; }
for i in $(seq 60); do
  new=$(pgrep -x libvirtd)
  if [ -n "$new" ] && [ "$new" != "$pid" ] && virsh -c qemu:///system list >/dev/null 2>&1; then say LIBVIRTD-RESTARTED-OK; exit 0; fi
  sleep 1
done
say LIBVIRTD-RESTART-FAILED
"#;

#[test]
fn libvirtd_runs_under_walden_and_virsh_works() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(libvirtd_runs_under_walden_and_virsh_works_once)
}

fn libvirtd_runs_under_walden_and_virsh_works_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("libvirtd_runs_under_walden_and_virsh_works")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let dir = env.scratch().join("config");
    std::fs::create_dir_all(&dir)?;
    let host = format!(
        "schema = 1\nhostname = \"libvirt\"\n{}",
        script_service("virsh-check", SCRIPT)
    );
    std::fs::write(dir.join("host.toml"), host)?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .config_disk(ConfigDisk::from_dir(&dir))
        .start()?;
    m.wait_for_console(expect::READY, BOOT_TIMEOUT)?;
    let status = m.status().context("reading walden status")?;
    let step = |name: &str| status.steps.iter().find(|s| s.name == name).cloned();
    let libvirt = step("libvirt").context("no libvirt step")?;
    ensure!(libvirt.state == "done", "libvirt step: {libvirt:?}");
    let guests = step("guests").context("no guests step")?;
    ensure!(guests.state == "skipped", "guests step: {guests:?}");
    for name in ["virtlogd", "libvirtd"] {
        let s = status
            .services
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no {name} service in {:?}", status.services))?;
        ensure!(s.state == "running", "{name}: {s:?}");
    }
    let t = Duration::from_secs(180);
    let line = m.wait_for_any(
        &["VIRSH-LIST-OK", "VIRSH-LIST-FAILED", "LIBVIRT-NO-SOCKET"],
        t,
    )?;
    ensure!(line.line.contains("VIRSH-LIST-OK"), "{}", line.line);
    m.wait_for_console("QEMU-CONF-USER 1", t)?;
    let line = m.wait_for_any(
        &[
            "LIBVIRTD-RESTARTED-OK",
            "LIBVIRTD-RESTART-FAILED",
            "LIBVIRT-NOT-BACK",
        ],
        t,
    )?;
    ensure!(line.line.contains("LIBVIRTD-RESTARTED-OK"), "{}", line.line);
    m.powerdown()?;
    m.wait_exit(Duration::from_secs(120))?;
    Ok(())
}
