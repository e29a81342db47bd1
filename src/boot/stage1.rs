//! Stage 1: walden as `/init` in the initramfs (see the module docs of
//! [`crate::boot`] for the steps and the layout it leaves behind).
//!
//! Console lines (stable; qemu-tests match them):
//!
//! ```text
//! walden stage1: starting (walden 0.1.0, kernel 6.1.0-26-amd64)
//! walden stage1: loaded 23 kernel modules in 0.4 s
//! walden stage1: looking for boot media LABEL=WALDEN-BOOT
//! walden stage1: boot media /dev/vda2 (vfat label WALDEN-BOOT) after 0.0 s
//! walden stage1: verifying root.squashfs (143 MiB)...
//! walden stage1: root.squashfs verified in 1.9 s
//! walden stage1: switching root to images/0.1.0/root.squashfs
//! ```
//!
//! On failure, one `walden stage1: <what went wrong>` line (the
//! [`BootError`] message), then `walden stage1: dropping to emergency shell`.

use super::cmdline::Cmdline;
use super::manifest::{hash_file, select_version, Manifest, MANIFEST};
use super::media::{self, FsType};
use super::mount::{mount_table, parse_mountinfo, SysMounter, STAGE1_MOUNTS};
use super::record::{parse_uptime, BootRecord, BOOT_RECORD};
use super::{loopdev, modules, switch, BootError};
use nix::mount::MsFlags;
use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the boot media stays mounted (read-only) for the later stages.
pub const MEDIA_MOUNT: &str = "/run/walden/media";
/// The squashfs mount, the overlay's lower layer.
const LOWER: &str = "/run/walden/lower";
/// The tmpfs holding the overlay's upper and work directories.
const RW: &str = "/run/walden/rw";
/// The copy of root.squashfs with walden.toram.
const TORAM_COPY: &str = "/run/walden/root.squashfs";
/// Where the new root is assembled.
const NEW_ROOT: &str = "/newroot";
/// The init of the new root (walden again).
const INIT: &str = "/sbin/init";
/// Modules to load, one name per line, written by image/mkinitramfs.sh.
const MODULE_LIST: &str = "/etc/walden/modules";
/// Seconds before rebooting once the emergency shell exits.
const REBOOT_DELAY: Duration = Duration::from_secs(10);

/// Print one console line with the stage 1 prefix.
fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "walden stage1: {msg}");
    let _ = out.flush();
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| parse_uptime(&t))
        .unwrap_or(0.0)
}

/// Run stage 1. Never returns: it either execs the real init or ends in
/// the emergency shell and a reboot.
pub fn run() -> ! {
    match boot() {
        Ok(never) => match never {},
        Err(err) => {
            say(&err.to_string());
            emergency()
        }
    }
}

fn mount(
    what: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), BootError> {
    std::fs::create_dir_all(target).map_err(|e| BootError::io(target, e))?;
    nix::mount::mount(Some(what), target, Some(fstype), flags, data).map_err(|source| {
        BootError::Mount {
            what: what.to_string(),
            target: target.into(),
            fstype: fstype.to_string(),
            source,
        }
    })
}

