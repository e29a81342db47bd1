//! What walden bound, kept in its run directory (`<run>/vfio-bound`), so a
//! later apply gives back exactly those devices and status can show the
//! driver each had before. /run is a tmpfs: bindings end with the boot too.
//!
//! Format: one line per device, `ADDRESS DRIVER_BEFORE` (`-` for none).

use crate::config::PciAddress;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name inside the run directory.
pub const STATE_FILE: &str = "vfio-bound";

/// Devices walden bound, with the driver each had before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundState {
    /// Address -> driver before binding.
    pub devices: BTreeMap<PciAddress, Option<String>>,
}

impl BoundState {
    /// `<run>/vfio-bound`.
    pub fn path(run: &Path) -> PathBuf {
        run.join(STATE_FILE)
    }

    /// Read the state; a missing or unreadable file is an empty state
    /// (nothing walden bound this boot), bad lines are skipped.
    pub fn load(run: &Path) -> Self {
        let text = std::fs::read_to_string(Self::path(run)).unwrap_or_default();
        let devices = text
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let address = words.next()?.parse().ok()?;
                let driver = words.next().filter(|d| *d != "-").map(str::to_string);
                Some((address, driver))
            })
            .collect();
        Self { devices }
    }

    /// Write the state atomically (temporary file + rename).
    pub fn save(&self, run: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(run)?;
        let text: String = self
            .devices
            .iter()
            .map(|(a, d)| format!("{a} {}\n", d.as_deref().unwrap_or("-")))
            .collect();
        let tmp = run.join(format!(".{STATE_FILE}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, Self::path(run))
    }

    /// The addresses, in order.
    pub fn addresses(&self) -> Vec<PciAddress> {
        self.devices.keys().copied().collect()
    }
}
