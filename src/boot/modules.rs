//! Kernel modules in stage 1: resolve the wanted names through
//! `modules.dep` (dependencies first) and load them with `finit_module(2)`,
//! so the initramfs needs no modprobe.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A module's name as the kernel knows it: file stem with `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `modules.dep`: module name -> (its path, the paths it depends on).
#[derive(Debug, Default, Clone)]
pub struct ModulesDep {
    entries: HashMap<String, (String, Vec<String>)>,
}

impl ModulesDep {
    /// Parse the text of modules.dep (`path: dep dep ...` per line).
    pub fn parse(text: &str) -> Self {
        let mut entries = HashMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim().to_string();
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(module_name(&path), (path, deps));
        }
        Self { entries }
    }

    /// The files to load for `wanted`, each after everything it depends on,
    /// without duplicates; plus the wanted names that are neither in
    /// modules.dep nor in `builtin` (names from modules.builtin).
    pub fn resolve(
        &self,
        wanted: &[String],
        builtin: &HashSet<String>,
    ) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for w in wanted {
            let name = w.replace('-', "_");
            if self.entries.contains_key(&name) {
                self.visit(&name, &mut seen, &mut order);
            } else if !builtin.contains(&name) {
                missing.push(w.clone());
            }
        }
        (order, missing)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some((path, deps)) = self.entries.get(name) {
            for d in deps {
                self.visit(&module_name(d), seen, order);
            }
            order.push(path.clone());
        }
    }
}

/// Names from `modules.builtin` (one path per line).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| module_name(l.trim()))
        .collect()
}

/// What happened to one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Newly loaded.
    Loaded,
    /// Was loaded already.
    AlreadyLoaded,
    /// Could not be loaded; the text says why.
    Failed(String),
}

/// Load one module file with finit_module(2). Compressed modules are
/// handed to the kernel to decompress (MODULE_INIT_COMPRESSED_FILE).
pub fn load(path: &Path) -> LoadOutcome {
    const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return LoadOutcome::Failed(format!("{}: {e}", path.display())),
    };
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: finit_module reads the open file descriptor and a
    // NUL-terminated (empty) parameter string that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), flags) };
    if rc == 0 {
        return LoadOutcome::Loaded;
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        LoadOutcome::AlreadyLoaded
    } else {
        LoadOutcome::Failed(format!("{}: {err}", path.display()))
    }
}

/// Resolve `wanted` against `<modules_dir>/modules.dep` and load them all.
/// Returns (loaded count, problems): a module that fails is reported and
/// the rest are still tried, since the media may not need it.
pub fn load_all(modules_dir: &Path, wanted: &[String]) -> (usize, Vec<String>) {
    let dep = match std::fs::read_to_string(modules_dir.join("modules.dep")) {
        Ok(t) => ModulesDep::parse(&t),
        Err(e) => {
            return (
                0,
                vec![format!("{}/modules.dep: {e}", modules_dir.display())],
            )
        }
    };
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .map(|t| parse_builtin(&t))
        .unwrap_or_default();
    let (order, missing) = dep.resolve(wanted, &builtin);
    let mut problems: Vec<String> = missing
        .into_iter()
        .map(|m| format!("module {m} is not in {}/modules.dep", modules_dir.display()))
        .collect();
    let mut loaded = 0;
    for rel in order {
        let path: PathBuf = modules_dir.join(&rel);
        match load(&path) {
            LoadOutcome::Loaded => loaded += 1,
            LoadOutcome::AlreadyLoaded => {}
            LoadOutcome::Failed(why) => problems.push(why),
        }
    }
    (loaded, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/squashfs/squashfs.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/usb/storage/usb-storage.ko.xz: kernel/drivers/usb/core/usbcore.ko.xz
kernel/drivers/usb/core/usbcore.ko.xz:
";

    #[test]
    fn names_normalise_dashes_and_suffixes() {
        assert_eq!(
            module_name("kernel/drivers/usb/storage/usb-storage.ko.xz"),
            "usb_storage"
        );
        assert_eq!(module_name("squashfs.ko"), "squashfs");
    }

    #[test]
    fn resolves_dependencies_first_without_duplicates() {
        let dep = ModulesDep::parse(DEP);
        let builtin = parse_builtin("kernel/fs/ext4/ext4.ko\nkernel/drivers/block/loop.ko\n");
        let wanted: Vec<String> = ["virtio_pci", "virtio_blk", "loop", "usb-storage", "nosuch"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (order, missing) = dep.resolve(&wanted, &builtin);
        assert_eq!(missing, vec!["nosuch".to_string()]);
        let pos = |m: &str| order.iter().position(|p| p.ends_with(m)).unwrap();
        assert!(pos("/virtio.ko") < pos("/virtio_ring.ko"));
        assert!(pos("/virtio_ring.ko") < pos("/virtio_pci.ko"));
        assert!(pos("/virtio_pci_modern_dev.ko") < pos("/virtio_pci.ko"));
        assert!(pos("/virtio_ring.ko") < pos("/virtio_blk.ko"));
        assert!(pos("usbcore.ko.xz") < pos("usb-storage.ko.xz"));
        assert_eq!(order.len(), 8);
    }

    #[test]
    fn load_all_reports_a_missing_modules_dep() {
        let tmp = tempfile::tempdir().unwrap();
        let (n, problems) = load_all(tmp.path(), &["x".to_string()]);
        assert_eq!(n, 0);
        assert!(problems[0].contains("modules.dep"), "{problems:?}");
    }
}
