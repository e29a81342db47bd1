//! Golden-file tests of domain_xml over test_data/guests/<case>/, plus the
//! arithmetic and naming rules. `WALDEN_BLESS=1` rewrites the goldens.

use super::*;
use crate::config::{from_strs, Config, GuestConfig};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/guests")
}

/// Every case directory, sorted.
fn cases() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(cases_dir())
        .unwrap_or_else(|e| panic!("test_data/guests: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Load a case's guest (its one NAME.toml) through the real config loader,
/// with the shared test_data/guests/host.toml.
fn load_case(case: &Path) -> Config {
    let host = fs::read_to_string(cases_dir().join("host.toml"))
        .unwrap_or_else(|e| panic!("host.toml: {e}"));
    let guests: Vec<(String, String)> = fs::read_dir(case)
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (stem, text)
        })
        .collect();
    assert_eq!(
        guests.len(),
        1,
        "{}: one guest file per case",
        case.display()
    );
    let refs: Vec<(&str, &str)> = guests
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    from_strs(&host, &refs).unwrap_or_else(|d| panic!("{}: {d:?}", case.display()))
}

fn env_for(config: &Config) -> DomainEnv {
    let mut env = DomainEnv::new(DomainType::Kvm);
    env.pci = DomainEnv::pci_labels(&config.host);
    env
}

fn render(guest: &GuestConfig, env: &DomainEnv) -> String {
    domain_xml(guest, env).unwrap_or_else(|e| panic!("{e}"))
}

fn guest_of(case: &str) -> (GuestConfig, DomainEnv) {
    let config = load_case(&cases_dir().join(case));
    let env = env_for(&config);
    (config.guests[0].clone(), env)
}

