//! Kernel and libvirt identifiers as types: MACs, PCI addresses and ids,
//! interface names, link references, IP networks, VLAN ids, names.
//!
//! Each parses with `FromStr` and displays in a canonical form that parses
//! back to the same value.

use super::error::{ConfigValue, ValueError};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An Ethernet MAC address, displayed lower-case with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True for group (multicast/broadcast) addresses, which no NIC may use.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The stable MAC of a guest NIC without an explicit `mac`: the prefix
    /// 52:54:00 (locally administered, unicast; the one QEMU uses) followed by
    /// the first three bytes of SHA-256("walden:<guest>:<nic index>").
    pub fn derive(guest: &str, index: usize) -> Self {
        let digest = Sha256::digest(format!("walden:{guest}:{index}").as_bytes());
        MacAddr([0x52, 0x54, 0x00, digest[0], digest[1], digest[2]])
    }
}

impl FromStr for MacAddr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(ValueError::new(
                "MAC address",
                s,
                "expected six hex bytes separated by ':'",
            ));
        }
        for (byte, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(ValueError::new(
                    "MAC address",
                    s,
                    "each byte needs two hex digits",
                ));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| ValueError::new("MAC address", s, format!("{part:?} is not hex")))?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl ConfigValue for MacAddr {
    const HINT: &'static str =
        "write six hex bytes separated by colons, e.g. \"52:54:00:12:34:56\"";
}

/// A PCI address: domain, bus, device (slot) and function.
///
/// Parses "0000:03:00.0" and the short "03:00.0" (domain 0000); always
/// displays the long form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl FromStr for PciAddress {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = |reason: &str| ValueError::new("PCI address", s, reason);
        let (head, function) = s
            .rsplit_once('.')
            .ok_or_else(|| err("missing \".function\""))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0000", *b, *s),
            _ => return Err(err("expected DOMAIN:BUS:DEVICE.FUNCTION")),
        };
        let hex = |text: &str, width: usize, name: &str| {
            if text.len() != width {
                return Err(err(&format!("{name} needs {width} hex digits")));
            }
            u16::from_str_radix(text, 16).map_err(|_| err(&format!("{name} {text:?} is not hex")))
        };
        let domain = hex(domain, 4, "domain")?;
        let bus = hex(bus, 2, "bus")? as u8;
        let device = hex(device, 2, "device")?;
        let function = hex(function, 1, "function")?;
        if device > 0x1f {
            return Err(err("device must be 00..1f"));
        }
        if function > 7 {
            return Err(err("function must be 0..7"));
        }
        Ok(PciAddress {
            domain,
            bus,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl ConfigValue for PciAddress {
    const HINT: &'static str =
        "write DOMAIN:BUS:DEVICE.FUNCTION in hex as lspci -D shows it, e.g. \"0000:03:00.0\"";
}

/// A PCI vendor:device id pair, e.g. "1000:0072".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciId {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
}

impl FromStr for PciId {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = || ValueError::new("PCI id", s, "expected VENDOR:DEVICE, four hex digits each");
        let (v, d) = s.split_once(':').ok_or_else(err)?;
        if v.len() != 4 || d.len() != 4 {
            return Err(err());
        }
        Ok(PciId {
            vendor: u16::from_str_radix(v, 16).map_err(|_| err())?,
            device: u16::from_str_radix(d, 16).map_err(|_| err())?,
        })
    }
}

impl fmt::Display for PciId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

impl ConfigValue for PciId {
    const HINT: &'static str = "write VENDOR:DEVICE as lspci -nn shows it, e.g. \"1000:0072\"";
}

