//! The `walden.*` parameters of the kernel command line (pure parser).
//!
//! | parameter | meaning |
//! |---|---|
//! | `walden.media=SPEC` | boot media: `LABEL=..`, `UUID=..`, `PARTUUID=..` or `/dev/..` (default `LABEL=WALDEN-BOOT`) |
//! | `walden.version=V` | boot `images/V/` (GRUB always passes it; without it the newest version is booted) |
//! | `walden.toram` | copy root.squashfs into RAM before mounting it |
//! | `walden.config=SPEC` | config disk (read by stage 2; stage 1 only validates it) |
//! | `walden.wait=SECS` | how long to wait for late boot media (default 20) |
//! | `walden.shell` | stop in the emergency shell before switching root (debugging) |
//! | `walden.rescue` | a root shell on every console instead of the status screen (read by stage 2) |
//! | `walden.vfio=ADDR,ID,...` | devices to bind to vfio-pci before coldplug (read by stage 2, `crate::vfio`) |
//!
//! Unknown `walden.*` parameters are kept in [`Cmdline::unknown`] so stage 1
//! can warn about typos instead of silently ignoring them.

use super::BootError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Label of the boot media's file system (the ESP of the USB image and the
/// ISO volume id).
pub const DEFAULT_MEDIA_LABEL: &str = "WALDEN-BOOT";
/// Default time to wait for boot media that appears late (USB).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// How a block device is named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// File-system label.
    Label(String),
    /// File-system UUID as blkid prints it (case-insensitive).
    Uuid(String),
    /// Partition UUID (GPT unique GUID, or `SSSSSSSS-NN` on MBR), lower case.
    PartUuid(String),
    /// A device node such as `/dev/vda1`.
    Path(PathBuf),
}

impl DeviceSpec {
    /// Parse `LABEL=..`, `UUID=..`, `PARTUUID=..` or an absolute /dev path.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(l) = value.strip_prefix("LABEL=") {
            non_empty(l).map(|l| DeviceSpec::Label(l.to_string()))
        } else if let Some(u) = value.strip_prefix("PARTUUID=") {
            non_empty(u).map(|u| DeviceSpec::PartUuid(u.to_ascii_lowercase()))
        } else if let Some(u) = value.strip_prefix("UUID=") {
            non_empty(u).map(|u| DeviceSpec::Uuid(u.to_ascii_lowercase()))
        } else if value.starts_with("/dev/") && value.len() > 5 {
            Ok(DeviceSpec::Path(PathBuf::from(value)))
        } else {
            Err("expected LABEL=NAME, UUID=ID, PARTUUID=ID or /dev/NAME".to_string())
        }
    }
}

fn non_empty(s: &str) -> Result<&str, String> {
    if s.is_empty() {
        Err("empty value; expected LABEL=NAME, UUID=ID, PARTUUID=ID or /dev/NAME".to_string())
    } else {
        Ok(s)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Label(l) => write!(f, "LABEL={l}"),
            DeviceSpec::Uuid(u) => write!(f, "UUID={u}"),
            DeviceSpec::PartUuid(u) => write!(f, "PARTUUID={u}"),
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What stage 1 takes from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// Where the boot media is.
    pub media: DeviceSpec,
    /// The image version to boot, if given.
    pub version: Option<String>,
    /// Copy root.squashfs to RAM first.
    pub toram: bool,
    /// The config disk, if named (stage 2 mounts it).
    pub config: Option<DeviceSpec>,
    /// How long to wait for late boot media.
    pub wait: Duration,
    /// Drop to the emergency shell instead of switching root.
    pub shell: bool,
    /// Root shells on the consoles instead of the status screen (stage 2).
    pub rescue: bool,
    /// `walden.*` parameters this parser does not know.
    pub unknown: Vec<String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Self {
            media: DeviceSpec::Label(DEFAULT_MEDIA_LABEL.to_string()),
            version: None,
            toram: false,
            config: None,
            wait: DEFAULT_WAIT,
            shell: false,
            rescue: false,
            unknown: Vec::new(),
        }
    }
}

