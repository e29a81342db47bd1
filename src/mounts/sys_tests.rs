//! The real [`SysSystem`] on a real ext4 file system: a loop device found
//! by its label through a temporary sysfs/dev tree, mounted below a
//! temporary root inside a private mount namespace of a helper thread, so
//! the host's mounts are never touched. Swap is not turned on here (it
//! would be the build host's); the swap file itself is tested in
//! `swapfile.rs`. Needs root, mkfs.ext4, e2fsck and losetup; skipped
//! with the reason otherwise (a failure with WALDEN_REQUIRE_PRIVILEGED=1).

use super::plan_tests::config;
use super::{reconcile, MountState, MountsState, Scope, SysSystem};
use crate::context::Paths;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Detaches the loop device when the test ends, however it ends.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn a_loop_disk_is_mounted_by_label_changed_and_removed_in_a_private_namespace() {
    let result = setup_and_run();
    if let Err(reason) = result {
        eprintln!("SKIPPED: mounts::sys_tests: {reason}");
        assert!(
            std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "{reason}"
        );
    }
}

fn setup_and_run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("mounting needs root".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let img = tmp.path().join("data.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(16 << 20))
        .map_err(|e| e.to_string())?;
    // A label no real disk of this machine has.
    let label = format!("WT{}", std::process::id() % 100_000);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", &label])
        .arg(&img))?;
    let dev = run(Command::new("losetup").args(["--find", "--show"]).arg(&img))?;
    let _detach = Loop(dev.clone());
    // sysfs and /dev as the probe sees them: one block device "vdz".
    for d in ["root", "proc", "sys/class/block/vdz", "dev"] {
        std::fs::create_dir_all(tmp.path().join(d)).map_err(|e| e.to_string())?;
    }
    let link =
        |from: &Path, to: &Path| std::os::unix::fs::symlink(from, to).map_err(|e| e.to_string());
    link(Path::new(&dev), &tmp.path().join("dev/vdz"))?;
    // The helper thread's own mount table.
    link(
        Path::new("/proc/thread-self"),
        &tmp.path().join("proc/self"),
    )?;
    link(Path::new("/proc/swaps"), &tmp.path().join("proc/swaps"))?;
    let paths = Paths {
        root: tmp.path().join("root"),
        proc: tmp.path().join("proc"),
        sys: tmp.path().join("sys"),
        dev: tmp.path().join("dev"),
        ..Paths::under(tmp.path())
    };
    let dev = PathBuf::from(dev);
    // A failed assertion in the thread fails the test (it is no skip).
    match std::thread::spawn(move || in_namespace(paths, &label, &dev)).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn in_namespace(paths: Paths, label: &str, dev: &Path) -> Result<(), String> {
    use nix::sched::{unshare, CloneFlags};
    // CLONE_FS too: threads share their fs struct, which blocks CLONE_NEWNS.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
        .map_err(|e| format!("unshare(CLONE_NEWNS) failed: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make / private: {e}"))?;
    let mount = |opts: &str| {
        config(&format!(
            "[[mount]]\nwhat = \"LABEL={label}\"\nwhere = \"/srv/data\"\n{opts}"
        ))
    };
    let real = paths.root.join("srv/data");
    let mut sys = SysSystem::new(paths.clone());
    let mut state = MountsState::default();
    let wait = Duration::ZERO;

    // fstype reaches mount(2): vfat on this ext4 disk does not mount.
    let vfat = mount("fstype = \"vfat\"\n");
    let r = reconcile(&mut sys, &mut state, Some(&vfat), Scope::Local, wait);
    let detail = r.rows[0].detail.clone().unwrap_or_default();
    assert!(
        r.rows[0].state == MountState::Failed
            && detail.starts_with(&format!(
                "cannot mount {} on /srv/data (vfat): ",
                dev.display()
            )),
        "{r:?}"
    );
    assert!(state.applied.mounts.is_empty());

    let c = mount("options = [\"noatime\"]\n");
    let r = reconcile(&mut sys, &mut state, Some(&c), Scope::Local, wait);
    assert_eq!(r.rows[0].state, MountState::Mounted, "{r:?}");
    let detail = r.rows[0].detail.clone().unwrap_or_default();
    assert_eq!(
        detail,
        format!("mounted {}; file system clean", dev.display())
    );
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").map_err(|e| e.to_string())?;
    let line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", real.display())))
        .unwrap_or_else(|| panic!("{} not in mountinfo:\n{info}", real.display()));
    assert!(
        line.contains("noatime") && line.contains(&format!(" - ext4 {} ", dev.display())),
        "{line}"
    );
    std::fs::write(real.join("hello"), "on the data disk\n").map_err(|e| e.to_string())?;

    // Again, unchanged: left alone (the file stays visible).
    let r = reconcile(&mut sys, &mut state, Some(&c), Scope::Local, wait);
    assert_eq!(
        r.rows[0].detail.as_deref(),
        Some(&*format!("mounted from {}", dev.display()))
    );

    // read_only added: unmounted and mounted again, read-only.
    let ro = mount("options = [\"noatime\"]\nread_only = true\n");
    let r = reconcile(&mut sys, &mut state, Some(&ro), Scope::Local, wait);
    assert_eq!(r.rows[0].state, MountState::Mounted, "{r:?}");
    let err = std::fs::write(real.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(
        std::fs::read_to_string(real.join("hello")).map_err(|e| e.to_string())?,
        "on the data disk\n"
    );

    // Removed while a file on it is open: busy, said clearly, kept.
    let none = config("");
    let open = std::fs::File::open(real.join("hello")).map_err(|e| e.to_string())?;
    let r = reconcile(&mut sys, &mut state, Some(&none), Scope::Local, wait);
    let detail = r.rows[0].detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("cannot unmount /srv/data: something uses it"),
        "{detail}"
    );
    drop(open);
    let r = reconcile(&mut sys, &mut state, Some(&none), Scope::Local, wait);
    assert_eq!(r.summary(), format!("/srv/data LABEL={label} removed"));
    assert!(!real.join("hello").exists());
    Ok(())
}