fn boot() -> Result<Infallible, BootError> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    mount_table(&mut SysMounter, Path::new("/"), STAGE1_MOUNTS, &mounted)?;
    let start_s = uptime();
    let kver = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    say(&format!(
        "starting (walden {}, kernel {kver})",
        env!("CARGO_PKG_VERSION")
    ));

    let text =
        std::fs::read_to_string("/proc/cmdline").map_err(|e| BootError::io("/proc/cmdline", e))?;
    let cmdline = Cmdline::parse(&text)?;
    for u in &cmdline.unknown {
        say(&format!("warning: ignoring unknown kernel parameter {u}"));
    }

    let wanted: Vec<String> = std::fs::read_to_string(MODULE_LIST)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let t = Instant::now();
    let (loaded, problems) = modules::load_all(&Path::new("/lib/modules").join(&kver), &wanted);
    for p in &problems {
        say(&format!("warning: {p}"));
    }
    say(&format!(
        "loaded {loaded} kernel modules in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    say(&format!("looking for boot media {}", cmdline.media));
    let t = Instant::now();
    let wait = cmdline.wait;
    let found =
        media::find(
            Path::new("/sys"),
            Path::new("/dev"),
            &cmdline.media,
            wait,
            // A USB stick shows up whenever its bus is enumerated; a scan is
            // a few superblock reads from the page cache, so look often.
            Duration::from_millis(100),
            |seen| {
                say(&format!(
                "no boot media with {} yet (seen: {}); waiting up to {} s for late devices (USB)",
                cmdline.media,
                if seen.is_empty() { "no block devices".to_string() } else { seen.join(", ") },
                wait.as_secs()
            ))
            },
        )?;
    let device = found.device.display().to_string();
    say(&format!(
        "boot media {device} ({}) after {:.1} s",
        found.probe,
        t.elapsed().as_secs_f64()
    ));
    let data = match found.probe.fstype {
        FsType::Vfat => Some("shortname=mixed,utf8"),
        _ => None,
    };
    mount(
        &device,
        MEDIA_MOUNT,
        found.probe.fstype.mount_name(),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        data,
    )?;

    let vd = select_version(Path::new(MEDIA_MOUNT), cmdline.version.as_deref(), &device)?;
    if cmdline.version.is_none() {
        say(&format!(
            "no walden.version= on the kernel command line; booting the newest, {}",
            vd.version
        ));
    }
    let manifest_path = vd.dir.join(MANIFEST);
    let manifest = Manifest::load(&manifest_path)?;
    let want = manifest.expected("root.squashfs", &manifest_path)?;
    let squashfs = vd.dir.join("root.squashfs");
    let size = std::fs::metadata(&squashfs)
        .map_err(|e| BootError::io(&squashfs, e))?
        .len();
    say(&format!(
        "verifying root.squashfs ({} MiB)...",
        size.div_ceil(1 << 20)
    ));
    let t = Instant::now();
    let (got, source) = if cmdline.toram {
        let mut copy =
            std::fs::File::create(TORAM_COPY).map_err(|e| BootError::io(TORAM_COPY, e))?;
        let (got, _) = hash_file(&squashfs, Some(&mut copy))?;
        (got, Path::new(TORAM_COPY).to_path_buf())
    } else {
        (hash_file(&squashfs, None)?.0, squashfs.clone())
    };
    if got != want {
        let _ = std::fs::remove_file(TORAM_COPY);
        return Err(BootError::Mismatch {
            version: vd.version.clone(),
            device,
            got,
            want,
        });
    }
    say(&format!(
        "root.squashfs verified in {:.1} s{}",
        t.elapsed().as_secs_f64(),
        if cmdline.toram {
            " and copied to RAM"
        } else {
            ""
        }
    ));

    let image = format!("images/{}/root.squashfs", vd.version);
    let loop_dev = loopdev::attach(&source, Path::new("/dev"))?;
    mount(
        &loop_dev.display().to_string(),
        LOWER,
        "squashfs",
        MsFlags::MS_RDONLY,
        None,
    )?;
    mount("tmpfs", RW, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    for d in ["upper", "work"] {
        let p = Path::new(RW).join(d);
        std::fs::create_dir_all(&p).map_err(|e| BootError::io(&p, e))?;
    }
    let opts = format!("lowerdir={LOWER},upperdir={RW}/upper,workdir={RW}/work");
    mount(
        "overlay",
        NEW_ROOT,
        "overlay",
        MsFlags::empty(),
        Some(&opts),
    )?;
    if std::fs::metadata(Path::new(NEW_ROOT).join(INIT.trim_start_matches('/'))).is_err() {
        return Err(BootError::RootIncomplete {
            what: INIT.to_string(),
            image,
        });
    }

    let record = BootRecord {
        version: vd.version.clone(),
        kernel_version: manifest.kernel_version.clone(),
        media_device: found.device.display().to_string(),
        media_fstype: found.probe.fstype.mount_name().to_string(),
        media_label: found.probe.label.clone(),
        media_mount: MEDIA_MOUNT.to_string(),
        boot_kind: if found.probe.fstype == FsType::Iso9660 {
            "iso"
        } else {
            "usb"
        }
        .to_string(),
        toram: cmdline.toram,
        squashfs_sha256: want,
        stage1_start_s: start_s,
        stage1_end_s: uptime(),
    };
    record.write(Path::new(BOOT_RECORD))?;

    if cmdline.shell {
        say(&format!(
            "walden.shell: stopping before switch_root; the new root is assembled at {NEW_ROOT}"
        ));
        emergency();
    }
    say(&format!("switching root to {image}"));
    switch::move_mounts(Path::new(NEW_ROOT), &["/dev", "/proc", "/sys", "/run"])?;
    switch::switch_root(Path::new(NEW_ROOT), INIT)
}

/// The emergency path: a shell on the console, then a reboot. PID 1 must
/// never exit (the kernel would panic), so this never returns.
fn emergency() -> ! {
    say("dropping to emergency shell");
    say(&format!(
        "type 'exit' to reboot; the machine reboots {} s after the shell ends",
        REBOOT_DELAY.as_secs()
    ));
    match spawn_shell() {
        Ok(pid) => wait_for(pid),
        Err(e) => say(&format!("cannot start the emergency shell /bin/sh: {e}")),
    }
    say(&format!(
        "emergency shell ended; rebooting in {} s",
        REBOOT_DELAY.as_secs()
    ));
    std::thread::sleep(REBOOT_DELAY);
    nix::unistd::sync();
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    say(&format!("reboot failed ({err:?}); halting here"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn spawn_shell() -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let console = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
    };
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("PS1", "(walden stage1) # ")
        .env("HOME", "/")
        .stdin(console()?)
        .stdout(console()?)
        .stderr(console()?);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (setsid, ioctl).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // The console becomes the shell's controlling terminal, so job
            // control and Ctrl-C work.
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
    Ok(cmd.spawn()?.id())
}

/// Reap children until `pid` has exited (PID 1 inherits orphans too).
fn wait_for(pid: u32) {
    use nix::sys::wait::{waitpid, WaitStatus};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, _)) | Ok(WaitStatus::Signaled(p, _, _)) if p == pid => return,
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(_) => return,
        }
    }
}
