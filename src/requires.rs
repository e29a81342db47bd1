//! What walden expects in the root file system it runs from: every program
//! it starts and every file it hands to libvirt or QEMU, with who needs it.
//! `walden check-root DIR` (run by image/build.sh on the root it is about
//! to squash) fails the image build when one is missing, so a package left
//! out of image/packages.txt is a build error instead of a guest or service
//! that fails on the box.
//!
//! An entry is an absolute path, or a bare program name that must be found
//! in one of [`PROGRAM_DIRS`].

use std::path::Path;

/// Where a bare program name is looked for (the image's PATH).
pub const PROGRAM_DIRS: &[&str] = &["usr/sbin", "usr/bin", "sbin", "bin"];

/// The time zones `timezone` may name (src/config/tz_names.txt) live here.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// (path or program, what needs it).
pub fn root_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            crate::guests::env::EMULATOR,
            "guests: the QEMU libvirt starts",
        ),
        (
            crate::guests::env::OVMF_CODE,
            "guests with [boot] firmware = \"uefi\"",
        ),
        (
            crate::guests::env::OVMF_VARS,
            "guests with [boot] firmware = \"uefi\" (NVRAM template)",
        ),
        (
            crate::guests::disks::QEMU_IMG,
            "guest disks with size or base",
        ),
        (
            crate::guests::runtime::setup::LIBVIRTD,
            "the libvirtd service",
        ),
        (
            crate::guests::runtime::setup::VIRTLOGD,
            "the virtlogd service",
        ),
        (crate::guests::runtime::cli::VIRSH, "walden guest console"),
        (
            crate::supervisor::host_files::SSHD,
            "sshd for [ssh] authorized_keys",
        ),
        (
            crate::boot::persist::SSH_KEYGEN,
            "ssh host keys on the config disk",
        ),
        (
            crate::supervisor::appliance::AGETTY,
            "console login (walden.rescue)",
        ),
        (
            crate::supervisor::appliance::E2FSCK,
            "the config disk's file system check",
        ),
        (crate::net::dhcp::DHCPCD, "dhcp = true"),
        (crate::boot::udev::UDEVD, "device names and drivers (udev)"),
        (crate::boot::udev::UDEVADM, "udev coldplug and settle"),
        (crate::vfio::MODPROBE, "vfio-pci and host drivers"),
        (
            crate::state::provision::SFDISK,
            "walden provision on a disk",
        ),
        (crate::state::provision::MKFS_EXT4, "walden provision"),
        (crate::state::provision::PARTX, "walden provision on a disk"),
        (ZONEINFO, "timezone"),
    ]
}

/// Every required path missing under `root`, as "PATH (needed by: WHAT)",
/// and the time zone names of the config check that have no file under
/// `root`'s zoneinfo.
pub fn missing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (what, need) in root_files() {
        if !present(root, what) {
            out.push(format!("{what} (needed by: {need})"));
        }
    }
    let zoneinfo = root.join(ZONEINFO.trim_start_matches('/'));
    if zoneinfo.is_dir() {
        let zones: Vec<&str> = crate::config::time_zones()
            .filter(|z| !zoneinfo.join(z).is_file())
            .collect();
        if !zones.is_empty() {
            out.push(format!(
                "{} of the time zones `config check` accepts are not in {ZONEINFO}: {} (regenerate src/config/tz_names.txt with image/tz-names.sh)",
                zones.len(),
                zones.join(", ")
            ));
        }
    }
    out
}

fn present(root: &Path, what: &str) -> bool {
    match what.strip_prefix('/') {
        Some(rel) => exists_in(root, Path::new(rel)),
        None => PROGRAM_DIRS
            .iter()
            .any(|d| exists_in(root, &Path::new(d).join(what))),
    }
}

