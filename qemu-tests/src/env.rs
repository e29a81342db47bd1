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
        let lock = acquire_lock(&root.join(".lock"), name)?;
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
fn acquire_lock(path: &Path, name: &str) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open lock", path, e))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !told {
                    eprintln!(
                        "{name}: waiting for another QEMU scenario to finish ({})",
                        path.display()
                    );
                    told = true;
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("the QEMU scenario lock {}", path.display()),
                        timeout: LOCK_TIMEOUT,
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
    }
}
