//! host.toml's `[[mount]]` and `[swap]`: the types and their readers.
//! Checks across entries (a swap file must be on a mount, guests' disks
//! should be) are in [`super::check_mounts`].

use super::reader::{Tbl, Val};
use super::source::At;
use super::units::Size;
use std::fmt;
use std::path::{Path, PathBuf};

/// Local file systems the image mounts (their modules are in
/// image/modules.keep; ext2 and ext3 are mounted by the ext4 driver).
pub const LOCAL_FSTYPES: &[&str] = &["ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "exfat"];
/// Network file systems the image mounts, through Debian's mount.nfs and
/// mount.cifs.
pub const NETWORK_FSTYPES: &[&str] = &["nfs", "nfs4", "cifs"];

/// What to mount or swap on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// "LABEL=.."
    Label(String),
    /// "UUID=.."
    Uuid(String),
    /// "PARTUUID=..": a partition's id in its partition table.
    PartUuid(String),
    /// A device path under /dev.
    Device(PathBuf),
    /// A network share: "host:/export" (nfs, nfs4) or "//host/share" (cifs).
    Network(String),
}

impl fmt::Display for MountSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountSource::Label(l) => write!(f, "LABEL={l}"),
            MountSource::Uuid(u) => write!(f, "UUID={u}"),
            MountSource::PartUuid(u) => write!(f, "PARTUUID={u}"),
            MountSource::Device(p) => write!(f, "{}", p.display()),
            MountSource::Network(s) => write!(f, "{s}"),
        }
    }
}

/// A `[[mount]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Origin in host.toml.
    pub at: At,
    /// `what`.
    pub what: MountSource,
    /// `where`: absolute mount point.
    pub target: PathBuf,
    /// File system type (one of [`LOCAL_FSTYPES`] or [`NETWORK_FSTYPES`]);
    /// probed when absent (local disks only).
    pub fstype: Option<String>,
    /// Mount options.
    pub options: Vec<String>,
    /// Mount read-only.
    pub read_only: bool,
}

impl MountConfig {
    /// An nfs, nfs4 or cifs share: mounted after the network is up.
    pub fn is_network(&self) -> bool {
        matches!(self.what, MountSource::Network(_))
    }
}

/// `[swap]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapConfig {
    /// A swap file, created with `size` when missing.
    File {
        /// Absolute path.
        path: PathBuf,
        /// Size.
        size: Size,
    },
    /// A swap partition.
    Device(MountSource),
}

impl SwapConfig {
    /// Where `[swap]` is in host.toml (it has no `at` of its own: there is one).
    pub fn at() -> At {
        At {
            file: PathBuf::from("host.toml"),
            key: "swap".into(),
        }
    }
}

/// `path` with `.` and `..` resolved lexically (no file system access).
pub fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The `[[mount]]`s whose `where` holds `path`, outermost first (a path
/// under /srv/vm/fast with mounts at /srv/vm and /srv/vm/fast: both).
pub fn mounts_holding<'a>(mounts: &'a [MountConfig], path: &Path) -> Vec<&'a MountConfig> {
    let path = lexical(path);
    let mut found: Vec<&MountConfig> = mounts
        .iter()
        .filter(|m| path.starts_with(lexical(&m.target)))
        .collect();
    found.sort_by_key(|m| m.target.components().count());
    found
}

/// Mount points walden owns; `[[mount]]` may not use them.
const RESERVED_MOUNTS: &[&str] = &[
    "/", "/config", "/etc", "/proc", "/sys", "/dev", "/run", "/tmp", "/var",
];

/// Trees no `[[mount]]` may go below: the config disk and the kernel's.
const RESERVED_TREES: &[&str] = &["/config", "/proc", "/sys", "/dev"];

