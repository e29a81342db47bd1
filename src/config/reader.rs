//! Typed reading of a toml_edit document that reports every problem.
//!
//! serde's derive stops at the first type error, so the files are walked by
//! hand instead: [`Tbl`] hands out the keys a table may have, [`Val`] turns a
//! value into a typed one or records a diagnostic at its exact span, and
//! [`Tbl::finish`] reports every key nobody asked for as unknown. Readers
//! carry on after an error so one pass finds everything.

use super::error::ConfigValue;
use super::ids::VlanId;
use super::source::{index, join, At, Source};
use std::cell::RefCell;
use std::ops::Range;
use toml_edit::{Item, TableLike, Value};

/// A node of the parse tree: a table item or a value inside an array.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(Item::Value(v)) | Node::Value(v) => Some(v),
            Node::Item(_) => None,
        }
    }

    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(Value::InlineTable(t)) => Some(t),
            Node::Value(_) => None,
        }
    }

    /// "a string", "an integer"... for messages.
    fn kind(self) -> &'static str {
        match self {
            Node::Item(Item::Table(_)) => "a table",
            Node::Item(Item::ArrayOfTables(_)) => "an array of tables",
            Node::Item(Item::None) => "nothing",
            Node::Item(Item::Value(v)) | Node::Value(v) => match v {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a date-time",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "a table",
            },
        }
    }
}

/// A value at a key path, ready to be converted to a typed value.
#[derive(Clone)]
pub(crate) struct Val<'a> {
    src: &'a Source,
    node: Node<'a>,
    path: String,
    span: Option<Range<usize>>,
}

impl<'a> Val<'a> {
    fn new(src: &'a Source, node: Node<'a>, path: String, span: Option<Range<usize>>) -> Self {
        src.record(&path, span.clone());
        Self {
            src,
            node,
            path,
            span,
        }
    }

    /// The key path of this value.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Report an error at this value; returns `None` for use in `?` chains.
    pub(crate) fn error<T>(&self, message: impl Into<String>, hint: &str) -> Option<T> {
        self.src
            .error_at(self.span.clone(), &self.path, message, hint);
        None
    }

    fn type_error<T>(&self, expected: &str, hint: &str) -> Option<T> {
        self.error(
            format!("expected {expected}, found {}", self.node.kind()),
            hint,
        )
    }

