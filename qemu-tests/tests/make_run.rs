//! The README's first command, `make run`, as a newcomer runs it: the
//! image booted by `image/run.sh` (the script `make run` ends in), here
//! with `examples/appliance-qemu` (a device passed through, two guests,
//! two bridges), watched on its console until `walden: ready`, checked
//! over the control socket the script provides, then powered off with the
//! ACPI power button through the QMP socket the script provides.
//!
//! `make test` builds the image first, so the script runs with
//! `WALDEN_RUN_NOBUILD=1`; everything else is the script's own defaults
//! (UEFI, the USB image on xHCI, a fresh config disk from the example, the
//! stub guest the example's guests boot, added by `tiny-guest`).

mod common;

use anyhow::{ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::artifacts::repo_root;
use qemu_tests::console::Console;
use qemu_tests::control::ControlChannel;
use qemu_tests::qmp::Qmp;
use qemu_tests::ssh::{self, AdminSsh};
use qemu_tests::{expect, TestEnv};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// From the power button to QEMU exiting: both guests' ACPI shutdown first.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(240);

/// Kills the script's QEMU when the scenario ends, whatever happened.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn make_run_boots_the_appliance_example_and_powers_off_on_the_button() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(make_run_once)
}

fn make_run_once() -> anyhow::Result<()> {
    let Some(env) =
        TestEnv::with_image("make_run_boots_the_appliance_example_and_powers_off_on_the_button")?
    else {
        return Ok(());
    };
    // Short: unix socket paths are limited to 108 bytes.
    let run_dir = env.scratch().join("run");
    // The example as a user would boot it after putting their key in: a
    // key of the test's own is added to [ssh] authorized_keys, and run.sh
    // forwards a port to the box's sshd (WALDEN_RUN_SSH_PORT).
    let admin = AdminSsh::create(env.dir())?;
    let config = env.dir().join("appliance-qemu");
    qemu_tests::disk::copy_dir(&repo_root().join("examples/appliance-qemu"), &config)?;
    let host = std::fs::read_to_string(config.join("host.toml"))?;
    ensure!(
        host.contains("authorized_keys = [\n"),
        "examples/appliance-qemu has no authorized_keys list"
    );
    let host = host.replacen(
        "authorized_keys = [\n",
        &format!("authorized_keys = [\n  \"{}\",\n", admin.public_key),
        1,
    );
    std::fs::write(config.join("host.toml"), host)?;
    let script = repo_root().join("image/run.sh");
    let mut child = Command::new(&script)
        .current_dir(repo_root())
        .env("WALDEN_RUN_NOBUILD", "1")
        .env("WALDEN_RUN_CONFIG", &config)
        .env("WALDEN_RUN_SSH_PORT", admin.port.to_string())
        .env("WALDEN_RUN_DIR", &run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(env.dir().join("run.stderr.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut run = Run(child);
    let console = Console::capture(stdout, &env.dir().join("console.log"))?;

    let ready = console.wait_for_any(
        &[expect::READY, expect::MAINTENANCE],
        expect::FATAL,
        BOOT_TIMEOUT,
    )?;
    ensure!(
        ready.line.contains(expect::READY),
        "`make run` did not reach ready: {}",
        ready.line
    );

    let mut ctl = ControlChannel::connect(&run_dir.join("control.sock"), Duration::from_secs(10))?;
    let status = ctl.status(Duration::from_secs(30))?;
    eprintln!("{}", common::timings(&status));
    ensure!(
        status.failed_steps().is_empty(),
        "`make run` of examples/appliance-qemu has failed steps: {:?}",
        status.failed_steps()
    );
    for guest in ["storage", "services"] {
        let g = status
            .guests
            .iter()
            .find(|g| g.name == guest)
            .with_context(|| format!("no guest {guest} in {:?}", status.guests))?;
        ensure!(g.state == "running", "guest {guest} is {}: {g:?}", g.state);
    }

    // The console shows the status screen instead of a login prompt: how
    // to reach the box (appliance-qemu's br0 gets 10.0.2.15 from QEMU's
    // DHCP), and again when Enter is pressed.
    let reach = console.wait_for_any(&[expect::SCREEN_REACH], expect::FATAL, BOOT_TIMEOUT)?;
    ensure!(
        reach.line.contains("ssh root@10.0.2.15"),
        "screen: {}",
        reach.line
    );
    console.wait_for_any(&[expect::SCREEN_END], expect::FATAL, BOOT_TIMEOUT)?;
    {
        use std::io::Write;
        let stdin = run.0.stdin.as_mut().context("no stdin pipe")?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
    }
    console.wait_for_any(
        &[expect::SCREEN_REACH],
        expect::FATAL,
        Duration::from_secs(30),
    )?;

    // Both guests' OS up (their serial logs, read over ssh as an admin
    // would) before the power button: a button pressed while a guest still
    // boots is pressed again every 15 s, but a guest booting slower than its
    // shutdown_timeout under a loaded TCG would be forced off.
    let exec_log = env.dir().join("exec.log");
    ssh::wait_for_sshd(&admin, BOOT_TIMEOUT, &exec_log, console.log_path(), || {
        Ok(())
    })?;
    let up = "grep -q GUEST-UP /var/log/walden/guests/storage.log && \
              grep -q GUEST-UP /var/log/walden/guests/services.log";
    // Two stub guests (qemu-tests/stub) under TCG inside TCG: seconds once
    // libvirt started them.
    let deadline = Instant::now() + qemu_tests::env::scaled(common::GUEST_TIMEOUT);
    loop {
        let out = ssh::exec(
            &admin,
            up,
            Duration::from_secs(30),
            Some(&exec_log),
            console.log_path(),
        )?;
        if out.success() {
            break;
        }
        if Instant::now() >= deadline {
            // How far each got, for the report.
            let tails = ssh::exec(
                &admin,
                "tail -n 3 /var/log/walden/guests/storage.log /var/log/walden/guests/services.log",
                Duration::from_secs(30),
                Some(&exec_log),
                console.log_path(),
            )
            .map(|o| o.stdout)
            .unwrap_or_default();
            anyhow::bail!(
                "the guests' OS did not come up (no GUEST-UP in their serial logs); their last lines:\n{tails}"
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }

    let mut qmp = Qmp::connect(&run_dir.join("qmp.sock"), Duration::from_secs(10))?;
    qmp.execute("system_powerdown", None)?;
    for step in expect::POWEROFF_STEPS {
        console.wait_for_any(&[step], expect::FATAL, POWEROFF_TIMEOUT)?;
    }
    let deadline = Instant::now() + qemu_tests::env::scaled(POWEROFF_TIMEOUT);
    let exit = loop {
        if let Some(exit) = run.0.try_wait()? {
            break exit;
        }
        ensure!(
            Instant::now() < deadline,
            "QEMU of `make run` still runs {} s after the power button (console {})",
            POWEROFF_TIMEOUT.as_secs(),
            console.log_path().display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(exit.success(), "`make run`'s QEMU exited with {exit}");
    // Kernel oopses, panics, lockups: as every scenario's console.
    let findings = qemu_tests::console_check::scan(&console.text(), &[]);
    if !findings.is_empty() {
        return Err(qemu_tests::console_check::error(&findings, console.log_path()).into());
    }
    // `timezone`: /etc/localtime and /etc/timezone, in the /etc overlay's
    // upper layer on the config disk.
    let config_img = run_dir.join("config.img");
    let tz = qemu_tests::disk::ext4_read_file(&config_img, "/etc/timezone")?
        .context("no /etc/timezone on the config disk")?;
    ensure!(
        tz == b"Europe/Berlin\n",
        "/etc/timezone: {:?}",
        String::from_utf8_lossy(&tz)
    );
    let stat = std::process::Command::new("debugfs")
        .args(["-R", "stat /etc/localtime"])
        .arg(&config_img)
        .output()?;
    let stat = String::from_utf8_lossy(&stat.stdout);
    ensure!(
        stat.contains("/usr/share/zoneinfo/Europe/Berlin"),
        "/etc/localtime is not a link to Europe/Berlin: {stat}"
    );
    // The guests' own serial output, off the config disk after power-off:
    // each booted and went down on the ACPI button.
    for guest in ["storage", "services"] {
        let path = format!("/var/log/walden/guests/{guest}.log");
        let log = qemu_tests::disk::ext4_read_file(&config_img, &path)?
            .with_context(|| format!("no {path} on the config disk"))?;
        let log = String::from_utf8_lossy(&log);
        ensure!(
            log.contains(&format!("{} {guest}", expect::GUEST_UP))
                && log.contains(&format!("{} {guest}", expect::GUEST_DOWN)),
            "guest {guest} did not boot and shut down cleanly; its serial log:\n{log}"
        );
        // The storage guest owns the e1000e run.sh adds (`[[pci]] label =
        // "storage-nic"`, bound to vfio-pci): it is on its PCI bus.
        if guest == "storage" {
            let pci = expect::guest_pci(&log, guest);
            ensure!(
                pci.iter().any(|(_, id)| id == expect::E1000E_PCI_ID),
                "guest storage lists no passed-through e1000e ({}) among its PCI functions {pci:?}",
                expect::E1000E_PCI_ID
            );
        }
    }
    Ok(())
}
