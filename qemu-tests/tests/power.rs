//! Scenario 4: the power button powers the machine off in order.

mod common;

use common::{assert_boots_to_ready, example_config};
use qemu_tests::{expect, Firmware, Nic, TestEnv};
use std::time::Duration;

/// From the button press to QEMU exiting by itself.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);

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
        .usb_image(a.usb_image()?)
        .firmware(Firmware::Bios)
        .config_disk(example_config())
        .nic(Nic::Isolated)
        .start()?;
    assert_boots_to_ready(&mut m, &a.version)?;

    m.powerdown()?;
    let exit = m.wait_exit(POWEROFF_TIMEOUT)?;
    assert!(
        exit.success(),
        "QEMU exited with {exit} after the guest powered off"
    );
    // Each step in order (the console is complete once QEMU has exited).
    for step in expect::POWEROFF_STEPS {
        m.wait_for_console(step, Duration::from_secs(1))?;
    }
    Ok(())
}
