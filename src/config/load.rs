//! Loading a config directory: read every file, check everything, and
//! return either a [`Config`] or every problem found.

use super::diag::{Diagnostic, Diagnostics};
use super::error::ConfigError;
use super::guest::GuestConfig;
use super::guest_read;
use super::host::{self, HealthConfig, HostConfig, SshConfig};
use super::ids::Name;
use super::network::NetworkConfig;
use super::reader::{self, Tbl};
use super::source::{Source, Sources};
use super::{check_guests, check_host, Config};
use std::fs;
use std::path::{Path, PathBuf};

/// Load and validate `dir` (host.toml plus guests/*.toml).
pub fn load(dir: &Path) -> Result<Config, ConfigError> {
    let path = dir.join("host.toml");
    let host =
        fs::read_to_string(&path).map_err(|source| ConfigError::NoHostFile { path, source })?;
    let mut problems = Vec::new();
    let guests = read_guests(&dir.join("guests"), &mut problems);
    from_texts(host, guests, problems).map_err(ConfigError::Invalid)
}

/// Read guests/*.toml in name order; unreadable entries become problems.
fn read_guests(gdir: &Path, problems: &mut Vec<Diagnostic>) -> Vec<(String, String)> {
    let problem = |file: PathBuf, message: String| Diagnostic {
        file,
        line: 0,
        column: 0,
        key: String::new(),
        message,
        hint: Some("check the file's permissions and that it is a regular file".into()),
    };
    let entries = match fs::read_dir(gdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(problem(
                "guests".into(),
                format!("cannot list the guests directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml") && !n.starts_with('.'))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let path = gdir.join(&name);
        if path.is_dir() {
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(text) => out.push((name, text)),
            Err(e) => problems.push(problem(
                Path::new("guests").join(&name),
                format!("cannot read: {e}"),
            )),
        }
    }
    out
}

/// Check a config given as texts: host.toml and (file name, text) of each
/// guest file. Used by [`load`] and by tests of other modules.
pub fn from_strs(host: &str, guests: &[(&str, &str)]) -> Result<Config, Diagnostics> {
    let guests = guests
        .iter()
        .map(|(name, text)| (format!("{name}.toml"), text.to_string()))
        .collect();
    from_texts(host.to_string(), guests, Vec::new())
}

fn empty_host() -> HostConfig {
    HostConfig {
        hostname: String::new(),
        timezone: None,
        network: NetworkConfig::default(),
        vfio: Vec::new(),
        mounts: Vec::new(),
        swap: None,
        ssh: SshConfig::default(),
        health: HealthConfig::default(),
        watchdog: Default::default(),
        services: Vec::new(),
    }
}

fn from_texts(
    host_text: String,
    guest_texts: Vec<(String, String)>,
    mut errors: Vec<Diagnostic>,
) -> Result<Config, Diagnostics> {
    let mut sources = vec![Source::new(Path::new("host.toml"), host_text)];
    for (file, text) in &guest_texts {
        sources.push(Source::new(&Path::new("guests").join(file), text.clone()));
    }
    let sources = Sources(sources);
    let docs: Vec<_> = sources.0.iter().map(reader::open).collect();

    let host_src = &sources.0[0];
    let mut host = match &docs[0] {
        Some(doc) => {
            let root = Tbl::new(host_src, doc.as_table(), String::new(), Some(0..0));
            let host = host::read(&root);
            root.finish();
            Some(host)
        }
        None => None,
    };

    let mut guests: Vec<GuestConfig> = Vec::new();
    // Guests whose file has a syntax error: they exist, so `after` may name them.
    let mut unparsed: Vec<String> = Vec::new();
    for ((src, doc), (file, _)) in sources.0[1..].iter().zip(&docs[1..]).zip(&guest_texts) {
        let stem = file.trim_end_matches(".toml");
        let name = match stem.parse::<Name>() {
            Ok(n) => Some(n),
            Err(e) => {
                src.error_at(
                    Some(0..0),
                    "",
                    format!("invalid guest name {stem:?} (the file name): {}", e.reason),
                    "rename the file to NAME.toml, NAME of ASCII letters, digits, '-' and '_' (at most 63), starting with a letter or digit",
                );
                None
            }
        };
        let Some(doc) = doc else {
            unparsed.push(stem.to_string());
            continue;
        };
        let root = Tbl::new(src, doc.as_table(), String::new(), Some(0..0));
        // A bad file name still gets its content checked, under a stand-in name.
        let stand_in = name.clone().or_else(|| "invalid".parse().ok());
        if let Some(n) = stand_in {
            let g = guest_read::read(&root, n);
            if name.is_some() {
                guests.push(g);
            }
        }
        root.finish();
    }

    // Cross-file checks need a parsed host.toml; without one they would only
    // repeat "unknown bridge" for everything.
    if let Some(host) = host.as_mut() {
        check_host::check(host, &sources);
        check_guests::check(host, &guests, &unparsed, &sources);
    }

    let mut warnings = Vec::new();
    for src in &sources.0 {
        let (e, w) = src.take();
        errors.extend(e);
        warnings.extend(w);
    }
    let mut errors = Diagnostics(errors);
    errors.sort();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut warnings = Diagnostics(warnings);
    warnings.sort();
    guests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Config {
        host: host.unwrap_or_else(empty_host),
        guests,
        warnings: warnings.0,
    })
}
