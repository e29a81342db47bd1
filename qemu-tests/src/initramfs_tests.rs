use super::*;

/// (name, mode, rdev major, data) of every member, read back from a newc archive.
fn read_newc(bytes: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
    let field = |at: usize, i: usize| {
        let s = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
        u32::from_str_radix(s, 16).unwrap() as usize
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
        let (mode, size, major, namesize) =
            (field(at, 1), field(at, 6), field(at, 9), field(at, 11));
        let name = std::str::from_utf8(&bytes[at + 110..at + 110 + namesize - 1]).unwrap();
        let data_at = align(at + 110 + namesize);
        if name == "TRAILER!!!" {
            assert_eq!(data_at, bytes.len());
            return out;
        }
        let data = bytes[data_at..data_at + size].to_vec();
        out.push((name.to_string(), mode as u32, major as u32, data));
        at = align(data_at + size);
    }
}

#[test]
fn archive_lists_parents_first_with_modes_links_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tool");
    std::fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();

    let mut ar = Initramfs::new();
    ar.file("/usr/sbin/tool", &src).unwrap();
    ar.data("/init", "#!/bin/sh\n", 0o755);
    ar.symlink("/bin/sh", "busybox");
    assert!(ar.contains("/usr/sbin/tool") && ar.contains("usr"));
    let out = dir.path().join("a.cpio");
    ar.write(&out).unwrap();
    let members = read_newc(&std::fs::read(&out).unwrap());
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/sh",
            "dev",
            "dev/console",
            "init",
            "proc",
            "run",
            "sys",
            "tmp",
            "usr",
            "usr/sbin",
            "usr/sbin/tool"
        ]
    );
    let get = |n: &str| members.iter().find(|m| m.0 == n).unwrap();
    assert_eq!(get("usr/sbin/tool").1, 0o100_750);
    assert_eq!(get("usr/sbin/tool").3, b"#!/bin/sh\necho hi\n");
    assert_eq!(get("init").1, 0o100_755);
    assert_eq!(get("bin/sh").1, 0o120_777);
    assert_eq!(get("bin/sh").3, b"busybox");
    assert_eq!(get("dev/console").1, 0o020_600);
    assert_eq!(get("dev/console").2, 5);
    assert_eq!(get("usr").1, 0o040_755);
}

#[test]
fn a_directory_is_not_a_file_member() {
    let dir = tempfile::tempdir().unwrap();
    let err = Initramfs::new().file("/x", dir.path()).unwrap_err();
    assert!(err.to_string().contains("is not a regular file"), "{err}");
}

#[test]
fn ldd_output_gives_library_and_loader_paths() {
    let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                \tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f)\n\
                \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
    assert_eq!(
        parse_ldd(text),
        [
            PathBuf::from("/lib/x86_64-linux-gnu/libmnl.so.0"),
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
        ]
    );
    assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
}
