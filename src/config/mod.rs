//! Config model: the schema of host.toml and guests/NAME.toml, parsing,
//! validation and units (DESIGN.md section 4; reference in docs/config.md).
//!
//! Two layers: the files are parsed with toml_edit, which keeps the byte span
//! of every key and value; a hand-written reader ([`reader`]) walks that tree
//! and builds the runtime types ([`HostConfig`], [`GuestConfig`]), recording a
//! [`Diagnostic`] with file:line:column for every syntax error, unknown key,
//! wrong type and bad value instead of stopping at the first. Checks across
//! entries and files (unknown bridge, duplicate MAC, `after` cycles) then run
//! on the runtime types, and [`load_dir`] returns a [`Config`] only when there
//! was no error at all, so a `Config` in hand is valid.
//!
//! Rejected design: serde derive with `deny_unknown_fields`. It stops at the
//! first unknown key or type error, and the requirement is every problem at
//! once; serde_ignored collects unknown keys but not further type errors.

// The runtime types are read by the supervisor, network, vfio and guests
// modules as they are wired up; until then not every field is read.
#![allow(dead_code)]

mod check;
mod check_guests;
mod check_host;
mod check_mounts;
mod diag;
mod error;
mod facts;
mod guest;
mod guest_read;
mod host;
mod ids;
mod load;
mod mount;
mod network;
mod network_read;
mod order;
mod reader;
mod service;
mod source;
mod units;

#[cfg(test)]
mod tests;

pub use check::check_command;
// The public API other modules use; not every name is used yet.
#[allow(unused_imports)]
pub use diag::{Diagnostic, Diagnostics};
#[allow(unused_imports)]
pub use error::{ConfigError, ConfigValue, ValueError};
#[allow(unused_imports)]
pub use facts::{check_against_host, HostFacts, HOST_RESERVE};
#[allow(unused_imports)]
pub use guest::{
    Boot, BootDevice, CdromConfig, CpuConfig, DiskBus, DiskConfig, DiskFormat, DiskSource,
    Firmware, GuestConfig, GuestPci, NicConfig, NicModel, PciRef, DEFAULT_BOOT_ORDER,
};
pub use host::tz_names as time_zones;
#[allow(unused_imports)]
pub use host::{
    HealthConfig, HealthFailure, HostConfig, IdSelect, MountConfig, MountSource, SshConfig,
    SwapConfig, VfioDevice, VfioSelect, WatchdogConfig,
};
#[allow(unused_imports)]
pub use ids::{Hostname, IfName, IpNet, LinkRef, MacAddr, Name, PciAddress, PciId, VlanId};
#[allow(unused_imports)]
pub use load::{from_strs, load};
#[allow(unused_imports)]
pub use mount::{lexical, mounts_holding, LOCAL_FSTYPES, NETWORK_FSTYPES};
#[allow(unused_imports)]
pub use network::{
    Addressing, BondConfig, BondMode, BridgeConfig, BridgePort, DnsConfig, HashPolicy, LacpRate,
    LinkConfig, NetworkConfig, RouteConfig, RouteTo, VlanConfig,
};
#[allow(unused_imports)]
pub use reader::SCHEMA;
#[allow(unused_imports)]
pub use service::{Readiness, RestartPolicy, ServiceConfig};
#[allow(unused_imports)]
pub use source::At;
#[allow(unused_imports)]
pub use units::{HumanDuration, Percent, Size};

use std::path::Path;

/// A validated config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// host.toml.
    pub host: HostConfig,
    /// guests/*.toml, sorted by name.
    pub guests: Vec<GuestConfig>,
    /// Problems that do not stop the config from being used.
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// The guest called `name`.
    pub fn guest(&self, name: &str) -> Option<&GuestConfig> {
        self.guests.iter().find(|g| g.name.as_str() == name)
    }
}

/// Load and validate a config directory; every problem is returned at once.
///
/// A missing or unreadable host.toml is returned as a single diagnostic
/// without position; use [`load`] to tell that case apart.
pub fn load_dir(dir: &Path) -> Result<Config, Diagnostics> {
    load(dir).map_err(|e| match e {
        ConfigError::Invalid(d) => d,
        e @ ConfigError::NoHostFile { .. } => Diagnostics(vec![Diagnostic {
            file: "host.toml".into(),
            line: 0,
            column: 0,
            key: String::new(),
            message: e.to_string(),
            hint: Some("create host.toml with `schema = 1` and `hostname`".into()),
        }]),
    })
}
