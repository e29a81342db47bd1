//! `walden image list|install|rollback|remove`: versions on the boot media.
//!
//! On the appliance the media is found through stage 1's boot record
//! (/run/walden/boot.toml) and made writable only while a command runs
//! ([`MediaRw`]). `--media DIR` works on an ESP mounted elsewhere instead
//! (preparing a stick on a workstation). ISO boots have one read-only
//! version: `list` says so, changes are refused with a clear message.

use super::error::ImageError;
use super::grubcfg::{GrubCfg, DEFAULT_CMDLINE, DEFAULT_TIMEOUT};
use super::media::{MediaKind, MediaRw};
use super::retention::DEFAULT_KEEP;
use super::store::{Esp, VAR_REASON};
use crate::boot::record::{BootRecord, BOOT_RECORD};
use crate::context::Paths;
use clap::Subcommand;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Lock file serialising changes to the boot media.
pub const MEDIA_LOCK: &str = "media.lock";

/// `walden image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the versions on the boot media (active, previous, trial, bad).
    List {
        /// Work on an ESP mounted at DIR instead of this machine's boot media.
        #[arg(long)]
        media: Option<PathBuf>,
    },
    /// Copy a built version (DIR with manifest.toml, or the manifest itself)
    /// onto the boot media and boot it on trial at the next reboot.
    Install {
        /// build/images/<version>/ or its manifest.toml.
        source: PathBuf,
        /// Versions to keep on the media (never the running or previous one).
        #[arg(long, default_value_t = DEFAULT_KEEP)]
        keep: usize,
        /// Work on an ESP mounted at DIR instead of this machine's boot media.
        #[arg(long)]
        media: Option<PathBuf>,
    },
    /// Make the previous version active again; reboot to run it.
    Rollback {
        /// Work on an ESP mounted at DIR instead of this machine's boot media.
        #[arg(long)]
        media: Option<PathBuf>,
    },
    /// Delete a version from the boot media.
    Remove {
        /// The version.
        version: String,
        /// Work on an ESP mounted at DIR instead of this machine's boot media.
        #[arg(long)]
        media: Option<PathBuf>,
    },
    /// Print the generated grub.cfg for VERSIONs (image/mkusb.sh uses it).
    #[command(hide = true)]
    GrubCfg {
        /// Kernel command line of every entry.
        #[arg(long, default_value = DEFAULT_CMDLINE)]
        cmdline: String,
        /// Menu timeout in seconds.
        #[arg(long, default_value_t = DEFAULT_TIMEOUT)]
        timeout: u32,
        /// The versions on the media.
        #[arg(required = true)]
        versions: Vec<String>,
    },
}

/// Run an image command; its output on stdout.
pub fn command(cmd: ImageCommand) -> anyhow::Result<u8> {
    let paths = Paths::default();
    print!("{}", run(cmd, &paths)?);
    Ok(0)
}

/// The media to work on: `--media DIR`, or the boot media of this boot.
struct Target {
    rec: Option<BootRecord>,
    dir: Option<PathBuf>,
}

impl Target {
    fn find(media: Option<PathBuf>, paths: &Paths) -> Result<Self, ImageError> {
        if let Some(dir) = media {
            return Ok(Self {
                rec: None,
                dir: Some(dir),
            });
        }
        let path = paths.root.join(BOOT_RECORD.trim_start_matches('/'));
        if !path.exists() {
            return Err(ImageError::NoBootRecord { path });
        }
        Ok(Self {
            rec: Some(BootRecord::load(&path)?),
            dir: None,
        })
    }

    fn running(&self) -> Option<&str> {
        self.rec.as_ref().map(|r| r.version.as_str())
    }

    fn iso(&self) -> bool {
        self.rec
            .as_ref()
            .is_some_and(|r| MediaKind::of(r) == MediaKind::Iso)
    }

    /// Read access: the media as stage 1 mounted it.
    fn read_root(&self) -> PathBuf {
        match (&self.dir, &self.rec) {
            (Some(d), _) => d.clone(),
            (None, Some(r)) => PathBuf::from(&r.media_mount),
            (None, None) => PathBuf::from(crate::boot::stage1::MEDIA_MOUNT),
        }
    }

