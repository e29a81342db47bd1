//! Scenarios 1-3: every way of booting the image reaches walden "ready",
//! and `walden status --json` shows the version booted, per-phase timings,
//! no failed step, and the example's autostart guest running (its kernel
//! and initramfs are on the config disk, as `make run` puts them there).

mod common;

use common::{
    assert_boots_to_ready, assert_guest_running, example_config_with_guest, EXAMPLE_GUEST,
};
use qemu_tests::{Firmware, Nic, TestEnv};

/// How the image reaches the machine.
enum Media {
    /// The USB image as a disk.
    Usb,
    /// The ISO in a CD-ROM drive.
    IsoCdrom,
    /// The ISO written to a disk with dd.
    IsoDisk,
}

/// Boot `media` with `firmware` and the example config disk; assert ready.
fn boots_to_ready(name: &str, media: Media, firmware: Firmware) -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image(name)? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let builder = env.machine();
    let builder = match media {
        Media::Usb => builder.usb_image(a.usb_image()?),
        Media::IsoCdrom => builder.iso_cdrom(a.iso()?),
        Media::IsoDisk => builder.iso_disk(a.iso()?),
    };
    let mut m = builder
        .firmware(firmware)
        .config_disk(example_config_with_guest(&env)?)
        .nic(Nic::Isolated)
        .start()?;
    assert_boots_to_ready(&mut m, &a.version)?;
    assert_guest_running(&mut m, EXAMPLE_GUEST)?;
    Ok(())
}

#[test]
fn usb_uefi_boots_to_ready() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(usb_uefi_boots_to_ready_once)
}

fn usb_uefi_boots_to_ready_once() -> anyhow::Result<()> {
    boots_to_ready("usb_uefi_boots_to_ready", Media::Usb, Firmware::Uefi)
}

#[test]
fn usb_bios_boots_to_ready() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(usb_bios_boots_to_ready_once)
}

fn usb_bios_boots_to_ready_once() -> anyhow::Result<()> {
    boots_to_ready("usb_bios_boots_to_ready", Media::Usb, Firmware::Bios)
}

#[test]
fn iso_cdrom_bios_boots_to_ready() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(iso_cdrom_bios_boots_to_ready_once)
}

fn iso_cdrom_bios_boots_to_ready_once() -> anyhow::Result<()> {
    boots_to_ready(
        "iso_cdrom_bios_boots_to_ready",
        Media::IsoCdrom,
        Firmware::Bios,
    )
}

#[test]
fn iso_written_to_usb_uefi_boots_to_ready() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(iso_written_to_usb_uefi_boots_to_ready_once)
}

fn iso_written_to_usb_uefi_boots_to_ready_once() -> anyhow::Result<()> {
    boots_to_ready(
        "iso_written_to_usb_uefi_boots_to_ready",
        Media::IsoDisk,
        Firmware::Uefi,
    )
}
