//! Reconciles against the recording fake: what is called, in which order,
//! what a second run does, and what status and guests are told.

use super::fake::{disk, Fake};
use super::plan_tests::{config, HOST};
use super::{reconcile, MountState, MountsState, Scope};
use crate::boot::media::FsType;
use crate::config::from_strs;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

const DATA: &str =
    "[[mount]]\nwhat = \"LABEL=DATA\"\nwhere = \"/srv/data\"\noptions = [\"noatime\"]\n\
                    [swap]\nfile = \"/srv/data/swapfile\"\nsize = \"64MiB\"\n";

#[test]
fn boot_mounts_checks_and_swaps_then_a_second_run_does_nothing() {
    let c = config(DATA);
    let mut fake = Fake::with(vec![disk("vdb", FsType::Ext4, "DATA")]);
    let mut state = MountsState::default();
    let r = reconcile(&mut fake, &mut state, Some(&c), Scope::Local, WAIT);
    assert_eq!(
        fake.effects(),
        [
            "fsck /dev/vdb",
            "mount /dev/vdb /srv/data ext4",
            "swapfile /srv/data/swapfile 67108864",
            "swapon /srv/data/swapfile"
        ]
    );
    assert!(r.failed().is_empty(), "{r:?}");
    assert_eq!(
        r.summary(),
        "/srv/data LABEL=DATA mounted (mounted /dev/vdb; file system clean); \
         swap /srv/data/swapfile on (swap on; created 67108864 bytes)"
    );
    fake.calls.clear();
    let r = reconcile(&mut fake, &mut state, Some(&c), Scope::Local, WAIT);
    assert_eq!(
        fake.calls,
        Vec::<String>::new(),
        "nothing changed: nothing touched"
    );
    let states: Vec<MountState> = r.rows.iter().map(|r| r.state).collect();
    assert_eq!(states, [MountState::Mounted, MountState::Active]);
}

#[test]
fn a_late_usb_disk_is_waited_for_and_a_missing_one_fails_alone() {
    let c = config(
        "[[mount]]\nwhat = \"LABEL=DATA\"\nwhere = \"/srv/data\"\n\
         [[mount]]\nwhat = \"LABEL=gone\"\nwhere = \"/srv/gone\"\n",
    );
    let mut fake = Fake::with(vec![disk("vda", FsType::Ext4, "WALDEN-CONFIG")]);
    fake.late.push((3, disk("sda", FsType::Xfs, "DATA")));
    let mut state = MountsState::default();
    let r = reconcile(&mut fake, &mut state, Some(&c), Scope::Local, WAIT);
    let sleeps = fake.calls.iter().filter(|c| c.starts_with("sleep")).count();
    assert_eq!(
        sleeps, 40,
        "the whole 10 s for the missing one, in 250 ms steps"
    );
    assert_eq!(fake.effects(), ["mount /dev/sda /srv/data xfs"]);
    let gone = &r.rows[1];
    assert_eq!(
        (gone.target.as_str(), gone.state),
        ("/srv/gone", MountState::Failed)
    );
    assert_eq!(
        gone.detail.as_deref(),
        Some(
            "no disk with LABEL=gone (waited 10 s; looked at: vda (ext4 label WALDEN-CONFIG), \
             sda (xfs label DATA))"
        )
    );
    assert_eq!(r.failed().len(), 1);
}

#[test]
fn fsck_errors_keep_the_disk_and_everything_on_it_unmounted() {
    let c = config(&format!(
        "{DATA}[[mount]]\nwhat = \"/dev/vdc\"\nwhere = \"/srv/data/fast\"\nfstype = \"xfs\"\n"
    ));
    let mut fake = Fake::with(vec![disk("vdb", FsType::Ext4, "DATA")]);
    fake.dev_links
        .insert("/dev/vdc".into(), disk("vdc", FsType::Xfs, "fast"));
    fake.fsck_errors.insert("/dev/vdb".into());
    let mut state = MountsState::default();
    let r = reconcile(&mut fake, &mut state, Some(&c), Scope::Local, WAIT);
    assert_eq!(fake.effects(), ["fsck /dev/vdb"]);
    let details: Vec<&str> = r
        .rows
        .iter()
        .map(|r| r.detail.as_deref().unwrap_or(""))
        .collect();
    assert!(
        details[0].starts_with("e2fsck -p /dev/vdb found errors"),
        "{details:?}"
    );
    assert!(
        details[0].contains("run `e2fsck /dev/vdb` by hand"),
        "{details:?}"
    );
    assert!(
        details[1].starts_with("not mounted: /srv/data is not (e2fsck"),
        "{details:?}"
    );
    assert!(
        details[2].starts_with("waiting for /srv/data: e2fsck"),
        "{details:?}"
    );
    assert!(state.applied.mounts.is_empty() && state.applied.swap.is_none());
}

