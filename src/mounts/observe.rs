//! What the kernel shows, for the plan: mountinfo, /proc/swaps, and each
//! local `what` of the config resolved to a device by its superblock
//! (`LABEL=`, `UUID=`), its udev link (`PARTUUID=`) or its /dev path.

use super::error::MountError;
use super::plan::{Observed, Resolved};
use super::system::System;
use super::Scope;
use crate::boot::media::Seen;
use crate::config::{MountConfig, MountSource, SwapConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Observe for `scope`; `waited` goes into the "no disk with ..." messages.
pub fn observe(
    sys: &dyn System,
    mounts: &[MountConfig],
    swap: Option<&SwapConfig>,
    scope: Scope,
    waited: Duration,
) -> Result<Observed, MountError> {
    let mut wanted: Vec<&MountSource> = mounts
        .iter()
        .filter(|m| scope.holds(m) && !m.is_network())
        .map(|m| &m.what)
        .collect();
    if let (Scope::Local, Some(SwapConfig::Device(src))) = (scope, swap) {
        wanted.push(src);
    }
    let devices = if wanted
        .iter()
        .any(|s| matches!(s, MountSource::Label(_) | MountSource::Uuid(_)))
    {
        sys.block_devices()
    } else {
        Vec::new()
    };
    let sources = wanted
        .into_iter()
        .map(|s| (s.to_string(), resolve(sys, &devices, s, waited)))
        .collect();
    Ok(Observed {
        mounts: sys.mounts()?,
        swaps: sys.swaps()?,
        sources,
    })
}

fn resolved(seen: Seen) -> Resolved {
    Resolved {
        device: seen.device,
        fstype: seen.probe.map(|p| p.fstype.mount_name().to_string()),
    }
}

/// One `what`: its device, or the "no disk with ..." message.
fn resolve(
    sys: &dyn System,
    devices: &[Seen],
    src: &MountSource,
    waited: Duration,
) -> Result<Resolved, String> {
    let not_found = |seen: String| {
        MountError::NotFound {
            spec: src.to_string(),
            waited_s: waited.as_secs(),
            seen,
        }
        .to_string()
    };
    let at = |path: PathBuf| {
        sys.device_at(&path)
            .map(resolved)
            .ok_or_else(|| not_found(format!("{} does not exist", path.display())))
    };
    match src {
        MountSource::Label(l) => pick(devices, |p| p.label.as_deref() == Some(l.as_str()))
            .ok_or_else(|| not_found(summary(devices))),
        MountSource::Uuid(u) => pick(devices, |p| {
            p.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u))
        })
        .ok_or_else(|| not_found(summary(devices))),
        MountSource::PartUuid(u) => {
            at(PathBuf::from("/dev/disk/by-partuuid").join(u.to_ascii_lowercase()))
        }
        MountSource::Device(p) => at(p.clone()),
        MountSource::Network(s) => Err(format!("{s} is a network share, not a device")),
    }
}

fn pick(
    devices: &[Seen],
    matches: impl Fn(&crate::boot::media::Probe) -> bool,
) -> Option<Resolved> {
    devices
        .iter()
        .find(|d| d.probe.as_ref().is_some_and(&matches))
        .cloned()
        .map(resolved)
}

/// "vda (ext4 label WALDEN-CONFIG), vdb (no known file system)".
fn summary(devices: &[Seen]) -> String {
    if devices.is_empty() {
        return "no block devices".into();
    }
    devices
        .iter()
        .map(|d| {
            let name = d.device.file_name().map_or_else(
                || d.device.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match (&d.probe, &d.error) {
                (Some(p), _) => format!("{name} ({p})"),
                (None, Some(e)) => format!("{name} ({e})"),
                (None, None) => format!("{name} (no known file system)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
