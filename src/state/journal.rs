//! Replacing the whole config set on the config disk at once.
//!
//! `walden config apply DIR` and `walden config rollback` change several
//! files (host.toml, guests/*.toml, removals). One atomic write per file is
//! not enough: a power cut half way would leave a mix of old and new files.
//! So the new set goes through a journal first:
//!
//! ```text
//! /config/.walden/install.tmp/...   written, then one syncfs for the set
//! /config/.walden/install/...       renamed from install.tmp: the commit point
//! ```
//!
//! Then each file that differs is written into /config (temporary names,
//! one syncfs, renames), files the new set
//! does not have are removed, and the journal is deleted. [`recover`] runs
//! at boot before the config is read: an `install.tmp` is an unfinished
//! journal and is dropped (the old set stays), an `install` is a committed
//! one and is replayed (the new set wins). Replaying is idempotent, so a
//! cut during recovery is recovered the same way on the next boot.

use super::atomic::{temp_name, write_set_with, Io, RealIo};
use super::generation::{collect_config, ConfigFiles};
use super::StateError;
use std::path::{Path, PathBuf};

/// The committed journal, relative to the config directory.
const JOURNAL: &str = ".walden/install";
/// The journal while it is being written.
const JOURNAL_TMP: &str = ".walden/install.tmp";

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { what, path, source }
}

/// Make `files` the config set in `config`, crash-safely (see the module
/// docs). Returns the names of files removed because the set lacks them.
pub fn install(config: &Path, files: &ConfigFiles) -> Result<Vec<String>, StateError> {
    install_with(&mut RealIo, config, files)
}

/// [`install`] through `io` (tests inject crashes).
pub fn install_with(
    io: &mut dyn Io,
    config: &Path,
    files: &ConfigFiles,
) -> Result<Vec<String>, StateError> {
    let tmp = config.join(JOURNAL_TMP);
    let journal = config.join(JOURNAL);
    let state = tmp.parent().unwrap_or(config).to_path_buf();
    // A committed journal left by an earlier cut is replayed first, so the
    // order of changes is kept.
    if journal.exists() {
        replay(io, config)?;
    }
    io.remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
    write_set_with(
        io,
        &tmp,
        files
            .iter()
            .map(|(name, bytes)| (tmp.join(name), bytes.as_slice())),
    )?;
    io.rename(&tmp, &journal)
        .map_err(io_err("commit the journal", &journal))?;
    io.sync_dir(&state)
        .map_err(io_err("sync directory", &state))?;
    replay(io, config)
}

/// Finish or drop a journal left by a power cut. Returns what it did, for
/// the boot log; None when there was no journal.
pub fn recover(config: &Path) -> Result<Option<String>, StateError> {
    let mut io = RealIo;
    let tmp = config.join(JOURNAL_TMP);
    let mut done = None;
    if tmp.exists() {
        io.remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        done = Some("dropped an unfinished config install (the previous config stays)".to_string());
    }
    if config.join(JOURNAL).exists() {
        let removed = replay(&mut io, config)?;
        let mut msg = "finished a config install interrupted by a power cut".to_string();
        if !removed.is_empty() {
            msg.push_str(&format!(" (removed {})", removed.join(", ")));
        }
        done = Some(msg);
    }
    Ok(done)
}

/// Copy the committed journal into place, remove what it lacks, drop it.
fn replay(io: &mut dyn Io, config: &Path) -> Result<Vec<String>, StateError> {
    let journal = config.join(JOURNAL);
    let files = collect_config(&journal)?;
    let guests = config.join("guests");
    io.create_dir_all(&guests)
        .map_err(io_err("create", &guests))?;
    // Only what differs is rewritten: each file into its temporary name,
    // all of them made durable at once, then renamed into place. A cut
    // before the last rename leaves the journal, so the replay runs again.
    let changed: Vec<(PathBuf, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (config.join(name), bytes.as_slice()))
        .filter(|(path, bytes)| std::fs::read(path).ok().as_deref() != Some(*bytes))
        .collect();
    if !changed.is_empty() {
        write_set_with(
            io,
            config,
            changed
                .iter()
                .map(|(path, bytes)| (temp_name(path), *bytes)),
        )?;
        for (path, _) in &changed {
            io.rename(&temp_name(path), path)
                .map_err(io_err("rename into place", path))?;
        }
    }
    let mut removed = Vec::new();
    for name in present(config) {
        if !files.contains_key(&name) {
            let path: PathBuf = config.join(&name);
            io.remove_file(&path).map_err(io_err("remove", &path))?;
            removed.push(name);
        }
    }
    io.sync_dir(&guests)
        .map_err(io_err("sync directory", &guests))?;
    io.sync_dir(config)
        .map_err(io_err("sync directory", config))?;
    io.remove_dir_all(&journal)
        .map_err(io_err("remove", &journal))?;
    let state = journal.parent().unwrap_or(config).to_path_buf();
    io.sync_dir(&state)
        .map_err(io_err("sync directory", &state))?;
    Ok(removed)
}

