//! A small line diff (longest common subsequence) for `walden config diff`.
//! Config files are short, so the O(n*m) table is fine.

use super::generation::ConfigFiles;
use std::fmt::Write;

/// Lines of context around each change.
const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Add,
}

/// The edit script turning `a` into `b`.
fn script<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(Op, &'a str)> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j] = LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((Op::Same, a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Deletions before additions, as diff(1) prints them.
            out.push((Op::Del, a[i]));
            i += 1;
        } else {
            out.push((Op::Add, b[j]));
            j += 1;
        }
    }
    out
}

/// Unified-style diff of one file: `---`/`+++` headers, changed lines with
/// `-`/`+`, up to three unchanged lines around them, `@@` between hunks.
/// Empty when the texts are equal.
pub fn diff_text(old_name: &str, new_name: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = script(&a, &b);
    let near_change = |k: usize| {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT + 1).min(ops.len());
        ops[lo..hi].iter().any(|(op, _)| *op != Op::Same)
    };
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let mut skipped = true;
    for (k, (op, line)) in ops.iter().enumerate() {
        if !near_change(k) {
            skipped = true;
            continue;
        }
        if skipped {
            out.push_str("@@\n");
            skipped = false;
        }
        let mark = match op {
            Op::Same => ' ',
            Op::Del => '-',
            Op::Add => '+',
        };
        let _ = writeln!(out, "{mark}{line}");
    }
    out
}

/// Diff every file of two configs; files only on one side diff against
/// nothing (`/dev/null`).
pub fn diff_configs(
    old_label: &str,
    old: &ConfigFiles,
    new_label: &str,
    new: &ConfigFiles,
) -> String {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = String::new();
    for name in names {
        let text = |f: &ConfigFiles| f.get(name).map(|b| String::from_utf8_lossy(b).into_owned());
        let (o, n) = (text(old), text(new));
        let label = |side: &Option<String>, l: &str| match side {
            Some(_) => format!("{l}/{name}"),
            None => "/dev/null".to_string(),
        };
        out.push_str(&diff_text(
            &label(&o, old_label),
            &label(&n, new_label),
            o.as_deref().unwrap_or(""),
            n.as_deref().unwrap_or(""),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_line_shows_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\n";
        assert_eq!(
            diff_text("gen 1/x", "/config/x", old, new),
            "--- gen 1/x\n+++ /config/x\n@@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
    }

    #[test]
    fn equal_texts_have_no_diff_and_far_changes_make_two_hunks() {
        assert_eq!(diff_text("a", "b", "x\n", "x\n"), "");
        let old: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let new = old
            .replace("line 1\n", "one\n")
            .replace("line 18\n", "eighteen\n");
        let d = diff_text("a", "b", &old, &new);
        assert_eq!(d.matches("@@").count(), 2, "{d}");
        assert!(
            d.contains("-line 1\n+one\n") && d.contains("-line 18\n+eighteen\n"),
            "{d}"
        );
    }

    #[test]
    fn added_and_removed_files_diff_against_dev_null() {
        let mut a = ConfigFiles::new();
        a.insert("guests/old.toml".into(), b"x\n".to_vec());
        let mut b = ConfigFiles::new();
        b.insert("guests/new.toml".into(), b"y\n".to_vec());
        let d = diff_configs("gen 2", &a, "/config", &b);
        assert!(
            d.contains("--- /dev/null\n+++ /config/guests/new.toml\n@@\n+y\n"),
            "{d}"
        );
        assert!(
            d.contains("--- gen 2/guests/old.toml\n+++ /dev/null\n@@\n-x\n"),
            "{d}"
        );
    }
}
