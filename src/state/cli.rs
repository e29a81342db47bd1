//! `walden config history|diff|rollback`: work on the config disk's files
//! directly (root only), not through the control socket, so they also work
//! in maintenance mode or with the disk mounted on another machine.

use super::atomic::{Io, RealIo};
use super::diff::diff_configs;
use super::generation::collect_config;
use super::store::{by_number, FsStore, Store};
use super::StateError;
use std::fmt::Write;
use std::path::Path;

/// `walden config history`: one line per generation, newest first.
pub fn history(config: &Path) -> Result<String, StateError> {
    let store = FsStore::for_config(config);
    let good = store.last_good()?;
    let ids = store.list()?;
    if ids.is_empty() {
        return Ok(format!(
            "no config generations in {} yet: one is recorded when a config reaches health\n",
            config.join(".walden/generations").display()
        ));
    }
    let current = collect_config(config)
        .ok()
        .map(|f| super::generation::content_hash(&f));
    let mut out = String::from("GEN  HASH          CREATED (UTC)        IMAGE     NOTE\n");
    for id in ids.iter().rev() {
        let meta = store.meta(id)?;
        let mut notes = Vec::new();
        if good.as_ref() == Some(id) {
            notes.push("last-good");
        }
        if current.as_deref() == Some(meta.hash.as_str()) {
            notes.push("= /config");
        }
        let _ = writeln!(
            out,
            "{:<4} {:<13} {:<20} {:<9} {}",
            id.number,
            id.hash12,
            utc(meta.created),
            meta.image_version.as_deref().unwrap_or("-"),
            notes.join(", ")
        );
    }
    Ok(out)
}

/// The generation `number`, or last-good when None.
fn pick(store: &FsStore, number: Option<u64>) -> Result<super::GenerationId, StateError> {
    match number {
        Some(n) => by_number(store, n),
        None => store.last_good()?.ok_or(StateError::NoSuchGeneration(0)),
    }
}

/// `walden config diff [GEN]`: what changed from generation GEN (default
/// last-good) to the files in `config` now. Empty when they are equal.
pub fn diff(config: &Path, number: Option<u64>) -> Result<String, StateError> {
    let store = FsStore::for_config(config);
    let id = pick(&store, number)?;
    let old = store.files(&id)?;
    let new = collect_config(config)?;
    Ok(diff_configs(
        &format!("generation {}", id.number),
        &old,
        &config.display().to_string(),
        &new,
    ))
}

/// `walden config rollback [GEN]`: copy generation GEN (default last-good)
/// back into `config`, each file atomically, and remove guest files the
/// generation does not have. Returns a message saying what to do next.
pub fn rollback(config: &Path, number: Option<u64>) -> Result<String, StateError> {
    rollback_with(&mut RealIo, config, number)
}

fn rollback_with(
    io: &mut dyn Io,
    config: &Path,
    number: Option<u64>,
) -> Result<String, StateError> {
    let store = FsStore::for_config(config);
    let id = pick(&store, number)?;
    let files = store.files(&id)?;
    // The whole set at once: a power cut leaves the old set or this one.
    let removed = super::journal::install_with(io, config, &files)?;
    let mut msg = format!("restored generation {id} into {}", config.display());
    if !removed.is_empty() {
        let _ = write!(msg, " (removed {})", removed.join(", "));
    }
    msg.push_str("; run it with `walden config apply` (or `walden reboot`)\n");
    Ok(msg)
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::logging::civil_utc(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::record_good;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn history_diff_and_rollback_on_a_config_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path();
        assert!(history(c).unwrap().starts_with("no config generations"));
        write(c, "host.toml", "schema = 1\nhostname = \"a\"\n");
        write(c, "guests/web.toml", "schema = 1\n");
        let mut store = FsStore::for_config(c);
        record_good(
            &mut store,
            &collect_config(c).unwrap(),
            Some("0.1.0".into()),
        )
        .unwrap();
        // Edit: change host.toml, drop web, add db.
        write(c, "host.toml", "schema = 1\nhostname = \"b\"\n");
        std::fs::remove_file(c.join("guests/web.toml")).unwrap();
        write(c, "guests/db.toml", "schema = 1\n");
        let d = diff(c, None).unwrap();
        assert!(d.contains("-hostname = \"a\"\n+hostname = \"b\"\n"), "{d}");
        assert!(d.contains("+++ /dev/null"), "{d}");
        let h = history(c).unwrap();
        assert!(h.lines().nth(1).unwrap().contains("last-good"), "{h}");
        assert!(!h.contains("= /config"), "{h}");
        let msg = rollback(c, Some(1)).unwrap();
        assert!(
            msg.contains("removed guests/db.toml") && msg.contains("reboot"),
            "{msg}"
        );
        assert_eq!(diff(c, Some(1)).unwrap(), "");
        assert!(c.join("guests/web.toml").is_file());
        assert!(history(c).unwrap().contains("= /config"));
        assert!(matches!(
            rollback(c, Some(9)),
            Err(StateError::NoSuchGeneration(9))
        ));
    }
}
