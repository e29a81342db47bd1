//! Checks of `[[mount]]` and `[swap]` across entries and files: each mount
//! point once, no local disk below a network share, the swap file on a
//! local `[[mount]]`, and (warnings) guest files that no `[[mount]]` holds.

use super::guest::GuestConfig;
use super::host::HostConfig;
use super::mount::{lexical, mounts_holding, MountConfig, SwapConfig};
use super::source::{At, Sources};
use std::collections::HashMap;
use std::path::Path;

/// Check host.toml's mounts and swap.
pub(crate) fn check_host(host: &HostConfig, src: &Sources) {
    let mut targets = HashMap::new();
    for m in &host.mounts {
        if let Some(first) = targets.insert(lexical(&m.target), &m.at) {
            src.error(
                &m.at,
                "where",
                format!("{} is already mounted by {}", m.target.display(), first.key),
                "mount each directory once",
            );
        }
    }
    for m in host.mounts.iter().filter(|m| !m.is_network()) {
        let outer = mounts_holding(&host.mounts, &m.target);
        if let Some(share) = outer.iter().find(|o| o.is_network()) {
            src.error(
                &m.at,
                "where",
                format!(
                    "{} is below the network share at {}",
                    m.target.display(),
                    share.target.display()
                ),
                "local disks are mounted before the network is up; mount it outside the share",
            );
        }
    }
    if let Some(SwapConfig::File { path, .. }) = &host.swap {
        check_swap_file(&host.mounts, path, src);
    }
}

/// Where a file that no `[[mount]]` holds would end up.
fn landing(path: &Path) -> &'static str {
    let path = lexical(path);
    if path.starts_with("/var") {
        "the /var overlay, whose upper layer is on the config disk"
    } else if path.starts_with("/config") {
        "the config disk"
    } else if path.starts_with("/etc") {
        "the /etc overlay, whose upper layer is on the config disk"
    } else {
        "the image's root file system, which lives in RAM and is forgotten at reboot"
    }
}

/// Why a swap file that no `[[mount]]` holds cannot work there.
fn swap_landing(path: &Path) -> &'static str {
    let path = lexical(path);
    if path.starts_with("/var") || path.starts_with("/etc") {
        "it would be on an overlay whose upper layer is the config disk, and the kernel cannot swap to a file on an overlay"
    } else if path.starts_with("/config") {
        "it would be on the config disk, which it would fill"
    } else {
        "it would be on the image's root, an overlay in RAM, and the kernel cannot swap to a file on an overlay"
    }
}

fn check_swap_file(mounts: &[MountConfig], path: &Path, src: &Sources) {
    let at = SwapConfig::at();
    let hint = "put the file under the `where` of a [[mount]] of a local disk \
                (e.g. [[mount]] where = \"/srv/vm\" and file = \"/srv/vm/swapfile\"), \
                or use device = \"LABEL=..\" for a swap partition";
    match mounts_holding(mounts, path).last() {
        None => src.error(
            &at,
            "file",
            format!(
                "swap file {} is on no [[mount]]: {}",
                path.display(),
                swap_landing(path)
            ),
            hint,
        ),
        Some(m) if m.is_network() => src.error(
            &at,
            "file",
            format!(
                "swap file {} is on the network share at {}: the kernel does not swap to {}",
                path.display(),
                m.target.display(),
                m.fstype.as_deref().unwrap_or("a network file system")
            ),
            hint,
        ),
        Some(m) if m.read_only => src.error(
            &at,
            "file",
            format!(
                "swap file {} is on the read-only mount at {}",
                path.display(),
                m.target.display()
            ),
            "remove read_only from that [[mount]], or put the file on another one",
        ),
        Some(_) => {}
    }
}

/// Warn about guest disk images (and their bases) that no `[[mount]]`
/// holds: they would be written to the config disk or to RAM.
pub(crate) fn check_guest_paths(host: &HostConfig, guests: &[GuestConfig], src: &Sources) {
    for g in guests {
        for (key, path) in g.host_paths() {
            let is_disk = key.ends_with(".path") || key.ends_with(".base");
            if !is_disk || !mounts_holding(&host.mounts, path).is_empty() {
                continue;
            }
            let what = if key.ends_with(".base") {
                "base image"
            } else {
                "disk image"
            };
            src.warning(
                &At {
                    file: g.at.file.clone(),
                    key: String::new(),
                },
                &key,
                format!(
                    "{what} {} is on no [[mount]] of host.toml: it would be on {}",
                    path.display(),
                    landing(path)
                ),
                "add a [[mount]] of a data disk whose `where` holds it (e.g. where = \"/srv/vm\"), \
                 or move the file under an existing one",
            );
        }
    }
}