/// Whether `rel` exists under `root` with symlinks resolved inside `root`
/// (an image's `/usr/sbin/modprobe -> /bin/kmod` means the image's kmod,
/// not the build machine's).
fn exists_in(root: &Path, rel: &Path) -> bool {
    let mut path = root.join(rel);
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let Ok(target) = std::fs::read_link(&path) else {
                    return false;
                };
                path = match target.strip_prefix("/") {
                    Ok(abs) => root.join(abs),
                    Err(_) => match path.parent() {
                        Some(dir) => dir.join(target),
                        None => return false,
                    },
                };
            }
            // A directory on the way may itself be a link (lib -> usr/lib):
            // resolve the parent first.
            Ok(_) => return true,
            Err(_) => {
                let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                    return false;
                };
                let Ok(rel_parent) = parent.strip_prefix(root) else {
                    return false;
                };
                if rel_parent.as_os_str().is_empty() {
                    return false;
                }
                let resolved = match resolve_dir(root, rel_parent) {
                    Some(d) => d,
                    None => return false,
                };
                let next = resolved.join(name);
                if next == path {
                    return false;
                }
                path = next;
            }
        }
    }
    false
}

/// `rel` (a directory under `root`) with its symlinks resolved inside `root`.
fn resolve_dir(root: &Path, rel: &Path) -> Option<std::path::PathBuf> {
    let mut out = root.to_path_buf();
    for part in rel.components() {
        let next = out.join(part);
        out = match std::fs::read_link(&next) {
            Ok(target) => match target.strip_prefix("/") {
                Ok(abs) => root.join(abs),
                Err(_) => out.join(target),
            },
            Err(_) => next,
        };
    }
    out.is_dir().then_some(out)
}

/// `walden check-root DIR`: exit 0 when nothing is missing, else list it.
pub fn command(root: &Path) -> anyhow::Result<u8> {
    let missing = missing(root);
    if missing.is_empty() {
        println!(
            "check-root: {} has every program and file walden uses ({} entries, {} time zones)",
            root.display(),
            root_files().len(),
            crate::config::time_zones().count()
        );
        return Ok(0);
    }
    eprintln!("check-root: {} lacks what walden needs:", root.display());
    for m in &missing {
        eprintln!("  {m}");
    }
    eprintln!("add the Debian packages that ship them to image/packages.txt");
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing_and_accepts_a_complete_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let all = missing(root);
        assert_eq!(all.len(), root_files().len(), "{all:?}");
        assert!(all
            .iter()
            .any(|m| m.starts_with("/usr/share/OVMF/OVMF_CODE_4M.fd (needed by: guests with")));
        for (what, _) in root_files() {
            let path = match what.strip_prefix('/') {
                Some(rel) => root.join(rel),
                None => root.join("usr/bin").join(what),
            };
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if what == ZONEINFO {
                std::fs::create_dir_all(&path).unwrap();
            } else {
                std::fs::write(&path, "").unwrap();
            }
        }
        let zones = missing(root);
        assert_eq!(zones.len(), 1, "{zones:?}");
        assert!(zones[0].contains("Europe/Berlin"), "{zones:?}");
        for z in crate::config::time_zones() {
            let f = root.join("usr/share/zoneinfo").join(z);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "TZif").unwrap();
        }
        assert_eq!(missing(root), Vec::<String>::new());
    }

    #[test]
    fn links_are_resolved_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/bin/kmod"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        // Absolute, through a linked directory: the image's kmod.
        std::os::unix::fs::symlink("/bin/kmod", root.join("usr/sbin/modprobe")).unwrap();
        assert!(present(root, "modprobe"));
        // Dangling inside the root, although the build machine has it.
        std::os::unix::fs::symlink("/bin/sh-nowhere", root.join("usr/sbin/gone")).unwrap();
        assert!(!present(root, "gone"));
        std::os::unix::fs::symlink("/bin/sh", root.join("usr/sbin/host-sh")).unwrap();
        assert!(
            !present(root, "host-sh"),
            "/bin/sh of the build machine does not count"
        );
    }
}
