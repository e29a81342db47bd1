//! prepare() against real qemu-img in a temporary directory.

use super::*;
use crate::config::from_strs;
use std::path::Path;

const HOST: &str = "schema = 1\nhostname = \"test\"\n";

fn guest(disks: &str) -> GuestConfig {
    let text = format!("schema = 1\nmemory = \"64MiB\"\n{disks}");
    let config = from_strs(HOST, &[("vm", &text)]).unwrap_or_else(|d| panic!("{d:?}"));
    config.guests[0].clone()
}

/// False (after saying why) when qemu-img is not installed and the
/// environment does not require it.
fn have_qemu_img() -> bool {
    if Command::new("qemu-img").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("qemu-img is not installed (apt install qemu-utils)");
    }
    eprintln!("SKIPPED: qemu-img is not installed (apt install qemu-utils)");
    false
}

fn info(path: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn creates_a_thin_overlay_of_base_once() {
    if !have_qemu_img() {
        return;
    }
    let tmp = tempdir();
    let base = tmp.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap_or_else(|e| panic!("{e}"));
    let disk = tmp.path().join("vm/sub/disk.qcow2");
    let g = guest(&format!(
        "[[disk]]\npath = \"{}\"\nbase = \"{}\"\nsize = \"64MiB\"\n",
        disk.display(),
        base.display()
    ));
    let done = prepare(&g).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].contains("thin overlay"), "{done:?}");
    let i = info(&disk);
    assert_eq!(i["format"], "qcow2");
    assert_eq!(i["backing-filename"], base.to_string_lossy().as_ref());
    assert_eq!(i["backing-filename-format"], "raw");
    assert_eq!(i["virtual-size"], 64 << 20);
    // Second start: the overlay exists and is left alone.
    let again = prepare(&g).unwrap_or_else(|e| panic!("{e}"));
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn creates_empty_qcow2_and_raw_images_of_size() {
    if !have_qemu_img() {
        return;
    }
    let tmp = tempdir();
    let q = tmp.path().join("a.qcow2");
    let r = tmp.path().join("b.img");
    let g = guest(&format!(
        "[[disk]]\npath = \"{}\"\nsize = \"32MiB\"\n[[disk]]\npath = \"{}\"\nsize = \"16MiB\"\nformat = \"raw\"\n",
        q.display(),
        r.display()
    ));
    let done = prepare(&g).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(info(&q)["format"], "qcow2");
    assert_eq!(info(&q)["virtual-size"], 32 << 20);
    let len = std::fs::metadata(&r).map(|m| m.len()).unwrap_or(0);
    assert_eq!(len, 16 << 20);
}

#[test]
fn refuses_missing_base_device_and_uncreatable_images() {
    let tmp = tempdir();
    let disk = tmp.path().join("d.qcow2");
    let base = tmp.path().join("nope.qcow2");
    let g = guest(&format!(
        "[[disk]]\npath = \"{}\"\nbase = \"{}\"\n",
        disk.display(),
        base.display()
    ));
    let e = prepare(&g).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("guest vm: guests/vm.toml disk[0]: base image") && e.contains("nope.qcow2"),
        "{e}"
    );
    assert!(!disk.exists());

    let g = guest("[[disk]]\ndevice = \"/dev/disk/by-id/walden-test-missing\"\n");
    let e = prepare(&g).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("walden-test-missing is not a block device") && e.contains("No such file"),
        "{e}"
    );
    let g = guest("[[disk]]\ndevice = \"/dev/null\"\n");
    let e = prepare(&g).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("it is not a block device"), "{e}");

    let g = guest(&format!("[[disk]]\npath = \"{}\"\n", disk.display()));
    let e = prepare(&g).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("has no `base` or `size`"), "{e}");

    let g = guest(&format!("[[disk]]\npath = \"{}\"\n", tmp.path().display()));
    let e = prepare(&g).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("is not a regular file"), "{e}");
}

#[test]
fn reports_a_qemu_img_that_cannot_run() {
    let tmp = tempdir();
    let disk = tmp.path().join("d.qcow2");
    let g = guest(&format!(
        "[[disk]]\npath = \"{}\"\nsize = \"1MiB\"\n",
        disk.display()
    ));
    let e = prepare_with(&g, Path::new("/nonexistent/qemu-img"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("`/nonexistent/qemu-img create -q -f qcow2") && e.contains("cannot start"),
        "{e}"
    );
}

#[test]
fn a_cdrom_iso_must_be_a_file_and_an_empty_drive_needs_none() {
    let tmp = tempdir();
    let iso = tmp.path().join("debian.iso");
    let g = guest(&format!("[[cdrom]]\npath = \"{}\"\n", iso.display()));
    let err = prepare(&g).unwrap_err().to_string();
    assert!(
        err.contains("cdrom[0]") && err.contains("debian.iso does not exist"),
        "{err}"
    );
    std::fs::create_dir(&iso).unwrap_or_else(|e| panic!("{e}"));
    let err = prepare(&g).unwrap_err().to_string();
    assert!(err.contains("is not a regular file"), "{err}");
    std::fs::remove_dir(&iso).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&iso, b"CD001").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        prepare(&g).unwrap_or_else(|e| panic!("{e}")),
        Vec::<String>::new()
    );
    let empty = guest("[[cdrom]]\n");
    assert_eq!(
        prepare(&empty).unwrap_or_else(|e| panic!("{e}")),
        Vec::<String>::new()
    );
}