    /// A string.
    pub(crate) fn str(&self) -> Option<&'a str> {
        match self.node.value() {
            Some(Value::String(s)) => Some(s.value()),
            _ => self.type_error("a string", ""),
        }
    }

    /// A string that is an absolute path.
    pub(crate) fn abs_path(&self) -> Option<std::path::PathBuf> {
        let s = self.str()?;
        if !s.starts_with('/') || s.contains('\0') {
            return self.error(
                format!("{s:?} is not an absolute path"),
                "write the full path starting with '/'",
            );
        }
        Some(s.into())
    }

    /// A boolean.
    pub(crate) fn bool(&self) -> Option<bool> {
        match self.node.value() {
            Some(Value::Boolean(b)) => Some(*b.value()),
            _ => self.type_error("a boolean", "write true or false without quotes"),
        }
    }

    /// An integer in `lo..=hi`.
    pub(crate) fn int(&self, lo: i64, hi: i64) -> Option<i64> {
        let n = match self.node.value() {
            Some(Value::Integer(n)) => *n.value(),
            _ => return self.type_error("an integer", "write a whole number without quotes"),
        };
        if n < lo || n > hi {
            return self.error(
                format!("{n} is out of range"),
                &format!("use a whole number from {lo} to {hi}"),
            );
        }
        Some(n)
    }

    /// An integer in `lo..=hi` as u32.
    pub(crate) fn u32(&self, lo: u32, hi: u32) -> Option<u32> {
        self.int(lo.into(), hi.into())
            .and_then(|n| u32::try_from(n).ok())
    }

    /// A VLAN id: an integer in 1..=4094.
    pub(crate) fn vlan(&self) -> Option<VlanId> {
        let n = match self.node.value() {
            Some(Value::Integer(n)) => *n.value(),
            _ => {
                return self.type_error(
                    "a VLAN id (an integer)",
                    "write VLAN ids as numbers, e.g. 20",
                )
            }
        };
        VlanId::new(n).or_else(|| {
            self.error(
                format!("VLAN id {n} is out of range"),
                "VLAN ids are 1 to 4094 (0 and 4095 are reserved)",
            )
        })
    }

    /// A string parsed as `T`.
    pub(crate) fn parse<T: ConfigValue>(&self) -> Option<T> {
        let s = match self.node.value() {
            Some(Value::String(s)) => s.value(),
            _ => return self.type_error("a string", T::HINT),
        };
        match s.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => self.error(e.to_string(), T::HINT),
        }
    }

    /// One of the strings in `choices`, mapped to its value.
    pub(crate) fn choice<T: Copy>(&self, choices: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let hint = format!("use one of: {}", names.join(", "));
        let s = match self.node.value() {
            Some(Value::String(s)) => s.value(),
            _ => return self.type_error("a string", &hint),
        };
        match choices.iter().find(|(n, _)| *n == s) {
            Some((_, v)) => Some(*v),
            None => self.error(format!("unknown value {s:?}"), &hint),
        }
    }

    /// The elements of an array.
    pub(crate) fn array(&self) -> Option<Vec<Val<'a>>> {
        match self.node.value() {
            Some(Value::Array(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        Val::new(self.src, Node::Value(v), index(&self.path, i), v.span())
                    })
                    .collect(),
            ),
            _ => self.type_error("an array", "write a list in brackets, e.g. [\"a\", \"b\"]"),
        }
    }

    /// An array whose elements convert with `f`; bad elements are reported and left out.
    pub(crate) fn list<T>(&self, f: impl Fn(&Val<'a>) -> Option<T>) -> Vec<T> {
        self.array()
            .unwrap_or_default()
            .iter()
            .filter_map(f)
            .collect()
    }

    /// An array of strings parsed as `T`; each element's key is remembered by
    /// its displayed value for later cross-file messages.
    pub(crate) fn parse_list<T: ConfigValue>(&self) -> Vec<T> {
        self.list(|v| {
            let t = v.parse::<T>()?;
            self.src.record_element(&self.path, t.to_string(), v.path());
            Some(t)
        })
    }

    /// An array of strings.
    pub(crate) fn str_list(&self) -> Vec<String> {
        self.list(|v| v.str().map(str::to_string))
    }

    /// A table (a `[section]` or an inline `{ ... }`).
    pub(crate) fn table(&self) -> Option<Tbl<'a>> {
        match self.node.table_like() {
            Some(t) => Some(Tbl::new(self.src, t, self.path.clone(), self.span.clone())),
            None => self.type_error("a table", ""),
        }
    }

    /// True when this value is a table.
    pub(crate) fn is_table(&self) -> bool {
        self.node.table_like().is_some()
    }

    /// An array of tables: `[[section]]` blocks or an array of inline tables.
    pub(crate) fn tables(&self) -> Option<Vec<Tbl<'a>>> {
        let hint = "write one [[section]] block per entry";
        match self.node {
            Node::Item(Item::ArrayOfTables(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let path = index(&self.path, i);
                        self.src.record(&path, t.span());
                        Tbl::new(self.src, t, path, t.span())
                    })
                    .collect(),
            ),
            _ => match self.node.value() {
                Some(Value::Array(_)) => Some(
                    self.array()?
                        .into_iter()
                        .filter_map(|v| match v.node.table_like() {
                            Some(t) => Some(Tbl::new(self.src, t, v.path.clone(), v.span.clone())),
                            None => v.type_error("a table", hint),
                        })
                        .collect(),
                ),
                _ => self.type_error("an array of tables", hint),
            },
        }
    }
}

/// A table whose keys are being read; [`Tbl::finish`] reports the unknown ones.
pub(crate) struct Tbl<'a> {
    src: &'a Source,
    table: &'a dyn TableLike,
    path: String,
    span: Option<Range<usize>>,
    known: RefCell<Vec<&'static str>>,
}

impl<'a> Tbl<'a> {
    /// A reader for `table` at key `path`.
    pub(crate) fn new(
        src: &'a Source,
        table: &'a dyn TableLike,
        path: String,
        span: Option<Range<usize>>,
    ) -> Self {
        Self {
            src,
            table,
            path,
            span,
            known: RefCell::default(),
        }
    }

