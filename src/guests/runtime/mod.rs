//! The guest runtime: libvirt as the hypervisor, walden as the guests'
//! supervisor (DESIGN.md sections 2-4, issue 7).
//!
//! * [`hypervisor`]: the narrow [`Hypervisor`] interface (define, undefine,
//!   start, ACPI shutdown, destroy, state, list) and [`Timed`], which bounds
//!   every call so PID 1's supervisor never blocks on a hung libvirtd.
//! * [`libvirt`]: the implementation over the `virt` crate
//!   (`qemu:///system` on the appliance, `test:///default` in tests).
//! * [`order`], [`policy`], [`plan`]: pure start/stop order, restart policy
//!   (always | on-failure | never, exponential backoff, crash-loop limit)
//!   and the per-turn plan.
//! * [`engine`] + [`handle`]: the monitor (a turn per second: notice dead
//!   guests, restart by policy, start waiting guests whose prerequisites
//!   run, force off guests past their shutdown timeout) and
//!   [`GuestHandle`], the thread-safe API (reconcile, start, stop, restart,
//!   shutdown_all, statuses).
//! * [`setup`] + [`step`]: the "libvirt" and "guests" bring-up steps.
//! * [`cli`]: `walden guest list|start|stop|restart|console`.

pub mod backend;
pub mod cli;
pub mod engine;
pub mod error;
pub mod handle;
pub mod hypervisor;
#[cfg(feature = "libvirt")]
pub mod libvirt;
// The stage 1 build (initramfs) has no libvirt: same API, every call fails.
#[cfg(not(feature = "libvirt"))]
#[path = "libvirt_absent.rs"]
pub mod libvirt;
pub mod order;
pub mod plan;
pub mod policy;
pub mod setup;
pub mod step;
pub mod table;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;

// The public API other modules use; not every name is used outside yet.
#[allow(unused_imports)]
pub use backend::Backend;
#[allow(unused_imports)]
pub use error::RuntimeError;
#[allow(unused_imports)]
pub use handle::{GuestHandle, ReconcileReport, SHUTDOWN_LIMIT};
#[allow(unused_imports)]
pub use hypervisor::{DomainInfo, DomainState, Hypervisor, StopReason, Timed};
#[allow(unused_imports)]
pub use policy::Policy;
#[allow(unused_imports)]
pub use table::{GuestState, GuestStatus};
