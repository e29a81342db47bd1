//! /etc/resolv.conf from `[network.dns]`: pure rendering plus an atomic
//! write (temporary file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old or the new file, never half of one.

use super::error::NetError;
use crate::config::DnsConfig;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The resolver allows at most this many name servers (glibc MAXNS).
pub const MAX_SERVERS: usize = 3;

/// The file's text, or `None` when the config sets no DNS (then walden
/// leaves resolv.conf to the DHCP client).
pub fn render(dns: &DnsConfig) -> Option<String> {
    if dns.servers.is_empty() && dns.search.is_empty() {
        return None;
    }
    let mut out = format!("{HEADER}; edit that instead.\n");
    if !dns.search.is_empty() {
        out.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    for s in dns.servers.iter().take(MAX_SERVERS) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if dns.servers.len() > MAX_SERVERS {
        out.push_str(&format!(
            "# {} more servers in host.toml are ignored: the resolver uses the first {MAX_SERVERS}\n",
            dns.servers.len() - MAX_SERVERS
        ));
    }
    Some(out)
}

/// First line of the file walden writes: how it knows the file is its own.
const HEADER: &str = "# Written by walden from host.toml [network.dns]";

/// Write resolv.conf under `etc` when the config sets DNS and the file
/// differs. Returns the path when it wrote. Without DNS in the config a
/// resolv.conf walden wrote earlier is removed (the DHCP client, no longer
/// told to leave it alone, writes its own); any other file is left alone.
pub fn write(dns: &DnsConfig, etc: &Path) -> Result<Option<PathBuf>, NetError> {
    let path = etc.join("resolv.conf");
    let Some(text) = render(dns) else {
        let ours = std::fs::read_to_string(&path).is_ok_and(|old| old.starts_with(HEADER));
        if ours {
            std::fs::remove_file(&path).map_err(|source| NetError::Write {
                path: path.clone(),
                source,
            })?;
            return Ok(Some(path));
        }
        return Ok(None);
    };
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(None);
    }
    write_atomic(&path, text.as_bytes())?;
    Ok(Some(path))
}

/// Replace `path` with `data` atomically.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), NetError> {
    let err = |source| NetError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.walden-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        // resolv.conf must be world-readable for every resolver user.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(servers: &[&str], search: &[&str]) -> DnsConfig {
        DnsConfig {
            servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            search: search.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn renders_search_then_servers() {
        let text = render(&dns(
            &["10.10.0.53", "fd00::53"],
            &["lab.example.org", "example.org"],
        ))
        .unwrap();
        assert!(text.starts_with("# Written by walden"));
        assert!(text.contains(
            "search lab.example.org example.org\nnameserver 10.10.0.53\nnameserver fd00::53\n"
        ));
        assert_eq!(render(&DnsConfig::default()), None);
    }

    #[test]
    fn more_than_three_servers_are_cut_with_a_note() {
        let text = render(&dns(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], &[])).unwrap();
        assert_eq!(text.matches("nameserver").count(), 3);
        assert!(text.contains("1 more servers"));
    }

    #[test]
    fn writes_atomically_and_only_on_change() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dns(&["192.0.2.1"], &[]);
        let wrote = write(&d, tmp.path()).unwrap();
        assert_eq!(wrote, Some(tmp.path().join("resolv.conf")));
        let text = std::fs::read_to_string(tmp.path().join("resolv.conf")).unwrap();
        assert!(text.contains("nameserver 192.0.2.1"));
        assert_eq!(
            write(&d, tmp.path()).unwrap(),
            None,
            "same content: no write"
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("resolv.conf")]);
    }

    #[test]
    fn dns_taken_out_of_the_config_removes_only_walden_s_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("resolv.conf");
        write(&dns(&["192.0.2.1"], &[]), tmp.path()).unwrap();
        assert_eq!(
            write(&DnsConfig::default(), tmp.path()).unwrap(),
            Some(path.clone())
        );
        assert!(!path.exists(), "walden's resolv.conf is gone");
        std::fs::write(&path, "nameserver 10.0.2.3\n").unwrap();
        assert_eq!(write(&DnsConfig::default(), tmp.path()).unwrap(), None);
        assert!(path.exists(), "a DHCP client's resolv.conf stays");
    }

    #[test]
    fn a_missing_directory_is_a_specific_error() {
        let err = write(
            &dns(&["192.0.2.1"], &[]),
            Path::new("/nonexistent/walden/etc"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/walden/etc/resolv.conf"),
            "{err}"
        );
    }
}
