//! One config file's text, its parse tree positions and its problems.
//!
//! A [`Source`] remembers the byte span of every key path it handed out while
//! reading, so checks that run later across files (unknown bridge, duplicate
//! MAC) can still point at the exact line and column.

use super::diag::{span_start, Diagnostic, LineIndex};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where a config item came from: its file and dotted key path.
///
/// Kept on runtime config items so later stages can name the item in their
/// own messages ("host.toml network.bridge[0]"). Origins never take part in
/// comparisons: any two `At` compare equal, so moving an item in a file does
/// not make it look changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct At {
    /// File relative to the config directory.
    pub file: PathBuf,
    /// Dotted key path of the item (see [`super::diag`]).
    pub key: String,
}

impl At {
    /// The key path of `sub` below this item ("" = the item itself).
    pub fn sub(&self, sub: &str) -> String {
        match (self.key.is_empty(), sub.is_empty()) {
            (_, true) => self.key.clone(),
            (true, false) => sub.to_string(),
            (false, false) if sub.starts_with('[') => format!("{}{sub}", self.key),
            (false, false) => format!("{}.{sub}", self.key),
        }
    }
}

impl PartialEq for At {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for At {}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, " {}", self.key)?;
        }
        Ok(())
    }
}

/// `parent.key`, quoting `key` when it is not a bare TOML key.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// One config file being read and checked.
#[derive(Debug)]
pub(crate) struct Source {
    /// Path relative to the config directory.
    pub(crate) rel: PathBuf,
    text: String,
    lines: LineIndex,
    spans: RefCell<HashMap<String, Range<usize>>>,
    /// (list key, element as displayed) -> element key, for lists of scalars.
    elements: RefCell<HashMap<(String, String), String>>,
    errors: RefCell<Vec<Diagnostic>>,
    warnings: RefCell<Vec<Diagnostic>>,
}

impl Source {
    /// A source for `text` read from `rel`.
    pub(crate) fn new(rel: &Path, text: String) -> Self {
        Self {
            rel: rel.to_path_buf(),
            lines: LineIndex::new(&text),
            text,
            spans: RefCell::default(),
            elements: RefCell::default(),
            errors: RefCell::default(),
            warnings: RefCell::default(),
        }
    }

    /// The file's text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Remember where `key` is.
    pub(crate) fn record(&self, key: &str, span: Option<Range<usize>>) {
        if let Some(span) = span {
            self.spans.borrow_mut().insert(key.to_string(), span);
        }
    }

    /// Remember that element `shown` of list `list` is at key `key`.
    pub(crate) fn record_element(&self, list: &str, shown: String, key: &str) {
        self.elements
            .borrow_mut()
            .entry((list.to_string(), shown))
            .or_insert_with(|| key.to_string());
    }

    /// The key of the first element of list `list` that displays as `shown`,
    /// or the list itself.
    pub(crate) fn element_key(&self, list: &str, shown: &str) -> String {
        self.elements
            .borrow()
            .get(&(list.to_string(), shown.to_string()))
            .cloned()
            .unwrap_or_else(|| list.to_string())
    }

    /// A diagnostic at byte span `span` for `key`.
    pub(crate) fn diag_at(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
        hint: &str,
    ) -> Diagnostic {
        let (line, column) = self.lines.position(&self.text, span_start(&span));
        Diagnostic {
            file: self.rel.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
            hint: (!hint.is_empty()).then(|| hint.to_string()),
        }
    }

    /// True when `key` was recorded while reading.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.spans.borrow().contains_key(key)
    }

    /// The recorded span of `key`, or of its nearest recorded parent.
    fn locate(&self, key: &str) -> Option<Range<usize>> {
        let spans = self.spans.borrow();
        let mut k = key;
        loop {
            if let Some(span) = spans.get(k) {
                return Some(span.clone());
            }
            let cut = k.rfind(['.', '['])?;
            k = &k[..cut];
        }
    }

    /// Report an error at a byte span.
    pub(crate) fn error_at(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
        hint: &str,
    ) {
        let d = self.diag_at(span, key, message, hint);
        self.errors.borrow_mut().push(d);
    }

    /// Report an error at a key recorded while reading.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>, hint: &str) {
        self.error_at(self.locate(key), key, message, hint);
    }

    /// Report a warning at a key recorded while reading.
    pub(crate) fn warning(&self, key: &str, message: impl Into<String>, hint: &str) {
        let d = self.diag_at(self.locate(key), key, message, hint);
        self.warnings.borrow_mut().push(d);
    }

    /// Take the collected errors and warnings.
    pub(crate) fn take(&self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        (self.errors.take(), self.warnings.take())
    }
}

/// All sources of one config directory, by relative path.
#[derive(Debug, Default)]
pub(crate) struct Sources(pub(crate) Vec<Source>);

impl Sources {
    /// The source of `file`, if it was read.
    pub(crate) fn get(&self, file: &Path) -> Option<&Source> {
        self.0.iter().find(|s| s.rel == file)
    }

    /// Report an error at `sub` below item `at`.
    pub(crate) fn error(&self, at: &At, sub: &str, message: impl Into<String>, hint: &str) {
        if let Some(src) = self.get(&at.file) {
            src.error(&at.sub(sub), message, hint);
        }
    }

    /// Report an error at the first of `subs` below `at` that was recorded
    /// while reading (a port may be a string or a table with `name`).
    pub(crate) fn error_first(
        &self,
        at: &At,
        subs: &[&str],
        message: impl Into<String>,
        hint: &str,
    ) {
        let sub = self
            .get(&at.file)
            .and_then(|src| subs.iter().find(|s| src.has(&at.sub(s))))
            .copied()
            .unwrap_or("");
        self.error(at, sub, message, hint);
    }

    /// Report a warning at `sub` below item `at`.
    pub(crate) fn warning(&self, at: &At, sub: &str, message: impl Into<String>, hint: &str) {
        if let Some(src) = self.get(&at.file) {
            src.warning(&at.sub(sub), message, hint);
        }
    }

    /// The key of the element of list `sub` (below `at`) displayed as `shown`.
    pub(crate) fn element_sub(&self, at: &At, sub: &str, shown: &str) -> String {
        let list = at.sub(sub);
        let key = self
            .get(&at.file)
            .map_or_else(|| list.clone(), |s| s.element_key(&list, shown));
        // Relative to `at` again, as the callers pass it back in.
        key.strip_prefix(&at.key)
            .map(|k| k.trim_start_matches('.').to_string())
            .unwrap_or(key)
    }
}
