//! Disk files for the machines: copy-on-write overlays of the built media,
//! ext4 config disks made from a directory, and byte-level tampering with a
//! file inside the media's FAT ESP (for the "refuses a bad squashfs" scenario).
//!
//! Build artifacts are never written: every machine boots from a qcow2
//! overlay whose backing file is the raw image, and tampering writes into
//! the overlay with `qemu-io`.

use crate::error::{Error, Result};
use crate::tools::run;
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// GPT type GUID of an EFI system partition.
const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Create `dest` as a qcow2 overlay backed by the raw image `base`.
pub fn overlay(base: &Path, dest: &Path) -> Result<()> {
    let base = base
        .canonicalize()
        .map_err(|e| Error::io("resolve", base, e))?;
    let _ = std::fs::remove_file(dest);
    run(
        "qemu-img",
        [
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "raw".as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            dest.as_os_str(),
        ],
    )?;
    Ok(())
}

/// Create an ext4 file system image `dest` of `size_mib` labelled `label`,
/// holding a copy of `src` (mkfs.ext4 -d).
pub fn ext4_from_dir(src: &Path, dest: &Path, label: &str, size_mib: u64) -> Result<()> {
    if !src.is_dir() {
        return Err(Error::ArtifactMissing {
            what: "config directory".into(),
            path: src.to_path_buf(),
        });
    }
    let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
    file.set_len(size_mib * 1024 * 1024)
        .map_err(|e| Error::io("size", dest, e))?;
    drop(file);
    run(
        "mkfs.ext4",
        [
            "-q".as_ref(),
            "-F".as_ref(),
            "-L".as_ref(),
            label.as_ref(),
            "-d".as_ref(),
            src.as_os_str(),
            dest.as_os_str(),
        ],
    )?;
    Ok(())
}

/// Create an empty ext4 file system image `dest` of `size_mib` labelled `label`.
pub fn ext4_empty(dest: &Path, label: &str, size_mib: u64) -> Result<()> {
    let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
    file.set_len(size_mib * 1024 * 1024)
        .map_err(|e| Error::io("size", dest, e))?;
    drop(file);
    run(
        "mkfs.ext4",
        [
            "-q".as_ref(),
            "-F".as_ref(),
            "-L".as_ref(),
            label.as_ref(),
            dest.as_os_str(),
        ],
    )?;
    Ok(())
}

/// File systems of [`data_fs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFs {
    /// ext4 (mkfs.ext4; seeded with `-d DIR`).
    Ext4,
    /// XFS (mkfs.xfs; seeded through a prototype file, `-p`).
    Xfs,
}

/// A raw image `dest` of `size_mib` with file system `fs` labelled
/// `label`, empty or with the files of `seed` (no mount needed).
pub fn data_fs(
    dest: &Path,
    fs: DataFs,
    label: &str,
    size_mib: u64,
    seed: Option<&Path>,
) -> Result<()> {
    match (fs, seed) {
        (DataFs::Ext4, None) => ext4_empty(dest, label, size_mib),
        (DataFs::Ext4, Some(dir)) => ext4_from_dir(dir, dest, label, size_mib),
        (DataFs::Xfs, seed) => {
            let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
            file.set_len(size_mib * 1024 * 1024)
                .map_err(|e| Error::io("size", dest, e))?;
            drop(file);
            let mut args: Vec<std::ffi::OsString> =
                vec!["-q".into(), "-f".into(), "-L".into(), label.into()];
            let proto = dest.with_extension("proto");
            if let Some(dir) = seed {
                std::fs::write(&proto, xfs_proto(dir)?)
                    .map_err(|e| Error::io("write", &proto, e))?;
                args.extend(["-p".into(), proto.clone().into_os_string()]);
            }
            args.push(dest.as_os_str().to_owned());
            run("mkfs.xfs", &args)?;
            let _ = std::fs::remove_file(&proto);
            Ok(())
        }
    }
}