/// A network interface name as the kernel accepts it: 1..=15 bytes, not
/// "." or "..", no '/', ':' or whitespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = |reason: &str| Err(ValueError::new("interface name", s, reason));
        if s.is_empty() || s.len() > 15 {
            return err("must be 1 to 15 bytes long");
        }
        if s == "." || s == ".." {
            return err("must not be \".\" or \"..\"");
        }
        if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            return err("must not contain '/', ':' or whitespace");
        }
        Ok(IfName(s.to_string()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ConfigValue for IfName {
    const HINT: &'static str =
        "interface names are 1 to 15 bytes without '/', ':' or spaces, e.g. \"br0\" or \"uplink0\"";
}

/// A reference to a network interface: by name, or by MAC ("mac:52:54:00:..").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkRef {
    /// An interface defined in host.toml, by name.
    Name(IfName),
    /// A physical NIC found by its permanent MAC address.
    Mac(MacAddr),
}

impl FromStr for LinkRef {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.strip_prefix("mac:") {
            Some(mac) => mac
                .parse()
                .map(LinkRef::Mac)
                .map_err(|e: ValueError| ValueError::new("link", s, e.reason)),
            None => s
                .parse()
                .map(LinkRef::Name)
                .map_err(|e: ValueError| ValueError::new("link", s, e.reason)),
        }
    }
}

impl fmt::Display for LinkRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRef::Name(n) => write!(f, "{n}"),
            LinkRef::Mac(m) => write!(f, "mac:{m}"),
        }
    }
}

impl ConfigValue for LinkRef {
    const HINT: &'static str =
        "write an interface name (\"eth0\") or a MAC address prefixed with \"mac:\" (\"mac:52:54:00:12:34:56\")";
}

/// An IP address with a prefix length: "10.20.0.1/24", "fd00::1/64".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl IpNet {
    /// True when no bit below the prefix is set (a network, not a host address).
    pub fn is_network(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.prefix >= 32 || bits & (u32::MAX >> self.prefix) == 0
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.prefix >= 128 || bits & (u128::MAX >> self.prefix) == 0
            }
        }
    }
}

