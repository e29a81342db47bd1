//! The nested-QEMU harness for walden's image (DESIGN.md section 6, level 3).
//!
//! A scenario is an ordinary Rust test in `tests/`:
//!
//! ```no_run
//! use qemu_tests::{expect, ConfigDisk, Firmware, TestEnv};
//! use std::time::Duration;
//!
//! fn usb_bios_boots_to_ready() -> anyhow::Result<()> {
//!     let Some(env) = TestEnv::with_image("usb_bios_boots_to_ready")? else {
//!         return Ok(()); // image missing and WALDEN_QEMU_TESTS=skip
//!     };
//!     let mut m = env
//!         .machine()
//!         .usb_image(env.artifacts()?.usb_image()?)
//!         .firmware(Firmware::Bios)
//!         .config_disk(ConfigDisk::from_dir("examples/minimal"))
//!         .start()?;
//!     m.wait_for_console(expect::READY, Duration::from_secs(240))?;
//!     assert_eq!(m.status()?.image_version.as_deref(), Some(env.artifacts()?.version.as_str()));
//!     Ok(())
//! }
//! ```
//!
//! Console text goes to `build/qemu-tests/<test>/console.log`; the QEMU
//! command line to `qemu.cmdline` beside it. A machine built with
//! [`MachineBuilder::admin_ssh`] runs commands as an admin would, over ssh
//! ([`Machine::exec`], [`ssh`]); every console is checked for kernel and
//! program trouble ([`console_check`]). See README.md.

pub mod artifacts;
pub mod builder;
pub mod console;
pub mod console_check;
pub mod control;
pub mod disk;
pub mod env;
pub mod error;
pub mod expect;
pub mod grubcfg;
pub mod guest_assets;
pub mod guest_watch;
pub mod host_toml;
pub mod initramfs;
pub mod kernel_vm;
pub mod lockup;
pub mod machine;
pub mod qmp;
pub mod ssh;
pub mod status;
pub mod tools;

pub use artifacts::Artifacts;
pub use builder::{ConfigDisk, DataDisk, DirectKernel, Firmware, MachineBuilder, Nic};
pub use env::{scaled, TestEnv};
pub use error::{Error, Result};
pub use lockup::retry_on_soft_lockup;
pub use machine::Machine;
pub use ssh::{AdminSsh, ExecOutput};
pub use status::{Phase, Status};
