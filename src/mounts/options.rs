//! `options` of a `[[mount]]` as mount(2) wants them: the generic ones
//! (`noatime`, `nodev`, `ro`, ...) become flags, everything else is the
//! file system's own data string (`discard`, `data=ordered`, `compress=zstd`).

use nix::mount::MsFlags;

/// Generic options: (name, flag, set or clear).
const FLAGS: &[(&str, MsFlags, bool)] = &[
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("diratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("norelatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("lazytime", MsFlags::MS_LAZYTIME, true),
    ("nolazytime", MsFlags::MS_LAZYTIME, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
];

/// Options that mean nothing to the kernel (fstab habits).
const IGNORED: &[&str] = &["defaults", "auto", "noauto", "nofail", "_netdev"];

/// mount(2)'s flags and data for a local mount's `options` and `read_only`.
pub fn local(options: &[String], read_only: bool) -> (MsFlags, Option<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        if IGNORED.contains(&o.as_str()) {
            continue;
        }
        match FLAGS.iter().find(|(name, _, _)| name == o) {
            Some((_, flag, true)) => flags.insert(*flag),
            Some((_, flag, false)) => flags.remove(*flag),
            None => data.push(o.as_str()),
        }
    }
    if read_only {
        flags.insert(MsFlags::MS_RDONLY);
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    (flags, data)
}

/// The `-o` string for mount.nfs / mount.cifs (they parse the generic
/// options themselves).
pub fn network(options: &[String], read_only: bool) -> String {
    let mut out: Vec<&str> = options
        .iter()
        .map(String::as_str)
        .filter(|o| !IGNORED.contains(o) && (!read_only || *o != "rw"))
        .collect();
    if read_only && !out.contains(&"ro") {
        out.push("ro");
    }
    if out.is_empty() {
        "defaults".to_string()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn generic_options_are_flags_the_rest_is_data() {
        let (flags, data) = local(
            &strings(&["defaults", "noatime", "nodev", "discard", "data=ordered"]),
            false,
        );
        assert_eq!(flags, MsFlags::MS_NOATIME | MsFlags::MS_NODEV);
        assert_eq!(data.as_deref(), Some("discard,data=ordered"));
        let (flags, data) = local(&[], true);
        assert_eq!((flags, data), (MsFlags::MS_RDONLY, None));
        // Later options win, as with mount(8).
        let (flags, _) = local(&strings(&["ro", "rw", "exec", "noexec", "exec"]), false);
        assert_eq!(flags, MsFlags::empty());
    }

    #[test]
    fn network_options_pass_through() {
        assert_eq!(network(&[], false), "defaults");
        assert_eq!(
            network(&strings(&["vers=4.2", "_netdev"]), true),
            "vers=4.2,ro"
        );
        assert_eq!(network(&strings(&["rw", "ro"]), true), "ro");
    }
}
