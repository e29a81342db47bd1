//! Selection by address, id, id + index, id + all; unknown devices; the
//! `walden.vfio=` parser.

use crate::config::{IdSelect, PciAddress, PciId, VfioSelect};
use crate::vfio::select::{parse_cmdline, select, Selector, CMDLINE_ORIGIN};
use crate::vfio::sysfs::PciDevice;

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn dev(a: &str, vendor: u16, device: u16) -> PciDevice {
    PciDevice {
        address: addr(a),
        id: PciId { vendor, device },
        class: 0x020000,
        driver: Some("e1000e".into()),
        iommu_group: Some(1),
        driver_override: None,
    }
}

fn machine() -> Vec<PciDevice> {
    vec![
        dev("0000:00:02.0", 0x8086, 0x10d3),
        dev("0000:00:03.0", 0x8086, 0x10d3),
        dev("0000:00:04.0", 0x8086, 0x1533),
        dev("0000:03:00.0", 0x1000, 0x0072),
    ]
}

fn entry(i: usize, select: VfioSelect) -> Selector {
    Selector {
        origin: format!("host.toml vfio[{i}]"),
        select,
        label: None,
        entry: Some(i),
    }
}

fn id(s: &str, which: IdSelect) -> VfioSelect {
    VfioSelect::Id {
        id: s.parse().unwrap(),
        which,
    }
}

fn selected(sel: &[Selector]) -> Vec<String> {
    let s = select(sel, &machine());
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    s.selected.iter().map(|x| x.address.to_string()).collect()
}

fn error(sel: &[Selector]) -> String {
    let s = select(sel, &machine());
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    s.errors[0].1.to_string()
}

#[test]
fn selects_by_address_and_by_unique_id() {
    let sel = [
        entry(0, VfioSelect::Address(addr("03:00.0"))),
        entry(1, id("8086:1533", IdSelect::Only)),
    ];
    assert_eq!(selected(&sel), ["0000:03:00.0", "0000:00:04.0"]);
}

#[test]
fn selects_by_id_with_index_from_zero_in_address_order_or_all() {
    assert_eq!(
        selected(&[entry(0, id("8086:10d3", IdSelect::Index(1)))]),
        ["0000:00:03.0"]
    );
    assert_eq!(
        selected(&[entry(0, id("8086:10d3", IdSelect::Index(0)))]),
        ["0000:00:02.0"]
    );
    assert_eq!(
        selected(&[entry(0, id("8086:10d3", IdSelect::All))]),
        ["0000:00:02.0", "0000:00:03.0"]
    );
}

#[test]
fn unknown_address_names_the_devices_on_that_bus() {
    let e = error(&[entry(0, VfioSelect::Address(addr("0000:00:09.0")))]);
    assert_eq!(
        e,
        "host.toml vfio[0]: no PCI device 0000:00:09.0 on this machine; `lspci -D` lists the addresses; \
         on that bus: 0000:00:02.0 (8086:10d3), 0000:00:03.0 (8086:10d3), 0000:00:04.0 (8086:1533)"
    );
    let e = error(&[entry(0, VfioSelect::Address(addr("0000:07:00.0")))]);
    assert!(e.ends_with("`lspci -D` lists the addresses"), "{e}");
}

#[test]
fn unknown_id_names_the_ids_this_vendor_has() {
    let e = error(&[entry(2, id("8086:10d4", IdSelect::Only))]);
    assert_eq!(
        e,
        "host.toml vfio[2]: no PCI device with id 8086:10d4 on this machine; devices of vendor 8086 here: \
         8086:10d3 at 0000:00:02.0, 8086:10d3 at 0000:00:03.0, 8086:1533 at 0000:00:04.0"
    );
    let e = error(&[entry(0, id("10de:1b80", IdSelect::All))]);
    assert!(e.contains("no device of vendor 10de at all"), "{e}");
}

#[test]
fn ambiguous_id_and_index_out_of_range_list_the_matches() {
    let e = error(&[entry(0, id("8086:10d3", IdSelect::Only))]);
    assert_eq!(
        e,
        "host.toml vfio[0]: 2 devices have id 8086:10d3 (0000:00:02.0, 0000:00:03.0); \
         add index = N (from 0, in this order) or all = true"
    );
    let e = error(&[entry(0, id("8086:10d3", IdSelect::Index(2)))]);
    assert!(e.contains("index = 2 but only 2 device(s)"), "{e}");
    assert!(e.contains("index counts from 0"), "{e}");
}

#[test]
fn a_device_selected_twice_is_an_error_for_the_second_entry_only() {
    let sel = [
        entry(0, VfioSelect::Address(addr("0000:00:02.0"))),
        entry(1, id("8086:10d3", IdSelect::All)),
    ];
    let s = select(&sel, &machine());
    let got: Vec<String> = s.selected.iter().map(|x| x.address.to_string()).collect();
    assert_eq!(got, ["0000:00:02.0", "0000:00:03.0"]);
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].0, 1);
    assert_eq!(
        s.errors[0].1.to_string(),
        "host.toml vfio[1]: 0000:00:02.0 is already selected by host.toml vfio[0]; list each device once"
    );
}

#[test]
fn a_command_line_device_also_in_host_toml_belongs_to_the_entry() {
    let (mut sel, errors) = parse_cmdline("walden.vfio=0000:03:00.0");
    assert!(errors.is_empty());
    sel.push(entry(0, VfioSelect::Address(addr("0000:03:00.0"))));
    let s = select(&sel, &machine());
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.selected.len(), 1);
    assert_eq!(s.selected[0].selector, 1);
    // And the other way round (host.toml first, as apply orders them).
    sel.reverse();
    let s = select(&sel, &machine());
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.selected.len(), 1);
    assert_eq!(s.selected[0].selector, 0);
}

#[test]
fn walden_vfio_parameter_takes_addresses_and_ids() {
    let (sel, errors) = parse_cmdline(
        "BOOT_IMAGE=/vmlinuz walden.vfio=0000:01:00.0,10DE:1b80,,02:00.1 quiet walden.vfio=1000:0072 walden.vfioo=x",
    );
    let got: Vec<VfioSelect> = sel.iter().map(|s| s.select).collect();
    assert_eq!(
        got,
        vec![
            VfioSelect::Address(addr("0000:01:00.0")),
            id("10de:1b80", IdSelect::All),
            VfioSelect::Address(addr("0000:02:00.1")),
            id("1000:0072", IdSelect::All),
        ]
    );
    assert!(sel
        .iter()
        .all(|s| s.origin == CMDLINE_ORIGIN && s.entry.is_none()));
    assert!(errors.is_empty());
}

#[test]
fn walden_vfio_parameter_reports_bad_items() {
    let (sel, errors) = parse_cmdline("walden.vfio=0000:01:00.9,gpu,10de:1b8");
    assert!(sel.is_empty());
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        msgs[1],
        "walden.vfio: \"gpu\" is neither a PCI address (0000:03:00.0) nor a vendor:device id (10de:1b80)"
    );
    assert!(parse_cmdline("quiet console=ttyS0").0.is_empty());
}
