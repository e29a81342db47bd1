//! Scenarios 5 and 6: stage 1 refuses what it must not boot, says why on
//! the console, and leaves the user an emergency shell instead of a panic.

mod common;

use common::{example_config, STAGE1_TIMEOUT};
use qemu_tests::{expect, DirectKernel, Firmware, TestEnv};
use std::time::Duration;

/// Type into the emergency shell and expect it to evaluate the line.
fn assert_shell_answers(m: &mut qemu_tests::Machine) -> anyhow::Result<()> {
    let (probe, answer) = expect::SHELL_PROBE;
    // The shell prints its prompt after the announcement; give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    m.send_console(probe)?;
    m.wait_for_console(answer, Duration::from_secs(30))?;
    Ok(())
}

/// The USB image booted through GRUB exactly as a user would, except that
/// one byte in the middle of root.squashfs's first block is inverted on
/// this machine's copy of the disk.
#[test]
fn tampered_squashfs_is_refused_with_a_clear_message() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(tampered_squashfs_is_refused_with_a_clear_message_once)
}

fn tampered_squashfs_is_refused_with_a_clear_message_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("tampered_squashfs_is_refused_with_a_clear_message")?
    else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let squashfs = format!("images/{}/root.squashfs", a.version);
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .flip_esp_byte(&squashfs, 1000)
        .firmware(Firmware::Bios)
        .config_disk(example_config())
        .fail_on(expect::STAGE1_SWITCH_ROOT)
        .fail_on(expect::READY)
        .start()?;
    let line = m.wait_for_console(expect::SQUASHFS_MISMATCH, STAGE1_TIMEOUT)?;
    assert!(
        line.contains(expect::STAGE1),
        "refusal is a stage 1 line: {line}"
    );
    m.wait_for_console(expect::EMERGENCY_SHELL, Duration::from_secs(30))?;
    assert_shell_answers(&mut m)?;
    assert!(
        !m.console().contains(expect::STAGE1_SWITCH_ROOT),
        "stage 1 switched root anyway"
    );
    assert!(
        !m.console().contains(expect::READY),
        "the tampered image ran"
    );
    Ok(())
}

/// Boot media without the requested version. GRUB only offers versions
/// that exist, so this boots the image's kernel and initramfs directly
/// (QEMU -kernel/-initrd) with GRUB's command line but
/// `walden.version=0.0.0-not-on-media`, with the USB image attached:
/// stage 1 runs exactly as after GRUB.
#[test]
fn missing_version_drops_to_the_emergency_shell() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(missing_version_drops_to_the_emergency_shell_once)
}

fn missing_version_drops_to_the_emergency_shell_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("missing_version_drops_to_the_emergency_shell")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let missing = "0.0.0-not-on-media";
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .direct_kernel(DirectKernel::like_grub(a, missing)?)
        .config_disk(example_config())
        .fail_on(expect::STAGE1_SWITCH_ROOT)
        .start()?;
    m.wait_for_console(expect::EMERGENCY_SHELL, STAGE1_TIMEOUT)?;
    let marks = expect::missing_version_marks(missing);
    let console = m.console().text();
    let reason = console
        .lines()
        .find(|l| l.contains(expect::STAGE1) && marks.iter().all(|mark| l.contains(mark.as_str())));
    assert!(
        reason.is_some(),
        "no stage 1 line names {marks:?} before the emergency shell; see {}",
        m.console_log().display()
    );
    assert_shell_answers(&mut m)?;
    Ok(())
}
