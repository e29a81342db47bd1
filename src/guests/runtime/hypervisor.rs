//! The narrow interface to the hypervisor ([`Hypervisor`]), the domain
//! states the lifecycle engine reasons about, and [`Timed`], which runs every
//! call on a worker thread so that a hung libvirtd can never block the
//! supervisor (PID 1's child) for longer than a timeout.
//!
//! The real implementation is [`super::libvirt::Libvirt`]; tests use the same
//! implementation against libvirt's `test:///default` driver.

use super::error::RuntimeError;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Why a domain is shut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The guest shut itself down (ACPI power off, `poweroff` inside).
    Shutdown,
    /// Forced off (`virsh destroy`, or walden after a shutdown timeout).
    Destroyed,
    /// QEMU died (killed, crashed) or the guest crashed.
    Crashed,
    /// QEMU failed to start or run.
    Failed,
    /// Never started, or a reason walden does not distinguish.
    Other,
}

impl StopReason {
    /// Whether the stop counts as a failure for `restart = "on-failure"`:
    /// everything but the guest's own orderly shutdown and "never ran".
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Destroyed | Self::Crashed | Self::Failed)
    }

    /// How status and logs say it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Shutdown => "shut down by the guest",
            Self::Destroyed => "forced off",
            Self::Crashed => "crashed (QEMU died)",
            Self::Failed => "failed",
            Self::Other => "shut off",
        }
    }
}

/// A domain's state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// Running (also "blocked" and "no state", which mean running for us).
    Running,
    /// Paused (suspended, or stopped at a migration/save point).
    Paused,
    /// Shutdown requested and in progress.
    ShuttingDown,
    /// Not running.
    ShutOff(StopReason),
    /// The guest crashed and QEMU stays around (on_crash=preserve).
    Crashed,
    /// Suspended to memory by the guest.
    PmSuspended,
}

impl DomainState {
    /// Whether a QEMU process exists for the domain.
    pub fn is_active(self) -> bool {
        !matches!(self, Self::ShutOff(_))
    }
}

/// One domain as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain name (= guest name).
    pub name: String,
    /// State.
    pub state: DomainState,
    /// QEMU's process id, when running and known.
    pub pid: Option<u32>,
}

/// What the lifecycle engine needs from a hypervisor. Every method is one
/// libvirt call (or two); names are domain names.
pub trait Hypervisor: Send + Sync {
    /// Define (or redefine) a persistent domain from XML. A running domain
    /// keeps running its old definition until its next start.
    fn define(&self, name: &str, xml: &str) -> Result<(), RuntimeError>;
    /// Remove a domain's persistent definition (also its UEFI NVRAM file).
    fn undefine(&self, name: &str) -> Result<(), RuntimeError>;
    /// Start a defined domain.
    fn start(&self, name: &str) -> Result<(), RuntimeError>;
    /// Ask the guest to shut down (ACPI power button); returns at once.
    fn shutdown(&self, name: &str) -> Result<(), RuntimeError>;
    /// Force the domain off.
    fn destroy(&self, name: &str) -> Result<(), RuntimeError>;
    /// A domain's state; `None` when no such domain exists.
    fn state(&self, name: &str) -> Result<Option<DomainState>, RuntimeError>;
    /// Every domain (defined or running).
    fn list(&self) -> Result<Vec<DomainInfo>, RuntimeError>;
    /// Whether walden defined the domain (its XML carries walden's
    /// metadata, [`crate::guests::METADATA_NS`]): domains defined by hand
    /// with virsh are never touched.
    fn managed(&self, name: &str) -> Result<bool, RuntimeError>;
    /// Change a device of the running domain (its live state only, e.g. a
    /// CD-ROM's media): `xml` is the device's new `<disk>` element.
    fn update_device(&self, name: &str, xml: &str) -> Result<(), RuntimeError>;
}

/// Runs each call of the wrapped hypervisor on a fresh worker thread and
/// waits for it at most `timeout`. A call that times out leaves its thread
/// blocked inside libvirt, but the caller goes on with an error; the next
/// call gets a thread of its own.
///
/// Rejected: one long-lived worker with a queue. A single hung call would
/// then delay every later one, including the shutdown of other guests.
#[derive(Clone)]
pub struct Timed {
    inner: Arc<dyn Hypervisor>,
    timeout: Duration,
}

impl Timed {
    /// Wrap `inner`; every call gets at most `timeout`.
    pub fn new(inner: Arc<dyn Hypervisor>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        guest: &str,
        f: impl FnOnce(&dyn Hypervisor) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name(format!("libvirt-{op}"))
            .spawn(move || {
                // The receiver may be gone after a timeout: nothing to do then.
                let _ = tx.send(f(inner.as_ref()));
            })
            .map_err(|e| RuntimeError::Thread {
                what: "libvirt call",
                message: e.to_string(),
            })?;
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(RuntimeError::Timeout {
                op,
                guest: guest.to_string(),
                secs: self.timeout.as_secs().max(1),
            }),
            // The worker panicked inside the binding.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(RuntimeError::Libvirt {
                op,
                guest: guest.to_string(),
                message: "the libvirt call panicked".into(),
            }),
        }
    }
}

impl Hypervisor for Timed {
    fn define(&self, name: &str, xml: &str) -> Result<(), RuntimeError> {
        let (n, x) = (name.to_string(), xml.to_string());
        self.call("define", name, move |h| h.define(&n, &x))
    }
    fn undefine(&self, name: &str) -> Result<(), RuntimeError> {
        let n = name.to_string();
        self.call("undefine", name, move |h| h.undefine(&n))
    }
    fn start(&self, name: &str) -> Result<(), RuntimeError> {
        let n = name.to_string();
        self.call("start", name, move |h| h.start(&n))
    }
    fn shutdown(&self, name: &str) -> Result<(), RuntimeError> {
        let n = name.to_string();
        self.call("shut down", name, move |h| h.shutdown(&n))
    }
    fn destroy(&self, name: &str) -> Result<(), RuntimeError> {
        let n = name.to_string();
        self.call("destroy", name, move |h| h.destroy(&n))
    }
    fn state(&self, name: &str) -> Result<Option<DomainState>, RuntimeError> {
        let n = name.to_string();
        self.call("read the state of", name, move |h| h.state(&n))
    }
    fn list(&self) -> Result<Vec<DomainInfo>, RuntimeError> {
        self.call("list", "(all)", |h| h.list())
    }
    fn managed(&self, name: &str) -> Result<bool, RuntimeError> {
        let n = name.to_string();
        self.call("read the definition of", name, move |h| h.managed(&n))
    }
    fn update_device(&self, name: &str, xml: &str) -> Result<(), RuntimeError> {
        let (n, x) = (name.to_string(), xml.to_string());
        self.call("change a device of", name, move |h| h.update_device(&n, &x))
    }
}