/// mkfs.xfs's prototype file for the tree `dir`: regular files and
/// directories, root-owned, modes as on disk (see mkfs.xfs(8), -p).
pub fn xfs_proto(dir: &Path) -> Result<String> {
    use std::fmt::Write as _;
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, depth: usize, out: &mut String) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("read", dir, e))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let meta = std::fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
            let mode = meta.permissions().mode() & 0o777;
            let name = e.file_name().to_string_lossy().into_owned();
            let pad = " ".repeat(depth);
            if meta.is_dir() {
                let _ = writeln!(out, "{pad}{name} d--{mode:03o} 0 0");
                walk(&path, depth + 1, out)?;
                let _ = writeln!(out, "{pad}$");
            } else {
                let _ = writeln!(out, "{pad}{name} ---{mode:03o} 0 0 {}", path.display());
            }
        }
        Ok(())
    }
    let mut out = String::from("/dev/null\n0 0\nd--755 0 0\n");
    walk(dir, 1, &mut out)?;
    out.push_str("$\n");
    Ok(out)
}

/// Copy the directory tree `src` to `dest` (emptied first): files,
/// directories and symbolic links, as `mkfs.ext4 -d` will read them.
pub fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| Error::io("clear", dest, e))?;
    }
    copy_tree(src, dest)
}

fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| Error::io("create", dest, e))?;
    let entries = std::fs::read_dir(src).map_err(|e| Error::io("read directory", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", src, e))?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let kind = entry.file_type().map_err(|e| Error::io("stat", &from, e))?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(|e| Error::io("read link", &from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| Error::io("link", &to, e))?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| Error::io("copy to", &to, e))?;
        }
    }
    Ok(())
}

/// Byte offset of the EFI system partition in a GPT disk image.
pub fn esp_offset(image: &Path) -> Result<u64> {
    let json = run("sfdisk", ["-J".as_ref(), image.as_os_str()])?;
    esp_offset_from_sfdisk(&json)
}

fn esp_offset_from_sfdisk(json: &str) -> Result<u64> {
    let bad = |d: &str| Error::unexpected("sfdisk -J output", d.to_string());
    let v: Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = table["partitions"]
        .as_array()
        .ok_or_else(|| bad("no partitions"))?;
    let esp = parts
        .iter()
        .find(|p| {
            let t = p["type"].as_str().unwrap_or("");
            t.eq_ignore_ascii_case(ESP_GUID) || t.eq_ignore_ascii_case("ef")
        })
        .ok_or_else(|| bad("no EFI system partition"))?;
    let start = esp["start"]
        .as_u64()
        .ok_or_else(|| bad("ESP without start"))?;
    Ok(start * sector)
}

/// The FAT geometry needed to turn cluster numbers into byte offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FatGeometry {
    cluster_bytes: u64,
    /// Offset of cluster 2 from the start of the partition.
    data_start: u64,
}

fn fat_geometry(boot_sector: &[u8; 64]) -> Result<FatGeometry> {
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([boot_sector[o], boot_sector[o + 1]]));
    let bps = u16_at(11);
    let spc = u64::from(boot_sector[13]);
    let reserved = u16_at(14);
    let fats = u64::from(boot_sector[16]);
    let root_entries = u16_at(17);
    let fat16 = u16_at(22);
    let fat32 = u64::from(u32::from_le_bytes([
        boot_sector[36],
        boot_sector[37],
        boot_sector[38],
        boot_sector[39],
    ]));
    if bps == 0 || spc == 0 || fats == 0 {
        return Err(Error::unexpected(
            "FAT boot sector",
            format!("bytes/sector {bps}, sectors/cluster {spc}, FATs {fats}"),
        ));
    }
    let fat_sectors = if fat16 != 0 { fat16 } else { fat32 };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    Ok(FatGeometry {
        cluster_bytes: bps * spc,
        data_start: (reserved + fats * fat_sectors + root_sectors) * bps,
    })
}

/// Cluster runs from `mshowfat` output such as `::/a/b <3-10> <20-25>`.
fn cluster_runs(mshowfat: &str) -> Result<Vec<(u64, u64)>> {
    let bad = || Error::unexpected("mshowfat output", mshowfat.trim().to_string());
    let mut runs = Vec::new();
    for chunk in mshowfat.split('<').skip(1) {
        let inner = chunk.split('>').next().ok_or_else(bad)?;
        let (a, b) = inner.split_once('-').unwrap_or((inner, inner));
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        runs.push((a, b));
    }
    if runs.is_empty() {
        return Err(bad());
    }
    Ok(runs)
}

