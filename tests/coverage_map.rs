//! The coverage map: every key documented in docs/config.md and
//! docs/guests.md, every command of the README's "Using walden" list and
//! every `walden.*` kernel option of docs/boot.md has an entry in
//! tests/keys.toml naming the tests that prove it takes effect (an image
//! scenario or a privileged test, which look at the kernel, the guest or
//! the disk, not at walden's report of itself). A key documented without
//! an entry, an entry for a key that is not documented, and an entry naming
//! a test that does not exist all fail here, so the docs, the code and the
//! tests cannot drift apart silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The scope a heading gives the tables below it: the backticked table
/// name with brackets and `NAME` placeholders removed ("network.bond",
/// "guest.disk"), or a name for the plain headings of the key references.
fn scope_of(heading: &str, file_scope: &str) -> Option<String> {
    let text = heading.trim_start_matches('#').trim();
    if let Some(start) = text.find('`') {
        let rest = &text[start + 1..];
        let name = &rest[..rest.find('`')?];
        let name = name.trim_matches(|c| c == '[' || c == ']');
        return Some(match file_scope {
            "guest" => format!("guest.{name}"),
            _ => name.to_string(),
        });
    }
    match text {
        "host.toml" => Some("host".into()),
        "Network" => Some("network".into()),
        "guests/NAME.toml" | "Top-level keys" => Some("guest".into()),
        _ => None,
    }
}

/// Keys of the markdown tables under key-reference headings of `doc`.
fn documented_keys(doc: &str, file_scope: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut scope: Option<String> = (file_scope == "guest").then(|| "guest".into());
    // In config.md, the tables under "## guests/NAME.toml" are a guest's.
    let mut in_guests = file_scope == "guest";
    let mut table_prefix = String::new();
    let mut in_table = false;
    for line in doc.lines() {
        if line.starts_with('#') {
            if line.starts_with("## ") {
                in_guests = file_scope == "guest" || line.contains("guests/NAME.toml");
            }
            let kind = if in_guests { "guest" } else { file_scope };
            scope = scope_of(line, kind);
            in_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let first = line
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if !in_table {
            // The header row: "key", "port key", "parameter", ...
            in_table = true;
            table_prefix = match first {
                "port key" => ".ports".into(),
                _ => String::new(),
            };
            if !first.ends_with("key") {
                // Not a key table (units, examples, steps).
                table_prefix = "-".into();
            }
            continue;
        }
        if table_prefix == "-" || first.starts_with("---") {
            continue;
        }
        let Some(scope) = &scope else { continue };
        let Some(key) = first.strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
            continue;
        };
        // Rows naming a sub-table are covered by its own keys.
        if key.starts_with('[') {
            continue;
        }
        out.insert(format!("{scope}{table_prefix}.{key}"));
    }
    out
}

/// `walden ...` commands of the README's command list, by their first two
/// words ("walden config check", "walden guest list|start|...").
fn documented_commands(readme: &str) -> BTreeSet<String> {
    let section = readme
        .split("## Using walden")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_else(|| panic!("README has no '## Using walden' section"));
    let mut out = BTreeSet::new();
    for line in section.lines() {
        let Some(cmd) = line.trim().strip_prefix("walden ") else {
            continue;
        };
        let words: Vec<&str> = cmd.split_whitespace().take(2).collect();
        let (first, second) = (words[0], words.get(1).copied().unwrap_or(""));
        let subs: Vec<&str> = if second
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
        {
            second.split('|').collect()
        } else {
            vec![]
        };
        for top in first.split('|') {
            if subs.is_empty() {
                out.insert(format!("walden {top}"));
            }
            for sub in &subs {
                out.insert(format!("walden {top} {sub}"));
            }
        }
    }
    out
}

/// `walden.*` parameters of docs/boot.md's kernel command line table.
fn documented_kernel_options(boot: &str) -> BTreeSet<String> {
    boot.lines()
        .filter_map(|l| l.strip_prefix("| `walden."))
        .filter_map(|l| l.split(['`', '=']).next())
        .map(|k| format!("walden.{k}"))
        .collect()
}

/// tests/keys.toml: section -> key -> ["file::test", ...].
fn map() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    toml::from_str(&read("tests/keys.toml")).unwrap_or_else(|e| panic!("tests/keys.toml: {e}"))
}

