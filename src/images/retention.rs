//! Which versions under `images/` to delete after an install: keep the
//! newest N, and never the running one, the fallback (`previous`) or the
//! one being installed, whatever their age.

use crate::boot::manifest::version_cmp;

/// Versions kept by default (DESIGN.md section 5: several side by side).
pub const DEFAULT_KEEP: usize = 3;

/// How many versions to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many versions stay; protected ones stay on top.
    pub keep: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self { keep: DEFAULT_KEEP }
    }
}

/// Versions that must survive regardless of age.
#[derive(Debug, Clone, Default)]
pub struct Protected<'a> {
    /// The version running now.
    pub running: Option<&'a str>,
    /// The fallback of a trial (grubenv `previous`).
    pub previous: Option<&'a str>,
    /// The version being installed.
    pub installing: Option<&'a str>,
}

impl Protected<'_> {
    fn contains(&self, v: &str) -> bool {
        [self.running, self.previous, self.installing].contains(&Some(v))
    }
}

/// The result: both lists newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Versions that stay.
    pub keep: Vec<String>,
    /// Versions to delete.
    pub remove: Vec<String>,
}

impl Retention {
    /// Split `installed` (any order, duplicates ignored) into keep/remove.
    pub fn plan(&self, installed: &[String], protected: &Protected) -> RetentionPlan {
        let mut versions: Vec<&String> = installed.iter().collect();
        versions.sort_by(|a, b| version_cmp(b, a));
        versions.dedup();
        let mut plan = RetentionPlan::default();
        for (i, v) in versions.into_iter().enumerate() {
            if i < self.keep || protected.contains(v) {
                plan.keep.push(v.clone());
            } else {
                plan.remove.push(v.clone());
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// keep, running, previous, installing, kept, removed.
    type Case<'a> = (
        usize,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
    );

    #[test]
    fn keeps_newest_and_protected() {
        let installed = strings(&["0.9.0", "0.10.0", "0.2.1", "0.1.0", "0.3.0", "0.10.0"]);
        let cases: &[Case] = &[
            (
                3,
                None,
                None,
                None,
                &["0.10.0", "0.9.0", "0.3.0"],
                &["0.2.1", "0.1.0"],
            ),
            (
                3,
                Some("0.1.0"),
                None,
                None,
                &["0.10.0", "0.9.0", "0.3.0", "0.1.0"],
                &["0.2.1"],
            ),
            (
                2,
                Some("0.3.0"),
                Some("0.2.1"),
                Some("0.1.0"),
                &["0.10.0", "0.9.0", "0.3.0", "0.2.1", "0.1.0"],
                &[],
            ),
            (
                0,
                Some("0.9.0"),
                None,
                None,
                &["0.9.0"],
                &["0.10.0", "0.3.0", "0.2.1", "0.1.0"],
            ),
            (
                10,
                None,
                None,
                None,
                &["0.10.0", "0.9.0", "0.3.0", "0.2.1", "0.1.0"],
                &[],
            ),
        ];
        for (i, (keep, running, previous, installing, kept, removed)) in cases.iter().enumerate() {
            let plan = Retention { keep: *keep }.plan(
                &installed,
                &Protected {
                    running: *running,
                    previous: *previous,
                    installing: *installing,
                },
            );
            assert_eq!(plan.keep, strings(kept), "case {i}");
            assert_eq!(plan.remove, strings(removed), "case {i}");
        }
        assert_eq!(Retention::default().keep, 3);
        assert_eq!(
            Retention::default().plan(&[], &Protected::default()),
            RetentionPlan::default()
        );
    }
}
