//! The harness proves itself against real QEMU without the walden image:
//! a diskless machine under SeaBIOS, driven through QMP and the console.

use qemu_tests::{Firmware, TestEnv};
use std::time::Duration;

#[test]
fn paused_machine_answers_qmp_then_runs_firmware_and_quits() -> anyhow::Result<()> {
    let env = TestEnv::without_image("harness_paused_machine")?;
    let mut m = env
        .machine()
        .firmware(Firmware::Bios)
        .memory_mib(256)
        .paused()
        .start()?;

    let status = m.qmp("query-status", None)?;
    assert_eq!(status["running"], false, "{status}");
    assert_eq!(status["status"], "prelaunch", "{status}");

    m.qmp("cont", None)?;
    let line = m.wait_for_console("SeaBIOS (version", Duration::from_secs(60))?;
    assert!(line.contains("SeaBIOS"), "{line}");
    assert_eq!(m.qmp("query-status", None)?["status"], "running");

    // Nothing serves walden's control port here: a short, clear failure.
    let err = m.status_within(Duration::from_secs(2)).unwrap_err();
    assert!(err.to_string().contains("org.walden.control"), "{err}");

    let exit = m.quit()?;
    assert!(exit.success(), "QEMU exited with {exit}");
    assert!(std::fs::read_to_string(m.console_log())?.contains("SeaBIOS"));
    Ok(())
}

#[test]
fn restart_keeps_the_machine_and_appends_to_the_log() -> anyhow::Result<()> {
    let env = TestEnv::without_image("harness_restart")?;
    let mut m = env.machine().memory_mib(256).no_reboot().start()?;
    m.wait_for_console("SeaBIOS (version", Duration::from_secs(60))?;
    m.restart()?;
    m.wait_for_console("SeaBIOS (version", Duration::from_secs(60))?;
    // With no OS, the power button is only an event QEMU reports.
    m.powerdown()?;
    m.qmp("query-status", None)?;
    assert!(
        m.qmp_events().iter().any(|e| e["event"] == "POWERDOWN"),
        "{:?}",
        m.qmp_events()
    );
    m.quit()?;
    let log = std::fs::read_to_string(m.console_log())?;
    assert_eq!(log.matches("SeaBIOS (version").count(), 2, "{log}");
    assert!(log.contains("qemu-tests: restart (run 2)"));
    Ok(())
}

#[test]
fn uefi_firmware_boots_and_reset_reboots_it() -> anyhow::Result<()> {
    let env = TestEnv::without_image("harness_uefi_reset")?;
    let mut m = env
        .machine()
        .firmware(Firmware::Uefi)
        .memory_mib(512)
        .start()?;
    m.wait_for_console("BdsDxe:", Duration::from_secs(120))?;
    m.reset()?;
    // After the reset OVMF starts over and prints its boot manager again.
    m.wait_for_console("BdsDxe:", Duration::from_secs(120))?;
    m.qmp("query-status", None)?; // collects the events that arrived meanwhile
    assert!(
        m.qmp_events().iter().any(|e| e["event"] == "RESET"),
        "{:?}",
        m.qmp_events()
    );
    Ok(())
}

#[test]
fn qemu_failing_to_start_reports_its_stderr() -> anyhow::Result<()> {
    let env = TestEnv::without_image("harness_bad_args")?;
    let err = env
        .machine()
        .extra_args(["-no-such-option"])
        .start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no-such-option"), "{msg}");
    Ok(())
}

/// The tiny nested guest of the guest scenarios (issue 7), proven on plain
/// QEMU first: it boots the image's kernel to its marker, and the ACPI
/// power button makes it say so and power off by itself.
#[test]
fn tiny_guest_boots_to_its_marker_and_powers_off_on_the_button() -> anyhow::Result<()> {
    use qemu_tests::guest_assets::{cmdline, TinyGuestAssets};
    use qemu_tests::{expect, DirectKernel};
    let Some(env) = TestEnv::with_image("tiny_guest_powers_off_on_the_button")? else {
        return Ok(());
    };
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let started = std::time::Instant::now();
    let mut m = env
        .machine()
        .memory_mib(128)
        .direct_kernel(DirectKernel {
            kernel: assets.kernel.clone(),
            initrd: assets.initrd.clone(),
            append: cmdline("selftest", ""),
        })
        .no_reboot()
        .fail_on("GUEST-WARN")
        .start()?;
    let up = m.wait_for_console(&expect::guest_up("selftest"), Duration::from_secs(60))?;
    eprintln!("{up} ({:.1?} on the host clock)", started.elapsed());
    m.powerdown()?;
    m.wait_for_console(&expect::guest_down("selftest"), Duration::from_secs(30))?;
    let exit = m.wait_exit(Duration::from_secs(30))?;
    assert!(exit.success(), "QEMU exited with {exit}");
    Ok(())
}

