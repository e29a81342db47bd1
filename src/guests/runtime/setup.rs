//! libvirt on the appliance: the "libvirt" bring-up step writes
//! /etc/libvirt/qemu.conf, makes libvirt's and walden's guest directories,
//! and queues virtlogd and libvirtd as supervised services (foreground, no
//! systemd, no D-Bus) for the "services" step.

use super::error::RuntimeError;
use crate::supervisor::bringup::{BringUp, StepError, StepOutcome};
use crate::supervisor::service::{Readiness, ServiceSpec};
use std::path::{Path, PathBuf};

/// libvirtd in the image.
pub const LIBVIRTD: &str = "/usr/sbin/libvirtd";
/// virtlogd in the image (writes the guests' serial logs).
pub const VIRTLOGD: &str = "/usr/sbin/virtlogd";
/// libvirtd's read-write socket: it is ready once this exists.
pub const LIBVIRT_SOCK: &str = "/run/libvirt/libvirt-sock";
/// virtlogd's socket.
pub const VIRTLOGD_SOCK: &str = "/run/libvirt/virtlogd-sock";

/// qemu.conf as walden writes it on every boot.
///
/// Guests run as `libvirt-qemu` (made in the image by image/mkroot.sh).
/// `dynamic_ownership` lets libvirt hand a guest's disk images and vfio
/// group nodes to that user while it runs; `remember_owner = 0` keeps
/// libvirt from storing the previous owners in extended attributes on the
/// config disk and from "restoring" them later (a surprise when a file was
/// chowned by hand meanwhile). cgroup v2 needs no setting: libvirt finds
/// the unified hierarchy itself. No SELinux/AppArmor in the image.
pub const QEMU_CONF: &str = r#"# Written by walden at every boot (src/guests/runtime/setup.rs);
# changes here are overwritten.
user = "libvirt-qemu"
group = "libvirt-qemu"
dynamic_ownership = 1
remember_owner = 0
security_driver = "none"
stdio_handler = "logd"
"#;

/// libvirtd.conf used unless /etc/libvirt/libvirtd.conf exists: only root
/// reaches the socket (mode 0700), so no polkit is needed; logs go to
/// stderr, which walden logs with `service=libvirtd`.
pub const LIBVIRTD_CONF: &str = r#"# Written by walden (src/guests/runtime/setup.rs); to change it, create
# /etc/libvirt/libvirtd.conf, which is then used instead.
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
"#;

