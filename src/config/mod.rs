//! Config model: schema, parsing, validation (being built).

use std::path::Path;

/// `walden config check DIR`: prints a summary or every problem; returns the exit code.
pub fn check_command(dir: &Path, _json: bool) -> u8 {
    eprintln!("walden config check {}: not built yet", dir.display());
    2
}
