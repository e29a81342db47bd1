//! Describing a machine: media, firmware, config disk, NIC, extra arguments.
//! [`MachineBuilder::start`] makes the per-test disk files and the QEMU
//! command line, then hands over to [`crate::machine::Machine`].

use crate::artifacts::{repo_root, Artifacts};
use crate::control::PORT_NAME;
use crate::disk;
use crate::error::{Error, Result};
use crate::expect;
use crate::grubcfg;
use crate::machine::{Launch, Machine, CONFIG_IMAGE};
use crate::ssh::AdminSsh;
use std::path::{Path, PathBuf};

/// OVMF firmware code (read-only) and the template of its variable store.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
/// OVMF's empty variable store, copied per machine.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// Size of the config disk made from a directory.
const CONFIG_DISK_MIB: u64 = 64;
/// Label the guest looks for.
pub const CONFIG_LABEL: &str = "WALDEN-CONFIG";

/// Which firmware boots the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF, with a per-machine copy of the variable store.
    Uefi,
}

/// A boot medium, attached the way a user would attach it.
#[derive(Debug, Clone)]
enum Media {
    /// A raw disk image on a USB stick (xhci + usb-storage).
    Usb(PathBuf),
    /// An ISO in a CD-ROM drive (AHCI).
    Cdrom(PathBuf),
}

/// A config disk: an ext4 file system labelled WALDEN-CONFIG.
#[derive(Debug, Clone)]
pub struct ConfigDisk {
    source: PathBuf,
}

impl ConfigDisk {
    /// Made from a directory; a relative path is taken from the repository
    /// root (e.g. "examples/minimal").
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        let source = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            repo_root().join(dir)
        };
        Self { source }
    }
}

/// An extra disk with a file system labelled LABEL (ext4 or XFS, empty or
/// seeded from a directory), on virtio-blk; its file stays across
/// [`Machine::restart`] like the config disk. Read an ext4 one after
/// power-off with [`Machine::data_disk_file`].
#[derive(Debug, Clone)]
pub struct DataDisk {
    label: String,
    size_mib: u64,
    fs: disk::DataFs,
    seed: Option<PathBuf>,
}

impl DataDisk {
    /// An ext4 disk of `size_mib` labelled `label`.
    pub fn ext4(label: &str, size_mib: u64) -> Self {
        Self {
            label: label.to_string(),
            size_mib,
            fs: disk::DataFs::Ext4,
            seed: None,
        }
    }

    /// An XFS disk of `size_mib` (at least 300) labelled `label`
    /// (mkfs.xfs, Debian's xfsprogs).
    pub fn xfs(label: &str, size_mib: u64) -> Self {
        Self {
            fs: disk::DataFs::Xfs,
            ..Self::ext4(label, size_mib)
        }
    }

    /// The file system starts with the files of `dir` (owned by root).
    pub fn with_files(mut self, dir: impl Into<PathBuf>) -> Self {
        self.seed = Some(dir.into());
        self
    }
}

/// Network interface of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// No NIC at all (the default: nothing to wait for, nothing leaves).
    None,
    /// A virtio NIC on QEMU user networking with `restrict=on`: the guest
    /// gets DHCP from QEMU but cannot reach the host or anything beyond.
    Isolated,
}

/// Boot a kernel and initramfs directly instead of through firmware and GRUB.
#[derive(Debug, Clone)]
pub struct DirectKernel {
    /// The kernel (vmlinuz).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub append: String,
}

impl DirectKernel {
    /// The image's kernel and initramfs with the command line its GRUB
    /// entry passes (read from the USB image's grub/grub.cfg), except that
    /// `walden.version=` asks for `version`. The kernel is the ELF inside
    /// the image's vmlinuz ([`Artifacts::kernel_elf`]), booted through its
    /// PVH entry: the firmware, GRUB's menu and load and the bzImage's own
    /// decompression are skipped (about 12 s of each boot under TCG), so
    /// a scenario that is not about the boot path boots this way; the
    /// scenarios of boot.rs, upgrade.rs and make_run.rs boot through GRUB.
    pub fn like_grub(artifacts: &Artifacts, version: &str) -> Result<Self> {
        let cfg = disk::esp_read_file(&artifacts.usb_image()?, "grub/grub.cfg")?;
        let args = grubcfg::kernel_args(&cfg, &artifacts.version)?;
        Ok(Self {
            kernel: artifacts.kernel_elf()?,
            initrd: artifacts.initrd()?,
            append: grubcfg::with_version(&args, version),
        })
    }
}