/// The stub guest (`TinyGuest::stub`, qemu-tests/stub/stub.c) on plain
/// QEMU, twice: one boot prints its marker, echoes a line typed on its
/// serial console and powers off on the ACPI power button; one with
/// `walden.ignore_button` reports the press and keeps running. What the
/// guest scenarios rely on, checked before they nest it in the image.
/// A plain-QEMU machine booting the stub guest (built into the
/// scenario's directory) with `extra` on its command line; a GUEST-WARN
/// line fails it.
fn stub_machine(env: &TestEnv, extra: &str) -> anyhow::Result<qemu_tests::MachineBuilder> {
    use qemu_tests::guest_assets::{build_stub, cmdline};
    let stub = env.dir().join("stub.elf");
    build_stub(&stub)?;
    // QEMU hands -initrd to a multiboot kernel as a module: an empty one.
    let module = env.dir().join("empty-module");
    std::fs::write(&module, b"")?;
    Ok(env
        .machine()
        .memory_mib(128)
        .direct_kernel(qemu_tests::DirectKernel {
            kernel: stub,
            initrd: module,
            append: cmdline("stub", extra),
        })
        .no_reboot()
        .fail_on("GUEST-WARN"))
}

#[test]
fn stub_guest_answers_its_console_and_the_power_button() -> anyhow::Result<()> {
    use qemu_tests::expect;
    let Some(env) = TestEnv::with_image("stub_guest_answers_its_console_and_the_power_button")?
    else {
        return Ok(());
    };
    let boot = |extra: &str| -> anyhow::Result<qemu_tests::Machine> {
        Ok(stub_machine(&env, extra)?.start()?)
    };
    let started = std::time::Instant::now();
    let mut m = boot("")?;
    let up = m.wait_for_console(&expect::guest_up("stub"), Duration::from_secs(60))?;
    eprintln!("{up} ({:.1?} on the host clock)", started.elapsed());
    m.send_console("walden-console-probe\r")?;
    m.wait_for_console(
        &format!("{} stub: walden-console-probe", expect::GUEST_ECHO),
        Duration::from_secs(30),
    )?;
    m.powerdown()?;
    m.wait_for_console(&expect::guest_down("stub"), Duration::from_secs(30))?;
    let exit = m.wait_exit(Duration::from_secs(30))?;
    assert!(exit.success(), "QEMU exited with {exit}");
    drop(m);

    let mut m = boot("walden.ignore_button")?;
    m.wait_for_console(&expect::guest_up("stub"), Duration::from_secs(60))?;
    m.powerdown()?;
    m.wait_for_console(
        &format!("{} stub ", expect::GUEST_IGNORED),
        Duration::from_secs(30),
    )?;
    anyhow::ensure!(
        m.wait_exit(Duration::from_secs(5)).is_err(),
        "the stub told to ignore the power button powered off"
    );
    Ok(())
}

