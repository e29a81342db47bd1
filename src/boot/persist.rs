//! The writable /etc and the persistent /var from the config disk
//! (DESIGN.md section 2: "config disk at /config -> /etc overlay").
//!
//! Both are overlays whose lower layer is the image's own directory and
//! whose upper layer lives on the config disk:
//!
//! ```text
//! /etc = overlay(lower = image /etc, upper = /config/etc, work = /config/.walden/etc-work)
//! /var = overlay(lower = image /var, upper = /config/var, work = /config/.walden/var-work)
//! ```
//!
//! Edits persist across reboots and image versions; a file deleted in /etc
//! stays deleted (the overlay keeps a whiteout in the upper layer); files
//! nobody touched come from whichever image booted. /var is an overlay
//! rather than a bind mount of /config/var so that the image's /var
//! skeleton (/var/lib/libvirt, /var/lib/dpkg, ...) stays visible.
//! /tmp is a tmpfs from the early mounts ([`super::early::STAGE2_MOUNTS`]).
//!
//! [`plan`] is pure (paths in, mounts out); [`apply`] runs a plan through a
//! [`Mounter`], skipping targets already mounted, so a restarted supervisor
//! does not stack a second overlay.

use super::mount::Mounter;
use super::BootError;
use crate::context::Paths;
use nix::mount::MsFlags;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One overlay to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// Mount point, e.g. `<root>/etc`; also the lower layer.
    pub target: PathBuf,
    /// Upper layer on the config disk.
    pub upper: PathBuf,
    /// overlayfs work directory (same file system as `upper`).
    pub work: PathBuf,
}

impl OverlayMount {
    /// The overlayfs option string.
    pub fn options(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.target.display(),
            self.upper.display(),
            self.work.display()
        )
    }
}

/// The overlays for /etc and /var, given where the root and the config disk are.
pub fn plan(paths: &Paths) -> Vec<OverlayMount> {
    let state = paths.config.join(".walden");
    ["etc", "var"]
        .into_iter()
        .map(|dir| OverlayMount {
            target: paths.root.join(dir),
            upper: paths.config.join(dir),
            work: state.join(format!("{dir}-work")),
        })
        .collect()
}

/// Mount `plan` in order, creating the upper and work directories; skips
/// targets in `mounted` (from /proc/self/mountinfo). Returns what it mounted.
pub fn apply(
    m: &mut dyn Mounter,
    plan: &[OverlayMount],
    mounted: &HashSet<PathBuf>,
) -> Result<Vec<String>, BootError> {
    let mut done = Vec::new();
    for o in plan {
        if mounted.contains(&o.target) {
            continue;
        }
        for dir in [&o.upper, &o.work] {
            m.mkdir(dir).map_err(|e| BootError::io(dir, e))?;
        }
        m.mount(
            "overlay",
            &o.target,
            "overlay",
            MsFlags::MS_NOATIME,
            Some(&o.options()),
        )
        .map_err(|source| BootError::Mount {
            what: format!("overlay of {}", o.upper.display()),
            target: o.target.clone(),
            fstype: "overlay".into(),
            source,
        })?;
        done.push(o.target.display().to_string());
    }
    Ok(done)
}

/// The ssh host key types walden makes, with their file names in /etc/ssh.
/// No RSA key: generating one takes seconds on a slow CPU (a large share of
/// the first boot under emulation), and every OpenSSH client since 6.5
/// (2014) speaks ed25519.
pub const SSH_HOST_KEYS: &[(&str, &str)] = &[
    ("ed25519", "ssh_host_ed25519_key"),
    ("ecdsa", "ssh_host_ecdsa_key"),
];

/// OpenSSH's key generator.
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// How long one ssh-keygen may run. It takes well under a second, unless
/// the kernel's random pool is not initialised yet: getrandom() then blocks.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(120);

/// What to do when key generation waits on the kernel's random pool.
const RANDOM_POOL_HINT: &str = "the kernel's random pool was not initialised when it started: \
     give this machine an entropy source (a CPU with RDRAND, a TPM, or virtio-rng for a VM)";

/// Whether the kernel's random pool is initialised, so getrandom() does
/// not block. An old kernel without getrandom() counts as ready.
pub fn random_pool_ready() -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: getrandom writes at most one byte into `byte`.
    let n = unsafe { libc::getrandom(byte.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) };
    n == 1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
}

