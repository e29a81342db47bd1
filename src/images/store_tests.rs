//! Tests of `store.rs` (and the CLI on top) against an ESP laid out in a
//! temporary directory.

use super::*;
use crate::images::cli::{run, ImageCommand};
use crate::images::grubenv::BLOCK_SIZE;

/// An ESP with `versions` installed and an empty grubenv.
fn esp(versions: &[&str]) -> (tempfile::TempDir, Esp) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("esp");
    std::fs::create_dir_all(root.join("grub")).unwrap();
    std::fs::write(
        root.join("grub/grubenv"),
        GrubEnv::new().to_block().unwrap(),
    )
    .unwrap();
    for v in versions {
        build(&root.join("images"), v);
    }
    let esp = Esp::new(&root);
    let mut cfg = GrubCfg::new(esp.versions());
    cfg.cmdline = "console=ttyS0 panic=10 extra=1".into();
    std::fs::write(esp.grubcfg_path(), cfg.render().unwrap()).unwrap();
    (tmp, esp)
}

/// A built version under `dir/<v>/` with a correct manifest.
fn build(dir: &Path, v: &str) -> PathBuf {
    let d = dir.join(v);
    std::fs::create_dir_all(&d).unwrap();
    let mut artifacts = String::new();
    for name in ARTIFACTS {
        std::fs::write(d.join(name), format!("{name} of {v}\n").repeat(100)).unwrap();
        let (sum, _) = hash_file(&d.join(name), None).unwrap();
        artifacts.push_str(&format!("\"{name}\" = \"{sum}\"\n"));
    }
    std::fs::write(
        d.join(MANIFEST),
        format!(
            "version = \"{v}\"\nkernel_version = \"6.1\"\nbuild_time = \"2026-01-01T00:00:00Z\"\n\n[artifacts]\n{artifacts}"
        ),
    )
    .unwrap();
    d
}

fn state(esp: &Esp) -> TrialState {
    esp.load().unwrap().1
}

#[test]
fn install_copies_verifies_and_arms_a_trial() {
    let (tmp, esp) = esp(&["0.1.0"]);
    let src = build(&tmp.path().join("build"), "0.2.0");
    let done = esp.install(&src.join(MANIFEST), "0.1.0", 3).unwrap();
    assert_eq!(done.version, "0.2.0");
    assert_eq!(done.previous, "0.1.0");
    assert!(done.removed.is_empty());
    for name in ARTIFACTS.iter().chain([&MANIFEST]) {
        assert_eq!(
            std::fs::read(esp.images().join("0.2.0").join(name)).unwrap(),
            std::fs::read(src.join(name)).unwrap()
        );
    }
    let st = state(&esp);
    assert_eq!(st.active.as_deref(), Some("0.2.0"));
    assert_eq!(st.previous.as_deref(), Some("0.1.0"));
    assert_eq!((st.tries, st.pending), (3, true));
    // grubenv stays a 1024-byte block; grub.cfg lists both, newest first,
    // with the command line of the old one.
    assert_eq!(
        std::fs::metadata(esp.grubenv_path()).unwrap().len(),
        BLOCK_SIZE as u64
    );
    let cfg = std::fs::read_to_string(esp.grubcfg_path()).unwrap();
    let first = cfg.find("menuentry \"walden 0.2.0\"").unwrap();
    assert!(first < cfg.find("menuentry \"walden 0.1.0\"").unwrap());
    assert!(cfg.contains("console=ttyS0 panic=10 extra=1 walden.version=0.2.0"));
    let list = esp.list(Some("0.1.0")).unwrap();
    assert_eq!(list[0].markers(), "active, trial");
    assert_eq!(list[1].markers(), "running, previous");
    // Installing it again is refused.
    assert!(matches!(
        esp.install(&src, "0.1.0", 3),
        Err(ImageError::AlreadyInstalled(_))
    ));
}

#[test]
fn a_damaged_copy_is_refused_and_leaves_nothing_behind() {
    let (tmp, esp) = esp(&["0.1.0"]);
    let src = build(&tmp.path().join("build"), "0.2.0");
    std::fs::write(src.join("root.squashfs"), "tampered").unwrap();
    let err = esp.install(&src, "0.1.0", 3).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(esp.versions(), ["0.1.0"]);
    assert!(std::fs::read_dir(esp.images()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("partial")));
    assert_eq!(state(&esp), TrialState::default());
    // Not a version directory at all.
    let err = esp.install(tmp.path(), "0.1.0", 3).unwrap_err();
    assert!(err.to_string().contains("manifest.toml"), "{err}");
}

