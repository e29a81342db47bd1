//! What `walden status` shows per selected device, and the queries the
//! guests code uses to refuse only the guests whose devices failed.

use crate::config::PciAddress;
use serde::{Deserialize, Serialize};

/// One selected device (or a selector that selected none) in status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfioDeviceStatus {
    /// PCI address; None when the entry matched no device.
    pub address: Option<String>,
    /// The selecting entry: "host.toml vfio[0]" or "walden.vfio".
    pub selected_by: String,
    /// "vendor:device", e.g. "8086:10d3".
    pub vendor_device: Option<String>,
    /// Class code, 6 hex digits ("020000" = Ethernet).
    pub class: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// Driver before walden bound it (None: no driver).
    pub driver_before: Option<String>,
    /// Driver now.
    pub driver_after: Option<String>,
    /// `/dev/vfio/<group>` when it exists.
    pub dev_node: Option<String>,
    /// Network interfaces the host has on this device now (a NIC still on
    /// its host driver); empty once it is on vfio-pci.
    #[serde(default)]
    pub host_netdevs: Vec<String>,
    /// The entry's label.
    pub label: Option<String>,
    /// Guests whose `[[pci]]` uses it.
    pub guests: Vec<String>,
    /// Why it is not usable, when it is not.
    pub error: Option<String>,
}

/// The result of one apply: every row for status, and counts for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfioReport {
    /// One row per selected device or failed selector, in selector order.
    pub devices: Vec<VfioDeviceStatus>,
    /// Devices newly bound to vfio-pci.
    pub bound: usize,
    /// Devices that already were on vfio-pci.
    pub kept: usize,
    /// Devices given back to the host.
    pub unbound: usize,
}

impl VfioReport {
    /// True when some device or entry failed.
    pub fn failed(&self) -> bool {
        self.devices.iter().any(|d| d.error.is_some())
    }

    /// One line for the step detail: "2 devices on vfio-pci (1 bound, 1 already), 1 given back".
    pub fn summary(&self) -> String {
        let ok = self.devices.iter().filter(|d| d.error.is_none()).count();
        let mut s = format!(
            "{ok} device{} on vfio-pci ({} bound now, {} already)",
            if ok == 1 { "" } else { "s" },
            self.bound,
            self.kept
        );
        if self.unbound > 0 {
            s.push_str(&format!(", {} given back to the host", self.unbound));
        }
        s
    }

    /// Every error, one per line, for the step's failure message.
    pub fn errors(&self) -> String {
        self.devices
            .iter()
            .filter_map(|d| d.error.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Devices that could not be bound: (address, why). Entries that matched
/// no device are not in this list; see [`failed_guests`].
pub fn failed_devices(rows: &[VfioDeviceStatus]) -> Vec<(PciAddress, String)> {
    rows.iter()
        .filter_map(|r| Some((r.address.as_deref()?.parse().ok()?, r.error.clone()?)))
        .collect()
}

/// Guests that must not start because a device they use failed:
/// (guest, why). Other guests are unaffected.
pub fn failed_guests(rows: &[VfioDeviceStatus]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in rows {
        let Some(err) = &r.error else { continue };
        for g in &r.guests {
            if !out.iter().any(|(name, _)| name == g) {
                out.push((g.clone(), format!("PCI passthrough: {err}")));
            }
        }
    }
    out
}

/// The PCI passthrough section of `walden status`: one line per device,
/// then the errors (they are long; a table column would not hold them).
pub fn render_table(rows: &[VfioDeviceStatus]) -> String {
    let dash = |o: Option<&str>| o.unwrap_or("-").to_string();
    let head = [
        "PCI DEVICE",
        "ID",
        "CLASS",
        "GROUP",
        "DRIVER",
        "LABEL",
        "GUESTS",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let before = r.driver_before.as_deref().unwrap_or("none");
            let after = r.driver_after.as_deref().unwrap_or("none");
            let driver = if r.address.is_none() {
                "-".to_string()
            } else if before == after {
                after.to_string()
            } else {
                format!("{before} -> {after}")
            };
            let state = if r.error.is_some() { " FAILED" } else { "" };
            [
                format!("{}{state}", r.address.as_deref().unwrap_or(&r.selected_by)),
                dash(r.vendor_device.as_deref()),
                dash(r.class.as_deref()),
                r.iommu_group.map_or("-".into(), |g| g.to_string()),
                driver,
                dash(r.label.as_deref()),
                if r.guests.is_empty() {
                    "-".into()
                } else {
                    r.guests.join(",")
                },
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: Vec<&str>| {
        let text: Vec<String> = row
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(head.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    for r in rows {
        if let Some(e) = &r.error {
            out.push_str(&format!("vfio error: {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(address: &str, error: Option<&str>) -> VfioDeviceStatus {
        VfioDeviceStatus {
            address: Some(address.into()),
            selected_by: "host.toml vfio[0]".into(),
            vendor_device: Some("8086:10d3".into()),
            class: Some("020000".into()),
            iommu_group: Some(3),
            driver_before: Some("e1000e".into()),
            driver_after: Some(
                if error.is_some() {
                    "e1000e"
                } else {
                    "vfio-pci"
                }
                .into(),
            ),
            dev_node: Some("/dev/vfio/3".into()),
            host_netdevs: Vec::new(),
            label: None,
            guests: vec!["storage".into(), "web".into()],
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn renders_devices_drivers_and_errors() {
        let text = render_table(&[row("0000:00:03.0", None), row("0000:00:04.0", Some("boom"))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PCI DEVICE           ID         CLASS   GROUP  DRIVER              LABEL  GUESTS"
        );
        assert_eq!(
            lines[1],
            "0000:00:03.0         8086:10d3  020000  3      e1000e -> vfio-pci  -      storage,web"
        );
        assert!(
            lines[2].starts_with("0000:00:04.0 FAILED  8086:10d3"),
            "{text}"
        );
        assert!(lines[2].contains("  e1000e  "), "{text}");
        assert_eq!(lines[3], "vfio error: boom");
    }

    #[test]
    fn status_json_without_vfio_still_parses() {
        let mut s = crate::supervisor::status::Status::new("pid1");
        s.vfio.push(row("0000:00:03.0", None));
        let mut v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["vfio"][0]["dev_node"], "/dev/vfio/3");
        v.as_object_mut().unwrap().remove("vfio");
        let back: crate::supervisor::status::Status = serde_json::from_value(v).unwrap();
        assert!(back.vfio.is_empty());
    }
}