/// The missing ssh host keys under `root`'s /etc/ssh, made with the image's
/// ssh-keygen. /etc/ssh is on the config disk now, so this happens once per
/// machine, not once per boot. Each key is written under a temporary name,
/// synced, then renamed (public key first), so a power cut leaves either no
/// key (made again next boot) or a whole one. None when the image has no
/// OpenSSH.
pub fn ssh_host_keys(root: &Path) -> Option<String> {
    ssh_host_keys_within(root, KEYGEN_TIMEOUT)
}

/// [`ssh_host_keys`], each ssh-keygen killed after `limit`.
fn ssh_host_keys_within(root: &Path, limit: Duration) -> Option<String> {
    let keygen = root.join(SSH_KEYGEN.trim_start_matches('/'));
    if !keygen.exists() {
        return None;
    }
    let dir = root.join("etc/ssh");
    let mut made = Vec::new();
    for (kind, file) in SSH_HOST_KEYS {
        let key = dir.join(file);
        if key.exists() {
            continue;
        }
        if let Err(e) = make_key(&keygen, &dir, kind, file, limit) {
            return Some(format!("ssh host keys: {e}"));
        }
        made.push(*kind);
    }
    Some(if made.is_empty() {
        "ssh host keys kept".into()
    } else {
        format!("ssh host keys generated ({})", made.join(", "))
    })
}

