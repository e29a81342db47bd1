//! The network module's errors: each names the interface, MAC or address
//! and says what to do.

use crate::config::{IfName, IpNet, MacAddr, VlanId};

/// What can go wrong while planning or applying the host network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A `mac:` reference or `match` that no NIC on this machine has.
    #[error("network: no NIC has MAC {mac} (wanted by {wanted_by}); check the MAC with `ip link` or fix host.toml")]
    NoNicWithMac {
        /// The MAC looked for.
        mac: MacAddr,
        /// Which config item asked for it ("link uplink0", "bond bond0 member").
        wanted_by: String,
    },
    /// A `[[network.link]]` without `match` whose name the kernel does not know.
    #[error("network: no interface named {name} on this machine; add match = \"mac:..\" to its [[network.link]] or fix the name")]
    NoSuchLink {
        /// The configured name.
        name: IfName,
    },
    /// Two config entries resolved to the same NIC.
    #[error("network: {first} and {second} are the same NIC ({name}); list it once")]
    SameNic {
        /// Kernel name of the NIC.
        name: String,
        /// First config item.
        first: String,
        /// Second config item.
        second: String,
    },
    /// A VLAN (or other stacked link) whose parent does not exist.
    #[error("network: VLAN {vlan} (id {id}) sits on {parent}, which is neither in host.toml nor on this machine; define {parent} under [network]")]
    VlanParentMissing {
        /// The VLAN interface.
        vlan: IfName,
        /// Its VLAN id.
        id: VlanId,
        /// The missing parent.
        parent: IfName,
    },
    /// An interface name the config wants is taken by an interface walden
    /// did not create and cannot change into the wanted kind.
    #[error("network: {name} exists as a {found} interface, but host.toml wants a {wanted}; delete it (ip link del {name}) or rename the config entry")]
    KindConflict {
        /// The interface name.
        name: String,
        /// Kind found in the kernel.
        found: String,
        /// Kind the config wants.
        wanted: String,
    },
    /// Renaming a NIC to a name held by another interface.
    #[error("network: cannot rename {from} to {to}: another interface ({holder}) is called {to}; rename or remove it first")]
    NameTaken {
        /// Current name of the NIC.
        from: String,
        /// Wanted name.
        to: String,
        /// What holds the name.
        holder: String,
    },
    /// An address wanted on one interface is already on another one.
    #[error("network: address {addr} for {wanted_on} is already on {found_on}; remove it there or pick another address")]
    AddressConflict {
        /// The address.
        addr: IpNet,
        /// Interface the config puts it on.
        wanted_on: String,
        /// Interface that has it now.
        found_on: String,
    },
    /// A route whose `dev` is missing.
    #[error(
        "network: route to {to} uses dev {dev}, which does not exist; define it under [network]"
    )]
    RouteDevMissing {
        /// Destination as written.
        to: String,
        /// The device.
        dev: IfName,
    },
    /// Opening the netlink socket failed.
    #[error("network: cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("network: {what} failed: {source}")]
    Netlink {
        /// What was being done ("create bond bond0").
        what: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// An operation named an interface that vanished meanwhile.
    #[error("network: {what}: interface {name} not found (did something else remove it?); run the apply again")]
    Vanished {
        /// The operation.
        what: String,
        /// The missing interface.
        name: String,
    },
    /// Writing resolv.conf (or another file) failed.
    #[error("network: cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A request walden could not even build (a bug or an odd config).
    #[error("network: {what}: {reason}")]
    Invalid {
        /// The operation.
        what: String,
        /// Why.
        reason: String,
    },
}
