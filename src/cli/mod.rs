//! CLI client (being built).
use std::path::Path;

/// `walden status`.
pub fn status(_socket: &Path, _json: bool) -> anyhow::Result<u8> {
    anyhow::bail!("not built yet")
}
