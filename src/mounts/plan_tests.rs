//! The plan alone: given config, what was applied and what the kernel
//! shows, which actions in which order.

use super::plan::{plan, Action, Applied, MountCall, Observed, Resolved};
use super::{MountState, Scope};
use crate::config::{from_strs, Config};
use crate::pid1::mountinfo::MountEntry;
use std::path::{Path, PathBuf};

pub(super) const HOST: &str =
    "schema = 1\nhostname = \"h\"\n[[network.bridge]]\nname = \"br0\"\ndhcp = true\n";

pub(super) fn config(tables: &str) -> Config {
    from_strs(&format!("{HOST}{tables}"), &[]).unwrap_or_else(|d| panic!("{d}"))
}

fn entry(target: &str, fs: &str, source: &str) -> MountEntry {
    MountEntry {
        id: 0,
        parent_id: 0,
        mount_point: target.into(),
        fs_type: fs.into(),
        source: source.into(),
    }
}

fn observed(mounted: &[(&str, &str, &str)], disks: &[(&str, &str, &str)]) -> Observed {
    let mut o = Observed {
        mounts: std::iter::once(entry("/", "overlay", "overlay"))
            .chain(mounted.iter().map(|(t, f, s)| entry(t, f, s)))
            .collect(),
        ..Observed::default()
    };
    for (spec, dev, fs) in disks {
        o.sources.insert(
            spec.to_string(),
            Ok(Resolved {
                device: dev.into(),
                fstype: Some(fs.to_string()),
            }),
        );
    }
    o
}

fn targets(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::SwapOff { path } => format!("swapoff {}", path.display()),
            Action::Unmount { target } => format!("umount {}", target.display()),
            Action::Fsck { device, .. } => format!("fsck {}", device.display()),
            Action::Mount(c) => format!("mount {}", c.target().display()),
            Action::SwapFile { path, .. } => format!("swapfile {}", path.display()),
            Action::SwapOn { path, .. } => format!("swapon {}", path.display()),
        })
        .collect()
}

const TWO: &str = "[[mount]]\nwhat = \"LABEL=fast\"\nwhere = \"/srv/vm/fast\"\n\
                   [[mount]]\nwhat = \"LABEL=vm\"\nwhere = \"/srv/vm\"\noptions = [\"noatime\", \"discard\"]\n\
                   [swap]\nfile = \"/srv/vm/fast/swap\"\nsize = \"1GiB\"\n";

#[test]
fn a_fresh_boot_mounts_parents_first_then_turns_swap_on() {
    let c = config(TWO);
    let o = observed(
        &[],
        &[
            ("LABEL=vm", "/dev/vdb", "ext4"),
            ("LABEL=fast", "/dev/vdc", "xfs"),
        ],
    );
    let p = plan(
        &c.host.mounts,
        c.host.swap.as_ref(),
        &Applied::default(),
        &o,
        Scope::Local,
    );
    assert_eq!(
        targets(&p.actions),
        [
            "fsck /dev/vdb",
            "mount /srv/vm",
            "mount /srv/vm/fast",
            "swapfile /srv/vm/fast/swap",
            "swapon /srv/vm/fast/swap"
        ]
    );
    let Action::Mount(MountCall::Local {
        flags,
        data,
        fstype,
        ..
    }) = &p.actions[1]
    else {
        panic!("{:?}", p.actions[1]);
    };
    assert_eq!(*flags, nix::mount::MsFlags::MS_NOATIME);
    assert_eq!(data.as_deref(), Some("discard"));
    assert_eq!(fstype, "ext4", "probed");
    assert!(
        p.rows.iter().all(|r| r.state == MountState::Waiting),
        "{:?}",
        p.rows
    );
    assert_eq!(p.rows.len(), 3);
}

#[test]
fn what_is_mounted_by_walden_as_configured_is_left_alone() {
    let c = config(TWO);
    let o = Observed {
        swaps: vec!["/srv/vm/fast/swap".into()],
        ..observed(
            &[
                ("/srv/vm", "ext4", "/dev/vdb"),
                ("/srv/vm/fast", "xfs", "/dev/vdc"),
            ],
            &[
                ("LABEL=vm", "/dev/vdb", "ext4"),
                ("LABEL=fast", "/dev/vdc", "xfs"),
            ],
        )
    };
    // Applied by this supervisor, or adopted after it restarted: the same.
    let applied = Applied {
        mounts: c
            .host
            .mounts
            .iter()
            .map(|m| (m.target.clone(), m.clone()))
            .collect(),
        swap: c
            .host
            .swap
            .clone()
            .map(|s| (s, PathBuf::from("/srv/vm/fast/swap"))),
    };
    for a in [applied, Applied::default()] {
        let p = plan(&c.host.mounts, c.host.swap.as_ref(), &a, &o, Scope::Local);
        assert_eq!(p.actions, [], "{a:?}");
        let states: Vec<MountState> = p.rows.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [MountState::Mounted, MountState::Mounted, MountState::Active]
        );
    }
}

