//! Errors of the state module.

use std::path::PathBuf;

/// Reading or writing persistent state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file-system operation failed.
    #[error("cannot {what} {}: {source}; is the config disk mounted read-write and not full?", path.display())]
    Io {
        /// What was being done ("write", "rename into place").
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A generation's meta.toml does not parse.
    #[error("{}: {message}; the generation is damaged, remove its directory", path.display())]
    BadMeta {
        /// The meta.toml.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No generation with that number.
    #[error("no config generation {0}; `walden config history` lists them")]
    NoSuchGeneration(u64),
    /// A generation's files do not hash to the hash in its name.
    #[error("generation {id} is damaged: its files hash to {actual}; remove it and pick another")]
    Damaged {
        /// The generation.
        id: String,
        /// The hash of what is there.
        actual: String,
    },
}