/// The stub guest's own drivers on plain QEMU: a virtio-blk disk behind a
/// PCIe port (modern virtio), a read-only disk on a virtio-scsi controller
/// on the root bus (transitional virtio), each with its size, read-only
/// flag and first bytes as the guest read them; and an e1000 that pings
/// QEMU's user-network gateway (10.0.2.2, inside QEMU: nothing leaves the
/// machine).
#[test]
fn stub_guest_reads_its_disks_and_pings_through_its_e1000() -> anyhow::Result<()> {
    use qemu_tests::expect;
    let Some(env) = TestEnv::with_image("stub_guest_reads_its_disks_and_pings_through_its_e1000")?
    else {
        return Ok(());
    };
    let disk = |name: &str, mark: &str, mib: u64| -> anyhow::Result<String> {
        let path = env.dir().join(name);
        let mut bytes = mark.as_bytes().to_vec();
        bytes.resize(4096, 0);
        std::fs::write(&path, bytes)?;
        std::fs::File::options()
            .write(true)
            .open(&path)?
            .set_len(mib << 20)?;
        Ok(path.display().to_string())
    };
    let blk = disk("blk.raw", "WALDEN-STUB-BLK", 32)?;
    let scsi = disk("scsi.raw", "WALDEN-STUB-SCSI", 48)?;
    let mut m = stub_machine(
        &env,
        "walden.disks=2 walden.ip=10.0.2.15/24 walden.ping=10.0.2.2",
    )?
    .extra_args([
        "-device".to_string(),
        "pcie-root-port,id=rp1,chassis=1".into(),
        "-drive".into(),
        format!("file={blk},format=raw,if=none,id=blk"),
        "-device".into(),
        "virtio-blk-pci,drive=blk,bus=rp1".into(),
        "-device".into(),
        "virtio-scsi-pci,id=scsi0".into(),
        "-drive".into(),
        format!("file={scsi},format=raw,if=none,id=scsi,readonly=on"),
        "-device".into(),
        "scsi-hd,drive=scsi,bus=scsi0.0,scsi-id=2,lun=0".into(),
        "-netdev".into(),
        "user,id=n0,restrict=on".into(),
        "-device".into(),
        "e1000,netdev=n0,mac=52:54:00:5e:00:42".into(),
    ])
    .start()?;
    let ping = m.wait_for_console(
        &format!("{} stub 10.0.2.2 ", expect::GUEST_PING),
        Duration::from_secs(90),
    )?;
    let console = m.console().text();
    let mut problems = Vec::new();
    for want in [
        format!(
            "{} stub vda size=65536 ro=0 head=WALDEN-STUB-BLK.",
            expect::GUEST_DISK
        ),
        format!(
            "{} stub sda size=98304 ro=1 head=WALDEN-STUB-SCSI",
            expect::GUEST_DISK
        ),
        format!(
            "{} stub eth0 mac=52:54:00:5e:00:42 driver=e1000",
            expect::GUEST_NIC
        ),
    ] {
        if !console.lines().any(|l| l.trim_end() == want) {
            problems.push(format!("no line {want:?}"));
        }
    }
    if !ping.contains(&expect::guest_ping_ok("stub", "10.0.2.2")) {
        problems.push(format!("the ping failed: {ping}"));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "{}\nconsole:\n{console}",
        problems.join("\n")
    );
    m.powerdown()?;
    m.wait_for_console(&expect::guest_down("stub"), Duration::from_secs(30))?;
    Ok(())
}

/// The UEFI guest disk the image scenarios use (`TinyGuest::uefi`:
/// OVMF -> GRUB from the EFI system partition -> the stub guest through
/// GRUB's `multiboot2`) on plain QEMU with OVMF: the stub finds the ACPI
/// tables UEFI firmware publishes (the power button works), its timer
/// wakes it under OVMF, and it lists the PCI devices (a virtio disk).
#[test]
fn uefi_stub_guest_boots_through_ovmf_and_grub() -> anyhow::Result<()> {
    use qemu_tests::guest_assets::{cmdline, TinyGuestAssets};
    use qemu_tests::{expect, Firmware};
    let Some(env) = TestEnv::with_image("uefi_stub_guest_boots_through_ovmf_and_grub")? else {
        return Ok(());
    };
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let disk = env.dir().join("uefi-selftest.img");
    assets.uefi_disk(&cmdline("uefi-selftest", ""), &disk)?;
    let mut m = env
        .machine()
        .memory_mib(256)
        .firmware(Firmware::Uefi)
        .extra_args([
            "-drive".to_string(),
            format!("file={},format=raw,if=virtio,readonly=on", disk.display()),
        ])
        .no_reboot()
        .fail_on("GUEST-WARN")
        .start()?;
    let up = m.wait_for_console(&expect::guest_up("uefi-selftest"), Duration::from_secs(120))?;
    // The RAM from GRUB's memory map: most of the 256 MiB (OVMF keeps some).
    let facts = qemu_tests::guest_assets::up_facts(&up)
        .ok_or_else(|| anyhow::anyhow!("no memory and CPUs in {up:?}"))?;
    anyhow::ensure!(
        (200_000..=262_144).contains(&facts.mem_kib),
        "the stub under OVMF reports {} kB of RAM, want most of 256 MiB: {up}",
        facts.mem_kib
    );
    let text = m.console().text();
    // virtio-blk (1af4:1001 legacy, 1af4:1042 modern) as the stub lists it.
    anyhow::ensure!(
        text.lines().any(|l| l.contains("GUEST-PCI uefi-selftest ")
            && (l.contains(" 1af4:1001") || l.contains(" 1af4:1042"))),
        "the stub under OVMF listed no virtio disk among its PCI devices:\n{text}"
    );
    // Its console echo needs its timer interrupt to wake it.
    m.send_console("walden-console-probe\r")?;
    m.wait_for_console(
        &format!("{} uefi-selftest: walden-console-probe", expect::GUEST_ECHO),
        Duration::from_secs(30),
    )?;
    m.powerdown()?;
    m.wait_for_console(
        &expect::guest_down("uefi-selftest"),
        Duration::from_secs(30),
    )?;
    let exit = m.wait_exit(Duration::from_secs(30))?;
    anyhow::ensure!(exit.success(), "QEMU exited with {exit}");
    Ok(())
}

