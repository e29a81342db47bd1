//! Carrying out a [`Plan`] through sysfs: `driver_override`, unbind,
//! `drivers_probe`, after loading vfio-pci.
//!
//! The writes go through the narrow [`Kernel`] interface: [`RealKernel`]
//! writes the files and loads modules; the tests' fake records every write
//! in order and plays the kernel's part on a temporary tree.

use super::error::VfioError;
use super::plan::Plan;
use super::sysfs::{self, PciDevice, VFIO_DRIVER};
use crate::config::PciAddress;
use crate::context::Paths;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The side effects binding needs.
pub trait Kernel {
    /// Write `value` to the sysfs attribute `path` (one write(2)).
    fn write(&mut self, path: &Path, value: &str) -> std::io::Result<()>;
    /// Load the kernel module `name` (and what it depends on).
    fn load_module(&mut self, name: &str) -> Result<(), String>;
}

/// How long modprobe may take.
/// kmod's module loader.
pub const MODPROBE: &str = "modprobe";
/// How long modprobe may take (see below).
const MODPROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The real kernel: sysfs writes, and modprobe from the root (falling back
/// to finit_module through modules.dep when the root has no modprobe).
#[derive(Debug, Clone)]
pub struct RealKernel {
    root: PathBuf,
    proc: PathBuf,
}

impl RealKernel {
    /// Effects on the machine `paths` describes.
    pub fn new(paths: &Paths) -> Self {
        Self {
            root: paths.root.clone(),
            proc: paths.proc.clone(),
        }
    }
}

impl Kernel for RealKernel {
    fn write(&mut self, path: &Path, value: &str) -> std::io::Result<()> {
        // sysfs takes one write per attribute; no create, no truncate dance.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }

    fn load_module(&mut self, name: &str) -> Result<(), String> {
        // modprobe honours /etc/modprobe.d (vfio-pci options such as
        // disable_vga); it is the Debian tool for this.
        let modprobe = ["sbin", "usr/sbin"]
            .iter()
            .map(|d| self.root.join(d).join(MODPROBE))
            .find(|p| p.exists());
        if let Some(modprobe) = modprobe {
            return run_bounded(Command::new(&modprobe).arg(name), MODPROBE_TIMEOUT);
        }
        let release =
            std::fs::read_to_string(self.proc.join("sys/kernel/osrelease")).map_err(|e| {
                format!("no modprobe in the root and cannot read the kernel release: {e}")
            })?;
        let dir = self.root.join("lib/modules").join(release.trim());
        let (_, problems) = crate::boot::modules::load_all(&dir, &[name.to_string()]);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Run a command, killing it after `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let what = format!("{cmd:?}");
    crate::command::run_ok(cmd, timeout)
        .map(drop)
        .map_err(|e| format!("{what}: {e}"))
}

/// Bounds of the waits after binding.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a device may take to show up on vfio-pci, and its
    /// /dev/vfio node to appear; also how long vfio-pci's sysfs directory
    /// may take after loading the module.
    pub bind: Duration,
    /// Polling interval.
    pub poll: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            bind: Duration::from_secs(5),
            poll: Duration::from_millis(20),
        }
    }
}

/// What happened to each device the plan touched.
#[derive(Debug, Default)]
pub struct Applied {
    /// Devices moved to vfio-pci (Ok) or not (Err).
    pub bound: Vec<(PciAddress, Result<(), VfioError>)>,
    /// Devices given back to the host (Ok) or not (Err).
    pub unbound: Vec<(PciAddress, Result<(), VfioError>)>,
}

/// Carry out `plan`. `devices` is what sysfs showed when planning.
pub fn execute(
    plan: &Plan,
    devices: &[PciDevice],
    paths: &Paths,
    kernel: &mut dyn Kernel,
    t: Timeouts,
) -> Applied {
    let mut out = Applied::default();
    for &address in &plan.unbind {
        let result = match devices.iter().find(|d| d.address == address) {
            Some(dev) => unbind_one(dev, paths, kernel),
            None => Ok(()),
        };
        out.unbound.push((address, result));
    }
    if plan.bind.is_empty() {
        return out;
    }
    let module = ensure_vfio_pci(&paths.sys, kernel, t);
    for &address in &plan.bind {
        let result = match (&module, devices.iter().find(|d| d.address == address)) {
            (Err(reason), _) => Err(VfioError::Module {
                reason: reason.clone(),
            }),
            (Ok(()), Some(dev)) => bind_one(dev, paths, kernel, t),
            (Ok(()), None) => Ok(()),
        };
        out.bound.push((address, result));
    }
    out
}

/// Load vfio-pci unless its driver directory is already there.
fn ensure_vfio_pci(sys: &Path, kernel: &mut dyn Kernel, t: Timeouts) -> Result<(), String> {
    let dir = sysfs::driver_dir(sys, VFIO_DRIVER);
    if dir.exists() {
        return Ok(());
    }
    kernel.load_module(VFIO_DRIVER)?;
    if wait_for(t, || dir.exists()) {
        Ok(())
    } else {
        Err(format!(
            "loaded, but {} did not appear within {}s",
            dir.display(),
            t.bind.as_secs()
        ))
    }
}

fn write(
    kernel: &mut dyn Kernel,
    device: PciAddress,
    path: PathBuf,
    value: &str,
) -> Result<(), VfioError> {
    tracing::debug!(device = %device, path = %path.display(), value, "sysfs write");
    kernel
        .write(&path, value)
        .map_err(|source| VfioError::Write {
            device,
            path,
            value: value.to_string(),
            source,
        })
}

/// driver_override = vfio-pci, unbind the host driver, drivers_probe, and
/// wait for vfio-pci and /dev/vfio/<group>.
fn bind_one(
    dev: &PciDevice,
    paths: &Paths,
    kernel: &mut dyn Kernel,
    t: Timeouts,
) -> Result<(), VfioError> {
    let a = dev.address;
    let sys = &paths.sys;
    let name = a.to_string();
    let result = (|| {
        write(
            kernel,
            a,
            sysfs::device_dir(sys, a).join("driver_override"),
            VFIO_DRIVER,
        )?;
        if let Some(driver) = dev.driver.as_deref().filter(|d| *d != VFIO_DRIVER) {
            write(
                kernel,
                a,
                sysfs::driver_dir(sys, driver).join("unbind"),
                &name,
            )?;
        }
        write(kernel, a, sys.join("bus/pci/drivers_probe"), &name)?;
        let on_vfio = || sysfs::read_device(sys, a).is_some_and(|d| d.on_vfio());
        if !wait_for(t, on_vfio) {
            return Err(VfioError::BindTimeout {
                device: a,
                secs: t.bind.as_secs(),
                driver: sysfs::read_device(sys, a).and_then(|d| d.driver),
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Hand the device back rather than leave it without any driver.
        let _ = kernel.write(&sysfs::device_dir(sys, a).join("driver_override"), "\n");
        let _ = kernel.write(&sys.join("bus/pci/drivers_probe"), &name);
        return Err(e);
    }
    if let Some(group) = sysfs::read_device(sys, a).and_then(|d| d.iommu_group) {
        let node = sysfs::group_node(&paths.dev, group);
        if !wait_for(t, || node.exists()) {
            return Err(VfioError::NoDevNode {
                device: a,
                path: node,
                secs: t.bind.as_secs(),
            });
        }
    }
    Ok(())
}

/// Clear driver_override, unbind from vfio-pci, drivers_probe: the host
/// driver takes the device back. Refused while a process holds the group.
fn unbind_one(dev: &PciDevice, paths: &Paths, kernel: &mut dyn Kernel) -> Result<(), VfioError> {
    let a = dev.address;
    if let Some(group) = dev.iommu_group {
        if let Some((pid, comm)) = sysfs::group_user(&paths.proc, group) {
            return Err(VfioError::InUse {
                device: a,
                group,
                pid,
                comm,
            });
        }
    }
    let sys = &paths.sys;
    let name = a.to_string();
    write(
        kernel,
        a,
        sysfs::device_dir(sys, a).join("driver_override"),
        "\n",
    )?;
    if dev.on_vfio() {
        write(
            kernel,
            a,
            sysfs::driver_dir(sys, VFIO_DRIVER).join("unbind"),
            &name,
        )?;
    }
    write(kernel, a, sys.join("bus/pci/drivers_probe"), &name)
}

/// Poll `cond` until true or the bind timeout passes.
fn wait_for(t: Timeouts, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + t.bind;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(t.poll);
    }
}
