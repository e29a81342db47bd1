//! Boot images on the USB media: upgrade and rollback (DESIGN.md section 5,
//! issue 8, docs/upgrade.md).
//!
//! Pure foundations, each a value computed from values:
//!
//! - `grubenv`: the 1024-byte GRUB environment block, byte-exact with
//!   `grub-editenv`, rewritten in place on the FAT ESP.
//! - `trial`: the trial-boot state machine over the grubenv variables
//!   (`active`, `previous`, `tries`, `pending`, `failed`).
//! - `retention`: which versions to delete after an install.
//! - `grubcfg`: the USB `grub/grub.cfg`, with GRUB's half of the trial logic.
//!
//! And the parts that touch the media or the running system:
//!
//! - `store`: list/install/rollback/remove on a mounted ESP directory.
//! - `media`: making the boot media writable for the duration of a change.
//! - `cli`: `walden image ...`.
//! - `health`: the "image-boot" and "health" bring-up steps (rollback
//!   reporting, marking a trial good, recording why it failed).

pub mod cli;
pub mod error;
pub mod grubcfg;
pub mod grubenv;
pub mod health;
pub mod media;
pub mod retention;
pub mod store;
pub mod trial;

pub use cli::ImageCommand;
pub use health::{BootImageStatus, ImageSteps};
