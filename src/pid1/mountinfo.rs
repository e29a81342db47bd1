//! Parsers for `/proc/self/mountinfo` and `/proc/swaps` (pure; the final
//! shutdown reads the files and hands the text in).
//!
//! Both files escape space, tab, newline and backslash in paths as octal
//! (`\040`, `\011`, `\012`, `\134`); [`unescape`] undoes that.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// A line of a mountinfo or swaps text that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// A mountinfo line lacks fields or the `-` separator.
    #[error("mountinfo line {line}: {reason}: {text:?}")]
    Mountinfo {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
        /// The offending line.
        text: String,
    },
}

/// One mount as listed in `/proc/self/mountinfo` (only the fields the
/// shutdown needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique id of the mount.
    pub id: u64,
    /// Id of the parent mount.
    pub parent_id: u64,
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// File system type, e.g. `ext4`, `proc`, `overlay`.
    pub fs_type: String,
    /// Mount source, e.g. `/dev/vda1` (unescaped).
    pub source: String,
}

/// Undo the kernel's octal escaping of `\ooo` sequences in a path field.
/// Anything that is not a valid three-digit octal escape is kept as is.
pub fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Parse the whole text of `/proc/self/mountinfo`, in file order (which is
/// mount order: parents before their children).
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, ParseError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason| ParseError::Mountinfo {
            line: index + 1,
            reason,
            text: line.to_string(),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 6 {
            return Err(bad("fewer than six fields"));
        }
        let id = fields[0]
            .parse()
            .map_err(|_| bad("mount id is not a number"))?;
        let parent_id = fields[1]
            .parse()
            .map_err(|_| bad("parent id is not a number"))?;
        // Optional fields (shared:N, master:N, ...) end at a lone "-".
        let separator = fields[6..]
            .iter()
            .position(|f| *f == "-")
            .map(|p| p + 6)
            .ok_or_else(|| bad("no '-' separator"))?;
        let fs_type = fields
            .get(separator + 1)
            .ok_or_else(|| bad("no file system type"))?;
        let source = fields.get(separator + 2).copied().unwrap_or("none");
        entries.push(MountEntry {
            id,
            parent_id,
            mount_point: PathBuf::from(unescape(fields[4])),
            fs_type: unescape(fs_type).to_string_lossy().into_owned(),
            source: unescape(source).to_string_lossy().into_owned(),
        });
    }
    Ok(entries)
}

/// Parse `/proc/swaps`: the active swap areas (files or devices), in file
/// order. The header line and blank or short lines are skipped.
pub fn parse_swaps(text: &str) -> Vec<PathBuf> {
    text.lines()
        .skip_while(|line| line.starts_with("Filename"))
        .filter_map(|line| line.split_whitespace().next())
        .map(|name| PathBuf::from(unescape(name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/test_data/pid1/mountinfo.txt"
    ));

    #[test]
    fn unescape_table() {
        let cases = [
            ("/plain", "/plain"),
            ("/with\\040space", "/with space"),
            ("/tab\\011x", "/tab\tx"),
            ("/back\\134slash", "/back\\slash"),
            ("/nl\\012", "/nl\n"),
            ("/short\\04", "/short\\04"),
            ("/notoctal\\089", "/notoctal\\089"),
            ("\\040", " "),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(unescape(input), OsString::from(want), "input {input:?}");
        }
    }

    #[test]
    fn mountinfo_fixture_parses_in_order() {
        let entries = parse_mountinfo(FIXTURE).unwrap();
        let points: Vec<&Path> = entries.iter().map(|e| e.mount_point.as_path()).collect();
        assert_eq!(points[0], Path::new("/"));
        assert!(points.contains(&Path::new("/media/usb stick")));
        let root = &entries[0];
        assert_eq!(root.fs_type, "squashfs");
        assert_eq!(root.source, "/dev/loop0");
        let etc = entries
            .iter()
            .find(|e| e.mount_point == Path::new("/etc"))
            .unwrap();
        assert_eq!(etc.fs_type, "overlay");
        assert_eq!(etc.parent_id, root.id);
    }

    #[test]
    fn mountinfo_without_optional_fields() {
        let line = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n";
        let entries = parse_mountinfo(line).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].fs_type, "proc");
        assert_eq!(entries[0].id, 22);
    }

    #[test]
    fn mountinfo_errors_name_the_line() {
        let text = "22 1 0:21 / /proc rw - proc proc rw\nnonsense\n";
        match parse_mountinfo(text) {
            Err(ParseError::Mountinfo { line, .. }) => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
        let no_dash = "22 1 0:21 / /proc rw shared:1 proc proc rw";
        assert!(parse_mountinfo(no_dash).is_err());
    }

    #[test]
    fn swaps_table() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/vda2                               partition\t1048572\t\t0\t\t-2\n\
                    /var/swap\\040file                      file\t\t65532\t\t0\t\t-3\n";
        assert_eq!(
            parse_swaps(text),
            vec![PathBuf::from("/dev/vda2"), PathBuf::from("/var/swap file")]
        );
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
        assert!(parse_swaps("").is_empty());
    }
}
