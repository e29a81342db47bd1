//! The kernel command line GRUB would pass, read from the media's
//! `grub/grub.cfg`, so a direct-kernel boot (`-kernel/-initrd/-append`)
//! exercises stage 1 exactly as a GRUB boot does, with one change.

use crate::error::{Error, Result};

/// Arguments after `linux /images/<version>/vmlinuz` in `grub_cfg`.
pub fn kernel_args(grub_cfg: &str, version: &str) -> Result<String> {
    let kernel = format!("/images/{version}/vmlinuz");
    grub_cfg
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("linux"))
        .find_map(|rest| rest.trim_start().strip_prefix(kernel.as_str()))
        .map(|args| args.trim().to_string())
        .ok_or_else(|| Error::unexpected("grub/grub.cfg", format!("no `linux {kernel} ...` line")))
}

/// `args` with `walden.version=` set to `version` (replaced or appended).
pub fn with_version(args: &str, version: &str) -> String {
    let mut out: Vec<String> = args
        .split_whitespace()
        .filter(|a| !a.starts_with("walden.version="))
        .map(str::to_string)
        .collect();
    out.push(format!("walden.version={version}"));
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"serial --unit=0 --speed=115200
set timeout=2
menuentry "walden 0.2.0" --id "walden-0.2.0" {
    linux /images/0.2.0/vmlinuz console=tty0 console=ttyS0,115200n8 panic=10 quiet walden.version=0.2.0
    initrd /images/0.2.0/initrd.img
}
menuentry "walden 0.1.0" --id "walden-0.1.0" {
    linux /images/0.1.0/vmlinuz console=ttyS0,115200n8 walden.version=0.1.0
    initrd /images/0.1.0/initrd.img
}
"#;

    #[test]
    fn finds_the_entry_of_the_version() {
        assert_eq!(
            kernel_args(CFG, "0.1.0").unwrap(),
            "console=ttyS0,115200n8 walden.version=0.1.0"
        );
        assert!(kernel_args(CFG, "0.2.0")
            .unwrap()
            .starts_with("console=tty0 "));
        assert!(kernel_args(CFG, "0.3.0").is_err());
    }

    #[test]
    fn version_is_replaced_not_duplicated() {
        assert_eq!(
            with_version("console=ttyS0 walden.version=0.1.0 quiet", "9.9"),
            "console=ttyS0 quiet walden.version=9.9"
        );
        assert_eq!(with_version("", "9.9"), "walden.version=9.9");
    }
}
