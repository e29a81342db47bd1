//! The "host-files" step: files host.toml owns in the (now persistent)
//! root: /etc/hostname, root's ssh authorized_keys, the time zone
//! (/etc/localtime, /etc/timezone) and, from `[network.dns]`,
//! /etc/resolv.conf (written by the network step); and sshd as a service
//! once root has a key to log in with. A key that is removed from host.toml
//! undoes what it did: no `timezone` is UTC again, no `[ssh]` key empties
//! root's authorized_keys.

use super::bringup::{BringUp, StepError, StepOutcome};
use super::service::ServiceSpec;
use crate::config::HostConfig;
use crate::state::atomic::{atomic_write, atomic_write_with, RealIo};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Write what `host` says under `root`; returns what was done, or every
/// problem (the parts that could be done are done).
pub fn write_host_files(root: &Path, host: &HostConfig) -> Result<String, String> {
    let mut done = Vec::new();
    let mut problems = Vec::new();
    // /etc/hostname too, so tools that read it agree with the kernel.
    let etc_hostname = root.join("etc/hostname");
    match atomic_write(&etc_hostname, format!("{}\n", host.hostname).as_bytes()) {
        Ok(()) => done.push("/etc/hostname".to_string()),
        Err(e) => problems.push(e.to_string()),
    }
    match authorized_keys(root, &host.ssh.authorized_keys) {
        Ok(d) => done.push(d),
        Err(e) => problems.push(e),
    }
    // No `timezone` means UTC, also after one was removed.
    match timezone(root, host.timezone.as_deref().unwrap_or(DEFAULT_TZ)) {
        Ok(d) => done.push(d),
        Err(e) => problems.push(e),
    }
    if problems.is_empty() {
        Ok(done.join("; "))
    } else {
        Err(problems.join("; "))
    }
}

/// The time zone without `timezone` in host.toml.
const DEFAULT_TZ: &str = "Etc/UTC";

