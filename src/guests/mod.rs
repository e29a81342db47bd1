//! Guests: guests/NAME.toml -> libvirt domain XML (pure), disk preparation,
//! and the libvirt lifecycle (DESIGN.md sections 3-4; user reference in
//! docs/guests.md).

// The runtime (lifecycle, reconcile) calls into these as it is wired up;
// until then not every item is used.
#![allow(dead_code)]

pub mod disks;
pub mod domain;
pub mod env;
pub mod runtime;
pub mod taps;
mod xml;

#[allow(unused_imports)]
pub use disks::{prepare, DiskError};
#[allow(unused_imports)]
pub use domain::{config_hash, cpu_quota, domain_xml, uuid, DomainError, METADATA_NS};
#[allow(unused_imports)]
pub use env::{DomainEnv, DomainType};
#[allow(unused_imports)]
pub use taps::{tap_name, tap_names, tap_vlans};
