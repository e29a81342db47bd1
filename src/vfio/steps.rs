//! The two bring-up steps (src/supervisor/appliance.rs lists them):
//! "vfio-early" before udev coldplug, "vfio" after the config is loaded.
//! Both put their rows into `status.vfio`; a failed device fails the step
//! (shown in status and on the console) but never bring-up as a whole.

use super::VfioReport;
use crate::supervisor::bringup::{BringUp, StepError, StepOutcome};

/// "vfio-early": bind the `walden.vfio=` devices before coldplug loads
/// their host drivers.
pub fn early_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    match super::apply_early(&b.paths) {
        None => Ok(StepOutcome::Skipped(
            "no walden.vfio= on the kernel command line".into(),
        )),
        Some(report) => finish(b, report),
    }
}

/// "vfio": bind host.toml's `[[vfio]]` devices, give back removed ones.
pub fn config_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let Some(config) = &b.config else {
        return Ok(StepOutcome::Skipped("no config loaded".into()));
    };
    let report = super::apply_config(&b.paths, &config.host.vfio, &config.guests);
    if report.devices.is_empty() && report.unbound == 0 {
        return Ok(StepOutcome::Skipped(
            "no [[vfio]] entries and no walden.vfio=".into(),
        ));
    }
    finish(b, report)
}

fn finish(b: &mut BringUp, report: VfioReport) -> Result<StepOutcome, StepError> {
    b.supervisor.status().lock().vfio = report.devices.clone();
    if report.failed() {
        let failed = report.devices.iter().filter(|d| d.error.is_some()).count();
        Err(StepError::new(format!(
            "{failed} of {} selected devices failed (guests using them will not start): {}",
            report.devices.len(),
            report.errors()
        )))
    } else {
        Ok(StepOutcome::Done(report.summary()))
    }
}
