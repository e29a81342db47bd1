//! Where generations live: the [`Store`] trait, the file-system store on
//! the config disk, and its in-memory twin for tests (bottlerocket's
//! `DataStore` / `MemoryDataStore`).

use super::atomic::{atomic_write_with, write_set_with, Io, RealIo};
use super::generation::{content_hash, now_secs, ConfigFiles, GenerationId, Meta};
use super::StateError;
use std::path::{Path, PathBuf};

/// Name of the pointer file inside the generations directory.
pub const LAST_GOOD: &str = "last-good";

/// A store of config generations.
pub trait Store {
    /// Every complete generation, oldest first.
    fn list(&self) -> Result<Vec<GenerationId>, StateError>;
    /// A generation's config files, checked against its hash.
    fn files(&self, id: &GenerationId) -> Result<ConfigFiles, StateError>;
    /// A generation's meta.toml.
    fn meta(&self, id: &GenerationId) -> Result<Meta, StateError>;
    /// Add a generation (numbered after the newest) and return its id.
    fn add(&mut self, files: &ConfigFiles, meta: &Meta) -> Result<GenerationId, StateError>;
    /// The last-known-good generation, if any was recorded.
    fn last_good(&self) -> Result<Option<GenerationId>, StateError>;
    /// Point last-good at `id`.
    fn set_last_good(&mut self, id: &GenerationId) -> Result<(), StateError>;
}

/// The generation numbered `number`.
pub fn by_number(store: &dyn Store, number: u64) -> Result<GenerationId, StateError> {
    store
        .list()?
        .into_iter()
        .find(|g| g.number == number)
        .ok_or(StateError::NoSuchGeneration(number))
}

/// Record `files` as a good generation and point last-good at it, unless
/// last-good already holds exactly this content. Returns the id and
/// whether a new generation was written.
pub fn record_good(
    store: &mut dyn Store,
    files: &ConfigFiles,
    image_version: Option<String>,
) -> Result<(GenerationId, bool), StateError> {
    let hash = content_hash(files);
    if let Some(id) = store.last_good()? {
        if store.meta(&id)?.hash == hash {
            return Ok((id, false));
        }
    }
    let meta = Meta {
        hash,
        created: now_secs(),
        image_version,
        status: "good".into(),
    };
    let id = store.add(files, &meta)?;
    store.set_last_good(&id)?;
    Ok((id, true))
}

/// Generations as directories under `<config>/.walden/generations`.
pub struct FsStore {
    dir: PathBuf,
    io: Box<dyn Io>,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore").field("dir", &self.dir).finish()
    }
}

impl FsStore {
    /// The store of config directory `config` (e.g. /config).
    pub fn for_config(config: &Path) -> Self {
        Self::at(config.join(".walden/generations"), Box::new(RealIo))
    }

    /// A store in `dir`, writing through `io`.
    pub fn at(dir: PathBuf, io: Box<dyn Io>) -> Self {
        Self { dir, io }
    }

    /// The directory of generation `id` (a loadable config directory).
    pub fn path(&self, id: &GenerationId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.to_path_buf();
        move |source| StateError::Io { what, path, source }
    }
}

