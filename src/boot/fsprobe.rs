//! Superblock probes beyond what stage 1 needs: XFS, btrfs and Linux swap
//! areas, so `[[mount]]` and `[swap]` can name their disks by `LABEL=` or
//! `UUID=` ([`super::media::probe`] tries these after its own). Pure
//! functions on the first bytes of a device, like the others.

use super::media::{FsType, Probe};

/// Where the btrfs superblock starts.
const BTRFS_SB: usize = 0x10000;
/// Bytes of the device these probes need (the btrfs label ends at 0x1022b).
pub const NEEDED: usize = BTRFS_SB + 0x1000;
/// The swap signature's offset: the end of the first 4 KiB page.
const SWAP_MAGIC_AT: usize = 4096 - 10;

/// A 16-byte UUID as blkid prints it (lower-case 8-4-4-4-12).
pub fn uuid_string(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.get(..16)?.try_into().ok()?;
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// A label field: up to the first NUL, trailing spaces dropped.
fn label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(&raw[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// XFS: "XFSB" at 0, UUID at 32, 12-byte label at 108.
pub fn probe_xfs(head: &[u8]) -> Option<Probe> {
    let sb = head.get(..120)?;
    if &sb[..4] != b"XFSB" {
        return None;
    }
    Some(Probe {
        fstype: FsType::Xfs,
        label: label(&sb[108..120]),
        uuid: uuid_string(&sb[32..48]),
    })
}

/// btrfs: superblock at 64 KiB, magic "_BHRfS_M" at +0x40, fsid at +0x20,
/// 256-byte label at +0x12b.
pub fn probe_btrfs(head: &[u8]) -> Option<Probe> {
    let sb = head.get(BTRFS_SB..BTRFS_SB + 0x22b)?;
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        return None;
    }
    Some(Probe {
        fstype: FsType::Btrfs,
        label: label(&sb[0x12b..0x22b]),
        uuid: uuid_string(&sb[0x20..0x30]),
    })
}

/// A swap area made by mkswap (4 KiB pages): "SWAPSPACE2" ending the first
/// page, UUID at 0x40c, 16-byte label at 0x41c.
pub fn probe_swap(head: &[u8]) -> Option<Probe> {
    let page = head.get(..4096)?;
    if &page[SWAP_MAGIC_AT..] != b"SWAPSPACE2" {
        return None;
    }
    Some(Probe {
        fstype: FsType::Swap,
        label: label(&page[0x41c..0x42c]),
        uuid: uuid_string(&page[0x40c..0x41c]),
    })
}

/// The first of the probes above that recognises `head`.
pub fn probe_more(head: &[u8]) -> Option<Probe> {
    probe_xfs(head)
        .or_else(|| probe_swap(head))
        .or_else(|| probe_btrfs(head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const UUID: [u8; 16] = [
        0x0a, 0x1b, 0x2c, 0x3d, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x01,
    ];
    const SHOWN: &str = "0a1b2c3d-0000-4000-8000-000000000001";

    #[test]
    fn xfs_label_and_uuid() {
        let mut img = vec![0u8; 8192];
        img[..4].copy_from_slice(b"XFSB");
        img[32..48].copy_from_slice(&UUID);
        img[108..115].copy_from_slice(b"vmstore");
        let p = super::super::media::probe(&mut Cursor::new(img))
            .unwrap()
            .unwrap();
        assert_eq!(p.fstype, FsType::Xfs);
        assert_eq!(p.label.as_deref(), Some("vmstore"));
        assert_eq!(p.uuid.as_deref(), Some(SHOWN));
    }

    #[test]
    fn btrfs_label_and_uuid() {
        let mut img = vec![0u8; NEEDED];
        let sb = &mut img[BTRFS_SB..];
        sb[0x20..0x30].copy_from_slice(&UUID);
        sb[0x40..0x48].copy_from_slice(b"_BHRfS_M");
        sb[0x12b..0x12f].copy_from_slice(b"pool");
        let p = super::super::media::probe(&mut Cursor::new(img))
            .unwrap()
            .unwrap();
        assert_eq!(p.fstype, FsType::Btrfs);
        assert_eq!(p.label.as_deref(), Some("pool"));
        assert_eq!(p.uuid.as_deref(), Some(SHOWN));
    }

    #[test]
    fn swap_label_and_uuid() {
        let mut img = vec![0u8; 8192];
        img[SWAP_MAGIC_AT..4096].copy_from_slice(b"SWAPSPACE2");
        img[0x40c..0x41c].copy_from_slice(&UUID);
        img[0x41c..0x420].copy_from_slice(b"swap");
        let p = super::super::media::probe(&mut Cursor::new(img))
            .unwrap()
            .unwrap();
        assert_eq!(p.fstype, FsType::Swap);
        assert_eq!(p.label.as_deref(), Some("swap"));
        assert_eq!(p.uuid.as_deref(), Some(SHOWN));
        // A swap area without a label or UUID (mkswap without -L, old tools).
        let mut bare = vec![0u8; 4096];
        bare[SWAP_MAGIC_AT..].copy_from_slice(b"SWAPSPACE2");
        let p = probe_swap(&bare).unwrap();
        assert_eq!((p.label, p.uuid), (None, None));
    }

    #[test]
    fn short_or_empty_heads_are_nothing() {
        assert_eq!(probe_more(&[0u8; 100]), None);
        assert_eq!(probe_more(&vec![0u8; NEEDED]), None);
        assert_eq!(uuid_string(&[1, 2]), None);
    }
}
