//! host.toml's `[[mount]]` and `[swap]` on the image (issue 16): a data
//! disk labelled WDATA mounted at /srv/data, a swap file on it, a tiny
//! guest whose disk walden creates there; then the same machine without
//! the data disk.
//!
//! One scenario, one boot plus one restart on the same disks:
//! `data_disk_is_mounted_by_label_with_swap_and_a_guest_disk_and_its_absence_only_holds_that_guest`.
//! What the host does is watched from outside walden's own report: a
//! `[[service]]` script prints the /srv/data line of /proc/self/mountinfo
//! and the swap file's line of /proc/swaps on the console, and after the
//! power-off the guest's qcow2 and the swap file are read from the data
//! disk image itself (debugfs).

mod common;

use anyhow::{ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::guest_assets::{config_dir, script_service, TinyGuest, TinyGuestAssets};
use qemu_tests::{expect, ConfigDisk, DataDisk, Machine, TestEnv};
use serde_json::Value;
use std::time::Duration;

/// The data disk's label, as host.toml names it.
const LABEL: &str = "WDATA";

/// host.toml: the data disk, the swap file on it, and the watcher.
fn host_toml() -> String {
    let watch = "prev=\n\
        while :; do\n\
        \x20 m=$(sed -n 's/^[^ ]* [^ ]* [^ ]* [^ ]* \\(\\/srv\\/data\\) \\([^ ]*\\).* - \\([^ ]*\\) \\([^ ]*\\) .*/\\1 \\3 \\4 \\2/p' /proc/self/mountinfo | head -n 1)\n\
        \x20 s=$(grep '^/srv/data/swapfile' /proc/swaps | tr -s ' \\t' ' ' | cut -d' ' -f1-3)\n\
        \x20 now=\"mount ${m:-none} | swap ${s:-none}\"\n\
        \x20 if [ \"$now\" != \"$prev\" ]; then echo \"MOUNTS-WATCH: $now\" > /dev/console; prev=\"$now\"; fi\n\
        \x20 sleep 1\n\
        done\n";
    format!(
        "schema = 1\nhostname = \"mounts\"\n\n\
         [[mount]]\nwhat = \"LABEL={LABEL}\"\nwhere = \"/srv/data\"\noptions = [\"noatime\"]\n\n\
         [swap]\nfile = \"/srv/data/swapfile\"\nsize = \"16MiB\"\n{}",
        script_service("mounts-watch", watch)
    )
}

/// The status JSON over the control channel.
fn status(m: &mut Machine) -> anyhow::Result<Value> {
    Ok(m.status_json()?)
}

/// `status[list]`'s entry whose `key` is `value`.
fn entry<'a>(status: &'a Value, list: &str, key: &str, value: &str) -> anyhow::Result<&'a Value> {
    status[list]
        .as_array()
        .and_then(|a| a.iter().find(|e| e[key] == value))
        .with_context(|| {
            format!(
                "no {list} entry with {key} = {value} in status: {}",
                status[list]
            )
        })
}

/// qcow2's magic and its virtual size (big-endian u64 at 24).
fn qcow2_size(bytes: &[u8]) -> Option<u64> {
    (bytes.get(..4)? == b"QFI\xfb")
        .then(|| bytes.get(24..32)?.try_into().ok().map(u64::from_be_bytes))
        .flatten()
}

#[test]
fn data_disk_is_mounted_by_label_with_swap_and_a_guest_disk_and_its_absence_only_holds_that_guest(
) -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(scenario_once)
}

