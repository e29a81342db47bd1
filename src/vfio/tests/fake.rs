//! A temporary sysfs/procfs/dev tree shaped like the kernel's, and a fake
//! [`Kernel`] that records every write in order and plays the kernel's
//! part (unbind removes the `driver` link, drivers_probe binds to
//! driver_override or the host driver, binding to vfio-pci creates
//! /dev/vfio/<group>).

use crate::context::Paths;
use crate::vfio::apply::Kernel;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// The fake machine: the tree and each device's host driver.
pub struct FakeSysfs {
    pub paths: Paths,
    host_driver: HashMap<String, String>,
}

impl FakeSysfs {
    /// An empty machine under `tmp`: no devices, no IOMMU, an Intel CPU.
    pub fn new(tmp: &Path) -> Self {
        let paths = Paths::under(tmp);
        for d in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/devices/pci0000:00",
            "sys/kernel/iommu_groups",
            "proc",
            "dev",
        ] {
            fs::create_dir_all(tmp.join(d)).unwrap();
        }
        fs::write(paths.sys.join("bus/pci/drivers_probe"), "").unwrap();
        let me = Self {
            paths,
            host_driver: HashMap::new(),
        };
        me.cpu("GenuineIntel")
            .cmdline("BOOT_IMAGE=/vmlinuz console=ttyS0")
    }

    /// Turn the IOMMU on (an Intel DMAR unit).
    pub fn iommu(self) -> Self {
        fs::create_dir_all(self.paths.sys.join("class/iommu/dmar0")).unwrap();
        self
    }

    /// An ACPI table the firmware provides ("DMAR", "IVRS").
    pub fn acpi_table(self, name: &str) -> Self {
        let dir = self.paths.sys.join("firmware/acpi/tables");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), "").unwrap();
        self
    }

    /// A network interface the device's host driver created.
    pub fn netdev(self, addr: &str, name: &str) -> Self {
        let dir = self
            .paths
            .sys
            .join("devices/pci0000:00")
            .join(addr)
            .join("net")
            .join(name);
        fs::create_dir_all(dir).unwrap();
        self
    }

    pub fn cpu(self, vendor: &str) -> Self {
        let text = format!("processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 6\n");
        fs::write(self.paths.proc.join("cpuinfo"), text).unwrap();
        self
    }

    pub fn cmdline(self, text: &str) -> Self {
        fs::write(self.paths.proc.join("cmdline"), format!("{text}\n")).unwrap();
        self
    }

    /// A driver directory with its `unbind` file.
    pub fn driver(self, name: &str) -> Self {
        let dir = self.paths.sys.join("bus/pci/drivers").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("unbind"), "").unwrap();
        self
    }

    /// A device at `addr`, bound to `driver` (also its host driver), in
    /// IOMMU `group`. Like the kernel: the device directory lives under
    /// devices/pci0000:00 and bus/pci/devices holds a link to it.
    pub fn device(
        mut self,
        addr: &str,
        vendor: u16,
        device: u16,
        class: u32,
        driver: Option<&str>,
        group: Option<u32>,
    ) -> Self {
        let sys = self.paths.sys.clone();
        let dir = sys.join("devices/pci0000:00").join(addr);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), format!("0x{vendor:04x}\n")).unwrap();
        fs::write(dir.join("device"), format!("0x{device:04x}\n")).unwrap();
        fs::write(dir.join("class"), format!("0x{class:06x}\n")).unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        symlink(
            format!("../../../devices/pci0000:00/{addr}"),
            sys.join("bus/pci/devices").join(addr),
        )
        .unwrap();
        if let Some(d) = driver {
            self = self.driver(d);
            symlink(format!("../../../bus/pci/drivers/{d}"), dir.join("driver")).unwrap();
            self.host_driver.insert(addr.to_string(), d.to_string());
        }
        if let Some(g) = group {
            let gdir = sys
                .join("kernel/iommu_groups")
                .join(g.to_string())
                .join("devices");
            fs::create_dir_all(&gdir).unwrap();
            symlink(
                format!("../../../../devices/pci0000:00/{addr}"),
                gdir.join(addr),
            )
            .unwrap();
            symlink(
                format!("../../../kernel/iommu_groups/{g}"),
                dir.join("iommu_group"),
            )
            .unwrap();
        }
        self
    }

    /// The host driver a device gets back on drivers_probe without override.
    pub fn host_driver(mut self, addr: &str, driver: &str) -> Self {
        self.host_driver
            .insert(addr.to_string(), driver.to_string());
        self.driver(driver)
    }

    /// A process holding /dev/vfio/<group> open.
    pub fn process_holding(self, pid: u32, comm: &str, group: u32) -> Self {
        let dir = self.paths.proc.join(pid.to_string());
        fs::create_dir_all(dir.join("fd")).unwrap();
        fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        symlink(format!("/dev/vfio/{group}"), dir.join("fd/7")).unwrap();
        self
    }

    /// The driver a device is bound to now.
    pub fn driver_of(&self, addr: &str) -> Option<String> {
        let link = self
            .paths
            .sys
            .join("bus/pci/devices")
            .join(addr)
            .join("driver");
        fs::read_link(link)
            .ok()
            .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()))
    }

    /// A kernel acting on this tree.
    pub fn kernel(&self) -> FakeKernel {
        FakeKernel {
            sys: self.paths.sys.clone(),
            dev: self.paths.dev.clone(),
            host_driver: self.host_driver.clone(),
            writes: Vec::new(),
            module_error: None,
            probe_fails: false,
        }
    }
}

