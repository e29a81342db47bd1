//! Finding the boot media: list block devices from sysfs, read their
//! superblocks and match the file-system label or UUID.
//!
//! The probes are small, pure functions on bytes (FAT12/16/32, ISO 9660,
//! ext2/3/4), so stage 1 needs neither blkid nor udev, and the tests run on
//! byte fixtures.

use super::cmdline::DeviceSpec;
use super::BootError;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File-system types stage 1 can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// FAT12/16/32 (the ESP of the USB image).
    Vfat,
    /// ISO 9660 (the ISO, on CD or written to a stick with dd).
    Iso9660,
    /// ext2/3/4 (the config disk).
    Ext4,
    /// XFS (a `[[mount]]`; probed by [`super::fsprobe`]).
    Xfs,
    /// btrfs (a `[[mount]]`).
    Btrfs,
    /// A Linux swap area (`[swap] device`); not mountable.
    Swap,
}

impl FsType {
    /// The name mount(2) wants.
    pub fn mount_name(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Iso9660 => "iso9660",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
            FsType::Swap => "swap",
        }
    }
}

/// What a superblock says about a file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The type.
    pub fstype: FsType,
    /// The label, trimmed, if any.
    pub label: Option<String>,
    /// The UUID as blkid formats it (lower case), if any.
    pub uuid: Option<String>,
}

impl Probe {
    /// Whether this file system is the one `spec` names.
    pub fn matches(&self, spec: &DeviceSpec) -> bool {
        match spec {
            DeviceSpec::Label(l) => self.label.as_deref() == Some(l.as_str()),
            DeviceSpec::Uuid(u) => self
                .uuid
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(u)),
            // Matched on the partition table before probing (see `scan`).
            DeviceSpec::Path(_) | DeviceSpec::PartUuid(_) => true,
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fstype.mount_name())?;
        if let Some(l) = &self.label {
            write!(f, " label {l}")?;
        }
        Ok(())
    }
}

/// Bytes read from the start of a device: enough for the ISO 9660 primary
/// volume descriptor at 0x8000, the ext superblock at 0x400 and the btrfs
/// superblock at 0x10000 ([`super::fsprobe::NEEDED`]).
pub const HEAD_LEN: usize = super::fsprobe::NEEDED;

fn trim_label(raw: &[u8]) -> Option<String> {
    let s: String = raw
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim_end_matches(' ').to_string();
    (!s.is_empty()).then_some(s)
}

fn le16(b: &[u8], off: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[off], b[off + 1]]))
}

fn le32(b: &[u8], off: usize) -> u64 {
    u64::from(u32::from_le_bytes([
        b[off],
        b[off + 1],
        b[off + 2],
        b[off + 3],
    ]))
}

/// ISO 9660: primary volume descriptor at 0x8000, volume id at 0x8028, and
/// blkid's UUID made of the creation time at 0x832d.
pub fn probe_iso9660(head: &[u8]) -> Option<Probe> {
    let pvd = head.get(0x8000..0x8000 + 0x372)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    let t = &pvd[0x32d..0x32d + 16];
    let uuid = t.iter().all(u8::is_ascii_digit).then(|| {
        let s = std::str::from_utf8(t).unwrap_or_default();
        format!(
            "{}-{}-{}-{}-{}-{}-{}",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[8..10],
            &s[10..12],
            &s[12..14],
            &s[14..16]
        )
    });
    Some(Probe {
        fstype: FsType::Iso9660,
        label: trim_label(&pvd[0x28..0x48]),
        uuid,
    })
}

/// ext2/3/4: superblock at 0x400, magic 0xEF53 at +0x38, UUID at +0x68,
/// label at +0x78.
pub fn probe_ext(head: &[u8]) -> Option<Probe> {
    let sb = head.get(0x400..0x400 + 0x88)?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return None;
    }
    let u = &sb[0x68..0x78];
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    Some(Probe {
        fstype: FsType::Ext4,
        label: trim_label(&sb[0x78..0x88]),
        uuid: Some(uuid),
    })
}

/// Where a FAT boot sector says its volume is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatBoot {
    /// Label from the boot sector (0x2b for FAT12/16, 0x47 for FAT32).
    pub label: Option<String>,
    /// Serial number formatted as blkid does (`ABCD-1234`), lower case.
    pub uuid: String,
    /// Byte offset of (the first cluster of) the root directory.
    pub root_dir: u64,
    /// Bytes of root directory worth reading for the label entry.
    pub root_dir_len: u64,
}