#[test]
fn removing_a_busy_mount_says_so_and_is_tried_again_next_time() {
    let c = config(DATA);
    let mut fake = Fake::with(vec![disk("vdb", FsType::Ext4, "DATA")]);
    let mut state = MountsState::default();
    reconcile(&mut fake, &mut state, Some(&c), Scope::Local, WAIT);
    fake.calls.clear();
    fake.busy.insert("/srv/data".into());
    let none = config("");
    let r = reconcile(&mut fake, &mut state, Some(&none), Scope::Local, WAIT);
    assert_eq!(
        fake.effects(),
        ["swapoff /srv/data/swapfile", "umount /srv/data"]
    );
    let row = &r.rows[0];
    assert_eq!(
        (row.what.as_str(), row.state),
        ("LABEL=DATA", MountState::Failed)
    );
    let detail = row.detail.as_deref().unwrap_or("");
    assert!(
        detail.starts_with("cannot unmount /srv/data: something uses it")
            && detail.contains("fuser -vm /srv/data"),
        "{detail}"
    );
    assert_eq!(r.removed, ["swap /srv/data/swapfile"]);
    fake.calls.clear();
    fake.busy.clear();
    let r = reconcile(&mut fake, &mut state, Some(&none), Scope::Local, WAIT);
    assert_eq!(fake.effects(), ["umount /srv/data"]);
    assert_eq!(r.summary(), "/srv/data LABEL=DATA removed");
    assert!(state.applied.mounts.is_empty());
}

#[test]
fn a_share_is_retried_until_the_network_is_up_and_given_up_on_in_time() {
    let c = config("[[mount]]\nwhat = \"nas:/vm\"\nwhere = \"/srv/nfs\"\nfstype = \"nfs\"\n");
    let mut fake = Fake::with(vec![]);
    fake.mount_failures = 3;
    let mut state = MountsState::default();
    let r = reconcile(&mut fake, &mut state, Some(&c), Scope::Local, WAIT);
    assert_eq!(fake.calls, Vec::<String>::new(), "not before the network");
    assert_eq!(r.rows, []);
    assert_eq!(state.statuses()[0].state, MountState::Waiting);
    let r = reconcile(
        &mut fake,
        &mut state,
        Some(&c),
        Scope::Network,
        Duration::from_secs(30),
    );
    assert_eq!(fake.effects().len(), 4);
    assert_eq!(r.rows[0].detail.as_deref(), Some("mounted (try 4)"));
    assert_eq!(state.statuses()[0].state, MountState::Mounted);

    let mut fake = Fake::with(vec![]);
    fake.mount_failures = 1000;
    let mut state = MountsState::default();
    let r = reconcile(
        &mut fake,
        &mut state,
        Some(&c),
        Scope::Network,
        Duration::from_secs(30),
    );
    assert_eq!(fake.effects().len(), 15, "every 2 s for 30 s");
    let detail = r.rows[0].detail.as_deref().unwrap_or("");
    assert!(
        detail.ends_with("No route to host (gave up after 15 tries)"),
        "{detail}"
    );
}

#[test]
fn guests_on_a_mount_that_is_not_there_are_blocked_with_the_reason() {
    let host = format!(
        "{HOST}[[mount]]\nwhat = \"LABEL=DATA\"\nwhere = \"/srv/data\"\n\
         [[mount]]\nwhat = \"LABEL=iso\"\nwhere = \"/srv/iso\"\n"
    );
    let on = "schema = 1\nmemory = \"64MiB\"\n[[disk]]\npath = \"/srv/data/on.qcow2\"\nsize = \"64MiB\"\n";
    let kernel = "schema = 1\nmemory = \"64MiB\"\n[boot]\nkernel = \"/srv/iso/vmlinuz\"\n";
    let off = "schema = 1\nmemory = \"64MiB\"\n[boot]\nkernel = \"/config/images/k\"\n";
    let c = from_strs(&host, &[("on", on), ("kernel", kernel), ("off", off)])
        .unwrap_or_else(|d| panic!("{d}"));
    let mut fake = Fake::with(vec![disk("vdc", FsType::Ext4, "iso")]);
    let mut state = MountsState::default();
    reconcile(
        &mut fake,
        &mut state,
        Some(&c),
        Scope::Local,
        Duration::ZERO,
    );
    let blocks = state.guest_blocks(&c);
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(
        blocks.get("on").map(String::as_str),
        Some("waiting for /srv/data: no disk with LABEL=DATA (waited 0 s; looked at: vdc (ext4 label iso))")
    );
    // The disk shows up and the config is applied again: no more blocks.
    fake.devices.push(disk("vdb", FsType::Ext4, "DATA"));
    reconcile(
        &mut fake,
        &mut state,
        Some(&c),
        Scope::Local,
        Duration::ZERO,
    );
    assert!(state.guest_blocks(&c).is_empty());
}
