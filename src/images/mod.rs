//! Boot images on the USB media: upgrade and rollback (DESIGN.md section 5,
//! issue 8). Pure foundations, each a value computed from values:
//!
//! - `grubenv`: the 1024-byte GRUB environment block, byte-exact with
//!   `grub-editenv`, rewritten in place on the FAT ESP.
//! - `trial`: the trial-boot state machine over the grubenv variables
//!   (`active`, `previous`, `tries`, `pending`, `failed`).
//! - `retention`: which versions to delete after an install.
//! - `grubcfg`: the USB `grub/grub.cfg`, with GRUB's half of the trial logic.

// The CLI (`walden upgrade`/`rollback`) and the boot wiring (after_boot,
// mark_good on health) come with the rest of issue 8; until then nothing
// outside the tests calls this module.
#![allow(dead_code)]

pub mod grubcfg;
pub mod grubenv;
pub mod retention;
pub mod trial;