/// Names of the config files in `config` (host.toml may be missing on a
/// blank disk, which [`collect_config`] refuses).
fn present(config: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if config.join("host.toml").is_file() {
        names.push("host.toml".to_string());
    }
    if let Ok(entries) = std::fs::read_dir(config.join("guests")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".toml") && e.path().is_file() {
                names.push(format!("guests/{name}"));
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::atomic::fault::FaultyIo;

    fn set(pairs: &[(&str, &str)]) -> ConfigFiles {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn old() -> ConfigFiles {
        set(&[
            ("host.toml", "schema = 1\nhostname = \"old\"\n"),
            ("guests/a.toml", "schema = 1\n# a old\n"),
            ("guests/b.toml", "schema = 1\n# b\n"),
        ])
    }

    fn new() -> ConfigFiles {
        set(&[
            ("host.toml", "schema = 1\nhostname = \"new\"\n"),
            ("guests/a.toml", "schema = 1\n# a new\n"),
            ("guests/c.toml", "schema = 1\n# c\n"),
        ])
    }

    fn seed(dir: &Path) {
        install(dir, &old()).unwrap();
        assert_eq!(collect_config(dir).unwrap(), old());
    }

    #[test]
    fn install_replaces_the_whole_set_and_leaves_no_journal() {
        let tmp = tempfile::tempdir().unwrap();
        seed(tmp.path());
        let removed = install(tmp.path(), &new()).unwrap();
        assert_eq!(removed, vec!["guests/b.toml".to_string()]);
        assert_eq!(collect_config(tmp.path()).unwrap(), new());
        assert!(!tmp.path().join(JOURNAL).exists());
        assert!(!tmp.path().join(JOURNAL_TMP).exists());
        assert_eq!(recover(tmp.path()).unwrap(), None);
    }

    #[test]
    fn only_the_files_that_differ_are_rewritten() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        seed(tmp.path());
        let ino = |name: &str| std::fs::metadata(tmp.path().join(name)).unwrap().ino();
        let before = (ino("host.toml"), ino("guests/a.toml"), ino("guests/b.toml"));
        let mut more = old();
        more.insert("guests/d.toml".into(), b"schema = 1\n# d\n".to_vec());
        install(tmp.path(), &more).unwrap();
        assert_eq!(collect_config(tmp.path()).unwrap(), more);
        // A rewrite renames a new inode into place; these were left alone.
        assert_eq!(
            before,
            (ino("host.toml"), ino("guests/a.toml"), ino("guests/b.toml"))
        );
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("guests"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_cut_at_any_step_recovers_to_old_or_new_never_a_mix() {
        let mut seen_old = false;
        let mut seen_new = false;
        for budget in 0..64 {
            let tmp = tempfile::tempdir().unwrap();
            seed(tmp.path());
            let mut io = FaultyIo::new(budget);
            let finished = install_with(&mut io, tmp.path(), &new()).is_ok();
            recover(tmp.path()).unwrap();
            let now = collect_config(tmp.path()).unwrap();
            assert!(now == old() || now == new(), "budget {budget}: {now:?}");
            if finished {
                assert_eq!(now, new());
            }
            seen_old |= now == old();
            seen_new |= now == new();
            assert!(!tmp.path().join(JOURNAL).exists());
            if finished {
                break;
            }
        }
        assert!(seen_old && seen_new, "the cut points covered both outcomes");
    }

    #[test]
    fn a_cut_during_recovery_is_recovered_the_next_time() {
        let tmp = tempfile::tempdir().unwrap();
        seed(tmp.path());
        // Commit the journal, then cut right after the commit rename.
        let mut budget = 0;
        loop {
            let mut io = FaultyIo::new(budget);
            let _ = install_with(&mut io, tmp.path(), &new());
            if tmp.path().join(JOURNAL).exists() {
                break;
            }
            recover(tmp.path()).unwrap();
            budget += 1;
            assert!(budget < 64, "never committed");
        }
        // A replay cut half way, then a full recovery.
        let _ = replay(&mut FaultyIo::new(3), tmp.path());
        assert!(tmp.path().join(JOURNAL).exists());
        recover(tmp.path()).unwrap();
        assert_eq!(collect_config(tmp.path()).unwrap(), new());
    }
}
