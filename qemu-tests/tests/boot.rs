//! Scenarios 1-3: every way of booting the image reaches walden "ready",
//! and `walden status --json` shows the version booted and per-phase timings.

mod common;

use common::{assert_boots_to_ready, example_config};
use qemu_tests::{Firmware, Nic, TestEnv};

#[test]
fn usb_uefi_boots_to_ready() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("usb_uefi_boots_to_ready")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .firmware(Firmware::Uefi)
        .config_disk(example_config())
        .nic(Nic::Isolated)
        .start()?;
    assert_boots_to_ready(&mut m, &a.version)?;
    Ok(())
}

#[test]
fn usb_bios_boots_to_ready() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("usb_bios_boots_to_ready")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .firmware(Firmware::Bios)
        .config_disk(example_config())
        .nic(Nic::Isolated)
        .start()?;
    assert_boots_to_ready(&mut m, &a.version)?;
    Ok(())
}

#[test]
fn iso_cdrom_bios_boots_to_ready() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("iso_cdrom_bios_boots_to_ready")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .iso_cdrom(a.iso()?)
        .firmware(Firmware::Bios)
        .config_disk(example_config())
        .nic(Nic::Isolated)
        .start()?;
    assert_boots_to_ready(&mut m, &a.version)?;
    Ok(())
}

#[test]
fn iso_written_to_usb_uefi_boots_to_ready() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("iso_written_to_usb_uefi_boots_to_ready")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .iso_disk(a.iso()?)
        .firmware(Firmware::Uefi)
        .config_disk(example_config())
        .nic(Nic::Isolated)
        .start()?;
    assert_boots_to_ready(&mut m, &a.version)?;
    Ok(())
}
