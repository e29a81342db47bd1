//! Per-scenario environment: a lock so only one QEMU runs at a time, a
//! fresh directory `build/qemu-tests/<test>/` for logs and disk files, a
//! short scratch directory for sockets, and the image artifacts (or a skip).

use crate::artifacts::{build_dir, Artifacts};
use crate::builder::MachineBuilder;
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a scenario waits for another one holding the QEMU lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// Disk files removed when a scenario ends (logs stay for post-mortem).
const DISK_EXTENSIONS: &[&str] = &["qcow2", "img", "fd"];

/// `d` multiplied by `$WALDEN_QEMU_TIMEOUT_SCALE` (default 1), for slow hosts.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("WALDEN_QEMU_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(scale)
}

/// One scenario's environment. Create it first in the test, before any
/// machine, so it is dropped last.
#[derive(Debug)]
pub struct TestEnv {
    name: String,
    dir: PathBuf,
    scratch: tempfile::TempDir,
    artifacts: Option<Artifacts>,
    _lock: File,
}

impl TestEnv {
    /// For a scenario that boots the built image. `Ok(None)` means skipped
    /// (the image is missing and `WALDEN_QEMU_TESTS=skip`; "SKIPPED: ..." is
    /// printed); a missing image is otherwise an error saying to run `make image`.
    pub fn with_image(name: &str) -> Result<Option<Self>> {
        match Artifacts::locate() {
            Ok(a) => Self::new(name, Some(a)).map(Some),
            Err(e) if skip_requested() => {
                // Written to the real stderr, past libtest's capture, so the
                // skip shows in the summary of a passing run.
                let _ = writeln!(std::io::stderr(), "SKIPPED: {name}: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// For a scenario that needs QEMU but not the image (the harness self-test).
    pub fn without_image(name: &str) -> Result<Self> {
        Self::new(name, None)
    }

    fn new(name: &str, artifacts: Option<Artifacts>) -> Result<Self> {
        let root = build_dir().join("qemu-tests");
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        let lock = acquire_slot(&root, slots(), name)?;
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("clear", &dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        // Unix socket paths are limited to ~108 bytes; keep them short.
        let scratch = tempfile::Builder::new()
            .prefix("wq-")
            .tempdir()
            .map_err(|e| Error::io("create scratch dir in", std::env::temp_dir(), e))?;
        Ok(Self {
            name: name.to_string(),
            dir,
            scratch,
            artifacts,
            _lock: lock,
        })
    }

    /// The scenario's name (its directory under build/qemu-tests/).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `build/qemu-tests/<name>/`: console.log, qemu.cmdline, disk files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A short-lived directory for sockets.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// The image artifacts (an error for an environment made `without_image`).
    pub fn artifacts(&self) -> Result<&Artifacts> {
        self.artifacts
            .as_ref()
            .ok_or_else(|| Error::ArtifactMissing {
                what: "image artifacts (environment made without_image)".into(),
                path: build_dir(),
            })
    }

    /// Start describing a machine for this scenario.
    pub fn machine(&self) -> MachineBuilder {
        MachineBuilder::new(self.dir.clone(), self.scratch.path().to_path_buf())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::env::var_os("WALDEN_QEMU_KEEP").is_some() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            if DISK_EXTENSIONS.contains(&ext) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn skip_requested() -> bool {
    std::env::var("WALDEN_QEMU_TESTS").is_ok_and(|v| v == "skip")
}

/// Take the cross-process lock serialising QEMU scenarios (2 cores: one
/// TCG machine at a time keeps timings meaningful).
/// How many scenarios may run their QEMU at once, across processes:
/// `WALDEN_QEMU_SLOTS` (qemu-tests/lanes.sh sets it to its lane count),
/// default 1.
fn slots() -> usize {
    std::env::var("WALDEN_QEMU_SLOTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// Hold one of `slots` lock files (`root/.lock`, `.lock.1`, ...) for the
/// scenario's life: with one slot only one QEMU scenario runs at a time,
/// whoever starts it; with two, two.
fn acquire_slot(root: &Path, slots: usize, name: &str) -> Result<File> {
    let paths: Vec<_> = (0..slots)
        .map(|i| match i {
            0 => root.join(".lock"),
            i => root.join(format!(".lock.{i}")),
        })
        .collect();
    let mut files = paths
        .iter()
        .map(|p| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(p)
                .map_err(|e| Error::io("open lock", p, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut told = false;
    loop {
        for (i, path) in paths.iter().enumerate() {
            match files[i].try_lock() {
                Ok(()) => return Ok(files.swap_remove(i)),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
            }
        }
        if !told {
            eprintln!(
                "{name}: waiting for one of {slots} QEMU scenario slot(s) ({})",
                paths[0].display()
            );
            told = true;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("a QEMU scenario slot {}", paths[0].display()),
                timeout: LOCK_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