/// Everything about a machine before it starts. Get one from
/// [`crate::TestEnv::machine`].
#[derive(Debug, Clone)]
pub struct MachineBuilder {
    dir: PathBuf,
    scratch: PathBuf,
    media: Vec<Media>,
    firmware: Firmware,
    config: Option<ConfigDisk>,
    data: Vec<DataDisk>,
    kernel: Option<DirectKernel>,
    flips: Vec<(String, u64)>,
    memory_mib: u32,
    cpus: u32,
    nic: Nic,
    extra: Vec<String>,
    no_reboot: bool,
    paused: bool,
    fail_on: Vec<String>,
    admin_ssh: bool,
    allow_console: Vec<String>,
}

impl MachineBuilder {
    pub(crate) fn new(dir: PathBuf, scratch: PathBuf) -> Self {
        Self {
            dir,
            scratch,
            media: Vec::new(),
            firmware: Firmware::Bios,
            config: None,
            data: Vec::new(),
            kernel: None,
            flips: Vec::new(),
            memory_mib: 2048,
            cpus: 2,
            nic: Nic::None,
            extra: Vec::new(),
            no_reboot: false,
            paused: false,
            fail_on: expect::FATAL.iter().map(|s| s.to_string()).collect(),
            admin_ssh: false,
            allow_console: Vec::new(),
        }
    }

    /// Boot from this USB image (attached through a qcow2 overlay; the file is never written).
    pub fn usb_image(mut self, image: impl Into<PathBuf>) -> Self {
        self.media.push(Media::Usb(image.into()));
        self
    }

    /// Boot from this ISO in a CD-ROM drive (read-only).
    pub fn iso_cdrom(mut self, iso: impl Into<PathBuf>) -> Self {
        self.media.push(Media::Cdrom(iso.into()));
        self
    }

    /// Boot from this ISO written to a USB stick (`dd` of the hybrid ISO).
    pub fn iso_disk(mut self, iso: impl Into<PathBuf>) -> Self {
        self.media.push(Media::Usb(iso.into()));
        self
    }

    /// Firmware (default BIOS).
    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Attach a config disk.
    pub fn config_disk(mut self, config: ConfigDisk) -> Self {
        self.config = Some(config);
        self
    }

    /// Attach a data disk: the N-th is `data<N>.img` in the test directory,
    /// drive id `data<N>` (see [`Machine::remove_drive`]).
    pub fn data_disk(mut self, disk: DataDisk) -> Self {
        self.data.push(disk);
        self
    }

    /// Boot this kernel + initramfs with `-kernel/-initrd/-append`; the
    /// media stay attached, so stage 1 finds them exactly as after GRUB.
    pub fn direct_kernel(mut self, kernel: DirectKernel) -> Self {
        self.kernel = Some(kernel);
        self
    }

    /// The USB image attached as the boot media, its version's kernel
    /// booted directly as its GRUB entry would ([`DirectKernel::like_grub`]):
    /// for the scenarios that are not about firmware, GRUB or versions.
    pub fn usb_image_direct(self, artifacts: &Artifacts) -> Result<Self> {
        Ok(self
            .usb_image(artifacts.usb_image()?)
            .direct_kernel(DirectKernel::like_grub(artifacts, &artifacts.version)?))
    }

    /// Invert byte `offset` of file `path` (relative to the ESP root, e.g.
    /// "images/0.1.0/root.squashfs") on the first USB medium's copy.
    pub fn flip_esp_byte(mut self, path: impl Into<String>, offset: u64) -> Self {
        self.flips.push((path.into(), offset));
        self
    }