#[test]
fn install_refuses_when_the_media_is_too_small() {
    let (tmp, esp) = esp(&["0.1.0"]);
    let src = build(&tmp.path().join("build"), "0.2.0");
    // A sparse squashfs bigger than the free space of the temp file system.
    let free = free_bytes(tmp.path()).unwrap();
    let f = File::options()
        .write(true)
        .open(src.join("root.squashfs"))
        .unwrap();
    f.set_len(free + (1 << 30)).unwrap();
    let err = esp.install(&src, "0.1.0", 3).unwrap_err();
    assert!(matches!(err, ImageError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("walden image remove"), "{err}");
    assert_eq!(esp.versions(), ["0.1.0"]);
}

#[test]
fn retention_keeps_the_newest_and_never_running_or_previous() {
    let (tmp, esp) = esp(&["0.1.0", "0.2.0", "0.3.0"]);
    // 0.1.0 runs (an old version chosen in the menu) and is the fallback.
    let src = build(&tmp.path().join("build"), "0.4.0");
    let done = esp.install(&src, "0.1.0", 2).unwrap();
    assert_eq!(done.removed, ["0.2.0"]);
    assert_eq!(esp.versions(), ["0.4.0", "0.3.0", "0.1.0"]);
    let cfg = std::fs::read_to_string(esp.grubcfg_path()).unwrap();
    assert!(!cfg.contains("0.2.0"));
}

#[test]
fn rollback_and_remove() {
    let (tmp, esp) = esp(&["0.1.0"]);
    let src = build(&tmp.path().join("build"), "0.2.0");
    esp.install(&src, "0.1.0", 3).unwrap();
    // Neither the active one nor the fallback can go.
    for v in ["0.2.0", "0.1.0"] {
        let err = esp.remove(v, None).unwrap_err();
        assert!(matches!(err, ImageError::Protected { .. }), "{v}: {err}");
    }
    assert!(matches!(
        esp.remove("9.9", None),
        Err(ImageError::NotInstalled { .. })
    ));
    assert_eq!(esp.rollback().unwrap(), "0.1.0");
    let st = state(&esp);
    assert_eq!(st.active.as_deref(), Some("0.1.0"));
    assert_eq!(st.previous.as_deref(), Some("0.2.0"));
    assert!(!st.pending);
    // A trial that failed: the bad version may be removed.
    let (env, mut st) = esp.load().unwrap();
    st.previous = None;
    st.failed = Some("0.2.0".into());
    esp.save(env, &st).unwrap();
    esp.remove("0.2.0", Some("0.1.0")).unwrap();
    assert_eq!(esp.versions(), ["0.1.0"]);
    assert_eq!(state(&esp).failed, None);
    assert!(!std::fs::read_to_string(esp.grubcfg_path())
        .unwrap()
        .contains("0.2.0"));
}

#[test]
fn reasons_are_kept_short_and_on_one_line() {
    let (_tmp, esp) = esp(&["0.1.0"]);
    esp.record_reason(&format!("line one\nline two {}", "é".repeat(400)))
        .unwrap();
    let (env, _) = esp.load().unwrap();
    let r = env.get(VAR_REASON).unwrap();
    assert!(r.starts_with("line one line two"));
    assert!(r.len() <= REASON_MAX);
}

#[test]
fn settings_come_from_the_existing_grub_cfg() {
    let cfg = GrubCfg {
        versions: vec!["1".into()],
        cmdline: "console=ttyS0 quiet foo=bar".into(),
        timeout: 7,
    };
    assert_eq!(
        settings_of(&cfg.render().unwrap()),
        ("console=ttyS0 quiet foo=bar".to_string(), 7)
    );
    assert_eq!(
        settings_of(""),
        (DEFAULT_CMDLINE.to_string(), DEFAULT_TIMEOUT)
    );
}

#[test]
fn cli_lists_installs_and_refuses_on_an_iso() {
    let (tmp, esp) = esp(&["0.1.0"]);
    let paths = crate::context::Paths::under(&tmp.path().join("root"));
    let media = Some(esp.images().parent().unwrap().to_path_buf());
    let src = build(&tmp.path().join("build"), "0.2.0");
    let out = run(
        ImageCommand::Install {
            source: src,
            keep: 3,
            media: media.clone(),
        },
        &paths,
    )
    .unwrap();
    assert!(out.contains("installed 0.2.0"), "{out}");
    let out = run(ImageCommand::List { media }, &paths).unwrap();
    assert!(
        out.contains("0.2.0            active, trial (3 tries left)"),
        "{out}"
    );
    assert!(out.contains("0.1.0            previous"), "{out}");

    // Booted from an ISO: list says so, install is refused.
    let rec = crate::boot::record::BootRecord {
        version: "0.1.0".into(),
        kernel_version: "6.1".into(),
        media_device: "/dev/sr0".into(),
        media_fstype: "iso9660".into(),
        media_label: Some("WALDEN-BOOT".into()),
        media_mount: "/run/walden/media".into(),
        boot_kind: "iso".into(),
        toram: false,
        squashfs_sha256: "ab".repeat(32),
        stage1_start_s: 1.0,
        stage1_end_s: 2.0,
    };
    rec.write(&paths.run.join("boot.toml")).unwrap();
    let out = run(ImageCommand::List { media: None }, &paths).unwrap();
    assert!(out.contains("single version"), "{out}");
    let err = run(
        ImageCommand::Install {
            source: tmp.path().into(),
            keep: 3,
            media: None,
        },
        &paths,
    )
    .unwrap_err();
    assert!(err.to_string().contains("booted from an ISO"), "{err}");
    // The hidden generator mkusb.sh uses.
    let cfg = run(
        ImageCommand::GrubCfg {
            cmdline: "quiet".into(),
            timeout: 1,
            versions: vec!["1.0".into(), "1.1".into()],
        },
        &paths,
    )
    .unwrap();
    assert!(cfg.contains("linux /images/1.1/vmlinuz quiet walden.version=1.1"));
}