/// `what` of a mount or swap device; `network` allows shares.
fn source(v: &Val<'_>, network: bool) -> Option<MountSource> {
    let s = v.str()?;
    let hint = if network {
        "write \"LABEL=..\", \"UUID=..\", \"PARTUUID=..\", a device path like \"/dev/disk/by-id/..\", \
         \"host:/export\" (nfs) or \"//host/share\" (cifs)"
    } else {
        "write \"LABEL=..\", \"UUID=..\", \"PARTUUID=..\" or a device path like \"/dev/disk/by-id/..\""
    };
    let tagged = |prefix: &str| s.strip_prefix(prefix).filter(|x| !x.is_empty());
    if let Some(l) = tagged("LABEL=") {
        Some(MountSource::Label(l.to_string()))
    } else if let Some(u) = tagged("UUID=") {
        Some(MountSource::Uuid(u.to_string()))
    } else if let Some(u) = tagged("PARTUUID=") {
        Some(MountSource::PartUuid(u.to_string()))
    } else if s.starts_with("/dev/") && s.len() > 5 {
        Some(MountSource::Device(s.into()))
    } else if network && is_share(s) {
        Some(MountSource::Network(s.to_string()))
    } else {
        v.error(format!("invalid device {s:?}"), hint)
    }
}

/// "host:/export" or "//host/share" (whitespace-free, with a host).
fn is_share(s: &str) -> bool {
    if s.chars().any(char::is_whitespace) {
        return false;
    }
    if let Some(rest) = s.strip_prefix("//") {
        return rest
            .split_once('/')
            .is_some_and(|(h, share)| !h.is_empty() && !share.is_empty());
    }
    s.find(":/").is_some_and(|i| i > 0 && !s[..i].contains('/'))
}