/// Directories libvirt and the guests need (relative to the root).
/// run/lock: `virsh console` (`walden guest console`) locks the guest's pty
/// in /var/lock, a link to /run/lock, which the tmpfs on /run hides.
pub const DIRS: &[&str] = &[
    "etc/libvirt",
    "run/libvirt",
    "run/lock",
    "var/lib/libvirt/qemu/nvram",
    "var/cache/libvirt/qemu",
    "var/log/libvirt/qemu",
    "var/log/walden/guests",
];

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn write_if_changed(path: &Path, text: &str) -> Result<bool, RuntimeError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    std::fs::write(path, text).map_err(|e| RuntimeError::Setup {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(true)
}

/// Make the directories and config files under `root`; `run` is walden's
/// runtime directory (for the generated libvirtd.conf). Returns the
/// libvirtd.conf to pass with `--config`, or None when /etc has its own.
pub fn prepare(root: &Path, run: &Path) -> Result<Option<PathBuf>, RuntimeError> {
    for dir in DIRS {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(|e| RuntimeError::Setup {
            path,
            message: e.to_string(),
        })?;
    }
    write_if_changed(&root.join("etc/libvirt/qemu.conf"), QEMU_CONF)?;
    if root.join("etc/libvirt/libvirtd.conf").exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(run).map_err(|e| RuntimeError::Setup {
        path: run.to_path_buf(),
        message: e.to_string(),
    })?;
    let conf = run.join("libvirtd.conf");
    write_if_changed(&conf, LIBVIRTD_CONF)?;
    Ok(Some(conf))
}

/// The virtlogd and libvirtd services; libvirtd after virtlogd, each ready
/// when its socket exists.
pub fn services(root: &Path, libvirtd_conf: Option<&Path>) -> Vec<ServiceSpec> {
    let mut virtlogd = ServiceSpec::new("virtlogd", &[VIRTLOGD]);
    virtlogd.ready = Readiness::Path(under(root, VIRTLOGD_SOCK));
    let mut libvirtd = ServiceSpec::new("libvirtd", &[LIBVIRTD]);
    if let Some(conf) = libvirtd_conf {
        libvirtd.argv.push("--config".into());
        libvirtd.argv.push(conf.display().to_string());
    }
    libvirtd.after = vec!["virtlogd".into()];
    libvirtd.ready = Readiness::Path(under(root, LIBVIRT_SOCK));
    vec![virtlogd, libvirtd]
}

/// Kernel modules guests need: tap devices for NICs, vhost-net.
const GUEST_MODULES: &[&str] = &["tun", "vhost_net"];

/// The "libvirt" bring-up step (appliance only).
pub fn libvirt_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let root = b.paths.root.clone();
    if !under(&root, LIBVIRTD).exists() {
        return Ok(StepOutcome::Skipped(format!(
            "{LIBVIRTD} is not in this root"
        )));
    }
    let conf = prepare(&root, &b.paths.run).map_err(|e| StepError::new(e.to_string()))?;
    b.services.extend(services(&root, conf.as_deref()));
    // Guest NICs are tap devices (/dev/net/tun); vhost-net moves their
    // packets in the kernel. Nothing on the host loads these by itself.
    let mut kernel = crate::vfio::apply::RealKernel::new(&b.paths);
    let missing: Vec<String> = GUEST_MODULES
        .iter()
        .filter_map(|m| {
            crate::vfio::apply::Kernel::load_module(&mut kernel, m)
                .err()
                .map(|e| format!("{m}: {e}"))
        })
        .collect();
    Ok(StepOutcome::Done(format!(
        "wrote /etc/libvirt/qemu.conf; virtlogd and libvirtd queued{}{}",
        match &conf {
            Some(c) => format!(" (libvirtd --config {})", c.display()),
            None => " (with /etc/libvirt/libvirtd.conf)".into(),
        },
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                "; modules not loaded (guest NICs may fail): {}",
                missing.join("; ")
            )
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_writes_config_and_dirs_in_a_temp_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let run = root.join("run/walden");
        let conf = prepare(root, &run).unwrap();
        assert_eq!(conf, Some(run.join("libvirtd.conf")));
        let qemu = std::fs::read_to_string(root.join("etc/libvirt/qemu.conf")).unwrap();
        assert!(qemu.contains("user = \"libvirt-qemu\""));
        for d in DIRS {
            assert!(root.join(d).is_dir(), "{d}");
        }
        // A libvirtd.conf of the admin's wins.
        std::fs::write(root.join("etc/libvirt/libvirtd.conf"), "x = 1\n").unwrap();
        assert_eq!(prepare(root, &run).unwrap(), None);
    }

    #[test]
    fn libvirtd_starts_after_virtlogd_and_is_ready_on_its_socket() {
        let s = services(Path::new("/"), Some(Path::new("/run/walden/libvirtd.conf")));
        assert_eq!(s[0].argv, ["/usr/sbin/virtlogd"]);
        assert_eq!(
            s[1].argv,
            [
                "/usr/sbin/libvirtd",
                "--config",
                "/run/walden/libvirtd.conf"
            ]
        );
        assert_eq!(s[1].after, ["virtlogd"]);
        assert_eq!(
            s[1].ready,
            Readiness::Path("/run/libvirt/libvirt-sock".into())
        );
    }
}
