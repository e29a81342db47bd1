//! DHCP clients as supervised services: one `dhcpcd` per interface with
//! `dhcp = true` (the image ships dhcpcd-base). IPv4 only: IPv6 addresses
//! come from the kernel's SLAAC, which stays on.

use crate::config::NetworkConfig;
use crate::supervisor::service::{RestartPolicy, ServiceSpec};
use std::time::Duration;

/// The DHCP client binary in the image.
pub const DHCPCD: &str = "/usr/sbin/dhcpcd";

/// Interfaces with `dhcp = true`, in config order.
pub fn dhcp_interfaces(config: &NetworkConfig) -> Vec<String> {
    let links = config.links.iter().map(|l| (l.name.as_str(), l.ip.dhcp));
    let bonds = config.bonds.iter().map(|b| (b.name.as_str(), b.ip.dhcp));
    let bridges = config.bridges.iter().map(|b| (b.name.as_str(), b.ip.dhcp));
    let vlans = config.vlans.iter().map(|v| (v.name.as_str(), v.ip.dhcp));
    links
        .chain(bonds)
        .chain(bridges)
        .chain(vlans)
        .filter(|(_, dhcp)| *dhcp)
        .map(|(n, _)| n.to_string())
        .collect()
}

/// One service `dhcp-IFACE` per DHCP interface: dhcpcd in the foreground,
/// restarted whenever it exits. With `[network.dns]` set, dhcpcd leaves
/// resolv.conf alone (walden writes it); it never sets the hostname
/// (host.toml does).
pub fn dhcp_services(config: &NetworkConfig) -> Vec<ServiceSpec> {
    let static_dns = !config.dns.servers.is_empty() || !config.dns.search.is_empty();
    dhcp_interfaces(config)
        .into_iter()
        .map(|iface| {
            let mut argv = vec![
                DHCPCD.to_string(),
                "--nobackground".into(),
                "--ipv4only".into(),
                "--nohook".into(),
                "hostname".into(),
            ];
            if static_dns {
                argv.extend(["--nohook".to_string(), "resolv.conf".to_string()]);
            }
            argv.push(iface.clone());
            let mut spec = ServiceSpec::new(format!("dhcp-{iface}"), &[]);
            spec.argv = argv;
            spec.restart = RestartPolicy::Always;
            // dhcpcd releases nothing on SIGTERM (that needs -k); give it
            // a moment to save its lease.
            spec.stop_timeout = Duration::from_secs(5);
            spec
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = r#"schema = 1
hostname = "h"
[[network.link]]
name = "eth0"
[[network.link]]
name = "eth1"
dhcp = true
[[network.bridge]]
name = "br0"
ports = ["eth0"]
dhcp = true
"#;

    #[test]
    fn one_dhcpcd_per_dhcp_interface() {
        let config = crate::config::from_strs(HOST, &[]).unwrap();
        let specs = dhcp_services(&config.host.network);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dhcp-eth1", "dhcp-br0"]);
        assert_eq!(
            specs[1].argv,
            [
                DHCPCD,
                "--nobackground",
                "--ipv4only",
                "--nohook",
                "hostname",
                "br0"
            ]
        );
        assert_eq!(specs[1].restart, RestartPolicy::Always);
    }

    #[test]
    fn static_dns_keeps_dhcpcd_off_resolv_conf() {
        let host = format!("{HOST}[network.dns]\nservers = [\"192.0.2.53\"]\n");
        let config = crate::config::from_strs(&host, &[]).unwrap();
        let specs = dhcp_services(&config.host.network);
        assert!(specs[0]
            .argv
            .windows(2)
            .any(|w| w == ["--nohook", "resolv.conf"]));
        assert_eq!(specs[0].argv.last().map(String::as_str), Some("eth1"));
    }
}