/// Parse a FAT boot sector (the first 512 bytes).
pub fn probe_fat_boot(sector: &[u8]) -> Option<FatBoot> {
    let b = sector.get(0..512)?;
    if b[510..512] != [0x55, 0xaa] || !matches!(b[0], 0xeb | 0xe9) {
        return None;
    }
    let bps = le16(b, 0x0b);
    let spc = u64::from(b[0x0d]);
    let reserved = le16(b, 0x0e);
    let nfats = u64::from(b[0x10]);
    let root_entries = le16(b, 0x11);
    let fatsz16 = le16(b, 0x16);
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || !spc.is_power_of_two() || nfats == 0 {
        return None;
    }
    let fat32 = fatsz16 == 0 && &b[0x52..0x57] == b"FAT32";
    let (label_off, serial_off) = if fat32 { (0x47, 0x43) } else { (0x2b, 0x27) };
    if !fat32 && &b[0x36..0x39] != b"FAT" {
        return None;
    }
    let serial = le32(b, serial_off);
    let label = trim_label(&b[label_off..label_off + 11]).filter(|l| l != "NO NAME");
    let (root_dir, root_dir_len) = if fat32 {
        let fatsz = le32(b, 0x24);
        let root_cluster = le32(b, 0x2c).max(2);
        let data = (reserved + nfats * fatsz) * bps;
        (data + (root_cluster - 2) * spc * bps, spc * bps)
    } else {
        ((reserved + nfats * fatsz16) * bps, root_entries * 32)
    };
    Some(FatBoot {
        label,
        uuid: format!("{:04x}-{:04x}", serial >> 16, serial & 0xffff),
        root_dir,
        root_dir_len: root_dir_len.min(64 * 1024),
    })
}

/// The volume label entry of a FAT root directory, if present: the entry
/// with attribute 0x08 (and not the 0x0f of a long-name entry).
pub fn fat_dir_label(dir: &[u8]) -> Option<String> {
    for e in dir.chunks_exact(32) {
        match e[0] {
            0x00 => return None,
            0xe5 => continue,
            _ => {}
        }
        if e[11] & 0x08 != 0 && e[11] != 0x0f {
            return trim_label(&e[0..11]);
        }
    }
    None
}

/// Probe a device (or file) for one of the known file systems.
pub fn probe<R: Read + Seek>(dev: &mut R) -> std::io::Result<Option<Probe>> {
    let mut head = vec![0u8; HEAD_LEN];
    let n = read_full(dev, &mut head)?;
    head.truncate(n);
    let known = probe_iso9660(&head)
        .or_else(|| probe_ext(&head))
        .or_else(|| super::fsprobe::probe_more(&head));
    if let Some(p) = known {
        return Ok(Some(p));
    }
    let Some(boot) = probe_fat_boot(&head) else {
        return Ok(None);
    };
    // The root directory entry wins over the boot sector, as with blkid:
    // tools that relabel a volume may only update the entry.
    let mut dir = vec![0u8; usize::try_from(boot.root_dir_len).unwrap_or(4096)];
    dev.seek(SeekFrom::Start(boot.root_dir))?;
    let n = read_full(dev, &mut dir)?;
    let label = fat_dir_label(&dir[..n]).or(boot.label);
    Ok(Some(Probe {
        fstype: FsType::Vfat,
        label,
        uuid: Some(boot.uuid),
    }))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A block device that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its device node.
    pub device: PathBuf,
    /// What its superblock says.
    pub probe: Probe,
}

/// One pass over the block devices: the first match, plus a summary of
/// what was seen on each device for the error message.
pub fn scan(sys: &Path, dev: &Path, spec: &DeviceSpec) -> (Option<Found>, Vec<String>) {
    let mut seen = Vec::new();
    for name in block_names(sys) {
        let node = dev.join(&name);
        match spec {
            DeviceSpec::Path(p) if p.file_name() != node.file_name() => {
                seen.push(name);
                continue;
            }
            DeviceSpec::PartUuid(want) => {
                let have = super::partition::partuuid_of(sys, dev, &name);
                if have.as_deref() != Some(want.as_str()) {
                    seen.push(match have {
                        Some(u) => format!("{name} (PARTUUID={u})"),
                        None => format!("{name} (no PARTUUID)"),
                    });
                    continue;
                }
            }
            _ => {}
        }
        let result = File::open(&node).and_then(|mut f| probe(&mut f));
        match result {
            Ok(Some(p)) if p.matches(spec) => {
                return (
                    Some(Found {
                        device: node,
                        probe: p,
                    }),
                    seen,
                )
            }
            Ok(Some(p)) => seen.push(format!("{name} ({p})")),
            Ok(None) => seen.push(format!("{name} (no known file system)")),
            Err(e) if e.raw_os_error() == Some(libc::ENOMEDIUM) => {
                seen.push(format!("{name} (no medium)"))
            }
            Err(e) => seen.push(format!("{name} ({e})")),
        }
    }
    (None, seen)
}