/// /root/.ssh/authorized_keys, 0600 in a 0700 directory, replaced
/// atomically. host.toml owns the file: keys added by hand are replaced, and
/// without `[ssh]` keys the file is emptied (a removed key no longer logs in).
fn authorized_keys(root: &Path, keys: &[String]) -> Result<String, String> {
    let dir = root.join("root/.ssh");
    let path = dir.join("authorized_keys");
    if keys.is_empty() {
        if !path.exists() {
            return Ok("no [ssh] authorized_keys".into());
        }
        atomic_write_with(&mut RealIo, &path, b"", 0o600).map_err(|e| e.to_string())?;
        return Ok("no [ssh] authorized_keys: root's emptied".into());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut text = keys.join("\n");
    text.push('\n');
    atomic_write_with(&mut RealIo, &path, text.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    Ok(format!("{} ssh keys for root", keys.len()))
}

/// /etc/localtime -> /usr/share/zoneinfo/<tz>, plus /etc/timezone.
fn timezone(root: &Path, tz: &str) -> Result<String, String> {
    let target = Path::new("/usr/share/zoneinfo").join(tz);
    let in_root = root.join(target.strip_prefix("/").unwrap_or(&target));
    if !in_root.is_file() {
        return Err(format!(
            "time zone {tz:?}: {} is not in this image (is tzdata installed?); \
             use a name from the tz database such as \"Europe/Berlin\" or remove `timezone`",
            target.display()
        ));
    }
    let link = root.join("etc/localtime");
    let tmp = root.join("etc/.localtime.walden-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .map_err(|e| {
            format!(
                "cannot point {} at {}: {e}",
                link.display(),
                target.display()
            )
        })?;
    atomic_write(&root.join("etc/timezone"), format!("{tz}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(format!("time zone {tz}"))
}

/// OpenSSH's server in the image.
pub const SSHD: &str = "/usr/sbin/sshd";

/// sshd in the foreground, logging to stderr (so to walden's log), when
/// host.toml gives root a key and the image under `root` has sshd. Without
/// a key nobody could log in (root's password is locked), so no sshd runs.
/// Debian's /etc/ssh/sshd_config applies (root: keys only); the host keys
/// are made once per machine by the etc-overlay step.
pub fn sshd_service(root: &Path, host: &HostConfig) -> Option<ServiceSpec> {
    if host.ssh.authorized_keys.is_empty() || !root.join(&SSHD[1..]).exists() {
        return None;
    }
    Some(ServiceSpec::new("sshd", &[SSHD, "-D", "-e"]))
}

/// The bring-up step: the files, then sshd queued for the services step.
/// sshd is queued whatever happened to the files: a file that could not be
/// written must not lock the admin out of an unattended box.
pub fn step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let Some(config) = &b.config else {
        return Ok(StepOutcome::Skipped("no config loaded".into()));
    };
    let files = write_host_files(&b.paths.root, &config.host);
    let mut sshd_note = String::new();
    if let Some(sshd) = sshd_service(&b.paths.root, &config.host) {
        // sshd's privilege separation directory (tmpfs: every boot).
        let dir = b.paths.root.join("run/sshd");
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
        {
            Ok(()) => sshd_note = "; sshd queued".into(),
            // sshd says what it misses in its own log and status.
            Err(e) => {
                sshd_note = format!("; sshd queued, but cannot create {}: {e}", dir.display())
            }
        }
        b.services.push(sshd);
    }
    match files {
        Ok(done) => Ok(StepOutcome::Done(format!("{done}{sshd_note}"))),
        Err(problems) => Err(StepError::new(format!("{problems}{sshd_note}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5Zm9yd2FsZGVuZXhhbXBsZXNvbmx5 a@b";

    fn host(extra: &str) -> HostConfig {
        let text =
            format!("schema = 1\nhostname = \"h\"\n{extra}[ssh]\nauthorized_keys = [\"{KEY}\"]\n");
        crate::config::from_strs(&text, &[]).unwrap().host
    }

    #[test]
    fn sshd_runs_only_with_a_key_and_when_the_image_has_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(sshd_service(root, &host("")), None, "no sshd in this root");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/sshd"), "").unwrap();
        let spec = sshd_service(root, &host("")).unwrap();
        assert_eq!(spec.name, "sshd");
        assert_eq!(spec.argv, ["/usr/sbin/sshd", "-D", "-e"]);
        let keyless = crate::config::from_strs("schema = 1\nhostname = \"h\"\n", &[])
            .unwrap()
            .host;
        assert_eq!(sshd_service(root, &keyless), None, "no key, no sshd");
    }

    #[test]
    fn keys_are_private_and_timezone_links_into_zoneinfo() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/share/zoneinfo/Europe")).unwrap();
        std::fs::write(root.join("usr/share/zoneinfo/Europe/Berlin"), "TZif").unwrap();
        let done = write_host_files(root, &host("timezone = \"Europe/Berlin\"\n")).unwrap();
        assert_eq!(
            done,
            "/etc/hostname; 1 ssh keys for root; time zone Europe/Berlin"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "h\n"
        );
        let keys = root.join("root/.ssh/authorized_keys");
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o600);
        assert_eq!(mode(&root.join("root/.ssh")), 0o700);
        assert_eq!(
            std::fs::read_link(root.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Berlin")
        );
        // Again: idempotent.
        write_host_files(root, &host("timezone = \"Europe/Berlin\"\n")).unwrap();
    }

    #[test]
    fn a_missing_zone_is_a_clear_error_but_keys_are_still_written() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let err = write_host_files(root, &host("timezone = \"Europe/Berlin\"\n")).unwrap_err();
        assert!(
            err.contains("/usr/share/zoneinfo/Europe/Berlin is not in this image"),
            "{err}"
        );
        assert!(root.join("root/.ssh/authorized_keys").is_file());
    }

    #[test]
    fn removing_timezone_and_keys_undoes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        for zone in ["Europe/Berlin", "Etc/UTC"] {
            let f = root.join("usr/share/zoneinfo").join(zone);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "TZif").unwrap();
        }
        write_host_files(root, &host("timezone = \"Europe/Berlin\"\n")).unwrap();
        let bare = crate::config::from_strs("schema = 1\nhostname = \"h\"\n", &[])
            .unwrap()
            .host;
        let done = write_host_files(root, &bare).unwrap();
        assert!(done.contains("time zone Etc/UTC"), "{done}");
        assert!(done.contains("root's emptied"), "{done}");
        assert_eq!(
            std::fs::read_link(root.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/timezone")).unwrap(),
            "Etc/UTC\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
            ""
        );
    }

    #[test]
    fn sshd_is_queued_even_when_a_host_file_cannot_be_written() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        // /etc/localtime is a directory: the time zone cannot be set.
        std::fs::create_dir_all(root.join("etc/localtime/x")).unwrap();
        std::fs::create_dir_all(root.join("usr/share/zoneinfo/Etc")).unwrap();
        std::fs::write(root.join("usr/share/zoneinfo/Etc/UTC"), "TZif").unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/sshd"), "").unwrap();
        let mut b = BringUp::for_tests(
            &root,
            &format!("schema = 1\nhostname = \"h\"\n[ssh]\nauthorized_keys = [\"{KEY}\"]\n"),
        );
        let err = step(&mut b).unwrap_err().to_string();
        assert!(
            err.contains("localtime") && err.contains("sshd queued"),
            "{err}"
        );
        assert_eq!(b.services.len(), 1);
        assert_eq!(b.services[0].name, "sshd");
    }
}
