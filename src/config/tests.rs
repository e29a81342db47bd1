//! Table-driven tests over the fixtures in test_data/config and examples/.
//!
//! Each `test_data/config/invalid/<case>/` holds a config directory and an
//! `expected.txt` with one line per problem, in the reported order:
//! `FILE:LINE:COLUMN | KEY | message substring`.

use super::*;
use std::fs;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// One expected problem.
#[derive(Debug)]
struct Expected {
    location: String,
    key: String,
    message: String,
}

fn expected(case: &Path) -> Vec<Expected> {
    let text = fs::read_to_string(case.join("expected.txt"))
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.splitn(3, " | ").collect();
            assert_eq!(
                parts.len(),
                3,
                "{}: bad expected line {l:?}",
                case.display()
            );
            Expected {
                location: parts[0].to_string(),
                key: parts[1].trim().to_string(),
                message: parts[2].to_string(),
            }
        })
        .collect()
}

#[test]
fn invalid_cases_report_every_problem_where_expected() {
    let cases = subdirs(&root().join("test_data/config/invalid"));
    assert!(cases.len() >= 25, "only {} invalid cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let want = expected(case);
        let got = match load_dir(case) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without problems"));
                continue;
            }
            Err(d) => d,
        };
        if got.len() != want.len() {
            failures.push(format!(
                "{name}: expected {} problems, got {}:\n{got}",
                want.len(),
                got.len()
            ));
            continue;
        }
        for (g, w) in got.iter().zip(&want) {
            let location = format!("{}:{}:{}", g.file.display(), g.line, g.column);
            if location != w.location || g.key != w.key || !g.message.contains(&w.message) {
                failures.push(format!(
                    "{name}:\n  expected {} | {} | {}\n  got      {location} | {} | {}",
                    w.location, w.key, w.message, g.key, g.message
                ));
            }
            if g.hint.as_deref().is_none_or(str::is_empty) {
                failures.push(format!("{name}: no hint for {g}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_example_loads_without_warnings() {
    let examples = subdirs(&root().join("examples"));
    assert!(examples.len() >= 4, "examples missing");
    for dir in examples {
        match load_dir(&dir) {
            Ok(config) => assert!(
                config.warnings.is_empty(),
                "{}: {:?}",
                dir.display(),
                config.warnings
            ),
            Err(d) => panic!("{}:\n{d}", dir.display()),
        }
    }
}

#[test]
fn every_valid_fixture_loads() {
    for dir in subdirs(&root().join("test_data/config/valid")) {
        if let Err(d) = load_dir(&dir) {
            panic!("{}:\n{d}", dir.display());
        }
    }
}

fn load_ok(dir: &str) -> Config {
    load_dir(&root().join(dir)).unwrap_or_else(|d| panic!("{dir}:\n{d}"))
}

#[test]
fn full_fixture_values_and_defaults() {
    let c = load_ok("test_data/config/valid/full");
    let h = &c.host;
    assert_eq!(h.hostname, "full.example.org");
    assert_eq!(h.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(h.health.timeout, std::time::Duration::from_secs(30 * 60));
    assert!(!h.network.safe_apply);

    let br = &h.network.bridges[0];
    assert_eq!(br.ports.len(), 2);
    assert_eq!(br.ports[0].link.to_string(), "bond0");
    assert_eq!(br.ports[0].pvid.map(VlanId::get), Some(1));
    assert_eq!(
        br.ports[0]
            .tagged
            .iter()
            .map(|v| v.get())
            .collect::<Vec<_>>(),
        [10, 20]
    );
    assert_eq!(br.ports[1].link.to_string(), "mac:52:54:00:00:00:03");
    // `vlans = [1]` plus the VLAN interface on the bridge (20).
    assert_eq!(
        br.vlans.iter().map(|v| v.get()).collect::<Vec<_>>(),
        [1, 20]
    );
    assert_eq!(br.ports[0].at.key, "network.bridge[0].ports[0]");

    let bond = &h.network.bonds[0];
    assert_eq!(bond.mode, BondMode::Lacp);
    assert_eq!(bond.lacp_rate, Some(LacpRate::Fast));
    assert_eq!(bond.miimon, std::time::Duration::from_millis(100));
    assert_eq!(h.network.routes[0].to, RouteTo::Default);
    assert_eq!(
        h.network.routes[1].via,
        Some("fd00::1".parse().unwrap_or_else(|e| panic!("{e}")))
    );
    assert_eq!(h.network.dns.search, ["example.org"]);

    assert_eq!(h.vfio.len(), 3);
    assert!(matches!(
        h.vfio[1].select,
        VfioSelect::Id {
            which: IdSelect::All,
            ..
        }
    ));
    assert!(matches!(h.swap, Some(SwapConfig::Device(MountSource::Label(ref l))) if l == "swap"));
    assert_eq!(h.mounts[0].target, Path::new("/var/lib/walden/vm"));
    assert!(h.mounts[0].read_only);

    let s = &h.services[0];
    assert_eq!(s.stop_signal, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s.stop_timeout, std::time::Duration::from_secs(10));
    assert_eq!(s.restart, RestartPolicy::Always);
    assert_eq!(s.ready, Readiness::Path("/run/exporter.sock".into()));
    assert_eq!(s.env.get("A_B").map(String::as_str), Some("1"));
    let s2 = &h.services[1];
    assert_eq!(s2.stop_signal, nix::sys::signal::Signal::SIGINT);
    assert_eq!(
        s2.ready,
        Readiness::Delay(std::time::Duration::from_secs(2))
    );

    // Guests come sorted by name.
    let names: Vec<&str> = c.guests.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let a = c.guest("alpha").unwrap_or_else(|| panic!("alpha"));
    assert_eq!(a.memory, Size(1536 << 20));
    assert_eq!(a.cpu.max, Some(Percent(60)));
    assert!(matches!(&a.boot, Boot::Kernel { cmdline: Some(c), .. } if c == "console=ttyS0"));
    assert!(
        matches!(&a.disks[1].source, DiskSource::Device(p) if p == Path::new("/dev/disk/by-id/ata-X"))
    );
    assert_eq!(a.nics[0].mac, MacAddr::derive("alpha", 0));
    assert!(a.nics[0].mac_derived);
    assert_eq!(a.pci.len(), 2);

    let b = c.guest("beta").unwrap_or_else(|| panic!("beta"));
    // Defaults.
    assert_eq!(b.vcpus, 1);
    assert!(b.autostart);
    assert_eq!(b.restart, RestartPolicy::OnFailure);
    assert_eq!(b.shutdown_timeout, std::time::Duration::from_secs(120));
    assert_eq!(b.boot, Boot::Firmware(Firmware::Bios));
    assert!(!b.balloon && !b.vnc);
    assert_eq!(b.nics[0].model, NicModel::Virtio);
}

#[test]
fn after_a_manual_guest_is_a_warning() {
    let host = "schema = 1\nhostname = \"h\"\n[[network.bridge]]\nname = \"br0\"\ndhcp = true\n";
    let a = "schema = 1\nmemory = \"64MiB\"\nafter = [\"b\"]\n";
    let b = "schema = 1\nmemory = \"64MiB\"\nautostart = false\n";
    let c = from_strs(host, &[("a", a), ("b", b)]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert_eq!(
        (w.file.as_path(), w.line, w.column),
        (Path::new("guests/a.toml"), 3, 10)
    );
    assert_eq!(w.key, "after[0]");
}

#[test]
fn no_address_anywhere_is_a_warning() {
    let c = from_strs("schema = 1\nhostname = \"h\"\n", &[]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].message.contains("not be reachable"));
}

#[test]
fn host_facts_warn_about_memory_and_cpus() {
    let c = load_ok("examples/bonded-vlans");
    let small = HostFacts {
        mem_bytes: 8 << 30,
        cpus: 2,
    };
    let w = check_against_host(&c, small);
    let text: Vec<String> = w.iter().map(|d| d.to_string()).collect();
    // db (8GiB, 4 vcpus) alone is too big; web's 2 vcpus fit.
    assert!(
        text.iter()
            .any(|t| t.contains("guests/db.toml") && t.contains("4 vcpus")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("memory") && t.contains("8GiB")),
        "{text:?}"
    );
    let big = HostFacts {
        mem_bytes: 64 << 30,
        cpus: 16,
    };
    assert!(check_against_host(&c, big).is_empty());
}

#[test]
fn host_facts_read_this_machine() {
    let facts = HostFacts::read(Path::new("/proc")).unwrap_or_else(|| panic!("no /proc/meminfo"));
    assert!(facts.mem_bytes > 64 << 20, "{facts:?}");
    assert!(facts.cpus >= 1);
    assert!(HostFacts::read(Path::new("/nonexistent")).is_none());
}

#[test]
fn missing_host_file_is_its_own_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        load(dir.path()),
        Err(ConfigError::NoHostFile { .. })
    ));
    let d = load_dir(dir.path()).err().unwrap_or_default();
    assert_eq!(d.len(), 1);
    assert_eq!(d.0[0].line, 0);
}

#[test]
fn diagnostics_serialize_for_json() {
    let d = load_dir(&root().join("test_data/config/invalid/unknown-key-top"))
        .err()
        .unwrap_or_default();
    let json = serde_json::to_value(&d).unwrap_or_default();
    assert_eq!(json[0]["file"], "host.toml");
    assert_eq!(json[0]["line"], 3);
    assert_eq!(json[0]["column"], 1);
    assert_eq!(json[0]["key"], "hostnmae");
    assert_eq!(json[0]["hint"], "did you mean `hostname`?");
}

#[test]
fn guest_disks_on_no_mount_are_a_warning() {
    let host = "schema = 1\nhostname = \"h\"\n[[network.bridge]]\nname = \"br0\"\ndhcp = true\n\
                [[mount]]\nwhat = \"LABEL=vm\"\nwhere = \"/srv/vm\"\n";
    let guest = "schema = 1\nmemory = \"64MiB\"\n\
                 [boot]\nkernel = \"/config/images/k\"\n\
                 [[disk]]\npath = \"/srv/vm/a.qcow2\"\nbase = \"/var/lib/walden/base.qcow2\"\n\
                 [[disk]]\npath = \"/srv/other/../vm/b.qcow2\"\nsize = \"1GiB\"\n\
                 [[disk]]\npath = \"/srv/vmx/c.qcow2\"\nsize = \"1GiB\"\n";
    let c = from_strs(host, &[("a", guest)]).unwrap_or_else(|d| panic!("{d}"));
    let got: Vec<(String, u32, String)> = c
        .warnings
        .iter()
        .map(|w| (w.key.clone(), w.line, w.message.clone()))
        .collect();
    // The kernel on the config disk is fine; /srv/other/../vm is /srv/vm;
    // /srv/vmx is not under /srv/vm.
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, "disk[0].base");
    assert!(
        got[0]
            .2
            .contains("the /var overlay, whose upper layer is on the config disk"),
        "{got:?}"
    );
    assert_eq!((got[1].0.as_str(), got[1].1), ("disk[2].path", 12));
    assert!(got[1].2.contains("lives in RAM"), "{got:?}");
}

#[test]
fn network_shares_and_partuuids_are_mounts() {
    let host = "schema = 1\nhostname = \"h\"\n[[network.bridge]]\nname = \"br0\"\ndhcp = true\n\
                [[mount]]\nwhat = \"nas:/export/vm\"\nwhere = \"/srv/nfs\"\nfstype = \"nfs4\"\n\
                [[mount]]\nwhat = \"//nas/iso\"\nwhere = \"/srv/iso\"\nfstype = \"cifs\"\n\
                options = [\"guest\", \"vers=3.0\"]\nread_only = true\n\
                [[mount]]\nwhat = \"PARTUUID=0a1b-02\"\nwhere = \"/srv/vm\"\n\
                [swap]\nfile = \"/srv/vm/swap\"\nsize = \"1GiB\"\n";
    let c = from_strs(host, &[]).unwrap_or_else(|d| panic!("{d}"));
    let m = &c.host.mounts;
    assert_eq!(m[0].what, MountSource::Network("nas:/export/vm".into()));
    assert!(m[0].is_network() && m[1].is_network() && !m[2].is_network());
    assert_eq!(m[1].options, ["guest", "vers=3.0"]);
    assert_eq!(m[2].what, MountSource::PartUuid("0a1b-02".into()));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