/// A `[[mount]]` table.
pub(crate) fn mount(t: Tbl<'_>) -> Option<MountConfig> {
    let what_val = t.req("what", "e.g. what = \"LABEL=vmstore\"");
    let what = what_val.as_ref().and_then(|v| source(v, true));
    let target = t.req("where", "e.g. where = \"/srv/vm\"").and_then(|v| {
        let p = v.abs_path()?;
        if RESERVED_MOUNTS.iter().any(|r| p == Path::new(r)) {
            return v.error(
                format!("{} is managed by walden", p.display()),
                "mount below it instead, e.g. /srv/NAME or /var/lib/walden/NAME",
            );
        }
        if let Some(tree) = RESERVED_TREES.iter().find(|r| p.starts_with(r)) {
            let why = if *tree == "/config" {
                "/config is the config disk: a mount there hides part of it from walden"
            } else {
                "it belongs to the kernel"
            };
            return v.error(
                format!("{} is under {tree}; {why}", p.display()),
                "mount it elsewhere, e.g. /srv/NAME",
            );
        }
        Some(p)
    });
    let fstype = t.opt("fstype").and_then(|v| {
        let s = v.str()?;
        if LOCAL_FSTYPES.contains(&s) || NETWORK_FSTYPES.contains(&s) {
            Some(s.to_string())
        } else {
            v.error(
                format!("the image cannot mount fstype {s:?}"),
                &format!(
                    "use one of {} (or leave fstype out to probe a local disk)",
                    LOCAL_FSTYPES
                        .iter()
                        .chain(NETWORK_FSTYPES)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }
    });
    let options = t
        .opt("options")
        .map(|v| {
            v.list(|e| {
                let s = e.str()?;
                if s.is_empty() || s.contains(',') || s.chars().any(char::is_whitespace) {
                    e.error(
                        format!("invalid mount option {s:?}"),
                        "one option per element, e.g. options = [\"noatime\", \"vers=4.2\"]",
                    )
                } else {
                    Some(s.to_string())
                }
            })
        })
        .unwrap_or_default();
    let read_only = t.opt("read_only").and_then(|v| v.bool()).unwrap_or(false);
    if let (Some(v), Some(w)) = (&what_val, &what) {
        share_matches_fstype(v, w, fstype.as_deref());
    }
    let at = t.at();
    t.finish();
    Some(MountConfig {
        at,
        what: what?,
        target: target?,
        fstype,
        options,
        read_only,
    })
}

/// A share needs its fstype; nfs and cifs need a share.
fn share_matches_fstype(v: &Val<'_>, what: &MountSource, fstype: Option<&str>) {
    let network_type = fstype.filter(|f| NETWORK_FSTYPES.contains(f));
    match (what, network_type) {
        (MountSource::Network(s), None) => {
            let hint = if s.starts_with("//") {
                "add fstype = \"cifs\""
            } else {
                "add fstype = \"nfs\" (or \"nfs4\")"
            };
            v.error::<()>(
                format!("{s:?} is a network share: it needs fstype nfs, nfs4 or cifs"),
                hint,
            );
        }
        (MountSource::Network(s), Some("cifs")) if !s.starts_with("//") => {
            v.error::<()>(
                format!("a cifs share is written //host/share, not {s:?}"),
                "e.g. what = \"//nas/vm\"",
            );
        }
        (MountSource::Network(s), Some(f)) if s.starts_with("//") && f != "cifs" => {
            v.error::<()>(
                format!("{s:?} is a cifs share, but fstype is {f}"),
                "write fstype = \"cifs\", or what = \"host:/export\" for nfs",
            );
        }
        (MountSource::Network(_), Some(_)) => {}
        (_, Some(f)) => {
            v.error::<()>(
                format!("fstype {f} mounts a network share, not {what}"),
                if f == "cifs" {
                    "write what = \"//host/share\""
                } else {
                    "write what = \"host:/export\""
                },
            );
        }
        (_, None) => {}
    }
}

/// The `[swap]` table.
pub(crate) fn swap(t: Tbl<'_>) -> Option<SwapConfig> {
    let file = t.opt("file").and_then(|v| v.abs_path());
    let size = t.opt("size").and_then(|v| v.parse::<Size>());
    let device = t.opt("device").and_then(|v| source(&v, false));
    let hint = "write file = \"/srv/vm/swapfile\" (on a [[mount]]) with size = \"4GiB\", \
                or device = \"LABEL=swap\"";
    let out = match (t.opt("file").is_some(), t.opt("device").is_some()) {
        (true, true) => {
            t.error("give `file` or `device`, not both", hint);
            None
        }
        (false, false) => {
            t.error("[swap] needs `file` or `device`", hint);
            None
        }
        (true, false) => {
            if t.opt("size").is_none() {
                t.error("a swap file needs `size`", "e.g. size = \"4GiB\"");
            }
            file.zip(size)
                .map(|(path, size)| SwapConfig::File { path, size })
        }
        (false, true) => {
            if t.opt("size").is_some() {
                t.error("`size` only applies to a swap file", "remove size");
            }
            device.map(SwapConfig::Device)
        }
    };
    t.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_recognised() {
        for (s, share) in [
            ("nas:/export/vm", true),
            ("10.0.0.5:/vm", true),
            ("[fd00::5]:/vm", true),
            ("//nas/vm", true),
            ("//nas/", false),
            ("///vm", false),
            (":/vm", false),
            ("/srv:/x", false),
            ("nas: /vm", false),
            ("LABEL=x", false),
        ] {
            assert_eq!(is_share(s), share, "{s}");
        }
    }

    #[test]
    fn sources_display_as_written() {
        for (s, shown) in [
            (MountSource::Label("DATA".into()), "LABEL=DATA"),
            (MountSource::Uuid("0a1b".into()), "UUID=0a1b"),
            (MountSource::PartUuid("1234-01".into()), "PARTUUID=1234-01"),
            (MountSource::Device("/dev/vdb1".into()), "/dev/vdb1"),
            (MountSource::Network("nas:/vm".into()), "nas:/vm"),
        ] {
            assert_eq!(s.to_string(), shown);
        }
    }
}
