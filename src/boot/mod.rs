//! Boot: stage 1 (walden as `/init` in the initramfs) and the early mounts
//! stage 2 needs (DESIGN.md section 2).
//!
//! # Stage 1
//!
//! The kernel runs `/init` from the initramfs; `main` dispatches to
//! [`stage1::run`] when the process is PID 1 and argv\[0\] is exactly
//! `/init`. Stage 1:
//!
//! 1. mounts /proc, /sys, /dev (devtmpfs) and /run ([`mount::STAGE1_MOUNTS`]);
//! 2. loads the kernel modules listed in `/etc/walden/modules` of the
//!    initramfs, dependencies first ([`modules`]), with `finit_module(2)`;
//! 3. finds the boot media by file-system label (`WALDEN-BOOT` unless
//!    `walden.media=` says otherwise), probing superblocks itself
//!    ([`media`]), and waits for late devices (USB) for a bounded time;
//! 4. mounts it read-only at `/run/walden/media`, opens
//!    `images/<walden.version>/`, and checks `root.squashfs` against the
//!    sha256 in `manifest.toml` ([`manifest`]); with `walden.toram` the
//!    image is copied into RAM while it is hashed;
//! 5. builds the root: `root.squashfs` (loop device, read-only) at
//!    `/run/walden/lower` as the lower layer of an overlayfs whose upper layer
//!    is a tmpfs at `/run/walden/rw`: the root is writable and every write
//!    lives in RAM, forgotten at reboot. Persistent state is the config
//!    disk's business (stage 2);
//! 6. writes `/run/walden/boot.toml` ([`record::BootRecord`]), moves /dev,
//!    /proc, /sys and /run into the new root, deletes the initramfs
//!    contents, and `exec`s `/sbin/init` in the new root ([`switch`]).
//!
//! Any failure prints one line starting with `walden stage1:` that says what
//! is missing and where stage 1 looked, then `walden stage1: dropping to
//! emergency shell` and a busybox shell on the console. When that shell
//! exits the machine reboots: PID 1 never returns (the kernel would panic).
//!
//! # Stage 2 helpers
//!
//! [`early::mount_early`] mounts the API file systems in the squashfs root
//! idempotently; [`udev::coldplug`] replays device events once udevd runs.

pub mod cmdline;
// The stage 2 helpers are called by the supervisor's bring-up steps.
#[allow(dead_code)]
pub mod early;
mod error;
pub mod fsprobe;
mod loopdev;
pub mod manifest;
pub mod media;
pub mod modules;
pub mod mount;
pub mod partition;
pub mod persist;
#[allow(dead_code)]
pub mod record;
pub mod stage1;
mod switch;
#[allow(dead_code)]
pub mod udev;

pub use error::BootError;