/// Byte offset in the disk image of byte `offset` of file `path` (e.g.
/// "images/0.1.0/root.squashfs") inside the image's FAT ESP.
pub fn esp_file_offset(image: &Path, path: &str, offset: u64) -> Result<u64> {
    let part = esp_offset(image)?;
    let mut boot = [0u8; 64];
    read_exact_at(image, part, &mut boot)?;
    let geo = fat_geometry(&boot)?;
    let spec = format!("{}@@{part}", image.display());
    let shown = run("mshowfat", ["-i", spec.as_str(), &format!("::/{path}")])?;
    let mut index = offset / geo.cluster_bytes;
    for (first, last) in cluster_runs(&shown)? {
        let len = last - first + 1;
        if index < len {
            let cluster = first + index;
            return Ok(part
                + geo.data_start
                + (cluster - 2) * geo.cluster_bytes
                + offset % geo.cluster_bytes);
        }
        index -= len;
    }
    Err(Error::unexpected(
        format!("offset {offset} in {path}"),
        "beyond the end of the file".to_string(),
    ))
}

/// The text of file `path` (relative to the ESP root) in a disk image.
pub fn esp_read_file(image: &Path, path: &str) -> Result<String> {
    let spec = format!("{}@@{}", image.display(), esp_offset(image)?);
    run("mtype", ["-i", spec.as_str(), &format!("::/{path}")])
}

/// The names in directory `dir` (relative to the ESP root, "" for the
/// root) of a disk image's FAT ESP, without "." and "..".
pub fn esp_list_dir(image: &Path, dir: &str) -> Result<Vec<String>> {
    let spec = format!("{}@@{}", image.display(), esp_offset(image)?);
    let out = run("mdir", ["-b", "-i", spec.as_str(), &format!("::/{dir}")])?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim_end_matches('/').rsplit('/').next())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .collect())
}

/// Write the guest-visible contents of the qcow2 `overlay` (with its
/// backing file) to `dest` as a raw image, for the ESP readers above.
pub fn raw_copy(overlay: &Path, dest: &Path) -> Result<()> {
    run(
        "qemu-img",
        [
            "convert".as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            overlay.as_os_str(),
            dest.as_os_str(),
        ],
    )?;
    Ok(())
}

/// The contents of `path` (absolute inside the file system) on an ext4
/// image, or None when there is no such file. Read with debugfs, so the
/// image is never mounted; read it after QEMU stopped for a consistent view.
pub fn ext4_read_file(image: &Path, path: &str) -> Result<Option<Vec<u8>>> {
    let request = format!("cat {path}");
    let out = std::process::Command::new("debugfs")
        .args(["-R", request.as_str()])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::ToolMissing {
            tool: "debugfs".into(),
            package: "e2fsprogs",
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("not found by ext2_lookup") {
        return Ok(None);
    }
    if !out.status.success()
        || stderr.contains("Bad magic")
        || stderr.contains("while trying to open")
    {
        return Err(Error::ToolFailed {
            command: format!("debugfs -R '{request}' {}", image.display()),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(Some(out.stdout))
}

/// Read `buf.len()` bytes at `offset` of `path`.
pub fn read_exact_at(path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(buf))
        .map_err(|e| Error::io("read", path, e))
}

/// Invert the byte at `offset` of the raw `base` in its qcow2 `overlay`
/// (the base stays untouched).
pub fn flip_byte_in_overlay(base: &Path, overlay: &Path, offset: u64) -> Result<()> {
    let mut byte = [0u8; 1];
    read_exact_at(base, offset, &mut byte)?;
    let command = format!("write -P {} {offset} 1", byte[0] ^ 0xff);
    run(
        "qemu-io",
        [
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-c".as_ref(),
            command.as_ref(),
            overlay.as_os_str(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