impl Store for FsStore {
    fn list(&self) -> Result<Vec<GenerationId>, StateError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io_err("list", &self.dir)(e)),
        };
        // Half-written generations are named .tmp-* and never parse.
        let mut ids: Vec<GenerationId> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn files(&self, id: &GenerationId) -> Result<ConfigFiles, StateError> {
        let files = super::collect_config(&self.path(id))?;
        let actual = content_hash(&files);
        if !actual.starts_with(&id.hash12) {
            return Err(StateError::Damaged {
                id: id.to_string(),
                actual,
            });
        }
        Ok(files)
    }

    fn meta(&self, id: &GenerationId) -> Result<Meta, StateError> {
        let path = self.path(id).join("meta.toml");
        let text = std::fs::read_to_string(&path).map_err(Self::io_err("read", &path))?;
        toml::from_str(&text).map_err(|e| StateError::BadMeta {
            path,
            message: e.message().to_string(),
        })
    }

    fn add(&mut self, files: &ConfigFiles, meta: &Meta) -> Result<GenerationId, StateError> {
        let number = self.list()?.last().map_or(1, |g| g.number + 1);
        let id = GenerationId {
            number,
            hash12: meta.hash.chars().take(12).collect(),
        };
        let tmp = self.dir.join(format!(".tmp-{number}"));
        let dest = self.path(&id);
        let io = &mut self.io;
        let e = Self::io_err;
        io.create_dir_all(&self.dir)
            .map_err(e("create", &self.dir))?;
        // A crash during an earlier add may have left this behind.
        io.remove_dir_all(&tmp).map_err(e("remove", &tmp))?;
        io.create_dir_all(&tmp.join("guests"))
            .map_err(e("create", &tmp))?;
        let meta_path = tmp.join("meta.toml");
        let text = toml::to_string(meta).map_err(|err| StateError::BadMeta {
            path: meta_path.clone(),
            message: err.to_string(),
        })?;
        let set = files
            .iter()
            .map(|(name, bytes)| (tmp.join(name), bytes.as_slice()))
            .chain([(meta_path, text.as_bytes())]);
        // One syncfs for the whole generation, then the rename commits it.
        write_set_with(io.as_mut(), &tmp, set)?;
        io.rename(&tmp, &dest)
            .map_err(e("rename into place", &dest))?;
        io.sync_dir(&self.dir).map_err(e("sync", &self.dir))?;
        Ok(id)
    }

    fn last_good(&self) -> Result<Option<GenerationId>, StateError> {
        let path = self.dir.join(LAST_GOOD);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io_err("read", &path)(e)),
        };
        let id: GenerationId = text.parse().map_err(|message| StateError::BadMeta {
            path: path.clone(),
            message,
        })?;
        Ok(Some(id))
    }

    fn set_last_good(&mut self, id: &GenerationId) -> Result<(), StateError> {
        let path = self.dir.join(LAST_GOOD);
        atomic_write_with(self.io.as_mut(), &path, format!("{id}\n").as_bytes(), 0o644)
    }
}

/// The in-memory twin of [`FsStore`], for tests of code that uses a store.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    generations: Vec<(GenerationId, ConfigFiles, Meta)>,
    last_good: Option<GenerationId>,
}

#[cfg(test)]
impl MemStore {
    fn find(&self, id: &GenerationId) -> Option<&(GenerationId, ConfigFiles, Meta)> {
        self.generations.iter().find(|g| &g.0 == id)
    }
}

#[cfg(test)]
impl Store for MemStore {
    fn list(&self) -> Result<Vec<GenerationId>, StateError> {
        Ok(self.generations.iter().map(|g| g.0.clone()).collect())
    }

    fn files(&self, id: &GenerationId) -> Result<ConfigFiles, StateError> {
        self.find(id)
            .map(|g| g.1.clone())
            .ok_or(StateError::NoSuchGeneration(id.number))
    }

    fn meta(&self, id: &GenerationId) -> Result<Meta, StateError> {
        self.find(id)
            .map(|g| g.2.clone())
            .ok_or(StateError::NoSuchGeneration(id.number))
    }

    fn add(&mut self, files: &ConfigFiles, meta: &Meta) -> Result<GenerationId, StateError> {
        let number = self.generations.last().map_or(1, |g| g.0.number + 1);
        let id = GenerationId {
            number,
            hash12: meta.hash.chars().take(12).collect(),
        };
        self.generations
            .push((id.clone(), files.clone(), meta.clone()));
        Ok(id)
    }

    fn last_good(&self) -> Result<Option<GenerationId>, StateError> {
        Ok(self.last_good.clone())
    }