    /// Guest memory (default 2048 MiB).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Network interface (default none).
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nic = nic;
        self
    }

    /// Extra QEMU arguments, appended last.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Exit QEMU instead of rebooting the guest (`-no-reboot`).
    pub fn no_reboot(mut self) -> Self {
        self.no_reboot = true;
        self
    }

    /// Start with the CPUs stopped (`-S`); `cont` over QMP runs them.
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    /// Also end console waits at once when `pattern` appears.
    pub fn fail_on(mut self, pattern: impl Into<String>) -> Self {
        self.fail_on.push(pattern.into());
        self
    }

    /// Let the admin in over ssh, for [`Machine::exec`]: a key pair in the
    /// scenario's directory, one more NIC (QEMU user net, `restrict=on`,
    /// the host's port 22 forwarded from a free port on 127.0.0.1), and
    /// the config disk's host.toml extended with the public key and a
    /// `[[network.link]]` with DHCP for that NIC (keys it has stay; a
    /// host.toml that already configures that NIC is refused). Needs a
    /// [`MachineBuilder::config_disk`]. See `crate::ssh`.
    pub fn admin_ssh(mut self) -> Self {
        self.admin_ssh = true;
        self
    }

    /// Console lines containing `pattern` are not trouble for the console
    /// checks (`crate::console_check`): for a scenario that provokes an
    /// oops, a panic or a segfault on purpose.
    pub fn allow_console(mut self, pattern: impl Into<String>) -> Self {
        self.allow_console.push(pattern.into());
        self
    }

    /// Make the disk files, assemble the command line and start QEMU.
    pub fn start(self) -> Result<Machine> {
        let (args, admin) = self.prepare()?;
        Machine::launch(Launch {
            args,
            dir: self.dir,
            scratch: self.scratch,
            fail_on: self.fail_on,
            allow_console: self.allow_console,
            admin,
        })
    }

    /// Create per-machine disk files in the test directory and return
    /// QEMU's arguments (and the admin's way in, when asked for).
    fn prepare(&self) -> Result<(Vec<String>, Option<AdminSsh>)> {
        let admin = match self.admin_ssh {
            true if self.config.is_none() => {
                return Err(Error::unexpected(
                    "machine description",
                    "admin_ssh() needs a config_disk(..): its host.toml carries the key and the admin NIC",
                ))
            }
            true => Some(AdminSsh::create(&self.dir)?),
            false => None,
        };
        let mut a = self.base_args();
        let s = |p: &Path| p.display().to_string();
        if self.firmware == Firmware::Uefi {
            let vars = self.dir.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars)
                .map_err(|e| Error::io("copy OVMF variables to", &vars, e))?;
            a.push("-drive".into());
            a.push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ));
            a.push("-drive".into());
            a.push(format!("if=pflash,format=raw,unit=1,file={}", s(&vars)));
        }
        if self.media.iter().any(|m| matches!(m, Media::Usb(_))) {
            a.extend(["-device".into(), "qemu-xhci,id=xhci".into()]);
        }
        // With -kernel, QEMU's linuxboot ROM takes boot index 0 itself.
        let boot = |i: usize| match self.kernel {
            Some(_) => String::new(),
            None => format!(",bootindex={i}"),
        };
        let mut flips = self.flips.iter();
        for (i, m) in self.media.iter().enumerate() {
            match m {
                Media::Usb(base) => {
                    let ov = self.dir.join(format!("media{i}.qcow2"));
                    disk::overlay(base, &ov)?;
                    for (path, offset) in flips.by_ref() {
                        let at = disk::esp_file_offset(base, path, *offset)?;
                        disk::flip_byte_in_overlay(base, &ov, at)?;
                    }
                    a.push("-drive".into());
                    a.push(format!("file={},format=qcow2,if=none,id=media{i}", s(&ov)));
                    a.push("-device".into());
                    a.push(format!("usb-storage,bus=xhci.0,drive=media{i}{}", boot(i)));
                }
                Media::Cdrom(iso) => {
                    let iso = iso
                        .canonicalize()
                        .map_err(|e| Error::io("resolve", iso, e))?;
                    a.push("-drive".into());
                    a.push(format!(
                        "file={},format=raw,if=none,id=media{i},media=cdrom,readonly=on",
                        s(&iso)
                    ));
                    a.push("-device".into());
                    a.push(format!("ide-cd,drive=media{i},bus=ide.{i}{}", boot(i)));
                }
            }
        }
        if let Some((path, _)) = flips.next() {
            return Err(Error::unexpected(
                "machine description",
                format!("flip_esp_byte({path}) needs a USB medium"),
            ));
        }
        if let Some(config) = &self.config {
            let img = self.dir.join(CONFIG_IMAGE);
            let source = match &admin {
                Some(admin) => self.config_with_admin(&config.source, admin)?,
                None => config.source.clone(),
            };
            disk::ext4_from_dir(&source, &img, CONFIG_LABEL, CONFIG_DISK_MIB)?;
            a.push("-drive".into());
            a.push(format!("file={},format=raw,if=none,id=config", s(&img)));
            a.push("-device".into());
            a.push("virtio-blk-pci,drive=config,serial=walden-config".into());
        }
        for (i, d) in self.data.iter().enumerate() {
            let img = self.dir.join(data_image(i));
            disk::data_fs(&img, d.fs, &d.label, d.size_mib, d.seed.as_deref())?;
            a.push("-drive".into());
            a.push(format!("file={},format=raw,if=none,id=data{i}", s(&img)));
            a.push("-device".into());
            a.push(format!("virtio-blk-pci,drive=data{i},serial=data{i}"));
        }
        if let Some(k) = &self.kernel {
            a.extend([
                "-kernel".into(),
                s(&k.kernel),
                "-initrd".into(),
                s(&k.initrd),
            ]);
            a.extend(["-append".into(), k.append.clone()]);
        }
        if let Some(admin) = &admin {
            a.extend(admin.qemu_args());
        }
        a.extend(self.extra.iter().cloned());
        Ok((a, admin))
    }

    /// A copy of the config directory `source` whose host.toml also lets
    /// `admin` in; the merged host.toml is kept as `config-host.toml` in
    /// the scenario's directory for reading after the test.
    fn config_with_admin(&self, source: &Path, admin: &AdminSsh) -> Result<PathBuf> {
        let copy = self.scratch.join("config-admin");
        disk::copy_dir(source, &copy)?;
        let host = copy.join("host.toml");
        let text = std::fs::read_to_string(&host).map_err(|e| Error::io("read", &host, e))?;
        let merged = admin.merge_into(&text).map_err(|e| {
            Error::unexpected(
                format!("admin_ssh() with {}", source.join("host.toml").display()),
                e.to_string(),
            )
        })?;
        std::fs::write(&host, &merged).map_err(|e| Error::io("write", &host, e))?;
        let kept = self.dir.join("config-host.toml");
        std::fs::write(&kept, &merged).map_err(|e| Error::io("write", &kept, e))?;
        Ok(copy)
    }

    /// Machine, console, QMP, control channel, NIC, flags.
    fn base_args(&self) -> Vec<String> {
        let sock = |n: &str| self.scratch.join(n).display().to_string();
        let mut a: Vec<String> = vec!["-nodefaults".into(), "-no-user-config".into()];
        // graphics=off makes SeaBIOS print on the serial console too.
        a.extend(["-machine".into(), "q35,graphics=off".into()]);
        a.extend(accel_args());
        a.extend([
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
        ]);
        a.extend(["-display".into(), "none".into()]);
        // An entropy source, as every real machine has one (RDRAND, a TPM):
        // TCG's CPU has no RDRAND, and without a source the kernel's random
        // pool is filled by its jitter loop, which under TCG sometimes
        // soft-locks the CPU of the first getrandom() caller (ssh-keygen on
        // a new config disk) for good.
        a.extend(["-device".into(), "virtio-rng-pci".into()]);
        a.extend([
            "-chardev".into(),
            "stdio,id=con,signal=off".into(),
            "-serial".into(),
            "chardev:con".into(),
        ]);
        a.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", sock("qmp.sock")),
        ]);
        a.extend(["-device".into(), "virtio-serial-pci".into()]);
        a.extend([
            "-chardev".into(),
            format!("socket,id=ctl,path={},server=on,wait=off", sock("ctl.sock")),
            "-device".into(),
            format!("virtserialport,chardev=ctl,name={PORT_NAME}"),
        ]);
        match self.nic {
            Nic::None => a.extend(["-nic".into(), "none".into()]),
            Nic::Isolated => a.extend([
                "-nic".into(),
                "user,model=virtio-net-pci,restrict=on".into(),
            ]),
        }
        if self.no_reboot {
            a.push("-no-reboot".into());
        }
        if self.paused {
            a.push("-S".into());
        }
        a
    }
}