/// The block devices sysfs lists, in name order, without loop and RAM disks.
fn block_names(sys: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys.join("class/block"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What one block device holds, as [`list`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its device node (`<dev>/NAME`).
    pub device: PathBuf,
    /// The file system on it, when one was recognised.
    pub probe: Option<Probe>,
    /// Why it could not be read, if so ("no medium").
    pub error: Option<String>,
}

/// Probe every block device once (the mounts of host.toml resolve their
/// `LABEL=` and `UUID=` against this list).
pub fn list(sys: &Path, dev: &Path) -> Vec<Seen> {
    block_names(sys)
        .into_iter()
        .map(|name| {
            let device = dev.join(&name);
            let (probe, error) = match File::open(&device).and_then(|mut f| probe(&mut f)) {
                Ok(p) => (p, None),
                Err(e) if e.raw_os_error() == Some(libc::ENOMEDIUM) => {
                    (None, Some("no medium".to_string()))
                }
                Err(e) => (None, Some(e.to_string())),
            };
            Seen {
                device,
                probe,
                error,
            }
        })
        .collect()
}

/// Scan every `interval` until `spec` shows up or `wait` has passed.
/// `waiting` is called once, after the first unsuccessful pass, with the
/// devices seen so far (stage 1 prints it).
pub fn find(
    sys: &Path,
    dev: &Path,
    spec: &DeviceSpec,
    wait: Duration,
    interval: Duration,
    mut waiting: impl FnMut(&[String]),
) -> Result<Found, BootError> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        let (found, seen) = scan(sys, dev, spec);
        if let Some(f) = found {
            return Ok(f);
        }
        if start.elapsed() >= wait {
            let seen = if seen.is_empty() {
                "no block devices at all (is the storage driver in the initramfs?)".to_string()
            } else {
                seen.join(", ")
            };
            return Err(BootError::MediaNotFound {
                spec: spec.to_string(),
                waited_s: wait.as_secs(),
                seen,
            });
        }
        if !announced {
            waiting(&seen);
            announced = true;
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A FAT32 boot sector as mkfs.fat/mformat write it, root dir in
    /// cluster 2 right after the FATs.
    fn fat32_image(boot_label: &[u8; 11], dir_label: Option<&[u8; 11]>) -> Vec<u8> {
        let mut img = vec![0u8; 64 * 1024];
        let b = &mut img[0..512];
        b[0] = 0xeb;
        b[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
        b[0x0d] = 1; // sectors per cluster
        b[0x0e..0x10].copy_from_slice(&32u16.to_le_bytes()); // reserved
        b[0x10] = 2; // FATs
        b[0x24..0x28].copy_from_slice(&8u32.to_le_bytes()); // sectors per FAT
        b[0x2c..0x30].copy_from_slice(&2u32.to_le_bytes()); // root cluster
        b[0x43..0x47].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        b[0x47..0x52].copy_from_slice(boot_label);
        b[0x52..0x5a].copy_from_slice(b"FAT32   ");
        b[510] = 0x55;
        b[511] = 0xaa;
        if let Some(l) = dir_label {
            let off = (32 + 2 * 8) * 512;
            // a deleted entry first, then the label
            img[off] = 0xe5;
            img[off + 32..off + 43].copy_from_slice(l);
            img[off + 32 + 11] = 0x08;
        }
        img
    }

    #[test]
    fn fat32_label_from_boot_sector() {
        let img = fat32_image(b"WALDEN-BOOT", None);
        let p = probe(&mut Cursor::new(img)).unwrap().unwrap();
        assert_eq!(p.fstype, FsType::Vfat);
        assert_eq!(p.label.as_deref(), Some("WALDEN-BOOT"));
        assert_eq!(p.uuid.as_deref(), Some("1234-abcd"));
    }

    #[test]
    fn fat32_root_dir_label_wins() {
        let img = fat32_image(b"NO NAME    ", Some(b"WALDEN-BOOT"));
        let p = probe(&mut Cursor::new(img)).unwrap().unwrap();
        assert_eq!(p.label.as_deref(), Some("WALDEN-BOOT"));
        let img = fat32_image(b"NO NAME    ", None);
        assert_eq!(probe(&mut Cursor::new(img)).unwrap().unwrap().label, None);
    }

    #[test]
    fn fat16_label_and_root_dir_offset() {
        let mut b = vec![0u8; 512];
        b[0] = 0xeb;
        b[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
        b[0x0d] = 4;
        b[0x0e..0x10].copy_from_slice(&4u16.to_le_bytes());
        b[0x10] = 2;
        b[0x11..0x13].copy_from_slice(&512u16.to_le_bytes());
        b[0x16..0x18].copy_from_slice(&20u16.to_le_bytes());
        b[0x27..0x2b].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        b[0x2b..0x36].copy_from_slice(b"SMALL      ");
        b[0x36..0x3e].copy_from_slice(b"FAT16   ");
        b[510] = 0x55;
        b[511] = 0xaa;
        let fb = probe_fat_boot(&b).unwrap();
        assert_eq!(fb.label.as_deref(), Some("SMALL"));
        assert_eq!(fb.uuid, "dead-beef");
        assert_eq!(fb.root_dir, (4 + 2 * 20) * 512);
        assert_eq!(fb.root_dir_len, 512 * 32);
    }

    #[test]
    fn mbr_without_fat_is_not_fat() {
        let mut b = vec![0u8; 512];
        b[0] = 0xfa;
        b[510] = 0x55;
        b[511] = 0xaa;
        assert_eq!(probe_fat_boot(&b), None);
    }

    #[test]
    fn iso9660_volume_id_and_uuid() {
        let mut img = vec![0u8; HEAD_LEN];
        // a hybrid ISO has an MBR too; the ISO must still be found
        img[510] = 0x55;
        img[511] = 0xaa;
        let pvd = &mut img[0x8000..];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[0x28..0x48].copy_from_slice(b"WALDEN-BOOT                     ");
        pvd[0x32d..0x33d].copy_from_slice(b"2024011512301500");
        let p = probe(&mut Cursor::new(img)).unwrap().unwrap();
        assert_eq!(p.fstype, FsType::Iso9660);
        assert_eq!(p.label.as_deref(), Some("WALDEN-BOOT"));
        assert_eq!(p.uuid.as_deref(), Some("2024-01-15-12-30-15-00"));
    }

    #[test]
    fn ext4_label_and_uuid() {
        let mut img = vec![0u8; 4096];
        let sb = &mut img[0x400..];
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        for (i, b) in sb[0x68..0x78].iter_mut().enumerate() {
            *b = i as u8 * 0x11;
        }
        sb[0x78..0x85].copy_from_slice(b"WALDEN-CONFIG");
        let p = probe(&mut Cursor::new(img)).unwrap().unwrap();
        assert_eq!(p.fstype, FsType::Ext4);
        assert_eq!(p.label.as_deref(), Some("WALDEN-CONFIG"));
        assert_eq!(
            p.uuid.as_deref(),
            Some("00112233-4455-6677-8899-aabbccddeeff")
        );
        assert!(p.matches(&DeviceSpec::Uuid(
            "00112233-4455-6677-8899-AABBCCDDEEFF".into()
        )));
    }

    #[test]
    fn zeroes_are_nothing() {
        assert_eq!(probe(&mut Cursor::new(vec![0u8; 100])).unwrap(), None);
    }

    #[test]
    fn scan_finds_by_label_and_reports_what_it_saw() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        let dev = tmp.path().join("dev");
        for name in ["vda", "vda1", "vdb", "loop0"] {
            std::fs::create_dir_all(sys.join("class/block").join(name)).unwrap();
        }
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("vda"), vec![0u8; 1024]).unwrap();
        std::fs::write(dev.join("vda1"), fat32_image(b"WALDEN-BOOT", None)).unwrap();
        std::fs::write(dev.join("vdb"), fat32_image(b"OTHER      ", None)).unwrap();

        let spec = DeviceSpec::Label("WALDEN-BOOT".into());
        let (found, seen) = scan(&sys, &dev, &spec);
        assert_eq!(found.unwrap().device, dev.join("vda1"));
        assert_eq!(seen, vec!["vda (no known file system)".to_string()]);

        let spec = DeviceSpec::Label("MISSING".into());
        let err = find(&sys, &dev, &spec, Duration::ZERO, Duration::ZERO, |_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("LABEL=MISSING"), "{msg}");
        assert!(msg.contains("vdb (vfat label OTHER)"), "{msg}");
        assert!(!msg.contains("loop0"), "{msg}");

        let spec = DeviceSpec::Path("/dev/vdb".into());
        let (found, _) = scan(&sys, &dev, &spec);
        assert_eq!(found.unwrap().device, dev.join("vdb"));
    }

    #[test]
    fn find_waits_and_announces_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut calls = 0;
        let spec = DeviceSpec::Label("X".into());
        let err = find(
            tmp.path(),
            tmp.path(),
            &spec,
            Duration::from_millis(30),
            Duration::from_millis(5),
            |_| calls += 1,
        )
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(err.to_string().contains("no block devices at all"));
    }
}