fn scenario_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image(
        "data_disk_is_mounted_by_label_with_swap_and_a_guest_disk_and_its_absence_only_holds_that_guest",
    )?
    else {
        return Ok(());
    };
    let mut ondata = TinyGuest::new("ondata")
        .stub()
        .disk(&["path = \"/srv/data/vm/ondata.qcow2\"", "size = \"64MiB\""]);
    let mut free = TinyGuest::new("free").stub();
    // Off quickly on the power button, booted or not: this scenario is
    // about where their files are, not about their shutdown.
    ondata.shutdown_timeout = "5s".into();
    free.shutdown_timeout = "5s".into();
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let dir = config_dir(
        &env.dir().join("config-src"),
        &host_toml(),
        &[ondata, free],
        &assets,
    )?;
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .config_disk(ConfigDisk::from_dir(dir))
        .data_disk(DataDisk::ext4(LABEL, 128))
        .start()?;

    // Boot 1: mounted by label, swap on it, as the kernel itself lists them.
    let watch = m.wait_for_any(&["MOUNTS-WATCH:", expect::MAINTENANCE], BOOT_TIMEOUT)?;
    eprintln!("{}", watch.line);
    ensure!(
        watch.line.contains("mount /srv/data ext4 /dev/vd") && watch.line.contains("noatime"),
        "/srv/data is not mounted from the data disk: {}",
        watch.line
    );
    ensure!(
        watch.line.contains("swap /srv/data/swapfile file"),
        "the swap file is not in /proc/swaps: {}",
        watch.line
    );
    let ready = m.wait_for_any(
        &[
            expect::READY,
            expect::GUESTS_STEP_FAILED,
            expect::MAINTENANCE,
        ],
        BOOT_TIMEOUT,
    )?;
    ensure!(
        ready.line.contains(expect::READY),
        "not ready: {}",
        ready.line
    );
    let s = status(&mut m)?;
    eprintln!("mounts: {}\nguests: {}", s["mounts"], s["guests"]);
    ensure!(
        entry(&s, "mounts", "where", "/srv/data")?["state"] == "mounted",
        "{}",
        s["mounts"]
    );
    ensure!(
        entry(&s, "mounts", "where", "swap")?["state"] == "active",
        "{}",
        s["mounts"]
    );
    for g in ["ondata", "free"] {
        ensure!(
            entry(&s, "guests", "name", g)?["state"] == "running",
            "{}",
            s["guests"]
        );
    }
    m.powerdown()?;
    let exit = m.wait_exit(Duration::from_secs(180))?;
    ensure!(
        exit.success(),
        "QEMU exited with {exit} after the power button"
    );

    // Offline, on the data disk itself: the guest disk walden made, and the swap area.
    let qcow2 = m
        .data_disk_file(0, "/vm/ondata.qcow2")?
        .context("/vm/ondata.qcow2 is not on the data disk")?;
    ensure!(
        qcow2_size(&qcow2) == Some(64 << 20),
        "/vm/ondata.qcow2 on the data disk is not a 64 MiB qcow2 ({} bytes, starts {:?})",
        qcow2.len(),
        &qcow2[..qcow2.len().min(8)]
    );
    let swap = m
        .data_disk_file(0, "/swapfile")?
        .context("/swapfile is not on the data disk")?;
    ensure!(
        swap.len() == 16 << 20 && swap.get(4086..4096) == Some(&b"SWAPSPACE2"[..]),
        "/swapfile on the data disk is not a 16 MiB swap area ({} bytes)",
        swap.len()
    );

    // Boot 2, the data disk unplugged: the mount fails alone, the guest on
    // it waits saying why, the other guest runs, the host is ready.
    m.remove_drive("data0")?;
    m.restart()?;
    let failed = m.wait_for_console(expect::MOUNTS_STEP_FAILED, BOOT_TIMEOUT)?;
    eprintln!("{failed}");
    ensure!(
        failed.contains(&format!("no disk with LABEL={LABEL}")),
        "{failed}"
    );
    let watch = m.wait_for_console("MOUNTS-WATCH:", BOOT_TIMEOUT)?;
    ensure!(watch.contains("mount none | swap none"), "{watch}");
    let guests = m.wait_for_any(&[expect::GUESTS_STEP_FAILED, expect::READY], BOOT_TIMEOUT)?;
    ensure!(
        guests
            .line
            .contains("ondata waiting: waiting for /srv/data: no disk with LABEL=WDATA"),
        "the guests step does not say why ondata waits: {}",
        guests.line
    );
    let ready = m.wait_for_any(&[expect::READY, expect::MAINTENANCE], BOOT_TIMEOUT)?;
    ensure!(
        ready.line.contains(expect::READY),
        "not ready: {}",
        ready.line
    );
    let s = status(&mut m)?;
    eprintln!("mounts: {}\nguests: {}", s["mounts"], s["guests"]);
    ensure!(s["phase"] == "ready", "phase {}", s["phase"]);
    let data = entry(&s, "mounts", "where", "/srv/data")?;
    ensure!(
        data["state"] == "failed"
            && data["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("no disk with LABEL={LABEL}"))),
        "{data}"
    );
    let swap = entry(&s, "mounts", "where", "swap")?;
    ensure!(swap["state"] == "failed", "{swap}");
    let g = entry(&s, "guests", "name", "ondata")?;
    ensure!(
        g["state"] == "waiting"
            && g["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with(&format!(
                    "waiting for /srv/data: no disk with LABEL={LABEL}"
                ))),
        "{g}"
    );
    ensure!(
        entry(&s, "guests", "name", "free")?["state"] == "running",
        "{}",
        s["guests"]
    );
    Ok(())
}