/// A fake kernel oops for the console checks: the kernel prints its
/// command line at boot (without `quiet`; twice: "Command line:" and
/// "Kernel command line:"), so a word on it is a console line. Dotted, so
/// the kernel hands it to no one.
const FAKE_OOPS: &str = "qemu-tests.fake=Oops:";

/// The tiny guest booted with [`FAKE_OOPS`] on its command line, to its
/// marker and off again; `allow` is passed to `allow_console`, and with
/// `check` the scenario calls `check_console()` itself and must see it fail.
fn tiny_guest_with_a_fake_oops(name: &str, allow: Option<&str>, check: bool) -> anyhow::Result<()> {
    use qemu_tests::guest_assets::TinyGuestAssets;
    use qemu_tests::{expect, DirectKernel};
    let Some(env) = TestEnv::with_image(name)? else {
        return Ok(());
    };
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let mut builder = env
        .machine()
        .memory_mib(128)
        .direct_kernel(DirectKernel {
            kernel: assets.kernel.clone(),
            initrd: assets.initrd.clone(),
            append: format!("console=ttyS0 panic=-1 walden.guest={name} {FAKE_OOPS}"),
        })
        .no_reboot();
    if let Some(pattern) = allow {
        builder = builder.allow_console(pattern);
    }
    let mut m = builder.start()?;
    m.wait_for_console(&expect::guest_up(name), Duration::from_secs(60))?;
    if check {
        let err = m
            .check_console()
            .expect_err("check_console() passed a console with an Oops line");
        let msg = err.to_string();
        anyhow::ensure!(
            msg.contains("[kernel oops]") && msg.contains(FAKE_OOPS),
            "{msg}"
        );
        // Reported once: the same lines do not fail the scenario again.
        m.check_console()?;
    }
    m.powerdown()?;
    m.wait_exit(Duration::from_secs(30))?;
    Ok(())
}

/// The console checks fail a scenario that passed when its console had an
/// `Oops` line, pass it when the scenario allows the line, and report an
/// explicit check_console() once.
#[test]
fn console_checks_fail_a_passing_scenario_on_an_oops_line_unless_allowed() -> anyhow::Result<()> {
    let unchecked = qemu_tests::retry_on_soft_lockup(|| {
        tiny_guest_with_a_fake_oops("harness_console_check_oops", None, false)
    });
    let msg = unchecked.err().map(|e| e.to_string()).unwrap_or_default();
    anyhow::ensure!(
        msg.contains("line(s) of trouble")
            && msg.contains("[kernel oops]")
            && msg.contains(FAKE_OOPS),
        "a scenario with an Oops line on its console passed: {msg:?}"
    );
    qemu_tests::retry_on_soft_lockup(|| {
        tiny_guest_with_a_fake_oops("harness_console_check_oops_allowed", Some(FAKE_OOPS), false)
    })?;
    qemu_tests::retry_on_soft_lockup(|| {
        tiny_guest_with_a_fake_oops("harness_console_check_oops_checked", None, true)
    })
}
