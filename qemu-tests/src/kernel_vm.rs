//! Running host-built test programs under the image's Debian kernel, without
//! the image: what goes into an [`Initramfs`] for that and where it comes from.
//!
//! - [`kernel_release`] reads the release ("6.1.0-56-amd64") out of the
//!   bzImage header, so the modules match the kernel exactly;
//! - [`modules_dir`] finds `usr/lib/modules/<release>/` in the image root
//!   cache `make image` leaves in `build/cache/root-*/rootfs/`;
//! - [`ModuleDeps`] resolves module names through `modules.dep` into an
//!   `insmod` order (dependencies first), and [`add_modules`] copies them;
//! - [`cargo_test_build`] builds an integration test of the walden crate
//!   with `cargo test --no-run` and returns its executables.
//!
//! The scenario then boots `-kernel/-initrd` with an `/init` script of its own.

use crate::artifacts::repo_root;
use crate::error::{Error, Result};
use crate::initramfs::Initramfs;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel release in a bzImage: the setup header ("HdrS" at 0x202)
/// holds at 0x20e the offset (minus 0x200) of the version string.
pub fn kernel_release(vmlinuz: &Path) -> Result<String> {
    let mut head = vec![0u8; 64 * 1024];
    let mut f = std::fs::File::open(vmlinuz).map_err(|e| Error::io("open", vmlinuz, e))?;
    let n = f
        .read(&mut head)
        .map_err(|e| Error::io("read", vmlinuz, e))?;
    head.truncate(n);
    release_from_header(&head).ok_or_else(|| {
        Error::unexpected(
            format!("kernel {}", vmlinuz.display()),
            "no bzImage version string (not an x86 bzImage?)",
        )
    })
}

fn release_from_header(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*head.get(0x20e)?, *head.get(0x20f)?]) as usize + 0x200;
    let text = head.get(ptr..)?;
    let end = text.iter().position(|b| *b == 0 || *b == b' ')?;
    let release = std::str::from_utf8(&text[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_string())
}

/// `<build>/cache/root-*/rootfs/usr/lib/modules/<release>/` (the image root
/// `make image` assembled; the newest if several caches hold the release).
pub fn modules_dir(build_dir: &Path, release: &str) -> Result<PathBuf> {
    let cache = build_dir.join("cache");
    let missing = || Error::ArtifactMissing {
        what: format!("modules of kernel {release} (image root cache)"),
        path: cache.join("root-*/rootfs/usr/lib/modules").join(release),
    };
    let entries = std::fs::read_dir(&cache).map_err(|_| missing())?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("root-"))
        .map(|e| e.path().join("rootfs/usr/lib/modules").join(release))
        .filter(|d| d.join("modules.dep").is_file())
        .max_by_key(|d| d.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(missing)
}

/// `modules.dep` of one kernel: module name -> (path, direct dependencies).
#[derive(Debug, Clone, Default)]
pub struct ModuleDeps {
    modules: HashMap<String, (String, Vec<String>)>,
}

impl ModuleDeps {
    /// Parse `modules.dep` text (`kernel/a/b.ko: kernel/c.ko kernel/d.ko`).
    pub fn parse(text: &str) -> Self {
        let mut modules = HashMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (path.trim().to_string(), deps));
        }
        Self { modules }
    }

    /// The paths (relative to the modules dir) to `insmod` in order so that
    /// every module in `names` loads: each dependency before its users, each once.
    pub fn load_order(&self, names: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        for name in names {
            self.visit(&module_name(name), &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, order: &mut Vec<String>, depth: usize) -> Result<()> {
        let (path, deps) = self.modules.get(name).ok_or_else(|| {
            Error::unexpected(
                "kernel module",
                format!("{name} is not in modules.dep (built in, or not built for this kernel?)"),
            )
        })?;
        if order.contains(path) {
            return Ok(());
        }
        if depth > 64 {
            return Err(Error::unexpected(
                "modules.dep",
                format!("dependency loop at {name}"),
            ));
        }
        for dep in deps {
            self.visit(dep, order, depth + 1)?;
        }
        order.push(path.clone());
        Ok(())
    }
}

/// "kernel/net/8021q/8021q.ko" or "nf-nat" -> "8021q" / "nf_nat" (the
/// kernel treats '-' and '_' in module names alike).
fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Copy modules `names` and their dependencies from `dir` (a
/// `usr/lib/modules/<release>/`) into the initramfs at `/lib/modules/...`;
/// returns their archive paths in `insmod` order.
pub fn add_modules(initramfs: &mut Initramfs, dir: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    let dep_file = dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_file).map_err(|e| Error::io("read", &dep_file, e))?;
    let release = dir.file_name().unwrap_or_default();
    let mut out = Vec::new();
    for rel in ModuleDeps::parse(&text).load_order(names)? {
        let dest = Path::new("/lib/modules").join(release).join(&rel);
        initramfs.file(&dest, dir.join(&rel))?;
        out.push(dest);
    }
    Ok(out)
}

/// The executables of one integration test of the walden crate.
#[derive(Debug, Clone)]
pub struct CargoTestBuild {
    /// The test binary (`target/debug/deps/<test>-<hash>`).
    pub test: PathBuf,
    /// The crate's binaries built with it, by target name (`walden` ->
    /// `target/debug/walden`, the path `CARGO_BIN_EXE_walden` names).
    pub bins: HashMap<String, PathBuf>,
}

/// `cargo test --test <test> --no-run --message-format=json` in the
/// repository root: builds (or finds fresh) the test and the crate's
/// binaries. Waits at most `timeout` (other builds may hold cargo's lock).
pub fn cargo_test_build(test: &str, timeout: Duration) -> Result<CargoTestBuild> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = ["test", "--test", test, "--no-run", "--message-format=json"];
    let command = crate::tools::render(&cargo, args);
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::ToolMissing {
            tool: cargo.clone(),
            package: "cargo",
            source,
        })?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    what: format!("`{command}`"),
                    timeout,
                });
            }
            Err(e) => return Err(Error::io("wait for", PathBuf::from(&cargo), e)),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::ToolFailed {
            command,
            status: status.to_string(),
            stderr: tail(&stderr, 40),
        });
    }
    parse_cargo_messages(test, &stdout).ok_or_else(|| {
        Error::unexpected(
            format!("`{command}`"),
            format!("no executable for test {test:?} in its messages"),
        )
    })
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The test's and the binaries' executables from cargo's JSON messages.
fn parse_cargo_messages(test: &str, stdout: &str) -> Option<CargoTestBuild> {
    let mut found = None;
    let mut bins = HashMap::new();
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let target = &msg["target"];
        let kinds = target["kind"].as_array().cloned().unwrap_or_default();
        let name = target["name"].as_str().unwrap_or_default();
        if kinds.iter().any(|k| k == "test") && name == test {
            found = Some(PathBuf::from(exe));
        } else if kinds.iter().any(|k| k == "bin") && msg["profile"]["test"] == false {
            bins.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    found.map(|test| CargoTestBuild { test, bins })
}

#[cfg(test)]
#[path = "kernel_vm_tests.rs"]
mod tests;
