//! The versions on a mounted USB ESP and the operations on them: list,
//! install (verify, copy, retention, arm a trial, regenerate grub.cfg),
//! roll back and remove. Works on any directory laid out like the ESP
//! (`grub/grubenv`, `grub/grub.cfg`, `images/<version>/`), so the tests use
//! a temporary directory; mounting the real media is `media.rs`'s business.

use super::error::ImageError;
use super::grubcfg::{GrubCfg, DEFAULT_CMDLINE, DEFAULT_TIMEOUT};
use super::grubenv::GrubEnv;
use super::retention::{Protected, Retention};
use super::trial::TrialState;
use crate::boot::manifest::{hash_file, list_versions, Manifest, MANIFEST};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The artifacts of a version, copied in this order (manifest last, so a
/// version directory with a manifest is complete).
pub const ARTIFACTS: [&str; 3] = ["vmlinuz", "initrd.img", "root.squashfs"];
/// grubenv variable holding why the last trial boot was not healthy.
pub const VAR_REASON: &str = "trial_error";
/// Room left on the media besides the new version (FAT slack, grubenv).
const SPARE_BYTES: u64 = 4 << 20;
/// Longest reason kept in grubenv (the block is 1024 bytes in all).
const REASON_MAX: usize = 300;

/// One version on the media, with what grubenv says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// The version (directory under images/).
    pub version: String,
    /// GRUB boots it next (grubenv `active`, or the newest when unset).
    pub active: bool,
    /// The known-good fallback (grubenv `previous`).
    pub previous: bool,
    /// On trial: active and not yet marked good.
    pub trial: bool,
    /// A trial of it failed and GRUB rolled back (grubenv `failed`).
    pub bad: bool,
    /// The version running now.
    pub running: bool,
}

impl ImageEntry {
    /// The markers, e.g. "running, active, trial".
    pub fn markers(&self) -> String {
        let mut m = Vec::new();
        for (on, word) in [
            (self.running, "running"),
            (self.active, "active"),
            (self.trial, "trial"),
            (self.previous, "previous"),
            (self.bad, "bad"),
        ] {
            if on {
                m.push(word);
            }
        }
        m.join(", ")
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The version installed and armed for a trial.
    pub version: String,
    /// The fallback if the trial fails.
    pub previous: String,
    /// Versions deleted by the retention rule.
    pub removed: Vec<String>,
}

/// A mounted (writable for changes) USB ESP.
#[derive(Debug, Clone)]
pub struct Esp {
    root: PathBuf,
}

impl Esp {
    /// The ESP mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `images/` on the ESP.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `grub/grubenv` on the ESP.
    pub fn grubenv_path(&self) -> PathBuf {
        self.root.join("grub/grubenv")
    }

    /// `grub/grub.cfg` on the ESP.
    pub fn grubcfg_path(&self) -> PathBuf {
        self.root.join("grub/grub.cfg")
    }

    /// Versions on the media, newest first.
    pub fn versions(&self) -> Vec<String> {
        list_versions(&self.images())
    }

    /// grubenv and the trial state in it.
    pub fn load(&self) -> Result<(GrubEnv, TrialState), ImageError> {
        let env = GrubEnv::load(&self.grubenv_path())?;
        let state = TrialState::from_env(&env)?;
        Ok((env, state))
    }

    /// Store `state` in `env` and rewrite grubenv in place (fsync'ed).
    pub fn save(&self, mut env: GrubEnv, state: &TrialState) -> Result<(), ImageError> {
        state.to_env(&mut env)?;
        env.write_atomic(&self.grubenv_path())?;
        Ok(())
    }

    /// Every version with its markers, newest first.
    pub fn list(&self, running: Option<&str>) -> Result<Vec<ImageEntry>, ImageError> {
        let (_, st) = self.load()?;
        let versions = self.versions();
        // GRUB boots the newest entry when `active` is unset.
        let active = st.active.clone().or_else(|| versions.first().cloned());
        Ok(versions
            .iter()
            .map(|v| {
                let is = |o: &Option<String>| o.as_deref() == Some(v.as_str());
                ImageEntry {
                    version: v.clone(),
                    active: is(&active),
                    previous: is(&st.previous),
                    trial: is(&active) && st.pending,
                    bad: is(&st.failed),
                    running: running == Some(v.as_str()),
                }
            })
            .collect())
    }

