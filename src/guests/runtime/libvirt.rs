//! [`Hypervisor`] over libvirt (the `virt` crate): `qemu:///system` on the
//! appliance, `test:///default` in tests.
//!
//! One connection is opened on first use and kept; when a call fails
//! because the connection broke (libvirtd restarted), the connection is
//! dropped and the next call opens a new one. Guests keep running across a
//! libvirtd restart: QEMU processes are not libvirtd's to take down.

use super::error::RuntimeError;
use super::hypervisor::{DomainInfo, DomainState, Hypervisor, StopReason};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

/// The URI walden uses on the appliance.
pub const SYSTEM_URI: &str = "qemu:///system";
/// Where libvirt's QEMU driver keeps `NAME.pid` for running domains.
pub const QEMU_PID_DIR: &str = "/run/libvirt/qemu";

/// A connection that is closed when the last user drops it (the binding's
/// `Connect` has no destructor of its own).
struct Conn(Connect);

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

/// libvirt behind [`Hypervisor`].
pub struct Libvirt {
    uri: String,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Directory of QEMU pid files, to report guests' pids.
    pid_dir: Option<PathBuf>,
}

impl Libvirt {
    /// A lazily connecting client for `uri`; `pid_dir` is where the driver
    /// writes `NAME.pid` (None when the driver has no processes, as `test:`).
    pub fn new(uri: &str, pid_dir: Option<PathBuf>) -> Self {
        // libvirt's default error handler prints every error on stderr;
        // walden reports them itself.
        static QUIET: Once = Once::new();
        QUIET.call_once(virt::error::clear_error_callback);
        Self {
            uri: uri.to_string(),
            conn: Mutex::new(None),
            pid_dir,
        }
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn conn(&self) -> Result<Arc<Conn>, RuntimeError> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Connect::open(Some(&self.uri)).map_err(|e| RuntimeError::Connect {
            uri: self.uri.clone(),
            message: e.message().to_string(),
        })?;
        let c = Arc::new(Conn(c));
        *slot = Some(c.clone());
        Ok(c)
    }

    /// After a failed call: forget a connection that is no longer alive.
    fn check_conn(&self, conn: &Conn) {
        if !matches!(conn.0.is_alive(), Ok(true)) {
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting on the next call");
            let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            if slot
                .as_ref()
                .is_some_and(|c| std::ptr::eq(c.as_ref(), conn))
            {
                *slot = None;
            }
        }
    }

    /// Run `f` on a domain looked up by name.
    fn with_domain<T>(
        &self,
        op: &'static str,
        name: &str,
        f: impl FnOnce(&Domain) -> Result<T, virt::error::Error>,
    ) -> Result<T, RuntimeError> {
        let conn = self.conn()?;
        let result = Domain::lookup_by_name(&conn.0, name).and_then(|d| {
            let r = f(&d);
            free(d);
            r
        });
        result.map_err(|e| self.fail(&conn, op, name, &e))
    }

    fn fail(
        &self,
        conn: &Conn,
        op: &'static str,
        name: &str,
        e: &virt::error::Error,
    ) -> RuntimeError {
        if !matches!(
            e.code(),
            ErrorNumber::NoDomain | ErrorNumber::OperationInvalid
        ) {
            self.check_conn(conn);
        }
        RuntimeError::Libvirt {
            op,
            guest: name.to_string(),
            message: e.message().to_string(),
        }
    }