/// Records writes as ("<path below sys>", "value") and module loads as
/// ("modprobe", name); simulates the kernel's reaction.
pub struct FakeKernel {
    sys: PathBuf,
    dev: PathBuf,
    host_driver: HashMap<String, String>,
    pub writes: Vec<(String, String)>,
    /// Make load_module fail with this reason.
    pub module_error: Option<String>,
    /// vfio-pci's probe fails: drivers_probe binds nothing.
    pub probe_fails: bool,
}

impl FakeKernel {
    fn device_dir(&self, addr: &str) -> PathBuf {
        self.sys.join("bus/pci/devices").join(addr)
    }

    fn bind(&self, addr: &str, driver: &str) {
        let dir = self.device_dir(addr);
        symlink(
            format!("../../../bus/pci/drivers/{driver}"),
            dir.join("driver"),
        )
        .unwrap();
        if driver == "vfio-pci" {
            if let Ok(g) = fs::read_link(dir.join("iommu_group")) {
                let g = g.file_name().unwrap().to_string_lossy().into_owned();
                fs::create_dir_all(self.dev.join("vfio")).unwrap();
                fs::write(self.dev.join("vfio").join(g), "").unwrap();
            }
        }
    }
}

impl Kernel for FakeKernel {
    fn write(&mut self, path: &Path, value: &str) -> std::io::Result<()> {
        let rel = path
            .strip_prefix(&self.sys)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        self.writes.push((rel.clone(), value.to_string()));
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["bus", "pci", "devices", _, "driver_override"] => {
                let v = value.trim();
                let stored = if v.is_empty() { "(null)" } else { v };
                fs::write(path, format!("{stored}\n"))?;
            }
            ["bus", "pci", "drivers", driver, "unbind"] => {
                let link = self.device_dir(value).join("driver");
                let on = fs::read_link(&link)
                    .map(|t| t.ends_with(driver))
                    .unwrap_or(false);
                if !on {
                    return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
                }
                fs::remove_file(link)?;
                let _ = fs::remove_dir_all(self.device_dir(value).join("net"));
            }
            ["bus", "pci", "drivers_probe"] => {
                let dir = self.device_dir(value);
                if dir.join("driver").exists() {
                    return Ok(());
                }
                let ov = fs::read_to_string(dir.join("driver_override"))?;
                let ov = ov.trim();
                if ov != "(null)" {
                    let loaded = self.sys.join("bus/pci/drivers").join(ov).exists();
                    if loaded && !(self.probe_fails && ov == "vfio-pci") {
                        self.bind(value, ov);
                    }
                } else if let Some(d) = self.host_driver.get(value).cloned() {
                    self.bind(value, &d);
                }
            }
            _ => panic!("unexpected sysfs write {rel} = {value:?}"),
        }
        Ok(())
    }

    fn load_module(&mut self, name: &str) -> Result<(), String> {
        self.writes.push(("modprobe".into(), name.into()));
        if let Some(e) = &self.module_error {
            return Err(e.clone());
        }
        let dir = self.sys.join("bus/pci/drivers").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("unbind"), "").unwrap();
        Ok(())
    }
}
