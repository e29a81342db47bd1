use super::*;

/// A fragment of Debian 6.1's modules.dep (transitive dependencies listed).
const MODULES_DEP: &str = "\
kernel/drivers/net/bonding/bonding.ko: kernel/net/tls/tls.ko
kernel/drivers/net/veth.ko:
kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/802/mrp.ko kernel/net/llc/llc.ko
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/802/mrp.ko:
kernel/net/llc/llc.ko:
kernel/net/tls/tls.ko:
kernel/net/netfilter/nf-nat.ko:
";

#[test]
fn modules_load_after_their_dependencies_each_once() {
    let deps = ModuleDeps::parse(MODULES_DEP);
    let order = deps
        .load_order(&["bonding", "8021q", "bridge", "veth"])
        .unwrap();
    let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
    assert_eq!(
        names,
        ["tls", "bonding", "llc", "stp", "garp", "mrp", "8021q", "bridge", "veth"]
    );
    assert_eq!(order[0], "kernel/net/tls/tls.ko");
}

#[test]
fn module_names_treat_dash_and_underscore_alike() {
    let deps = ModuleDeps::parse(MODULES_DEP);
    assert_eq!(
        deps.load_order(&["nf_nat"]).unwrap(),
        ["kernel/net/netfilter/nf-nat.ko"]
    );
    assert_eq!(module_name("kernel/x/foo-bar.ko.xz"), "foo_bar");
    let err = deps.load_order(&["e1000e"]).unwrap_err().to_string();
    assert!(err.contains("e1000e is not in modules.dep"), "{err}");
}

#[test]
fn release_is_read_from_the_bzimage_header() {
    let mut head = vec![0u8; 0x400];
    head[0x202..0x206].copy_from_slice(b"HdrS");
    head[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
    let version = b"6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
    head[0x300..0x300 + version.len()].copy_from_slice(version);
    assert_eq!(
        release_from_header(&head).as_deref(),
        Some("6.1.0-56-amd64")
    );
    head[0x202] = b'X';
    assert_eq!(release_from_header(&head), None);
    assert_eq!(release_from_header(&[0; 16]), None);
}

#[test]
fn modules_dir_is_found_in_the_image_root_cache() {
    let build = tempfile::tempdir().unwrap();
    let err = modules_dir(build.path(), "6.1.0-56-amd64")
        .unwrap_err()
        .to_string();
    assert!(err.contains("run `make image` first"), "{err}");
    let dir = build
        .path()
        .join("cache/root-abc/rootfs/usr/lib/modules/6.1.0-56-amd64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("modules.dep"), MODULES_DEP).unwrap();
    assert_eq!(modules_dir(build.path(), "6.1.0-56-amd64").unwrap(), dir);
    assert!(modules_dir(build.path(), "6.1.0-99-amd64").is_err());
}

#[test]
fn cargo_messages_give_the_test_and_the_binaries() {
    let stdout = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"walden"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"walden"},"profile":{"test":false},"executable":"/r/target/debug/walden"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"net"},"profile":{"test":true},"executable":"/r/target/debug/deps/net-0123"}
{"reason":"build-finished","success":true}"#;
    let build = parse_cargo_messages("net", stdout).unwrap();
    assert_eq!(build.test, PathBuf::from("/r/target/debug/deps/net-0123"));
    assert_eq!(
        build.bins["walden"],
        PathBuf::from("/r/target/debug/walden")
    );
    assert!(parse_cargo_messages("boot", stdout).is_none());
}