    fn pid(&self, name: &str) -> Option<u32> {
        let dir = self.pid_dir.as_ref()?;
        std::fs::read_to_string(dir.join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Release a domain handle; the binding's destructor panics when
/// virDomainFree fails, so free explicitly and ignore that (it cannot
/// fail for a valid handle).
fn free(mut d: Domain) {
    let _ = d.free();
}

/// libvirt's (state, reason) pair as a [`DomainState`].
pub fn domain_state(state: sys::virDomainState, reason: i32) -> DomainState {
    match state {
        sys::VIR_DOMAIN_PAUSED => DomainState::Paused,
        sys::VIR_DOMAIN_SHUTDOWN => DomainState::ShuttingDown,
        sys::VIR_DOMAIN_CRASHED => DomainState::Crashed,
        sys::VIR_DOMAIN_PMSUSPENDED => DomainState::PmSuspended,
        sys::VIR_DOMAIN_SHUTOFF => {
            let reason = match reason as sys::virDomainShutoffReason {
                sys::VIR_DOMAIN_SHUTOFF_SHUTDOWN => StopReason::Shutdown,
                sys::VIR_DOMAIN_SHUTOFF_DESTROYED => StopReason::Destroyed,
                sys::VIR_DOMAIN_SHUTOFF_CRASHED => StopReason::Crashed,
                sys::VIR_DOMAIN_SHUTOFF_FAILED => StopReason::Failed,
                _ => StopReason::Other,
            };
            DomainState::ShutOff(reason)
        }
        // VIR_DOMAIN_RUNNING, VIR_DOMAIN_BLOCKED, VIR_DOMAIN_NOSTATE.
        _ => DomainState::Running,
    }
}

impl Hypervisor for Libvirt {
    fn define(&self, name: &str, xml: &str) -> Result<(), RuntimeError> {
        let conn = self.conn()?;
        Domain::define_xml(&conn.0, xml)
            .map(free)
            .map_err(|e| self.fail(&conn, "define", name, &e))
    }

    fn undefine(&self, name: &str) -> Result<(), RuntimeError> {
        self.with_domain("undefine", name, |d| {
            // NVRAM: a UEFI guest's variables file goes with its definition.
            d.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_NVRAM)
                .or_else(|_| d.undefine())
        })
    }

    fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.with_domain("start", name, |d| d.create().map(|_| ()))
    }

    fn shutdown(&self, name: &str) -> Result<(), RuntimeError> {
        // Default mode: the guest agent when the domain has one (walden's
        // domains do not), else the ACPI power button.
        self.with_domain("shut down", name, |d| d.shutdown().map(|_| ()))
    }

    fn destroy(&self, name: &str) -> Result<(), RuntimeError> {
        self.with_domain("destroy", name, |d| d.destroy())
    }

    fn update_device(&self, name: &str, xml: &str) -> Result<(), RuntimeError> {
        self.with_domain("change a device of", name, |d| {
            d.update_device_flags(xml, sys::VIR_DOMAIN_AFFECT_LIVE)
                .map(drop)
        })
    }

    fn state(&self, name: &str) -> Result<Option<DomainState>, RuntimeError> {
        let conn = self.conn()?;
        match Domain::lookup_by_name(&conn.0, name) {
            Ok(d) => {
                let r = d.get_state();
                free(d);
                r.map(|(s, reason)| Some(domain_state(s, reason)))
                    .map_err(|e| self.fail(&conn, "read the state of", name, &e))
            }
            Err(e) if e.code() == ErrorNumber::NoDomain => Ok(None),
            Err(e) => Err(self.fail(&conn, "look up", name, &e)),
        }
    }

    fn list(&self) -> Result<Vec<DomainInfo>, RuntimeError> {
        let conn = self.conn()?;
        let domains = conn
            .0
            .list_all_domains(0)
            .map_err(|e| self.fail(&conn, "list", "(all)", &e))?;
        let mut out = Vec::with_capacity(domains.len());
        for d in domains {
            // A domain undefined between listing and asking is just gone.
            if let (Ok(name), Ok((s, reason))) = (d.get_name(), d.get_state()) {
                let state = domain_state(s, reason);
                let pid = if state.is_active() {
                    self.pid(&name)
                } else {
                    None
                };
                out.push(DomainInfo { name, state, pid });
            }
            free(d);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn managed(&self, name: &str) -> Result<bool, RuntimeError> {
        let xml = self.with_domain("read the definition of", name, |d| d.get_xml_desc(0))?;
        Ok(xml.contains(crate::guests::METADATA_NS))
    }
}
