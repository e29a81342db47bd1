//! Disk helpers against real tools on small images built here.

use super::*;

/// A 64 MiB GPT image with a FAT32 ESP at 1 MiB holding `files`.
fn gpt_with_esp(dir: &Path, files: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    let img = dir.join("disk.img");
    File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let script = dir.join("layout");
    std::fs::write(
        &script,
        format!("label: gpt\nstart=2048, size=100000, type={ESP_GUID}\n"),
    )
    .unwrap();
    let out = std::process::Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(File::open(&script).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = format!("{}@@{}", img.display(), 2048 * 512);
    run(
        "mformat",
        ["-i", &spec, "-F", "-T", "100000", "-v", "WALDEN-BOOT", "::"],
    )
    .unwrap();
    run("mmd", ["-i", &spec, "::/images", "::/images/9.9.9"]).unwrap();
    for (name, content) in files {
        let src = dir.join(name.replace('/', "_"));
        std::fs::write(&src, content).unwrap();
        run(
            "mcopy",
            ["-i", &spec, src.to_str().unwrap(), &format!("::/{name}")],
        )
        .unwrap();
    }
    img
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn finds_every_byte_of_a_file_in_the_esp() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(300_000, 7);
    let img = gpt_with_esp(
        dir.path(),
        &[
            ("images/9.9.9/filler", pattern(5000, 1)),
            ("images/9.9.9/root.squashfs", data.clone()),
        ],
    );
    assert_eq!(esp_offset(&img).unwrap(), 2048 * 512);
    for off in [0u64, 1, 1000, 4095, 4096, 123_457, 299_999] {
        let at = esp_file_offset(&img, "images/9.9.9/root.squashfs", off).unwrap();
        let mut b = [0u8; 1];
        read_exact_at(&img, at, &mut b).unwrap();
        assert_eq!(b[0], data[off as usize], "file offset {off}");
    }
    let err = esp_file_offset(&img, "images/9.9.9/root.squashfs", 10_000_000).unwrap_err();
    assert!(err.to_string().contains("beyond the end"), "{err}");
}

#[test]
fn lists_esp_directories_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let img = gpt_with_esp(
        dir.path(),
        &[
            ("images/9.9.9/vmlinuz", pattern(10, 1)),
            ("images/9.9.9/manifest.toml", pattern(10, 2)),
        ],
    );
    assert_eq!(esp_list_dir(&img, "images").unwrap(), ["9.9.9"]);
    let mut files = esp_list_dir(&img, "images/9.9.9").unwrap();
    files.sort();
    assert_eq!(files, ["manifest.toml", "vmlinuz"]);
    assert_eq!(esp_list_dir(&img, "").unwrap(), ["images"]);
    assert!(esp_list_dir(&img, "images/1.0.0").is_err());
}

#[test]
fn flipping_a_byte_changes_the_overlay_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(10_000, 3);
    let img = gpt_with_esp(dir.path(), &[("images/9.9.9/root.squashfs", data.clone())]);
    let before = std::fs::read(&img).unwrap();
    let ov = dir.path().join("ov.qcow2");
    overlay(&img, &ov).unwrap();
    let at = esp_file_offset(&img, "images/9.9.9/root.squashfs", 1000).unwrap();
    flip_byte_in_overlay(&img, &ov, at).unwrap();
    assert_eq!(std::fs::read(&img).unwrap(), before, "base image untouched");
    // Read the file back through the overlay, as the guest would.
    let raw = dir.path().join("flat.img");
    raw_copy(&ov, &raw).unwrap();
    let spec = format!("{}@@{}", raw.display(), 2048 * 512);
    let out = dir.path().join("out");
    run(
        "mcopy",
        [
            "-i",
            &spec,
            "::/images/9.9.9/root.squashfs",
            out.to_str().unwrap(),
        ],
    )
    .unwrap();
    let got = std::fs::read(&out).unwrap();
    let diff: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(diff, [1000]);
    assert_eq!(got[1000], !data[1000]);
}

