//! The config disk in the bring-up: the /etc and /var overlays, loading the
//! config with a fall-back to the last-known-good generation, and recording
//! a config that reached health as a new generation (DESIGN.md section 4).
//!
//! The "config" and "config-generation" steps share a [`ConfigState`]: the
//! first remembers the files it validated, the second records exactly those.

use super::bringup::{BringUp, Step, StepError, StepOutcome};
use super::status::StepState;
use crate::config::{Config, ConfigError};
use crate::state::store::{record_good, Store};
use crate::state::{collect_config, ConfigFiles, FsStore, GenerationId};
use std::cell::RefCell;
use std::rc::Rc;

/// What the "config" step chose to run.
#[derive(Debug)]
pub enum Choice {
    /// /config itself is valid.
    Current(Box<Config>),
    /// /config was refused; the last-known-good generation runs instead.
    Fallback {
        /// The generation's config.
        config: Box<Config>,
        /// Which generation.
        generation: GenerationId,
        /// Why /config was refused: `file:line:col: message`, joined by "; ".
        refused: String,
    },
    /// Nothing can run: /config is bad and there is no usable generation.
    Fail(String),
}

/// `file:line:col: key: message` of every problem, hints left out.
pub fn refusal(e: &ConfigError) -> String {
    match e {
        ConfigError::Invalid(diags) => diags
            .0
            .iter()
            .map(|d| {
                let mut one = d.clone();
                one.hint = None;
                one.to_string()
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// Validate a config set held in memory (`what` names it in errors).
pub fn config_from_files(files: &ConfigFiles, what: &str) -> Result<Config, String> {
    let text = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
    let host = files
        .get("host.toml")
        .map(text)
        .ok_or_else(|| format!("{what} has no host.toml"))?;
    let guests: Vec<(String, String)> = files
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("guests/")?.strip_suffix(".toml")?;
            Some((name.to_string(), text(v)))
        })
        .collect();
    let refs: Vec<(&str, &str)> = guests
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    crate::config::from_strs(&host, &refs).map_err(|d| format!("{what} does not validate:\n{d}"))
}

/// Load a generation's files as a config.
pub fn load_generation(store: &dyn Store, id: &GenerationId) -> Result<Config, String> {
    let files = store.files(id).map_err(|e| e.to_string())?;
    config_from_files(&files, &format!("generation {id}"))
        .map_err(|e| e.replace("does not validate", "no longer validates"))
}

/// Pure decision: run `loaded` if it is valid, else last-good from `store`.
pub fn choose(loaded: Result<Config, ConfigError>, store: &dyn Store) -> Choice {
    let err = match loaded {
        Ok(c) => return Choice::Current(Box::new(c)),
        Err(e) => e,
    };
    let refused = refusal(&err);
    let good = match store.last_good() {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Choice::Fail(format!(
                "{err}\nno last-known-good config generation to fall back to; fix the config and reboot"
            ))
        }
        Err(e) => return Choice::Fail(format!("{err}\nand the last-known-good generation is unreadable: {e}")),
    };
    match load_generation(store, &good) {
        Ok(config) => Choice::Fallback {
            config: Box::new(config),
            generation: good,
            refused,
        },
        Err(e) => Choice::Fail(format!("{err}\nand {e}")),
    }
}

/// State shared by the "config" and "config-generation" steps.
#[derive(Debug, Default, Clone)]
pub struct ConfigState {
    /// Files of /config as validated by the config step; None when it fell back.
    files: Rc<RefCell<Option<ConfigFiles>>>,
}

impl ConfigState {
    /// The "config" step: load /config, or fall back to last-known-good.
    pub fn load_step(&self) -> Step {
        let files = self.files.clone();
        Step::new("config", move |b: &mut BringUp| load(b, &files))
    }

    /// The "config-generation" step: record the running /config as a good
    /// generation when bring-up got this far healthy.
    pub fn record_step(&self) -> Step {
        let files = self.files.clone();
        Step::new("config-generation", move |b: &mut BringUp| {
            record(b, &files)
        })
    }
}

fn load(b: &mut BringUp, files: &RefCell<Option<ConfigFiles>>) -> Result<StepOutcome, StepError> {
    let dir = b.paths.config.clone();
    // A `config apply` or `config rollback` cut by a power loss is finished
    // (committed) or dropped (not yet committed) before anything is read.
    match crate::state::journal::recover(&dir) {
        Ok(Some(done)) => tracing::warn!("config disk: {done}"),
        Ok(None) => {}
        Err(e) => tracing::error!("config disk: cannot recover an interrupted config install: {e}"),
    }
    if let Some(done) = super::apply::undo_unconfirmed(&dir) {
        tracing::warn!("config disk: {done}");
    }
    let loaded = crate::config::load(&dir);
    if let Err(ConfigError::NoHostFile { .. }) = &loaded {
        // Missing or an empty mount point: no config disk (a mounted ext4
        // disk has lost+found, so a disk without host.toml still fails).
        let empty = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
        if empty {
            return Ok(StepOutcome::Skipped(format!(
                "no config in {} (no config disk)",
                dir.display()
            )));
        }
    }
    let store = FsStore::for_config(&dir);
    let (config, detail) = match choose(loaded, &store) {
        Choice::Current(config) => {
            // What was validated is what gets recorded at health.
            *files.borrow_mut() = collect_config(&dir).ok();
            let mut status = b.supervisor.status().lock();
            status.config_refused = None;
            status.config_generation = store.last_good().ok().flatten().and_then(|id| {
                let same = store.meta(&id).ok()?.hash
                    == crate::state::generation::content_hash(files.borrow().as_ref()?);
                same.then_some(id.number)
            });
            let detail = super::appliance::summary(&config);
            (config, detail)
        }
        Choice::Fallback {
            config,
            generation,
            refused,
        } => {
            let line = format!(
                "CONFIG REFUSED: {refused}; running last-known-good generation {}",
                generation.number
            );
            tracing::info!("{line}");
            let mut status = b.supervisor.status().lock();
            status.config_refused = Some(refused);
            status.config_generation = Some(generation.number);
            status.last_error = Some(format!("config: {line}"));
            (config, line)
        }
        Choice::Fail(message) => return Err(StepError::new(message)),
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    b.services.extend(
        config
            .host
            .services
            .iter()
            .map(super::service::ServiceSpec::from),
    );
    b.config = Some(*config);
    Ok(StepOutcome::Done(detail))
}

/// The "etc-overlay" step: /etc and /var from the config disk, then the
/// ssh host keys (generated once: /etc/ssh is persistent now).
pub fn persist_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let paths = &b.paths;
    let mountinfo = std::fs::read_to_string(paths.proc.join("self/mountinfo")).unwrap_or_default();
    let mounted = crate::boot::mount::parse_mountinfo(&mountinfo);
    if !mounted.contains(&paths.config) {
        return Ok(StepOutcome::Skipped(format!(
            "no config disk mounted at {}: /etc and /var stay in RAM",
            paths.config.display()
        )));
    }
    let plan = crate::boot::persist::plan(paths);
    let done = crate::boot::persist::apply(&mut crate::boot::mount::SysMounter, &plan, &mounted)
        .map_err(|e| StepError::new(e.to_string()))?;
    let mut detail = if done.is_empty() {
        "/etc and /var overlays already mounted".to_string()
    } else {
        format!(
            "overlaid {} from {}",
            done.join(" "),
            paths.config.display()
        )
    };
    if let Some(keys) = crate::boot::persist::ssh_host_keys(&paths.root) {
        detail = format!("{detail}; {keys}");
    }
    Ok(StepOutcome::Done(detail))
}

/// Steps whose failure means the config did not come up healthy.
const HEALTH_STEPS: &[&str] = &["config", "network", "vfio", "services"];

fn record(b: &mut BringUp, files: &RefCell<Option<ConfigFiles>>) -> Result<StepOutcome, StepError> {
    let status = b.supervisor.status().clone();
    if let Some(gen) = status
        .lock()
        .config_generation
        .filter(|_| files.borrow().is_none())
    {
        return Ok(StepOutcome::Skipped(format!(
            "running last-known-good generation {gen}; /config was refused"
        )));
    }
    let Some(files) = files.borrow().clone() else {
        return Ok(StepOutcome::Skipped(
            "no config loaded from the config disk".into(),
        ));
    };
    let failed: Vec<String> = status
        .lock()
        .steps
        .iter()
        .filter(|s| s.state == StepState::Failed && HEALTH_STEPS.contains(&s.name.as_str()))
        .map(|s| s.name.clone())
        .collect();
    if !failed.is_empty() {
        return Ok(StepOutcome::Skipped(format!(
            "not recorded as good: step {} failed",
            failed.join(", ")
        )));
    }
    let image = status.lock().image_version.clone();
    let mut store = FsStore::for_config(&b.paths.config);
    let (id, new) = record_good(&mut store, &files, image)
        .map_err(|e| StepError::new(format!("cannot record the config generation: {e}")))?;
    status.lock().config_generation = Some(id.number);
    Ok(StepOutcome::Done(if new {
        format!("recorded config generation {id} as last-known-good")
    } else {
        format!("config unchanged since generation {id}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::MemStore;

    const GOOD: &str = "schema = 1\nhostname = \"good\"\n";

    fn files(host: &str) -> ConfigFiles {
        let mut f = ConfigFiles::new();
        f.insert("host.toml".into(), host.as_bytes().to_vec());
        f.insert(
            "guests/web.toml".into(),
            b"schema = 1\nmemory = \"1GiB\"\nvcpus = 1\n".to_vec(),
        );
        f
    }

    fn bad_dir() -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("host.toml"),
            "schema = 1\nhostname = \"x\"\n[[[\n",
        )
        .unwrap();
        let loaded = crate::config::load(tmp.path());
        (tmp, loaded)
    }

    #[test]
    fn a_valid_config_runs_as_is() {
        let loaded = crate::config::from_strs(GOOD, &[]).map_err(ConfigError::Invalid);
        assert!(matches!(
            choose(loaded, &MemStore::default()),
            Choice::Current(_)
        ));
    }

    #[test]
    fn a_broken_config_falls_back_to_last_good_and_says_where() {
        let mut store = MemStore::default();
        record_good(&mut store, &files(GOOD), None).unwrap();
        let (_tmp, loaded) = bad_dir();
        match choose(loaded, &store) {
            Choice::Fallback {
                config,
                generation,
                refused,
            } => {
                assert_eq!(config.host.hostname, "good");
                assert_eq!(config.guests.len(), 1);
                assert_eq!(generation.number, 1);
                assert!(refused.starts_with("host.toml:3:"), "{refused}");
                assert!(!refused.contains("hint:"), "{refused}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_generation_or_a_bad_one_fails_with_both_reasons() {
        let (_tmp, loaded) = bad_dir();
        match choose(loaded, &MemStore::default()) {
            Choice::Fail(m) => assert!(
                m.contains("host.toml:3") && m.contains("no last-known-good"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        let mut store = MemStore::default();
        record_good(&mut store, &files("schema = 1\n"), None).unwrap();
        let (_tmp, loaded) = bad_dir();
        match choose(loaded, &store) {
            Choice::Fail(m) => assert!(m.contains("no longer validates"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