/// The file name of the `i`-th data disk in the test directory.
pub(crate) fn data_image(i: usize) -> String {
    format!("data{i}.img")
}

/// `-accel tcg`, or KVM when `WALDEN_QEMU_ACCEL=kvm` and /dev/kvm opens.
pub fn accel_args() -> Vec<String> {
    let wants_kvm = std::env::var("WALDEN_QEMU_ACCEL").is_ok_and(|v| v == "kvm");
    if wants_kvm {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            Ok(_) => return vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()],
            Err(e) => {
                eprintln!("WALDEN_QEMU_ACCEL=kvm but /dev/kvm does not open ({e}); using TCG")
            }
        }
    }
    // QEMU's default CPU model (qemu64) exposes AMD's SVM, so the image's
    // kernel loads kvm_amd and libvirt runs the nested guests under
    // KVM-on-TCG. Bookworm's QEMU 7.2 does not survive that reliably: it
    // aborted with "tcg_handle_interrupt: assertion failed:
    // (qemu_mutex_iothread_locked())" with a 4-vcpu nested guest
    // (examples.rs, bonded-vlans' db), and issue 20 records hosts hanging
    // with both vCPUs in the kernel as a nested guest started. Without SVM
    // the nested guests run under TCG, as fast here for the tiny guests.
    vec!["-accel".into(), "tcg".into(), "-cpu".into(), TCG_CPU.into()]
}

/// The outer machine's CPU under TCG: QEMU's default model without SVM.
pub const TCG_CPU: &str = "qemu64,-svm";