impl Cmdline {
    /// Parse the contents of /proc/cmdline. Parameters that are not
    /// `walden.*` belong to the kernel or other tools and are ignored.
    pub fn parse(text: &str) -> Result<Self, BootError> {
        let mut out = Cmdline::default();
        for word in text.split_whitespace() {
            let Some(rest) = word.strip_prefix("walden.") else {
                continue;
            };
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            let bad = |reason: String| BootError::Cmdline {
                param: word.to_string(),
                reason,
            };
            match (key, value) {
                ("media", Some(v)) => out.media = DeviceSpec::parse(v).map_err(bad)?,
                ("config", Some(v)) => out.config = Some(DeviceSpec::parse(v).map_err(bad)?),
                ("version", Some(v)) => out.version = Some(parse_version(v).map_err(bad)?),
                ("wait", Some(v)) => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| bad("expected whole seconds, e.g. walden.wait=30".into()))?;
                    out.wait = Duration::from_secs(secs);
                }
                ("toram", None) | ("toram", Some("1" | "yes" | "true")) => out.toram = true,
                ("toram", Some("0" | "no" | "false")) => out.toram = false,
                ("shell", None) | ("shell", Some("1" | "yes" | "true")) => out.shell = true,
                ("rescue", None) | ("rescue", Some("1" | "yes" | "true")) => out.rescue = true,
                // Stage 2's business: crate::vfio parses and validates it.
                ("vfio", Some(_)) => {}
                ("media" | "config" | "version" | "wait", None) => {
                    return Err(bad("needs a value".into()))
                }
                _ => out.unknown.push(word.to_string()),
            }
        }
        Ok(out)
    }
}

/// A version names a directory under images/: no separators, no dot-dot.
fn parse_version(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '~'));
    if ok {
        Ok(v.to_string())
    } else {
        Err("a version is a directory name under images/ (letters, digits, . - _ + ~)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_walden_parameters() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz console=ttyS0 quiet").unwrap();
        assert_eq!(c, Cmdline::default());
        assert_eq!(c.media.to_string(), "LABEL=WALDEN-BOOT");
    }

    #[test]
    fn parses_every_parameter() {
        let c = Cmdline::parse(
            "console=tty0 walden.version=0.2.0 walden.media=UUID=ABCD-1234 walden.toram \
             walden.config=LABEL=MYCONF walden.wait=45 walden.shell walden.vfio=0000:03:00.0 \
             walden.colour=red",
        )
        .unwrap();
        assert_eq!(c.version.as_deref(), Some("0.2.0"));
        assert_eq!(c.media, DeviceSpec::Uuid("abcd-1234".into()));
        assert!(c.toram);
        assert!(c.shell);
        assert_eq!(c.config, Some(DeviceSpec::Label("MYCONF".into())));
        assert_eq!(c.wait, Duration::from_secs(45));
        assert_eq!(c.unknown, vec!["walden.colour=red".to_string()]);
    }

    #[test]
    fn config_and_media_by_partuuid() {
        let c = Cmdline::parse(
            "walden.config=PARTUUID=1A2B3C4D-0000-4000-8000-00000000000A walden.media=PARTUUID=deadbeef-01",
        )
        .unwrap();
        assert_eq!(
            c.config,
            Some(DeviceSpec::PartUuid(
                "1a2b3c4d-0000-4000-8000-00000000000a".into()
            ))
        );
        assert_eq!(c.media.to_string(), "PARTUUID=deadbeef-01");
        assert!(Cmdline::parse("walden.config=PARTUUID=").is_err());
    }

    #[test]
    fn media_as_device_path() {
        let c = Cmdline::parse("walden.media=/dev/sdb1").unwrap();
        assert_eq!(c.media, DeviceSpec::Path("/dev/sdb1".into()));
        assert_eq!(c.media.to_string(), "/dev/sdb1");
    }

    #[test]
    fn later_parameters_win() {
        let c = Cmdline::parse("walden.toram walden.toram=0 walden.version=1 walden.version=2")
            .unwrap();
        assert!(!c.toram);
        assert_eq!(c.version.as_deref(), Some("2"));
    }

    #[test]
    fn rejects_bad_values_naming_the_parameter() {
        for (text, needle) in [
            ("walden.media=sdb1", "walden.media=sdb1"),
            ("walden.media=LABEL=", "walden.media=LABEL="),
            ("walden.version=../etc", "walden.version=../etc"),
            ("walden.version=a/b", "walden.version=a/b"),
            ("walden.version", "needs a value"),
            ("walden.wait=soon", "whole seconds"),
        ] {
            let err = Cmdline::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
