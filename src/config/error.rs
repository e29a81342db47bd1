//! Errors of the config module.

use super::diag::Diagnostics;
use std::path::PathBuf;

/// Loading a config directory failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `host.toml` is missing or unreadable: there is no config to check.
    #[error("cannot read {}: {source}; is this a walden config directory (it needs host.toml)?", path.display())]
    NoHostFile {
        /// The host.toml path that was tried.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The files were read but have problems; every one is listed.
    #[error("{n} problem(s) in the config:\n{0}", n = .0.len())]
    Invalid(Diagnostics),
}

/// A value in a config file (a size, a MAC, a PCI address...) could not be parsed.
///
/// Returned by the `FromStr` impls of the config value types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ValueError {
    /// What kind of value was expected ("size", "MAC address").
    pub what: &'static str,
    /// The text that was given.
    pub input: String,
    /// Why it is not valid.
    pub reason: String,
}

impl ValueError {
    /// A parse error for `input` of kind `what`.
    pub(crate) fn new(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self {
            what,
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

/// Config value types that parse from a string, with a hint on the accepted form.
pub trait ConfigValue: std::str::FromStr<Err = ValueError> + std::fmt::Display {
    /// Shown under a parse error: the accepted forms, with an example.
    const HINT: &'static str;
}