    /// Install the version in `src` (a version directory, or its
    /// manifest.toml): verify every artifact against the manifest while
    /// copying, keep the newest `keep` versions, arm a trial of the new
    /// version with `running` as the fallback, regenerate grub.cfg.
    pub fn install(&self, src: &Path, running: &str, keep: usize) -> Result<Installed, ImageError> {
        let dir = if src.is_file() {
            src.parent().unwrap_or(Path::new(".")).to_path_buf()
        } else {
            src.to_path_buf()
        };
        let bad = |reason: String| ImageError::BadSource {
            path: src.to_path_buf(),
            reason,
        };
        let manifest_path = dir.join(MANIFEST);
        if !manifest_path.is_file() {
            return Err(bad(format!(
                "no {MANIFEST}; give a directory like build/images/<version>/"
            )));
        }
        let manifest = Manifest::load(&manifest_path)?;
        let version = manifest.version.clone();
        if version.is_empty()
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        {
            return Err(bad(format!(
                "version {version:?} is not a plain version string"
            )));
        }
        let mut need = SPARE_BYTES;
        for name in ARTIFACTS {
            manifest.expected(name, &manifest_path)?;
            let p = dir.join(name);
            let len = std::fs::metadata(&p)
                .map_err(|e| ImageError::io("read", &p, e))?
                .len();
            need += len;
        }
        if self.versions().contains(&version) {
            return Err(ImageError::AlreadyInstalled(version));
        }
        let (env, mut state) = self.load()?;
        // Refuse before writing anything: a failed trial arm must not leave
        // half a version behind.
        let mut after = state.clone();
        after.install(&version, running)?;
        let free = free_bytes(&self.root)?;
        if free < need {
            return Err(ImageError::NoSpace {
                version,
                free_mib: free >> 20,
                need_mib: need.div_ceil(1 << 20),
            });
        }

        let partial = self.images().join(format!(".{version}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| ImageError::io("create", &partial, e))?;
        let copied = copy_verified(&dir, &partial, &manifest, &manifest_path);
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
        let target = self.images().join(&version);
        std::fs::rename(&partial, &target).map_err(|e| ImageError::io("rename", &partial, e))?;
        sync_dir(&self.images())?;

        state.install(&version, running)?;
        let mut env = env;
        env.unset(VAR_REASON);
        let previous = state.previous.clone().unwrap_or_default();
        let plan = Retention { keep: keep.max(1) }.plan(
            &self.versions(),
            &Protected {
                running: Some(running),
                previous: state.previous.as_deref(),
                installing: Some(&version),
            },
        );
        for v in &plan.remove {
            let p = self.images().join(v);
            std::fs::remove_dir_all(&p).map_err(|e| ImageError::io("remove", &p, e))?;
        }
        if state
            .failed
            .as_ref()
            .is_some_and(|f| plan.remove.contains(f))
        {
            state.failed = None;
        }
        // grub.cfg first: the trial must never point at a missing entry.
        self.write_grub_cfg()?;
        self.save(env, &state)?;
        Ok(Installed {
            version,
            previous,
            removed: plan.remove,
        })
    }

    /// Make the previous version active (no trial). Returns it.
    pub fn rollback(&self) -> Result<String, ImageError> {
        let (env, mut state) = self.load()?;
        let prev = state.rollback()?;
        if !self.versions().contains(&prev) {
            return Err(ImageError::NotInstalled {
                version: prev,
                installed: self.versions().join(", "),
            });
        }
        self.save(env, &state)?;
        Ok(prev)
    }

    /// Delete `version` unless it is running, active or the fallback.
    pub fn remove(&self, version: &str, running: Option<&str>) -> Result<(), ImageError> {
        let versions = self.versions();
        if !versions.iter().any(|v| v == version) {
            return Err(ImageError::NotInstalled {
                version: version.to_string(),
                installed: versions.join(", "),
            });
        }
        let (env, mut state) = self.load()?;
        let role = if running == Some(version) {
            Some("running")
        } else if state.active.as_deref() == Some(version)
            || (state.active.is_none() && versions.first().map(String::as_str) == Some(version))
        {
            Some("the active version (GRUB boots it next)")
        } else if state.previous.as_deref() == Some(version) {
            Some("the fallback of the trial (grubenv previous)")
        } else {
            None
        };
        if let Some(role) = role {
            return Err(ImageError::Protected {
                version: version.to_string(),
                role,
            });
        }
        let p = self.images().join(version);
        std::fs::remove_dir_all(&p).map_err(|e| ImageError::io("remove", &p, e))?;
        sync_dir(&self.images())?;
        self.write_grub_cfg()?;
        if state.failed.as_deref() == Some(version) {
            state.failed = None;
            self.save(env, &state)?;
        }
        Ok(())
    }

    /// Regenerate grub.cfg for the versions on the media, keeping the
    /// kernel command line and menu timeout of the current one.
    pub fn write_grub_cfg(&self) -> Result<(), ImageError> {
        let path = self.grubcfg_path();
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut cfg = GrubCfg::new(self.versions());
        let (cmdline, timeout) = settings_of(&old);
        cfg.cmdline = cmdline;
        cfg.timeout = timeout;
        let text = cfg.render()?;
        write_synced(&path, text.as_bytes())
    }

    /// Record why the trial boot of the running version is not healthy,
    /// for the version that boots after the rollback to report.
    pub fn record_reason(&self, reason: &str) -> Result<(), ImageError> {
        let (mut env, _) = self.load()?;
        let mut r: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if r.len() > REASON_MAX {
            let mut cut = REASON_MAX;
            while !r.is_char_boundary(cut) {
                cut -= 1;
            }
            r.truncate(cut);
        }
        env.set(VAR_REASON, &r)?;
        env.write_atomic(&self.grubenv_path())?;
        Ok(())
    }
}

/// Kernel command line (without `walden.version=`) and menu timeout of an
/// existing grub.cfg; the image defaults when it has none.
pub fn settings_of(grub_cfg: &str) -> (String, u32) {
    let cmdline = grub_cfg
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("linux "))
        .map(|l| {
            l.split_whitespace()
                .skip(1) // the kernel path
                .filter(|w| !w.starts_with("walden.version="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    let timeout = grub_cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("set timeout="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    (cmdline, timeout)
}

/// Copy the artifacts into `to`, hashing while copying, then the manifest.
fn copy_verified(
    from: &Path,
    to: &Path,
    manifest: &Manifest,
    manifest_path: &Path,
) -> Result<(), ImageError> {
    for name in ARTIFACTS {
        let want = manifest.expected(name, manifest_path)?;
        let dest = to.join(name);
        let mut out = File::create(&dest).map_err(|e| ImageError::io("create", &dest, e))?;
        let (got, _) = hash_file(&from.join(name), Some(&mut out))?;
        if got != want {
            return Err(ImageError::BadSource {
                path: from.join(name),
                reason: format!("sha256 {got} does not match the manifest's {want}; the copy is damaged, fetch it again"),
            });
        }
        out.sync_all()
            .map_err(|e| ImageError::io("sync", &dest, e))?;
    }
    let text =
        std::fs::read(manifest_path).map_err(|e| ImageError::io("read", manifest_path, e))?;
    write_synced(&to.join(MANIFEST), &text)?;
    sync_dir(to)
}

/// Write a file through a temporary name and rename it into place, synced.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension("new");
    let mut f = File::create(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
    std::io::Write::write_all(&mut f, bytes).map_err(|e| ImageError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| ImageError::io("sync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io("rename", &tmp, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io("sync", dir, e))
}

fn free_bytes(path: &Path) -> Result<u64, ImageError> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| ImageError::io("statvfs", path, std::io::Error::from(e)))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
