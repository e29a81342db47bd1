//! Diagnostics: one problem in one config file, with its position and a hint.
//!
//! Every problem the config loader finds becomes a [`Diagnostic`]; they are
//! collected (never stop at the first) and returned together as
//! [`Diagnostics`]. The key is a dotted path from the top of the file:
//! tables by name, array elements by zero-based index in brackets, keys that
//! are not bare TOML keys in double quotes, e.g. `network.bridge[0].ports[1]`
//! or `service[0].env."A.B"`. An empty key means the whole file.

use serde::Serialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem (or warning) found in a config directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// File relative to the config directory, e.g. `guests/web.toml`.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem has no position (an unreadable file).
    pub line: u32,
    /// 1-based column in characters; 0 together with `line` 0.
    pub column: u32,
    /// Dotted key path (see the module docs); empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found while loading a config directory, in file and position order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterate over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Sort by file (host.toml first, then guests by name), line and column.
    pub(crate) fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            file_rank(&a.file)
                .cmp(&file_rank(&b.file))
                .then_with(|| a.file.cmp(&b.file))
                .then_with(|| (a.line, a.column).cmp(&(b.line, b.column)))
        });
    }
}

/// host.toml sorts before the guests.
fn file_rank(file: &Path) -> u8 {
    u8::from(file != Path::new("host.toml"))
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Maps byte offsets of one file's text to 1-based line and column.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl LineIndex {
    /// Index the line starts of `text`.
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    /// 1-based (line, column) of byte `offset` in `text`; the column counts characters.
    pub(crate) fn position(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (to_u32(line), to_u32(column + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Start of a span, for positions.
pub(crate) fn span_start(span: &Option<Range<usize>>) -> usize {
    span.as_ref().map_or(0, |s| s.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n\nz";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(text, 0), (1, 1));
        assert_eq!(idx.position(text, 4), (1, 5));
        assert_eq!(idx.position(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        let q = text.find('"').unwrap_or(0);
        assert_eq!(idx.position(text, q), (2, 6));
        assert_eq!(idx.position(text, text.len() - 1), (4, 1));
    }

    #[test]
    fn display_has_location_key_and_hint() {
        let d = Diagnostic {
            file: "host.toml".into(),
            line: 12,
            column: 9,
            key: "network.bridge[0].ports[1]".into(),
            message: "unknown link \"bond9\"".into(),
            hint: Some("define it".into()),
        };
        assert_eq!(
            d.to_string(),
            "host.toml:12:9: network.bridge[0].ports[1]: unknown link \"bond9\"\n  hint: define it"
        );
        let d = Diagnostic {
            line: 0,
            column: 0,
            key: String::new(),
            hint: None,
            ..d
        };
        assert_eq!(d.to_string(), "host.toml: unknown link \"bond9\"");
    }
}