#[test]
fn ext4_config_disk_has_label_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("cfg");
    std::fs::create_dir_all(src.join("guests")).unwrap();
    std::fs::write(src.join("host.toml"), "schema = 1\n").unwrap();
    let img = dir.path().join("config.img");
    ext4_from_dir(&src, &img, "WALDEN-CONFIG", 64).unwrap();
    let label = run("e2label", [img.to_str().unwrap()]).unwrap();
    assert_eq!(label.trim(), "WALDEN-CONFIG");
    let cat = ext4_read_file(&img, "/host.toml").unwrap();
    assert_eq!(cat.as_deref(), Some(&b"schema = 1\n"[..]));
    assert_eq!(ext4_read_file(&img, "/guests/none.toml").unwrap(), None);
    let not_ext4 = dir.path().join("zero.img");
    File::create(&not_ext4).unwrap().set_len(1 << 20).unwrap();
    assert!(ext4_read_file(&not_ext4, "/host.toml").is_err());
    let err = ext4_from_dir(&dir.path().join("nope"), &img, "X", 64).unwrap_err();
    assert!(err.to_string().contains("config directory"), "{err}");
}

#[test]
fn sfdisk_json_and_mshowfat_parsing() {
    let json = r#"{"partitiontable":{"label":"gpt","sectorsize":512,"partitions":[
        {"node":"x1","start":34,"size":2014,"type":"21686148-6449-6E6F-744E-656564454649"},
        {"node":"x2","start":4096,"size":9000,"type":"c12a7328-f81f-11d2-ba4b-00a0c93ec93b"}]}}"#;
    assert_eq!(esp_offset_from_sfdisk(json).unwrap(), 4096 * 512);
    let no_esp = r#"{"partitiontable":{"partitions":[{"start":1,"type":"83"}]}}"#;
    assert!(esp_offset_from_sfdisk(no_esp).is_err());
    assert_eq!(
        cluster_runs("::/a <3-10> <20-20>\n").unwrap(),
        [(3, 10), (20, 20)]
    );
    assert_eq!(cluster_runs("::/a <7>").unwrap(), [(7, 7)]);
    assert!(cluster_runs("::/a").is_err());
}

#[test]
fn copy_dir_copies_files_subdirectories_and_links_into_an_emptied_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("images/tiny")).unwrap();
    std::fs::write(src.join("host.toml"), "schema = 1\n").unwrap();
    std::fs::write(src.join("images/tiny/vmlinuz"), [1u8, 2, 3]).unwrap();
    std::os::unix::fs::symlink("host.toml", src.join("link.toml")).unwrap();
    let dest = tmp.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("stale"), "x").unwrap();
    copy_dir(&src, &dest).unwrap();
    assert_eq!(
        std::fs::read(dest.join("images/tiny/vmlinuz")).unwrap(),
        [1, 2, 3]
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("link.toml")).unwrap(),
        "schema = 1\n"
    );
    assert!(std::fs::symlink_metadata(dest.join("link.toml"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!dest.join("stale").exists());
    // The source stays as it was.
    assert!(src.join("host.toml").is_file());
}

#[test]
fn an_xfs_data_disk_is_seeded_from_a_directory_without_mounting() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed");
    std::fs::create_dir_all(seed.join("images")).unwrap();
    std::fs::write(seed.join("images/base.qcow2"), b"QFI\xfbplaceholder").unwrap();
    std::fs::write(seed.join("top"), b"x").unwrap();
    let proto = xfs_proto(&seed).unwrap();
    assert!(proto.starts_with("/dev/null\n0 0\nd--755 0 0\n"), "{proto}");
    assert!(proto.contains(" images d--"), "{proto}");
    assert!(proto.contains("  base.qcow2 ---"), "{proto}");
    let img = tmp.path().join("data.img");
    data_fs(&img, DataFs::Xfs, "vmstore", 320, Some(&seed)).unwrap();
    // xfs_db reads the new file system offline: label and the seeded file.
    let out = std::process::Command::new("xfs_db")
        .args(["-r", "-c", "label", "-c", "ls /images"])
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("label = \"vmstore\""), "{text}");
    assert!(text.contains("base.qcow2"), "{text}");
}
