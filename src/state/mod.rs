//! Persistent state on the config disk: config generations and the
//! last-known-good pointer (DESIGN.md section 4, "Versioned").
//!
//! # Layout
//!
//! ```text
//! /config/.walden/generations/<N>-<hash12>/host.toml
//! /config/.walden/generations/<N>-<hash12>/guests/<name>.toml
//! /config/.walden/generations/<N>-<hash12>/meta.toml   hash, time, image version, status
//! /config/.walden/generations/last-good                "<N>-<hash12>\n"
//! ```
//!
//! A generation is written under a `.tmp-*` name and renamed into place
//! only when every file in it is on disk (fsync'd), so a listed generation
//! is always complete; `last-good` is replaced with [`atomic::atomic_write`].
//! Stores are behind [`store::Store`]: [`store::FsStore`] on the disk and
//! [`store::MemStore`], its in-memory twin for tests.

pub mod atomic;
pub mod cli;
pub mod diff;
mod error;
pub mod generation;
pub mod journal;
pub mod provision;
pub mod store;

pub use error::StateError;
pub use generation::{collect_config, ConfigFiles, GenerationId};
pub use store::FsStore;
