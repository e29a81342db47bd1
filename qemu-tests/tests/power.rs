//! Scenario 4: the power button powers the machine off in order, and the
//! example's guest is shut down cleanly first.

mod common;

use anyhow::{ensure, Context};
use common::{
    assert_boots_to_ready, assert_guest_running, example_config_with_guest, guest_log,
    wait_for_host_file, EXAMPLE_GUEST, EXAMPLE_GUEST_MARKER_NAME, GUEST_TIMEOUT,
};
use qemu_tests::{expect, Firmware, Nic, TestEnv};
use std::time::Duration;

/// From the button press to QEMU exiting by itself: the guest's ACPI
/// shutdown (the stub guest under TCG in TCG) comes first.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn power_button_powers_off_showing_each_step() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(power_button_powers_off_showing_each_step_once)
}

fn power_button_powers_off_showing_each_step_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("power_button_powers_off_showing_each_step")? else {
        return Ok(());
    };
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .firmware(Firmware::Bios)
        .config_disk(example_config_with_guest(&env)?)
        .nic(Nic::Isolated)
        .admin_ssh()
        .start()?;
    assert_boots_to_ready(&mut m, &a.version)?;
    assert_guest_running(&mut m, EXAMPLE_GUEST)?;
    // The guest answers the power button once it printed its marker: read
    // its serial log on the host, from outside.
    let log = guest_log(EXAMPLE_GUEST);
    let up = expect::guest_up(EXAMPLE_GUEST_MARKER_NAME);
    wait_for_host_file(&mut m, &log, &up, GUEST_TIMEOUT)?;

    m.powerdown()?;
    let exit = m.wait_exit(POWEROFF_TIMEOUT)?;
    ensure!(
        exit.success(),
        "QEMU exited with {exit} after the guest powered off"
    );
    // Each step in order (the console is complete once QEMU has exited).
    for step in expect::POWEROFF_STEPS {
        m.wait_for_console(step, Duration::from_secs(1))?;
    }
    // The guest got the ACPI power button and powered off by itself
    // before the host did: its serial log on the config disk says so.
    let bytes = m
        .config_disk_file(&log)?
        .with_context(|| format!("{log} is not on the config disk"))?;
    let text = String::from_utf8_lossy(&bytes);
    ensure!(
        text.contains(&expect::guest_down(EXAMPLE_GUEST_MARKER_NAME)),
        "guest {EXAMPLE_GUEST} did not shut down on the ACPI power button before the host powered off; its log:\n{text}"
    );
    Ok(())
}