#[test]
fn a_changed_parent_is_redone_with_its_child_and_the_swap_on_it() {
    let old = config(TWO);
    let new = config(&TWO.replace("\"noatime\", \"discard\"", "\"noatime\""));
    let o = Observed {
        swaps: vec!["/srv/vm/fast/swap".into()],
        ..observed(
            &[
                ("/srv/vm", "ext4", "/dev/vdb"),
                ("/srv/vm/fast", "xfs", "/dev/vdc"),
            ],
            &[
                ("LABEL=vm", "/dev/vdb", "ext4"),
                ("LABEL=fast", "/dev/vdc", "xfs"),
            ],
        )
    };
    let applied = Applied {
        mounts: old
            .host
            .mounts
            .iter()
            .map(|m| (m.target.clone(), m.clone()))
            .collect(),
        swap: old
            .host
            .swap
            .clone()
            .map(|s| (s, PathBuf::from("/srv/vm/fast/swap"))),
    };
    let p = plan(
        &new.host.mounts,
        new.host.swap.as_ref(),
        &applied,
        &o,
        Scope::Local,
    );
    assert_eq!(
        targets(&p.actions),
        [
            "swapoff /srv/vm/fast/swap",
            "umount /srv/vm/fast",
            "umount /srv/vm",
            "fsck /dev/vdb",
            "mount /srv/vm",
            "mount /srv/vm/fast",
            "swapfile /srv/vm/fast/swap",
            "swapon /srv/vm/fast/swap"
        ]
    );
}

#[test]
fn a_missing_disk_fails_its_mount_the_mounts_below_it_and_the_swap() {
    let c = config(TWO);
    let mut o = observed(&[], &[("LABEL=fast", "/dev/vdc", "xfs")]);
    o.sources
        .insert("LABEL=vm".into(), Err("no disk with LABEL=vm".into()));
    let p = plan(
        &c.host.mounts,
        c.host.swap.as_ref(),
        &Applied::default(),
        &o,
        Scope::Local,
    );
    assert_eq!(p.actions, []);
    let rows: Vec<(&str, MountState, &str)> = p
        .rows
        .iter()
        .map(|r| {
            (
                r.target.as_str(),
                r.state,
                r.detail.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("/srv/vm", MountState::Failed, "no disk with LABEL=vm"),
            ("/srv/vm/fast", MountState::Failed, "not mounted: /srv/vm is not mounted (no disk with LABEL=vm)"),
            ("swap", MountState::Failed, "waiting for /srv/vm/fast: not mounted: /srv/vm is not mounted (no disk with LABEL=vm)"),
        ]
    );
}

#[test]
fn removed_mounts_and_swap_are_undone_children_first_and_foreign_mounts_kept() {
    let old = config(TWO);
    let none = config("");
    let o = Observed {
        swaps: vec!["/srv/vm/fast/swap".into()],
        ..observed(
            &[
                ("/srv/vm", "ext4", "/dev/vdb"),
                ("/srv/vm/fast", "xfs", "/dev/vdc"),
                ("/mnt/by-hand", "ext4", "/dev/vdd"),
            ],
            &[],
        )
    };
    let applied = Applied {
        mounts: old
            .host
            .mounts
            .iter()
            .map(|m| (m.target.clone(), m.clone()))
            .collect(),
        swap: old
            .host
            .swap
            .clone()
            .map(|s| (s, PathBuf::from("/srv/vm/fast/swap"))),
    };
    let p = plan(&none.host.mounts, None, &applied, &o, Scope::Local);
    assert_eq!(
        targets(&p.actions),
        [
            "swapoff /srv/vm/fast/swap",
            "umount /srv/vm/fast",
            "umount /srv/vm"
        ]
    );
    assert_eq!(p.rows, []);
}

#[test]
fn something_else_at_the_mount_point_is_not_taken_over() {
    let c = config("[[mount]]\nwhat = \"LABEL=vm\"\nwhere = \"/srv/vm\"\n");
    let o = observed(
        &[("/srv/vm", "ext4", "/dev/vdz")],
        &[("LABEL=vm", "/dev/vdb", "ext4")],
    );
    let p = plan(&c.host.mounts, None, &Applied::default(), &o, Scope::Local);
    assert_eq!(p.actions, []);
    let detail = p.rows[0].detail.as_deref().unwrap_or("");
    assert!(
        detail.contains("/dev/vdz is mounted at /srv/vm (not by walden)"),
        "{detail}"
    );
}

#[test]
fn network_shares_belong_to_their_own_scope() {
    let c = config(
        "[[mount]]\nwhat = \"LABEL=vm\"\nwhere = \"/srv/vm\"\n\
         [[mount]]\nwhat = \"nas:/iso\"\nwhere = \"/srv/vm/iso\"\nfstype = \"nfs4\"\nread_only = true\n",
    );
    let o = observed(&[], &[("LABEL=vm", "/dev/vdb", "xfs")]);
    let local = plan(&c.host.mounts, None, &Applied::default(), &o, Scope::Local);
    assert_eq!(targets(&local.actions), ["mount /srv/vm"], "xfs: no fsck");
    // Before the local disk is there, the share would land on the root.
    let net = plan(
        &c.host.mounts,
        None,
        &Applied::default(),
        &o,
        Scope::Network,
    );
    assert_eq!(net.actions, []);
    assert_eq!(
        net.rows[0].detail.as_deref(),
        Some("not mounted: /srv/vm is not mounted")
    );
    let o = observed(&[("/srv/vm", "xfs", "/dev/vdb")], &[]);
    let net = plan(
        &c.host.mounts,
        None,
        &Applied::default(),
        &o,
        Scope::Network,
    );
    assert_eq!(
        net.actions,
        [Action::Mount(MountCall::Network {
            helper: "mount.nfs4".into(),
            share: "nas:/iso".into(),
            target: Path::new("/srv/vm/iso").into(),
            options: "ro".into(),
        })]
    );
}