fn make_key(
    keygen: &Path,
    dir: &Path,
    kind: &str,
    file: &str,
    limit: Duration,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{file}.walden-tmp"));
    let tmp_pub = dir.join(format!(".{file}.walden-tmp.pub"));
    for f in [&tmp, &tmp_pub] {
        let _ = std::fs::remove_file(f);
    }
    let pool_was_ready = random_pool_ready();
    let mut cmd = std::process::Command::new(keygen);
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "root@walden", "-f"])
        .arg(&tmp);
    let hint = || {
        if pool_was_ready {
            String::new()
        } else {
            format!("; {RANDOM_POOL_HINT}")
        }
    };
    match crate::command::run(&mut cmd, limit) {
        Ok(f) if f.status.success() => {}
        Ok(f) => return Err(format!("ssh-keygen -t {kind} failed ({})", f.reason())),
        Err(e) => return Err(format!("ssh-keygen -t {kind}: {e}{}", hint())),
    }
    // ssh-keygen does not fsync; the keys must survive a power cut.
    for f in [&tmp_pub, &tmp] {
        std::fs::File::open(f)
            .and_then(|h| h.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", f.display()))?;
    }
    for (from, to) in [(&tmp_pub, format!("{file}.pub")), (&tmp, file.to_string())] {
        let to = dir.join(to);
        std::fs::rename(from, &to)
            .map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))?;
    }
    std::fs::File::open(dir)
        .and_then(|h| h.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::super::mount::{RecordingMounter, SysMounter};
    use super::*;

    #[test]
    fn plan_puts_etc_then_var_on_the_config_disk() {
        let paths = Paths::under(Path::new("/r"));
        let mut rec = RecordingMounter::default();
        let done = apply(&mut rec, &plan(&paths), &HashSet::new()).unwrap();
        assert_eq!(done, ["/r/etc", "/r/var"]);
        assert_eq!(
            rec.mounts[0],
            (
                "overlay".into(),
                "/r/etc".into(),
                "overlay".into(),
                Some(
                    "lowerdir=/r/etc,upperdir=/r/config/etc,workdir=/r/config/.walden/etc-work"
                        .into()
                )
            )
        );
        assert_eq!(
            rec.mounts[1].3.as_deref(),
            Some("lowerdir=/r/var,upperdir=/r/config/var,workdir=/r/config/.walden/var-work")
        );
    }

    #[test]
    fn already_mounted_targets_are_left_alone_and_failures_name_the_target() {
        let paths = Paths::under(Path::new("/r"));
        let mut rec = RecordingMounter::default();
        let mounted = HashSet::from([PathBuf::from("/r/etc")]);
        assert_eq!(
            apply(&mut rec, &plan(&paths), &mounted).unwrap(),
            ["/r/var"]
        );
        let mut failing = RecordingMounter {
            fail_on: Some("/r/etc".into()),
            ..Default::default()
        };
        let err = apply(&mut failing, &plan(&paths), &HashSet::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot mount overlay of /r/config/etc on /r/etc (overlay)"),
            "{err}"
        );
    }

    /// The real overlay in a private mount namespace of a helper thread:
    /// writes land on the "config disk", deletions leave whiteouts, and a
    /// second mount after "reboot" shows both.
    #[test]
    fn etc_overlay_persists_writes_and_deletions() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let result = std::thread::spawn(move || overlay_round_trip(&root))
            .join()
            .unwrap();
        if let Err(reason) = result {
            eprintln!("SKIPPED: etc_overlay_persists_writes_and_deletions: {reason}");
            assert!(
                std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
                "{reason}"
            );
        }
    }

    fn overlay_round_trip(root: &Path) -> Result<(), String> {
        use nix::sched::{unshare, CloneFlags};
        // CLONE_FS too: threads share their fs struct, which blocks CLONE_NEWNS.
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
            .map_err(|e| format!("unshare(CLONE_NEWNS) failed: {e} (needs root)"))?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("cannot make / private: {e}"))?;
        let paths = Paths::under(root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/libvirt")).unwrap();
        std::fs::write(root.join("etc/motd"), "image motd\n").unwrap();
        std::fs::write(root.join("etc/issue"), "image issue\n").unwrap();
        let mounts = plan(&paths);
        apply(&mut SysMounter, &mounts, &HashSet::new())
            .map_err(|e| format!("overlay mount failed: {e}"))?;
        std::fs::write(root.join("etc/hostname"), "mountain\n").unwrap();
        std::fs::remove_file(root.join("etc/issue")).unwrap();
        assert!(
            root.join("var/lib/libvirt").is_dir(),
            "image /var stays visible"
        );
        std::fs::write(root.join("var/lib/state"), "s").unwrap();
        let upper = root.join("config/etc");
        assert_eq!(
            std::fs::read_to_string(upper.join("hostname")).unwrap(),
            "mountain\n"
        );
        // "Reboot": unmount, mount again on the same config disk.
        for o in mounts.iter().rev() {
            nix::mount::umount(&o.target).unwrap();
        }
        assert!(
            root.join("etc/issue").exists(),
            "the image itself is untouched"
        );
        apply(&mut SysMounter, &mounts, &HashSet::new()).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "mountain\n"
        );
        assert!(!root.join("etc/issue").exists(), "deleted stays deleted");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/motd")).unwrap(),
            "image motd\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("config/var/lib/state")).unwrap(),
            "s"
        );
        for o in mounts.iter().rev() {
            nix::mount::umount(&o.target).unwrap();
        }
        Ok(())
    }

    #[test]
    fn a_failing_or_stuck_ssh_keygen_is_reported_and_leaves_no_key() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        let keygen = root.join("usr/bin/ssh-keygen");
        let fake = |script: &str| {
            std::fs::write(&keygen, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&keygen, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        fake("echo 'no entropy today' >&2; exit 1");
        let said = ssh_host_keys_within(root, Duration::from_secs(10)).unwrap();
        assert_eq!(
            said,
            "ssh host keys: ssh-keygen -t ed25519 failed (exit status: 1: no entropy today)"
        );
        fake("exec sleep 30");
        let start = std::time::Instant::now();
        let said = ssh_host_keys_within(root, Duration::from_millis(300)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "{said}");
        assert!(
            said.starts_with(
                "ssh host keys: ssh-keygen -t ed25519: did not finish within 0.3 s; killed"
            ),
            "{said}"
        );
        // This machine's pool is long initialised, so no entropy hint.
        assert!(random_pool_ready());
        assert!(!said.contains("random pool"), "{said}");
        let left: Vec<_> = std::fs::read_dir(root.join("etc/ssh")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn ssh_host_keys_are_made_once_with_the_real_ssh_keygen() {
        let keygen = Path::new("/usr/bin/ssh-keygen");
        assert!(keygen.exists(), "make deps installs openssh-client");
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(ssh_host_keys(root), None, "no ssh-keygen in this root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink(keygen, root.join("usr/bin/ssh-keygen")).unwrap();
        let said = ssh_host_keys(root).unwrap();
        assert_eq!(said, "ssh host keys generated (ed25519, ecdsa)");
        let ssh = root.join("etc/ssh");
        let public = std::fs::read_to_string(ssh.join("ssh_host_ed25519_key.pub")).unwrap();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        assert!(std::fs::read_to_string(ssh.join("ssh_host_ecdsa_key.pub"))
            .unwrap()
            .starts_with("ecdsa-sha2-nistp256 "));
        let names: Vec<String> = std::fs::read_dir(&ssh)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
        // Kept, not regenerated; a lost key is made again.
        assert_eq!(ssh_host_keys(root).unwrap(), "ssh host keys kept");
        std::fs::remove_file(ssh.join("ssh_host_ecdsa_key")).unwrap();
        assert_eq!(
            ssh_host_keys(root).unwrap(),
            "ssh host keys generated (ecdsa)"
        );
        assert_eq!(
            std::fs::read_to_string(ssh.join("ssh_host_ed25519_key.pub")).unwrap(),
            public
        );
    }
}
