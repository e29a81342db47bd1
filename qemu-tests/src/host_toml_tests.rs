use super::*;
use crate::artifacts::repo_root;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRoZWhhcm5lc3NrZXlmb3JxZW11dGVzdHNvbmx5 qemu-tests@harness";

fn parse(text: &str) -> DocumentMut {
    text.parse()
        .unwrap_or_else(|e| panic!("merged host.toml is not TOML: {e}\n{text}"))
}

/// The admin link entries of a merged document, as (name, match, dhcp).
fn admin_links(doc: &DocumentMut) -> Vec<(String, String, bool)> {
    links(doc.get("network").unwrap())
        .into_iter()
        .map(|(_, t)| {
            let s = |k: &str| t.get(k).and_then(Item::as_str).unwrap_or("").to_string();
            let dhcp = t.get("dhcp").and_then(Item::as_bool).unwrap_or(false);
            (s("name"), s("match"), dhcp)
        })
        .filter(|(n, _, _)| n == ADMIN_LINK)
        .collect()
}

fn keys(doc: &DocumentMut) -> Vec<String> {
    doc["ssh"]["authorized_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_bare_host_toml_gets_the_key_and_the_admin_link() {
    let out = merge_admin("schema = 1\nhostname = \"h\"\n", KEY).unwrap();
    let doc = parse(&out);
    assert_eq!(doc["hostname"].as_str(), Some("h"));
    assert_eq!(keys(&doc), [KEY]);
    assert_eq!(
        admin_links(&doc),
        [(ADMIN_LINK.to_string(), admin_mac_ref(), true)]
    );
    // `[network]` stays implicit: only the array of tables is written.
    assert!(out.contains("[[network.link]]"), "{out}");
    assert!(!out.contains("\n[network]\n"), "{out}");
}

#[test]
fn the_example_keeps_its_keys_comments_and_links() {
    let path = repo_root().join("examples/minimal/host.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let out = merge_admin(&original, KEY).unwrap();
    let doc = parse(&out);
    // Every line the scenario wrote is still there, in its order.
    let mut rest = out.as_str();
    for line in original.lines().filter(|l| !l.trim().is_empty()) {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("lost or moved {line:?}:\n{out}"));
        rest = &rest[at + line.len()..];
    }
    let ks = keys(&doc);
    assert_eq!(ks.len(), 2, "{ks:?}");
    // One key per line, as the example writes them.
    assert!(out.contains(&format!(",\n  \"{KEY}\",\n]")), "{out}");
    assert!(ks[0].ends_with("admin@laptop"), "{ks:?}");
    assert_eq!(ks[1], KEY);
    let names: Vec<String> = links(doc.get("network").unwrap())
        .iter()
        .map(|(_, t)| t.get("name").and_then(Item::as_str).unwrap().to_string())
        .collect();
    assert_eq!(names, ["lan0", ADMIN_LINK]);
    assert_eq!(
        doc["network"]["bridge"][0]["ports"][0].as_str(),
        Some("lan0")
    );
}

#[test]
fn merging_twice_changes_nothing_the_second_time() {
    for start in [
        "schema = 1\nhostname = \"h\"\n",
        "schema = 1\nhostname = \"h\"\n[ssh]\nauthorized_keys = [\"ssh-ed25519 AAAA other\"]\n",
    ] {
        let once = merge_admin(start, KEY).unwrap();
        let twice = merge_admin(&once, &format!("  {KEY}\n")).unwrap();
        assert_eq!(once, twice);
        // On one line, the keys are separated as TOML writers do.
        assert!(!once.contains("\",\""), "{once}");
    }
}

#[test]
fn inline_tables_and_arrays_are_extended_in_place() {
    let start = "schema = 1\nhostname = \"h\"\nssh = { authorized_keys = [] }\n\
                 network = { link = [{ name = \"lan0\" }] }\n";
    let doc = parse(&merge_admin(start, KEY).unwrap());
    assert_eq!(keys(&doc), [KEY]);
    assert_eq!(
        admin_links(&doc),
        [(ADMIN_LINK.to_string(), admin_mac_ref(), true)]
    );
}

#[test]
fn a_host_toml_that_already_names_the_admin_nic_is_refused() {
    let mac = admin_mac_ref().to_uppercase().replace("MAC:", "mac:");
    let cases = [
        // The NIC under another name.
        format!("[[network.link]]\nname = \"mgmt\"\nmatch = \"{mac}\"\n"),
        // The NIC without DHCP.
        format!("[[network.link]]\nname = \"{ADMIN_LINK}\"\nmatch = \"{mac}\"\n"),
        // The NIC as a bridge port.
        format!("[[network.bridge]]\nname = \"br0\"\nports = [\"{mac}\"]\n"),
        // The NIC as a port table of a VLAN bridge.
        format!("[[network.bridge]]\nname = \"br0\"\nvlan_filtering = true\nports = [{{ name = \"{mac}\", pvid = 1 }}]\n"),
        // The name on another interface.
        format!("[[network.bridge]]\nname = \"{ADMIN_LINK}\"\n"),
        // The identical link, but also enslaved somewhere.
        format!(
            "[[network.link]]\nname = \"{ADMIN_LINK}\"\nmatch = \"{mac}\"\ndhcp = true\n\n\
             [[network.bond]]\nname = \"bond0\"\nmode = \"active-backup\"\nmembers = [\"{ADMIN_LINK}\"]\n"
        ),
    ];
    for body in cases {
        let text = format!("schema = 1\nhostname = \"h\"\n\n{body}");
        let err = merge_admin(&text, KEY).unwrap_err().to_string();
        assert!(
            err.contains("already configures the admin NIC") && err.contains(ADMIN_MAC),
            "{body}\n=> {err}"
        );
        assert!(err.contains("network."), "names the key: {err}");
    }
}

#[test]
fn the_identical_admin_link_is_accepted_once() {
    let text = format!(
        "schema = 1\nhostname = \"h\"\n\n[[network.link]]\nname = \"{ADMIN_LINK}\"\nmatch = \"{}\"\ndhcp = true\n",
        admin_mac_ref()
    );
    let doc = parse(&merge_admin(&text, KEY).unwrap());
    assert_eq!(admin_links(&doc).len(), 1);
}

#[test]
fn shapes_walden_does_not_read_are_refused_clearly() {
    for (text, says) in [
        ("schema = 1\nssh = 3\n", "`ssh` is not a table"),
        (
            "schema = 1\n[ssh]\nauthorized_keys = \"k\"\n",
            "`ssh.authorized_keys` is not an array",
        ),
        ("schema = 1\nnetwork = \"x\"\n", "`network` is not a table"),
        (
            "schema = 1\n[network]\nlink = 3\n",
            "`network.link` is neither",
        ),
        ("schema = 1\nhostname = \n", "scenario host.toml"),
    ] {
        let err = merge_admin(text, KEY).unwrap_err().to_string();
        assert!(err.contains(says), "{text:?} => {err}");
    }
}