impl FromStr for IpNet {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = |reason: &str| ValueError::new("address/prefix", s, reason);
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| err("missing \"/prefix\""))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("prefix is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err(&format!("prefix must be 0..={max}")));
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl ConfigValue for IpNet {
    const HINT: &'static str = "write ADDRESS/PREFIX, e.g. \"10.20.0.1/24\" or \"fd00::1/64\"";
}

/// An IEEE 802.1Q VLAN id, 1..=4094 (written as a TOML integer in config files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VlanId(u16);

impl VlanId {
    /// The id, if it is in 1..=4094.
    pub fn new(id: i64) -> Option<Self> {
        u16::try_from(id)
            .ok()
            .filter(|id| (1..=4094).contains(id))
            .map(VlanId)
    }

    /// The numeric id.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for VlanId {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        s.parse::<i64>()
            .ok()
            .and_then(VlanId::new)
            .ok_or_else(|| ValueError::new("VLAN id", s, "must be a whole number from 1 to 4094"))
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A name for a guest, a service or a vfio label: 1..=63 characters,
/// ASCII letters, digits, '-' and '_', starting with a letter or digit.
/// Safe as a libvirt domain name, a file stem and in a log line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = |reason: &str| Err(ValueError::new("name", s, reason));
        if s.is_empty() || s.len() > 63 {
            return err("must be 1 to 63 characters long");
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return err("must start with a letter or digit");
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err("may contain only ASCII letters, digits, '-' and '_'");
        }
        Ok(Name(s.to_string()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ConfigValue for Name {
    const HINT: &'static str =
        "use 1 to 63 ASCII letters, digits, '-' or '_', starting with a letter or digit, e.g. \"web-1\"";
}

/// A host name: dot-separated labels of 1..=63 letters, digits and '-'
/// (not at either end of a label), 253 characters at most.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl Hostname {
    /// The host name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = |reason: &str| Err(ValueError::new("host name", s, reason));
        if s.is_empty() || s.len() > 253 {
            return err("must be 1 to 253 characters long");
        }
        for label in s.split('.') {
            if label.is_empty() || label.len() > 63 {
                return err("each dot-separated label must be 1 to 63 characters");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return err("a label must not start or end with '-'");
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return err("may contain only ASCII letters, digits, '-' and '.'");
            }
        }
        Ok(Hostname(s.to_string()))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ConfigValue for Hostname {
    const HINT: &'static str =
        "use letters, digits and '-', e.g. \"mountain\" or \"mountain.example.org\"";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: ConfigValue + PartialEq + fmt::Debug>(input: &str, canonical: &str) {
        let value: T = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(value.to_string(), canonical, "{input}");
        assert_eq!(
            canonical.parse::<T>().ok(),
            Some(value),
            "{canonical} round trip"
        );
    }

    #[test]
    fn values_round_trip() {
        round_trip::<MacAddr>("52:54:00:AB:cd:01", "52:54:00:ab:cd:01");
        round_trip::<PciAddress>("0000:03:00.0", "0000:03:00.0");
        round_trip::<PciAddress>("03:1f.7", "0000:03:1f.7");
        round_trip::<PciAddress>("00AB:FF:00.1", "00ab:ff:00.1");
        round_trip::<PciId>("1000:0072", "1000:0072");
        round_trip::<PciId>("10DE:1B80", "10de:1b80");
        round_trip::<IfName>("enp3s0f1.100", "enp3s0f1.100");
        round_trip::<LinkRef>("eth0", "eth0");
        round_trip::<LinkRef>("mac:52:54:00:00:00:0A", "mac:52:54:00:00:00:0a");
        round_trip::<IpNet>("10.20.0.1/24", "10.20.0.1/24");
        round_trip::<IpNet>("fd00::1/64", "fd00::1/64");
        round_trip::<Name>("web-1_a", "web-1_a");
        round_trip::<Hostname>("mountain.example.org", "mountain.example.org");
        assert_eq!("20".parse::<VlanId>().map(VlanId::get), Ok(20));
    }

    #[test]
    fn invalid_values_are_rejected() {
        for s in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:zz",
            "525400abcd01",
            "52:54:00:ab:cd:0001",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "mac {s}");
        }
        for s in [
            "03:00",
            "0000:03:20.0",
            "0000:03:00.8",
            "3:0.0",
            "0000:003:00.0",
            "zz:00.0",
        ] {
            assert!(s.parse::<PciAddress>().is_err(), "pci {s}");
        }
        for s in ["1000-0072", "100:0072", "1000:007g"] {
            assert!(s.parse::<PciId>().is_err(), "pci id {s}");
        }
        for s in ["", "a/b", "a b", "eth0:1", "sixteen-chars-xx", ".", ".."] {
            assert!(s.parse::<IfName>().is_err(), "ifname {s:?}");
        }
        for s in ["10.0.0.1", "10.0.0.1/33", "fd00::1/129", "x/24"] {
            assert!(s.parse::<IpNet>().is_err(), "ipnet {s}");
        }
        for s in ["0", "4095", "-1", "x"] {
            assert!(s.parse::<VlanId>().is_err(), "vlan {s}");
        }
        for s in ["", "-web", "web.1", "wéb", &"a".repeat(64)] {
            assert!(s.parse::<Name>().is_err(), "name {s:?}");
        }
        for s in ["", "-a", "a-", "a..b", "a_b"] {
            assert!(s.parse::<Hostname>().is_err(), "hostname {s:?}");
        }
    }

    #[test]
    fn derived_macs_are_stable_unicast_and_local() {
        let a = MacAddr::derive("web", 0);
        assert_eq!(a, MacAddr::derive("web", 0));
        assert_ne!(a, MacAddr::derive("web", 1));
        assert_ne!(a, MacAddr::derive("db", 0));
        assert!(!a.is_multicast());
        assert_eq!(a.0[0] & 2, 2, "locally administered bit");
        assert_eq!(a.to_string()[..9], *"52:54:00:");
    }

    #[test]
    fn network_check_looks_at_host_bits() {
        let net: IpNet = "10.20.0.0/24".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(net.is_network());
        let host: IpNet = "10.20.0.1/24".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(!host.is_network());
        let all: IpNet = "0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(all.is_network());
    }
}
