//! `walden config check` as a user runs it: the built binary on the examples
//! and on invalid fixtures, checking exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walden"))
        .args(["config", "check"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running walden: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_example_passes_with_a_one_line_summary() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap_or_else(|e| panic!("examples: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("host.toml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4);
    for dir in dirs {
        let out = check(&dir, &[]);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {text}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("config OK: host "), "{text}");
    }
    let out = check(&root().join("examples/bonded-vlans"), &[]);
    assert_eq!(
        stdout(&out).trim(),
        "config OK: host mountain, 3 guests (2 autostart), 1 bridge, 0 vfio devices, 0 warnings"
    );
}

#[test]
fn invalid_config_lists_every_problem_and_fails() {
    let dir = root().join("test_data/config/invalid/multiple-errors");
    let out = check(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for needle in [
        "host.toml:3:1: colour: unknown key `colour`",
        "host.toml:10:18: network.bridge[0].ports[1]: unknown link \"eth9\"",
        "  hint: ",
        "guests/db.toml:3:7: TOML syntax error",
        "guests/web.toml:7:10: nic[0].bridge: unknown bridge \"br2\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let last = text.lines().last().unwrap_or_default();
    assert_eq!(last, format!("8 problems in {}", dir.display()));
}

#[test]
fn json_output_is_machine_readable() {
    let out = check(
        &root().join("test_data/config/invalid/unknown-key-top"),
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["key"], "hostnmae");
    assert_eq!(v["errors"][0]["line"], 3);

    let out = check(&root().join("examples/appliance"), &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["ok"], true);
    assert_eq!(v["summary"]["vfio_devices"], 2);
    assert_eq!(v["summary"]["services"], 0);
}

#[test]
fn missing_host_toml_exits_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host.toml"), "{err}");
}
