//! Which devices the config (host.toml `[[vfio]]`) and the kernel command
//! line (`walden.vfio=`) select, given the devices the machine has (pure).

use super::error::VfioError;
use super::sysfs::PciDevice;
use crate::config::{IdSelect, PciAddress, PciId, VfioDevice, VfioSelect};
use std::collections::HashMap;

/// Origin shown for devices selected on the kernel command line.
pub const CMDLINE_ORIGIN: &str = "walden.vfio";

/// One way of selecting devices: a `[[vfio]]` entry or a `walden.vfio=` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Where it came from, for messages ("host.toml vfio[1]", "walden.vfio").
    pub origin: String,
    /// What it selects.
    pub select: VfioSelect,
    /// The entry's label.
    pub label: Option<String>,
    /// Index of the host.toml `[[vfio]]` entry; None for the command line.
    pub entry: Option<usize>,
}

/// The selectors of host.toml's `[[vfio]]` entries, in file order.
pub fn from_config(entries: &[VfioDevice]) -> Vec<Selector> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| Selector {
            origin: if e.at.key.is_empty() {
                format!("host.toml vfio[{i}]")
            } else {
                e.at.to_string()
            },
            select: e.select,
            label: e.label.as_ref().map(|l| l.to_string()),
            entry: Some(i),
        })
        .collect()
}

/// Parse `walden.vfio=ADDR,ID,...` from a kernel command line. An address
/// selects one device, an id every device with that id (identical GPUs
/// are the usual reason to name an id there). Several `walden.vfio=`
/// parameters add up.
pub fn parse_cmdline(cmdline: &str) -> (Vec<Selector>, Vec<VfioError>) {
    let mut selectors = Vec::new();
    let mut errors = Vec::new();
    let values = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("walden.vfio="));
    for item in values.flat_map(|v| v.split(',')).filter(|i| !i.is_empty()) {
        let select = if item.contains('.') {
            item.parse::<PciAddress>().ok().map(VfioSelect::Address)
        } else {
            item.parse::<PciId>().ok().map(|id| VfioSelect::Id {
                id,
                which: IdSelect::All,
            })
        };
        match select {
            Some(select) => selectors.push(Selector {
                origin: CMDLINE_ORIGIN.to_string(),
                select,
                label: None,
                entry: None,
            }),
            None => errors.push(VfioError::Cmdline {
                value: item.to_string(),
            }),
        }
    }
    (selectors, errors)
}

/// A device picked by a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    /// The device.
    pub address: PciAddress,
    /// Index of the selector (in the slice given to [`select`]).
    pub selector: usize,
}

/// The outcome of [`select`]: what was found, and per selector what was not.
#[derive(Debug, Default)]
pub struct Selection {
    /// Selected devices, each once, in selector order.
    pub selected: Vec<Selected>,
    /// (selector index, why it selected nothing or something twice).
    pub errors: Vec<(usize, VfioError)>,
}

/// Resolve selectors against the machine's devices. A selector that
/// matches nothing (or too much) is an error for that selector only.
/// `index` counts from 0 in PCI address order (`devices` is sorted).
pub fn select(selectors: &[Selector], devices: &[PciDevice]) -> Selection {
    let mut out = Selection::default();
    let mut first: HashMap<PciAddress, usize> = HashMap::new();
    for (si, s) in selectors.iter().enumerate() {
        let found = match s.select {
            VfioSelect::Address(address) => by_address(s, address, devices),
            VfioSelect::Id { id, which } => by_id(s, id, which, devices),
        };
        match found {
            Ok(addresses) => {
                for address in addresses {
                    match first.get(&address) {
                        // The same device twice from the command line is harmless.
                        Some(&f) if selectors[f].entry.is_none() && s.entry.is_none() => {}
                        // A device on the command line and in host.toml: the
                        // [[vfio]] entry owns it (label, guests).
                        Some(&f) if selectors[f].entry.is_none() => {
                            if let Some(sel) =
                                out.selected.iter_mut().find(|x| x.address == address)
                            {
                                sel.selector = si;
                            }
                            first.insert(address, si);
                        }
                        Some(_) if s.entry.is_none() => {}
                        Some(&f) => out.errors.push((
                            si,
                            VfioError::Duplicate {
                                origin: s.origin.clone(),
                                address,
                                first: selectors[f].origin.clone(),
                            },
                        )),
                        None => {
                            first.insert(address, si);
                            out.selected.push(Selected {
                                address,
                                selector: si,
                            });
                        }
                    }
                }
            }
            Err(e) => out.errors.push((si, e)),
        }
    }
    out
}

fn by_address(
    s: &Selector,
    address: PciAddress,
    devices: &[PciDevice],
) -> Result<Vec<PciAddress>, VfioError> {
    if devices.iter().any(|d| d.address == address) {
        return Ok(vec![address]);
    }
    let same_bus: Vec<String> = devices
        .iter()
        .filter(|d| d.address.domain == address.domain && d.address.bus == address.bus)
        .map(|d| format!("{} ({})", d.address, d.id))
        .collect();
    let near = if same_bus.is_empty() {
        String::new()
    } else {
        format!("; on that bus: {}", same_bus.join(", "))
    };
    Err(VfioError::NoSuchAddress {
        origin: s.origin.clone(),
        address,
        near,
    })
}

fn by_id(
    s: &Selector,
    id: PciId,
    which: IdSelect,
    devices: &[PciDevice],
) -> Result<Vec<PciAddress>, VfioError> {
    let matches: Vec<PciAddress> = devices
        .iter()
        .filter(|d| d.id == id)
        .map(|d| d.address)
        .collect();
    let list = || {
        matches
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if matches.is_empty() {
        let mut same_vendor: Vec<String> = devices
            .iter()
            .filter(|d| d.id.vendor == id.vendor)
            .map(|d| format!("{} at {}", d.id, d.address))
            .collect();
        same_vendor.dedup();
        let others = if same_vendor.is_empty() {
            format!(
                "there is no device of vendor {:04x} at all; `lspci -nn` shows the ids",
                id.vendor
            )
        } else {
            format!(
                "devices of vendor {:04x} here: {}",
                id.vendor,
                same_vendor.join(", ")
            )
        };
        return Err(VfioError::NoSuchId {
            origin: s.origin.clone(),
            id,
            others,
        });
    }
    match which {
        IdSelect::All => Ok(matches),
        IdSelect::Only if matches.len() == 1 => Ok(matches),
        IdSelect::Only => Err(VfioError::AmbiguousId {
            origin: s.origin.clone(),
            id,
            count: matches.len(),
            list: list(),
        }),
        IdSelect::Index(i) => match matches.get(i as usize) {
            Some(a) => Ok(vec![*a]),
            None => Err(VfioError::IndexOutOfRange {
                origin: s.origin.clone(),
                id,
                index: i,
                count: matches.len(),
                list: list(),
            }),
        },
    }
}
