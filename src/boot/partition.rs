//! PARTUUID of a partition, as blkid and the kernel's `root=PARTUUID=`
//! spell it, read from the partition table of its disk: the partition's
//! unique GUID in a GPT, or `SSSSSSSS-NN` (disk signature, partition
//! number) in an MBR. Neither sysfs nor the kernel's uevents carry it, and
//! stage 1 has no blkid or udev, so the table is parsed here (pure
//! functions on bytes, tested on fixtures).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Size of one GPT partition entry that this parser expects at least.
const MIN_GPT_ENTRY: u64 = 128;
/// GPT entries are read at most this far (128 entries of 128 bytes is the norm).
const MAX_GPT_ENTRIES_BYTES: u64 = 1 << 20;

fn le32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// A GUID as text: the first three fields are little-endian on disk.
pub fn guid_text(g: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
        g[14], g[15]
    )
}

/// Where a GPT's entries are, from its header (the block at LBA 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    /// First block of the entry array.
    pub entries_lba: u64,
    /// Number of entries.
    pub count: u32,
    /// Bytes per entry.
    pub entry_size: u32,
}

/// Parse a GPT header ("EFI PART" signature), or None.
pub fn gpt_header(block: &[u8]) -> Option<GptHeader> {
    if block.get(0..8)? != b"EFI PART" {
        return None;
    }
    let h = GptHeader {
        entries_lba: le64(block, 72)?,
        count: le32(block, 80)?,
        entry_size: le32(block, 84)?,
    };
    (u64::from(h.entry_size) >= MIN_GPT_ENTRY).then_some(h)
}

/// The unique GUID of entry `number` (1-based) of a GPT entry array, or
/// None when it is unused (all zero type GUID) or beyond the array.
pub fn gpt_entry_uuid(entries: &[u8], entry_size: u32, number: u32) -> Option<String> {
    let start = usize::try_from(u64::from(number.checked_sub(1)?) * u64::from(entry_size)).ok()?;
    let e = entries.get(start..start + 32)?;
    if e[0..16].iter().all(|&b| b == 0) {
        return None;
    }
    let unique: [u8; 16] = e[16..32].try_into().ok()?;
    Some(guid_text(&unique))
}

/// An MBR partition's PARTUUID: the disk signature at 0x1b8 and the
/// partition number, when the sector is an MBR (0x55aa) with a signature.
pub fn mbr_partuuid(sector0: &[u8], number: u32) -> Option<String> {
    if sector0.get(510..512)? != [0x55, 0xaa] {
        return None;
    }
    let sig = le32(sector0, 0x1b8)?;
    (sig != 0).then(|| format!("{sig:08x}-{number:02x}"))
}

/// The PARTUUID of partition `number` of the disk `disk` (a device node or
/// an image file) with `block_size`-byte logical blocks: GPT first (a GPT
/// disk also has a protective MBR), then MBR.
pub fn partuuid(disk: &Path, number: u32, block_size: u64) -> std::io::Result<Option<String>> {
    let mut f = File::open(disk)?;
    let mut head = vec![0u8; usize::try_from(block_size * 2).unwrap_or(1024)];
    f.read_exact(&mut head)?;
    let bs = usize::try_from(block_size).unwrap_or(512);
    if let Some(h) = gpt_header(&head[bs..]) {
        let len = (u64::from(h.count) * u64::from(h.entry_size)).min(MAX_GPT_ENTRIES_BYTES);
        let mut entries = vec![0u8; usize::try_from(len).unwrap_or(0)];
        f.seek(SeekFrom::Start(h.entries_lba * block_size))?;
        f.read_exact(&mut entries)?;
        return Ok(gpt_entry_uuid(&entries, h.entry_size, number));
    }
    Ok(mbr_partuuid(&head[..512.min(head.len())], number))
}

/// The PARTUUID of the block device `name` (e.g. "sda2") from sysfs (its
/// partition number and parent disk) and the parent's table under `dev`.
/// None for a whole disk or a table without an id.
pub fn partuuid_of(sys: &Path, dev: &Path, name: &str) -> Option<String> {
    let class = sys.join("class/block").join(name);
    let number: u32 = std::fs::read_to_string(class.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // /sys/class/block/sda2 -> ../../devices/.../block/sda/sda2: the parent
    // directory is the disk.
    let real = std::fs::canonicalize(&class).ok()?;
    let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
    let block_size = std::fs::read_to_string(
        sys.join("class/block")
            .join(&disk)
            .join("queue/logical_block_size"),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(512);
    partuuid(&dev.join(disk), number, block_size).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk image with sfdisk's layout: protective MBR, GPT header at
    /// LBA 1, entries from LBA 2, two partitions.
    fn gpt_disk() -> Vec<u8> {
        let mut d = vec![0u8; 512 * 40];
        d[510] = 0x55;
        d[511] = 0xaa;
        let h = &mut d[512..1024];
        h[0..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        for (i, fill) in [(0usize, 0x11u8), (1, 0x22)] {
            let e = &mut d[1024 + i * 128..1024 + (i + 1) * 128];
            e[0..16].copy_from_slice(&[0xaf; 16]);
            let mut g = [fill; 16];
            g[0] = 0x78;
            g[1] = 0x56;
            g[2] = 0x34;
            g[3] = 0x12;
            e[16..32].copy_from_slice(&g);
        }
        d
    }

    #[test]
    fn gpt_partuuid_is_the_entrys_unique_guid_in_mixed_endian() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("disk.img");
        std::fs::write(&img, gpt_disk()).unwrap();
        assert_eq!(
            partuuid(&img, 2, 512).unwrap().as_deref(),
            Some("12345678-2222-2222-2222-222222222222")
        );
        assert_eq!(
            partuuid(&img, 1, 512).unwrap().as_deref(),
            Some("12345678-1111-1111-1111-111111111111")
        );
        assert_eq!(partuuid(&img, 3, 512).unwrap(), None, "unused entry");
        assert_eq!(partuuid(&img, 500, 512).unwrap(), None, "beyond the array");
    }

    #[test]
    fn mbr_partuuid_is_signature_and_number() {
        let mut d = vec![0u8; 1024];
        d[0x1b8..0x1bc].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        assert_eq!(mbr_partuuid(&d, 1).as_deref(), Some("deadbeef-01"));
        assert_eq!(mbr_partuuid(&d, 12).as_deref(), Some("deadbeef-0c"));
        d[511] = 0;
        assert_eq!(mbr_partuuid(&d, 1), None, "no MBR signature");
    }

    #[test]
    fn agrees_with_sfdisk_on_a_real_table() {
        // sfdisk (Debian's fdisk, installed by `make deps`) writes the
        // table; its own --part-uuid is the reference.
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let mut child = std::process::Command::new("sfdisk")
            .args(["--quiet", img.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\n,2MiB\n,\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        for n in [1u32, 2] {
            let out = std::process::Command::new("sfdisk")
                .args(["--part-uuid", img.to_str().unwrap(), &n.to_string()])
                .output()
                .unwrap();
            let want = String::from_utf8_lossy(&out.stdout)
                .trim()
                .to_ascii_lowercase();
            assert_eq!(
                partuuid(&img, n, 512).unwrap().as_deref(),
                Some(want.as_str())
            );
        }
    }
}
