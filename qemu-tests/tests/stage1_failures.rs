//! Scenarios 5 and 6: stage 1 refuses what it must not boot, says why on
//! the console, and leaves the user an emergency shell instead of a panic.
//! Also the stage 1 kernel options that end in that shell on purpose or
//! change where it looks: `walden.shell` with `walden.toram`, and
//! `walden.media` with `walden.wait` (docs/boot.md). These boots stop in
//! stage 1, so they take well under a minute.

mod common;

use common::{example_config, STAGE1_TIMEOUT};
use qemu_tests::{expect, DirectKernel, Firmware, TestEnv};
use std::time::{Duration, Instant};

/// Type into the emergency shell and expect it to evaluate the line.
fn assert_shell_answers(m: &mut qemu_tests::Machine) -> anyhow::Result<()> {
    let (probe, answer) = expect::SHELL_PROBE;
    // The shell prints its prompt after the announcement; give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    m.send_console(probe)?;
    m.wait_for_console(answer, Duration::from_secs(30))?;
    Ok(())
}

/// Run `expr` (shell syntax) in the emergency shell and return what it
/// printed, from an `echo walden-NAME=...` line. The marker is typed as
/// `walden-""NAME=`, so the terminal's echo of the command never matches.
fn shell_value(m: &mut qemu_tests::Machine, name: &str, expr: &str) -> anyhow::Result<String> {
    let marker = format!("walden-{name}=");
    m.send_console(&format!("echo walden-\"\"{name}={expr}\n"))?;
    let line = m.wait_for_console(&marker, Duration::from_secs(60))?;
    let value = line
        .split_once(marker.as_str())
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    eprintln!("{marker}{value}");
    Ok(value)
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

/// `walden.shell walden.toram` on GRUB's command line (the kernel and
/// initramfs booted directly, the USB image attached): stage 1 copies
/// root.squashfs into RAM, assembles the root from the copy and stops in
/// the emergency shell before switching root. The shell shows it: PID 1 is
/// still the initramfs's /init, the overlay root is mounted at /newroot,
/// and the loop device under it reads the copy in /run (a tmpfs), not the
/// file on the stick, so the stick could go.
#[test]
fn walden_shell_and_toram_stop_before_switch_root_with_the_root_in_ram() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(
        walden_shell_and_toram_stop_before_switch_root_with_the_root_in_ram_once,
    )
}

fn walden_shell_and_toram_stop_before_switch_root_with_the_root_in_ram_once() -> anyhow::Result<()>
{
    let Some(env) =
        TestEnv::with_image("walden_shell_and_toram_stop_before_switch_root_with_the_root_in_ram")?
    else {
        return Ok(());
    };
    let t0 = Instant::now();
    let a = env.artifacts()?;
    let mut kernel = DirectKernel::like_grub(a, &a.version)?;
    kernel.append.push_str(" walden.shell walden.toram");
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .direct_kernel(kernel)
        .fail_on(expect::STAGE1_SWITCH_ROOT)
        .fail_on(expect::READY)
        .start()?;
    m.wait_for_console(expect::STAGE1_SHELL_REQUESTED, STAGE1_TIMEOUT)?;
    m.wait_for_console(expect::EMERGENCY_SHELL, Duration::from_secs(30))?;
    assert_shell_answers(&mut m)?;

    let pid1 = shell_value(&mut m, "pid1", "$(readlink /proc/1/exe)")?;
    assert_eq!(
        pid1, "/init",
        "PID 1 is not the initramfs's /init: it switched root"
    );
    let newroot = shell_value(
        &mut m,
        "newroot",
        "$(grep -c '^overlay /newroot overlay ' /proc/mounts)",
    )?;
    assert_eq!(newroot, "1", "the root is not assembled at /newroot");
    let backing = shell_value(&mut m, "loop", "$(cat /sys/block/loop*/loop/backing_file)")?;
    assert_eq!(
        backing, "/run/walden/root.squashfs",
        "the root's loop device does not read the copy in RAM"
    );
    let run_fs = shell_value(
        &mut m,
        "runfs",
        "$(grep ' /run ' /proc/mounts | cut -d' ' -f3)",
    )?;
    assert_eq!(run_fs, "tmpfs", "/run, which holds the copy, is not RAM");
    let manifest = std::fs::read_to_string(
        a.build_dir
            .join("images")
            .join(&a.version)
            .join("manifest.toml"),
    )?;
    let want = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"root.squashfs\" = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or_else(|| anyhow::anyhow!("no root.squashfs sha256 in the manifest"))?;
    let got = shell_value(
        &mut m,
        "sha",
        "$(sha256sum < /run/walden/root.squashfs | cut -d' ' -f1)",
    )?;
    assert_eq!(
        got, want,
        "the copy in RAM is not the verified root.squashfs"
    );
    assert!(
        !m.console().contains(expect::STAGE1_SWITCH_ROOT) && !m.console().contains(expect::READY),
        "stage 1 went on past walden.shell"
    );
    eprintln!(
        "walden.shell + walden.toram took {} s",
        t0.elapsed().as_secs()
    );
    Ok(())
}

/// `walden.media=LABEL=NOPE walden.wait=3` with the USB image (label
/// WALDEN-BOOT) attached: stage 1 looks for LABEL=NOPE only, gives up
/// after about 3 s instead of the default 20 s, names the label, and
/// drops to the emergency shell.
#[test]
fn walden_media_and_wait_give_up_on_an_absent_label_after_3_s() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(
        walden_media_and_wait_give_up_on_an_absent_label_after_3_s_once,
    )
}

fn walden_media_and_wait_give_up_on_an_absent_label_after_3_s_once() -> anyhow::Result<()> {
    let Some(env) =
        TestEnv::with_image("walden_media_and_wait_give_up_on_an_absent_label_after_3_s")?
    else {
        return Ok(());
    };
    let t0 = Instant::now();
    let a = env.artifacts()?;
    let mut kernel = DirectKernel::like_grub(a, &a.version)?;
    kernel
        .append
        .push_str(" walden.media=LABEL=NOPE walden.wait=3");
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .direct_kernel(kernel)
        .fail_on(expect::STAGE1_SWITCH_ROOT)
        .fail_on(expect::READY)
        .start()?;
    let looking = m.wait_for_console(expect::STAGE1_LOOKING_FOR_MEDIA, STAGE1_TIMEOUT)?;
    let started = Instant::now();
    assert!(
        looking.trim_end().ends_with("LABEL=NOPE"),
        "stage 1 looks for something else: {looking}"
    );
    let gave_up = m.wait_for_console(
        &expect::media_not_found("LABEL=NOPE"),
        Duration::from_secs(60),
    )?;
    let waited = started.elapsed();
    m.wait_for_console(expect::EMERGENCY_SHELL, Duration::from_secs(30))?;
    eprintln!("gave up after {waited:?}: {gave_up}");
    assert!(
        gave_up.contains(expect::STAGE1),
        "the failure is not a stage 1 line: {gave_up}"
    );
    // 3 s of waiting plus console latency; the default 20 s fails this.
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(12),
        "stage 1 gave up {waited:?} after it started looking, not about 3 s"
    );
    assert_shell_answers(&mut m)?;
    eprintln!(
        "walden.media + walden.wait took {} s",
        t0.elapsed().as_secs()
    );
    Ok(())
}
