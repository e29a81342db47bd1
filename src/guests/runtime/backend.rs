//! What the engine needs besides libvirt: the domain XML of a guest on this
//! host, and its disks prepared before a start (both from
//! [`crate::guests`]).

use super::error::RuntimeError;
use crate::config::{Config, GuestConfig};
use crate::guests::env::DomainEnv;
use crate::supervisor::status::SharedStatus;

/// Turns guest configs into domain XML and prepares their disks.
#[derive(Clone)]
pub struct Backend {
    /// Host facts except the PCI labels, which come from the config and
    /// the vfio step at render time.
    pub env: DomainEnv,
    /// Where the vfio step's results are (labels selected by PCI id).
    pub status: Option<SharedStatus>,
}

impl Backend {
    /// A backend for `env`; `status` supplies vfio results when given.
    pub fn new(env: DomainEnv, status: Option<SharedStatus>) -> Self {
        Self { env, status }
    }

    /// The domain XML of `guest` under `config` (deterministic).
    pub fn render(&self, guest: &GuestConfig, config: &Config) -> Result<String, RuntimeError> {
        let mut env = self.env.clone();
        env.pci = DomainEnv::pci_labels(&config.host);
        if let Some(status) = &self.status {
            let report = crate::vfio::VfioReport {
                devices: status.lock().vfio.clone(),
                ..Default::default()
            };
            for (label, addrs) in DomainEnv::pci_labels_from_vfio(&report) {
                env.pci.entry(label).or_insert(addrs);
            }
        }
        crate::guests::domain_xml(guest, &env).map_err(|e| RuntimeError::Render {
            guest: guest.name.to_string(),
            message: e.to_string(),
        })
    }

    /// Create missing disk images (thin overlays on `base`, empty images).
    pub fn prepare(&self, guest: &GuestConfig) -> Result<Vec<String>, RuntimeError> {
        crate::guests::prepare(guest).map_err(|e| RuntimeError::Disks {
            guest: guest.name.to_string(),
            message: e.to_string(),
        })
    }
}