    fn set_last_good(&mut self, id: &GenerationId) -> Result<(), StateError> {
        self.find(id)
            .ok_or(StateError::NoSuchGeneration(id.number))?;
        self.last_good = Some(id.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::atomic::fault::FaultyIo;
    use super::*;

    fn files(host: &str, guests: &[(&str, &str)]) -> ConfigFiles {
        let mut f = ConfigFiles::new();
        f.insert("host.toml".into(), host.as_bytes().to_vec());
        for (n, t) in guests {
            f.insert(format!("guests/{n}.toml"), t.as_bytes().to_vec());
        }
        f
    }

    fn history_and_dedup(store: &mut dyn Store) {
        let a = files("schema = 1\nhostname = \"a\"\n", &[("web", "schema = 1\n")]);
        let b = files("schema = 1\nhostname = \"b\"\n", &[]);
        let (g1, new1) = record_good(store, &a, Some("0.1.0".into())).unwrap();
        let (again, new_again) = record_good(store, &a, None).unwrap();
        assert!(new1 && !new_again);
        assert_eq!(g1, again);
        let (g2, _) = record_good(store, &b, None).unwrap();
        assert_eq!((g1.number, g2.number), (1, 2));
        assert_eq!(store.list().unwrap(), vec![g1.clone(), g2.clone()]);
        assert_eq!(store.last_good().unwrap(), Some(g2.clone()));
        assert_eq!(store.files(&g1).unwrap(), a);
        assert_eq!(
            store.meta(&g1).unwrap().image_version.as_deref(),
            Some("0.1.0")
        );
        assert_eq!(store.meta(&g2).unwrap().status, "good");
        assert_eq!(by_number(store, 1).unwrap(), g1);
        assert!(matches!(
            by_number(store, 7),
            Err(StateError::NoSuchGeneration(7))
        ));
        // Going back to a's content is a new generation (history is chronological).
        let (g3, new3) = record_good(store, &a, None).unwrap();
        assert!(new3);
        assert_eq!((g3.number, &g3.hash12), (3, &g1.hash12));
    }

    #[test]
    fn memory_store_keeps_history_and_skips_duplicates() {
        history_and_dedup(&mut MemStore::default());
    }

    #[test]
    fn fs_store_behaves_like_its_twin() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = FsStore::for_config(tmp.path());
        history_and_dedup(&mut store);
        let g1 = by_number(&store, 1).unwrap();
        // A generation directory is a loadable config directory.
        assert!(store.path(&g1).join("guests/web.toml").is_file());
        assert!(store.path(&g1).join("meta.toml").is_file());
    }

    #[test]
    fn a_damaged_generation_is_reported_not_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = FsStore::for_config(tmp.path());
        let (g, _) = record_good(&mut store, &files("x", &[]), None).unwrap();
        std::fs::write(store.path(&g).join("host.toml"), "y").unwrap();
        let err = store.files(&g).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("generation {g} is damaged")),
            "{err}"
        );
    }

    /// Cut the power after every possible number of file-system operations
    /// while recording a second generation: afterwards every listed
    /// generation is complete, last-good is the old or the new one, and the
    /// store still accepts new generations.
    #[test]
    fn a_crash_at_any_point_of_recording_leaves_old_or_new() {
        let old = files("old", &[("g", "guest")]);
        let new = files("new", &[("g", "guest2"), ("h", "guest3")]);
        let mut finished = false;
        for budget in 0..40 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("gens");
            let mut real = FsStore::at(dir.clone(), Box::new(RealIo));
            let (g1, _) = record_good(&mut real, &old, None).unwrap();
            let mut faulty = FsStore::at(dir.clone(), Box::new(FaultyIo::new(budget)));
            let result = record_good(&mut faulty, &new, None);
            let after = FsStore::at(dir.clone(), Box::new(RealIo));
            let listed = after.list().unwrap();
            for id in &listed {
                after.files(id).unwrap();
                after.meta(id).unwrap();
            }
            let good = after.last_good().unwrap().unwrap();
            let good_files = after.files(&good).unwrap();
            assert!(
                good_files == old || good_files == new,
                "budget {budget}: last-good {good}"
            );
            assert!(listed.contains(&good));
            assert_eq!(listed[0], g1);
            if result.is_ok() {
                assert_eq!(good_files, new, "budget {budget}");
                finished = true;
                break;
            }
            // The next record after the crash still works.
            let mut again = FsStore::at(dir, Box::new(RealIo));
            let (g, _) = record_good(&mut again, &new, None).unwrap();
            assert_eq!(again.files(&g).unwrap(), new);
            assert_eq!(again.last_good().unwrap(), Some(g));
        }
        assert!(finished, "recording never finished within 40 operations");
    }
}