/// Whether `reference` ("path/to/file.rs::test_name") names a test fn.
fn test_exists(reference: &str) -> Result<(), String> {
    let (file, name) = reference
        .split_once("::")
        .ok_or_else(|| format!("{reference:?} is not FILE::TEST"))?;
    let text = std::fs::read_to_string(root().join(file)).map_err(|e| format!("{file}: {e}"))?;
    let head = format!("fn {name}(");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // A #[test] fn, not a helper or the `<name>_once` body of a scenario:
    // `#[test]` among the attributes and comments right above it.
    let is_test = lines.iter().enumerate().any(|(i, line)| {
        line.starts_with(&head)
            && lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
                .any(|l| *l == "#[test]")
    });
    if is_test {
        Ok(())
    } else if text.contains(&head) {
        Err(format!("{file}: fn {name} is not a #[test] fn"))
    } else {
        Err(format!("{file} has no fn {name}"))
    }
}

fn check_section(section: &str, documented: &BTreeSet<String>, problems: &mut Vec<String>) {
    let map = map();
    let entries = map.get(section).cloned().unwrap_or_default();
    for key in documented {
        match entries.get(key) {
            None => problems.push(format!(
                "[{section}] {key:?}: documented, but no test is named in tests/keys.toml"
            )),
            Some(tests) if tests.is_empty() => {
                problems.push(format!("[{section}] {key:?}: an empty list of tests"))
            }
            Some(tests) => {
                for t in tests {
                    if let Err(e) = test_exists(t) {
                        problems.push(format!("[{section}] {key:?}: {e}"));
                    }
                }
            }
        }
    }
    for key in entries.keys() {
        if !documented.contains(key) {
            problems.push(format!(
                "[{section}] {key:?}: in tests/keys.toml but not documented"
            ));
        }
    }
}

#[test]
fn every_documented_key_command_and_kernel_option_has_a_test_that_proves_it() {
    let mut keys = documented_keys(&read("docs/config.md"), "config");
    keys.extend(documented_keys(&read("docs/guests.md"), "guest"));
    let commands = documented_commands(&read("README.md"));
    let options = documented_kernel_options(&read("docs/boot.md"));
    assert!(
        keys.len() > 60,
        "the docs' key tables were not found: {keys:?}"
    );
    assert!(
        commands.len() > 15,
        "the README's commands were not found: {commands:?}"
    );
    assert!(
        options.len() > 5,
        "docs/boot.md's kernel options were not found: {options:?}"
    );
    let mut problems = Vec::new();
    check_section("keys", &keys, &mut problems);
    check_section("commands", &commands, &mut problems);
    check_section("kernel", &options, &mut problems);
    assert!(
        problems.is_empty(),
        "the coverage map (tests/keys.toml) has {} holes:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_doc_parsers_find_keys_in_their_scopes() {
    let doc = "## host.toml\n\n| key | type |\n| --- | --- |\n| `hostname` | string |\n| `[network]` | table |\n\
               #### `[[network.bridge]]`\n\n| key | type |\n|---|---|\n| `name` | x |\n\n| port key | type |\n|---|---|\n| `pvid` | x |\n\
               ### Units\n\n| kind | form |\n|---|---|\n| `size` | x |\n";
    let keys = documented_keys(doc, "config");
    let want: BTreeSet<String> = [
        "host.hostname",
        "network.bridge.name",
        "network.bridge.ports.pvid",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(keys, want);
    let readme = "## Using walden\n\n    walden config check DIR     # x\n    walden guest list|start NAME\n    walden poweroff|reboot\n\n## Next\n";
    let cmds: Vec<String> = documented_commands(readme).into_iter().collect();
    assert_eq!(
        cmds,
        [
            "walden config check",
            "walden guest list",
            "walden guest start",
            "walden poweroff",
            "walden reboot"
        ]
    );
    assert!(
        test_exists("tests/coverage_map.rs::the_doc_parsers_find_keys_in_their_scopes").is_ok()
    );
    assert!(test_exists("tests/coverage_map.rs::no_such_test").is_err());
    assert!(
        test_exists("tests/coverage_map.rs::read").is_err(),
        "a helper is not a test"
    );
    let _ = Path::new("");
}
