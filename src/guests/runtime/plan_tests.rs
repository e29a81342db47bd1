//! The per-turn planner with host blocks (pure: a table, what libvirt
//! reports, a time).

use super::hypervisor::{DomainInfo, DomainState};
use super::plan::{plan, Action};
use super::policy::Policy;
use super::table::{Entry, GuestState, Table};
use std::collections::BTreeMap;
use std::time::Instant;

const HOST: &str =
    "schema = 1\nhostname = \"h\"\n[[network.bridge]]\nname = \"br0\"\ndhcp = true\n\
                    [[mount]]\nwhat = \"LABEL=DATA\"\nwhere = \"/srv/data\"\n";

/// "data" lives on /srv/data, "dep" waits for it, "free" is elsewhere.
fn table() -> Table {
    let data = "schema = 1\nmemory = \"64MiB\"\n[[disk]]\npath = \"/srv/data/d.qcow2\"\nsize = \"64MiB\"\n";
    let dep = "schema = 1\nmemory = \"64MiB\"\nafter = [\"data\"]\n";
    let free = "schema = 1\nmemory = \"64MiB\"\n";
    let c = crate::config::from_strs(HOST, &[("data", data), ("dep", dep), ("free", free)])
        .unwrap_or_else(|d| panic!("{d}"));
    let mut t = Table::default();
    for g in &c.guests {
        t.entries.push(Entry::new(
            g.clone(),
            format!("<domain>{}</domain>", g.name),
            true,
        ));
    }
    t.sort();
    t
}

fn starts(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Start { config, .. } => format!("start {}", config.name),
            other => format!("{other:?}"),
        })
        .collect()
}

fn running(names: &[&str]) -> BTreeMap<String, DomainInfo> {
    names
        .iter()
        .map(|n| {
            let info = DomainInfo {
                name: n.to_string(),
                state: DomainState::Running,
                pid: Some(1),
            };
            (n.to_string(), info)
        })
        .collect()
}

const WHY: &str = "waiting for /srv/data: no disk with LABEL=DATA";

#[test]
fn a_blocked_guest_waits_with_the_reason_and_starts_once_unblocked() {
    let mut t = table();
    let blocks = BTreeMap::from([("data".to_string(), WHY.to_string())]);
    t.host_blocks.insert("mounts".into(), blocks);
    let policy = Policy::default();
    let now = Instant::now();
    let actions = plan(&mut t, &running(&[]), &policy, now);
    assert_eq!(starts(&actions), ["start free"]);
    for _ in 0..3 {
        let actions = plan(&mut t, &running(&["free"]), &policy, now);
        assert_eq!(actions, [], "never started while blocked");
    }
    let data = t.get("data").unwrap_or_else(|| panic!("data"));
    assert_eq!(data.state, GuestState::Waiting);
    assert_eq!(data.last_error.as_deref(), Some(WHY));
    let dep = t.get("dep").unwrap_or_else(|| panic!("dep"));
    assert_eq!(dep.state, GuestState::Waiting);
    assert_eq!(
        dep.last_error.as_deref(),
        Some(&*format!("waiting for data, which is {WHY}"))
    );
    // Held back by the host: bring-up does not wait for them.
    assert!(data.held && dep.held);
    assert!(t.settled());

    // The mount comes: the next turn starts data, then dep.
    t.host_blocks.remove("mounts");
    let actions = plan(&mut t, &running(&["free"]), &policy, now);
    assert_eq!(starts(&actions), ["start data"]);
    assert!(!t.settled());
    let actions = plan(&mut t, &running(&["free", "data"]), &policy, now);
    assert_eq!(starts(&actions), ["start dep"]);
}

#[test]
fn a_running_guest_is_not_touched_by_a_block() {
    let mut t = table();
    let policy = Policy::default();
    let now = Instant::now();
    plan(&mut t, &running(&["data", "dep", "free"]), &policy, now);
    let blocks = BTreeMap::from([("data".to_string(), WHY.to_string())]);
    t.host_blocks.insert("vfio".into(), blocks);
    let actions = plan(&mut t, &running(&["data", "dep", "free"]), &policy, now);
    assert_eq!(actions, []);
    let data = t.get("data").unwrap_or_else(|| panic!("data"));
    assert_eq!(
        (data.state, data.last_error.as_deref()),
        (GuestState::Running, None)
    );
}
