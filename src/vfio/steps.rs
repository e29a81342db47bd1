//! The two bring-up steps (src/supervisor/appliance.rs lists them):
//! "vfio-early" before udev coldplug, "vfio" after the config is loaded.
//! Both put their rows into `status.vfio`; a failed device fails the step
//! (shown in status and on the console) but never bring-up as a whole.

use super::VfioReport;

/// The guest runtime's name for the blocks this step sets.
pub const BLOCK_SOURCE: &str = "vfio";
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
    // Guests whose device could not be bound wait, saying why, instead of
    // failing on QEMU's error and retrying (cleared when it binds).
    let blocks = super::failed_guests(&report.devices).into_iter().collect();
    b.host_blocks.insert(BLOCK_SOURCE, blocks);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_whose_device_failed_are_held_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let host =
            "schema = 1\nhostname = \"h\"\n[[vfio]]\npci = \"0000:03:00.0\"\nlabel = \"hba\"\n";
        let mut b = BringUp::for_tests(tmp.path(), host);
        let guests = [
            (
                "storage.toml",
                "schema = 1\nmemory = \"1GiB\"\n[[pci]]\nlabel = \"hba\"\n",
            ),
            ("other.toml", "schema = 1\nmemory = \"1GiB\"\n"),
        ];
        b.config = Some(crate::config::from_strs(host, &guests).unwrap());
        // No such device (and no IOMMU) under this test root.
        assert!(config_step(&mut b).is_err());
        let blocks = &b.host_blocks[BLOCK_SOURCE];
        assert_eq!(blocks.keys().collect::<Vec<_>>(), ["storage"]);
        assert!(
            blocks["storage"].starts_with("PCI passthrough: "),
            "{blocks:?}"
        );
        // A config without the device clears the blocks.
        b.config = Some(crate::config::from_strs("schema = 1\nhostname = \"h\"\n", &[]).unwrap());
        let _ = config_step(&mut b);
        assert!(b.host_blocks[BLOCK_SOURCE].is_empty());
    }
}