    /// Where this table is, for runtime items.
    pub(crate) fn at(&self) -> At {
        At {
            file: self.src.rel.clone(),
            key: self.path.clone(),
        }
    }

    /// Report an error at the table itself.
    pub(crate) fn error(&self, message: impl Into<String>, hint: &str) {
        self.src
            .error_at(self.span.clone(), &self.path, message, hint);
    }

    /// The value of an optional key.
    pub(crate) fn opt(&self, key: &'static str) -> Option<Val<'a>> {
        let mut known = self.known.borrow_mut();
        if !known.contains(&key) {
            known.push(key);
        }
        drop(known);
        let (k, item) = self.table.get_key_value(key)?;
        if item.is_none() {
            return None;
        }
        let span = item
            .span()
            .or_else(|| k.span())
            .or_else(|| self.span.clone());
        Some(Val::new(
            self.src,
            Node::Item(item),
            join(&self.path, key),
            span,
        ))
    }

    /// The value of a required key; a missing key is reported at the table.
    pub(crate) fn req(&self, key: &'static str, hint: &str) -> Option<Val<'a>> {
        let v = self.opt(key);
        if v.is_none() {
            self.src.error_at(
                self.span.clone(),
                &join(&self.path, key),
                format!("missing required key `{key}`"),
                hint,
            );
        }
        v
    }

    /// Every entry, for free-form tables such as `env`.
    pub(crate) fn entries(&self) -> Vec<(String, Val<'a>)> {
        self.table
            .iter()
            .filter(|(_, item)| !item.is_none())
            .map(|(k, item)| {
                let span = item
                    .span()
                    .or_else(|| self.table.key(k).and_then(|k| k.span()));
                (
                    k.to_string(),
                    Val::new(self.src, Node::Item(item), join(&self.path, k), span),
                )
            })
            .collect()
    }

    /// Report every key that was not asked for as unknown, with the closest known one.
    pub(crate) fn finish(self) {
        let known = self.known.borrow();
        for (k, item) in self.table.iter() {
            if known.contains(&k) {
                continue;
            }
            let span = self
                .table
                .key(k)
                .and_then(|key| key.span())
                .or_else(|| item.span())
                .or_else(|| self.span.clone());
            let hint = match closest(k, &known) {
                Some(best) => format!("did you mean `{best}`?"),
                None if known.is_empty() => "this table takes no keys".to_string(),
                None => format!("known keys here: {}", known.join(", ")),
            };
            self.src.error_at(
                span,
                &join(&self.path, k),
                format!("unknown key `{k}`"),
                &hint,
            );
        }
    }
}

/// The known key closest to `key` by edit distance, if it is close.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parse `src` keeping spans; `None` after reporting a syntax error.
pub(crate) fn open(src: &Source) -> Option<toml_edit::ImDocument<String>> {
    match toml_edit::ImDocument::parse(src.text().to_string()) {
        Ok(doc) => Some(doc),
        Err(e) => {
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            src.error_at(
                e.span(),
                "",
                format!("TOML syntax error: {message}"),
                "fix the syntax; see https://toml.io for the format",
            );
            None
        }
    }
}

/// The supported config schema version.
pub const SCHEMA: i64 = 1;

/// Read the mandatory `schema = 1` of a file's root table.
pub(crate) fn schema(root: &Tbl<'_>) {
    let hint = "put `schema = 1` on the first line of every config file";
    let Some(v) = root.opt("schema") else {
        root.src.error_at(
            Some(0..0),
            "schema",
            format!("missing `schema`; this walden reads schema {SCHEMA}"),
            hint,
        );
        return;
    };
    match v.node.value() {
        Some(Value::Integer(n)) if *n.value() == SCHEMA => {}
        Some(Value::Integer(n)) => {
            v.error::<()>(
                format!(
                    "unsupported schema {}; this walden reads schema {SCHEMA}",
                    n.value()
                ),
                "convert the file to schema 1 or run a walden that supports this schema",
            );
        }
        _ => {
            v.type_error::<()>("the integer 1", hint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_suggestions() {
        assert_eq!(
            closest("vlan_filter", &["vlan_filtering", "vlans"]),
            Some("vlan_filtering")
        );
        assert_eq!(closest("memroy", &["memory", "vcpus"]), Some("memory"));
        assert_eq!(closest("zzz", &["memory", "vcpus"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