    /// Write access for the duration of the guard.
    fn write(&self, paths: &Paths) -> Result<MediaRw, ImageError> {
        match (&self.dir, &self.rec) {
            (Some(d), _) => Ok(MediaRw::directory(d)),
            (None, Some(r)) => MediaRw::open(r, &paths.proc, &paths.run.join(MEDIA_LOCK)),
            (None, None) => Ok(MediaRw::directory(&self.read_root())),
        }
    }
}

/// Run `cmd` against `paths`; the text to print.
pub fn run(cmd: ImageCommand, paths: &Paths) -> Result<String, ImageError> {
    match cmd {
        ImageCommand::GrubCfg {
            cmdline,
            timeout,
            versions,
        } => {
            let mut cfg = GrubCfg::new(versions);
            cfg.cmdline = cmdline;
            cfg.timeout = timeout;
            Ok(cfg.render()?)
        }
        ImageCommand::List { media } => {
            let t = Target::find(media, paths)?;
            list(&t)
        }
        ImageCommand::Install {
            source,
            keep,
            media,
        } => {
            let t = Target::find(media, paths)?;
            if t.iso() {
                return Err(ImageError::Iso {
                    what: "install a version",
                });
            }
            let source = absolute(&source);
            let rw = t.write(paths)?;
            let esp = Esp::new(rw.root());
            let running = match t.running() {
                Some(r) => r.to_string(),
                None => current(&esp)?,
            };
            let done = esp.install(&source, &running, keep)?;
            let mut out = format!(
                "installed {} on the boot media; it boots on trial at the next reboot \
                 ({} tries, then back to {})\n",
                done.version,
                super::trial::TRIES,
                done.previous
            );
            if !done.removed.is_empty() {
                let _ = writeln!(out, "removed old versions: {}", done.removed.join(", "));
            }
            out.push_str("reboot now to try it: walden reboot\n");
            Ok(out)
        }
        ImageCommand::Rollback { media } => {
            let t = Target::find(media, paths)?;
            if t.iso() {
                return Err(ImageError::Iso { what: "roll back" });
            }
            let rw = t.write(paths)?;
            let prev = Esp::new(rw.root()).rollback()?;
            Ok(format!(
                "{prev} is the active version again; reboot to run it: walden reboot\n"
            ))
        }
        ImageCommand::Remove { version, media } => {
            let t = Target::find(media, paths)?;
            if t.iso() {
                return Err(ImageError::Iso {
                    what: "remove a version",
                });
            }
            let rw = t.write(paths)?;
            Esp::new(rw.root()).remove(&version, t.running())?;
            Ok(format!("removed {version} from the boot media\n"))
        }
    }
}

/// `image list` text.
fn list(t: &Target) -> Result<String, ImageError> {
    if t.iso() {
        let v = t.running().unwrap_or("?");
        return Ok(format!(
            "{v:<16} running\nbooted from an ISO: a single version, no trial counters; \
             upgrade or roll back by booting another walden ISO\n"
        ));
    }
    let esp = Esp::new(t.read_root());
    let entries = esp.list(t.running())?;
    let (env, state) = esp.load()?;
    let mut out = format!("{:<16} MARKERS\n", "VERSION");
    for e in &entries {
        let mut m = e.markers();
        if e.trial {
            let _ = write!(m, " ({} tries left)", state.tries);
        }
        let _ = writeln!(out, "{:<16} {m}", e.version);
    }
    // The running try's own start record (replaced by its verdict) is not
    // a failure yet.
    let this_try = entries
        .iter()
        .any(|e| e.trial && Some(e.version.as_str()) == t.running())
        .then(|| super::health::no_verdict(state.tries));
    if let Some(reason) = env
        .get(VAR_REASON)
        .filter(|r| !r.is_empty() && Some(*r) != this_try.as_deref())
    {
        let _ = writeln!(out, "last trial failure: {reason}");
    }
    Ok(out)
}

/// Without a boot record: the version GRUB boots now stands in for "running".
fn current(esp: &Esp) -> Result<String, ImageError> {
    let (_, st) = esp.load()?;
    st.active
        .or_else(|| esp.versions().first().cloned())
        .ok_or_else(|| ImageError::NotInstalled {
            version: "(any)".into(),
            installed: "none".into(),
        })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