#[test]
fn golden_domain_xml_per_feature_group() {
    let bless = std::env::var("WALDEN_BLESS").as_deref() == Ok("1");
    let cases = cases();
    assert!(cases.len() >= 7, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let config = load_case(case);
        let xml = render(&config.guests[0], &env_for(&config));
        let golden = case.join("domain.xml");
        if bless {
            fs::write(&golden, &xml).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
            continue;
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if want != xml {
            failures.push(format!(
                "{}: differs (WALDEN_BLESS=1 rewrites it)\n--- got ---\n{xml}",
                golden.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn goldens_are_valid_libvirt_domain_xml() {
    let validate = Path::new("/usr/bin/virt-xml-validate");
    if !validate.exists() || !Path::new("/usr/bin/xmllint").exists() {
        let why = "virt-xml-validate or xmllint is not installed (apt install libvirt-clients libxml2-utils)";
        if std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    for case in cases() {
        let golden = case.join("domain.xml");
        let out = Command::new(validate)
            .arg(&golden)
            .arg("domain")
            .output()
            .unwrap_or_else(|e| panic!("virt-xml-validate: {e}"));
        assert!(
            out.status.success(),
            "{}: {}{}",
            golden.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn output_is_deterministic_and_hash_tracks_changes() {
    for case in cases() {
        let config = load_case(&case);
        let env = env_for(&config);
        let a = render(&config.guests[0], &env);
        let b = render(&config.guests[0].clone(), &env.clone());
        assert_eq!(a, b, "{}", case.display());
        let hash = config_hash(&a).unwrap_or_else(|| panic!("no hash in {a}"));
        assert_eq!(hash.len(), 71);
        assert!(!hash.ends_with("0000000000"), "placeholder left: {hash}");
    }
    let (mut g, env) = guest_of("nics");
    let before = render(&g, &env);
    // A VLAN is not in libvirt's part of the XML, only in the metadata:
    // the hash must still change.
    g.nics[0].vlan = crate::config::VlanId::new(30);
    let after = render(&g, &env);
    assert_ne!(config_hash(&before), config_hash(&after));
    assert!(after.contains("tap='wg-router-0' bridge='br0' vlan='30'"));
}

#[test]
fn config_hash_is_found_in_libvirts_reformatted_copy() {
    let (g, env) = guest_of("minimal");
    let ours = render(&g, &env);
    let hash = config_hash(&ours).map(str::to_string);
    let libvirt = ours.replace('\'', "\"");
    assert_eq!(config_hash(&libvirt).map(str::to_string), hash);
    assert_eq!(config_hash("<domain/>"), None);
    assert_eq!(config_hash("hash='sha256:xyz'"), None);
}

#[test]
fn uuid_is_stable_per_name() {
    let a = uuid("storage");
    // Pinned: changing the derivation would give every guest a new UUID.
    assert_eq!(a, "124cbe37-7bb3-8c30-b316-0514dac0659e");
    assert_eq!(a, uuid("storage"));
    assert_ne!(a, uuid("storage2"));
    let parts: Vec<usize> = a.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12]);
    assert_eq!(&a[14..15], "8", "version 8");
    assert!("89ab".contains(&a[19..20]), "RFC 9562 variant");
}

#[test]
fn cpu_quota_is_for_the_whole_domain() {
    assert_eq!(cpu_quota(CPU_PERIOD_US, 4, 60), 240_000);
    assert_eq!(cpu_quota(CPU_PERIOD_US, 1, 1), 1_000, "libvirt's minimum");
    assert_eq!(cpu_quota(CPU_PERIOD_US, 2, 50), 100_000);
    assert_eq!(cpu_quota(CPU_PERIOD_US, 255, 100), 25_500_000);
    let (g, env) = guest_of("cpu");
    let xml = render(&g, &env);
    assert!(
        xml.contains("<global_period>100000</global_period>"),
        "{xml}"
    );
    assert!(xml.contains("<global_quota>240000</global_quota>"), "{xml}");
}

#[test]
fn tcg_hosts_get_qemu_domains_without_host_cpu() {
    let (g, mut env) = guest_of("minimal");
    env.domain_type = DomainType::Qemu;
    let xml = render(&g, &env);
    assert!(xml.starts_with("<domain type='qemu'>"), "{xml}");
    assert!(!xml.contains("host-passthrough"), "{xml}");
}

#[test]
fn unresolved_pci_label_is_an_error_naming_the_entry() {
    let (g, mut env) = guest_of("pci");
    env.pci.clear();
    let e = domain_xml(&g, &env).err().map(|e| e.to_string());
    let e = e.unwrap_or_default();
    assert!(
        e.contains("guest nas: guests/nas.toml pci[0]: vfio label \"hba\""),
        "{e}"
    );
    // An `all = true` label passes every device it resolved to.
    env.pci.insert(
        "hba".into(),
        vec![
            "0000:05:00.0".parse().unwrap_or_else(|e| panic!("{e}")),
            "0000:06:00.0".parse().unwrap_or_else(|e| panic!("{e}")),
        ],
    );
    let xml = render(&g, &env);
    assert_eq!(xml.matches("<hostdev ").count(), 3, "{xml}");
}

#[test]
fn disk_targets_follow_libvirts_naming() {
    let mut n = 0;
    let names: Vec<String> = (0..28).map(|_| disk_name("vd", &mut n)).collect();
    assert_eq!(names[0], "vda");
    assert_eq!(names[25], "vdz");
    assert_eq!(names[26], "vdaa");
    assert_eq!(names[27], "vdab");
    let mut n = 701;
    assert_eq!(disk_name("sd", &mut n), "sdzz");
    assert_eq!(disk_name("sd", &mut n), "sdaaa");
}

/// libvirt itself (the in-process `test:///default` driver, no daemon)
/// accepts every golden, and keeps the walden metadata so the hash can be
/// read back from `virsh dumpxml`.
#[test]
fn libvirt_test_driver_accepts_goldens_and_keeps_the_hash() {
    if Command::new("virsh").arg("--version").output().is_err() {
        let why = "virsh is not installed (apt install libvirt-clients)";
        if std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for case in cases() {
        let config = load_case(&case);
        let mut env = env_for(&config);
        env.domain_type = DomainType::Test;
        let g = &config.guests[0];
        let xml = render(g, &env);
        let file = tmp.path().join("domain.xml");
        fs::write(&file, &xml).unwrap_or_else(|e| panic!("{e}"));
        // One virsh process: the test driver's state lives in the connection.
        let script = format!("define {}; dumpxml {}", file.display(), g.name);
        let out = Command::new("virsh")
            .args(["-q", "-c", "test:///default", &script])
            .output()
            .unwrap_or_else(|e| panic!("virsh: {e}"));
        let dumped = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}{dumped}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(config_hash(&dumped), config_hash(&xml), "{dumped}");
        assert!(dumped.contains(&uuid(g.name.as_str())), "{dumped}");
    }
}
