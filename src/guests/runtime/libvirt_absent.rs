//! [`Hypervisor`] for a walden built without the `libvirt` feature: the
//! copy of walden in the initramfs (stage 1), which never runs guests.
//! Linking libvirt there would pull ~20 MiB of libraries into the
//! initramfs (libvirt, libxml2, ICU, GnuTLS, ...) for nothing. Every call
//! fails with a message saying so.

use super::error::RuntimeError;
use super::hypervisor::{DomainInfo, DomainState, Hypervisor};
use std::path::PathBuf;

/// The URI walden uses on the appliance.
pub const SYSTEM_URI: &str = "qemu:///system";
/// Where libvirt's QEMU driver keeps `NAME.pid` for running domains.
pub const QEMU_PID_DIR: &str = "/run/libvirt/qemu";

/// A hypervisor that is not there.
pub struct Libvirt {
    uri: String,
}

impl Libvirt {
    /// Same signature as the real one; `pid_dir` is unused.
    pub fn new(uri: &str, _pid_dir: Option<PathBuf>) -> Self {
        Self {
            uri: uri.to_string(),
        }
    }

    fn absent<T>(&self) -> Result<T, RuntimeError> {
        Err(RuntimeError::Connect {
            uri: self.uri.clone(),
            message: "this walden was built without libvirt (the stage 1 build for the \
                      initramfs); guests are run by the walden of the root file system"
                .into(),
        })
    }
}

impl Hypervisor for Libvirt {
    fn define(&self, _name: &str, _xml: &str) -> Result<(), RuntimeError> {
        self.absent()
    }
    fn undefine(&self, _name: &str) -> Result<(), RuntimeError> {
        self.absent()
    }
    fn start(&self, _name: &str) -> Result<(), RuntimeError> {
        self.absent()
    }
    fn shutdown(&self, _name: &str) -> Result<(), RuntimeError> {
        self.absent()
    }
    fn destroy(&self, _name: &str) -> Result<(), RuntimeError> {
        self.absent()
    }
    fn state(&self, _name: &str) -> Result<Option<DomainState>, RuntimeError> {
        self.absent()
    }
    fn list(&self) -> Result<Vec<DomainInfo>, RuntimeError> {
        self.absent()
    }
    fn managed(&self, _name: &str) -> Result<bool, RuntimeError> {
        self.absent()
    }
    fn update_device(&self, _name: &str, _xml: &str) -> Result<(), RuntimeError> {
        self.absent()
    }
}
