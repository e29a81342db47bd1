//! Console checks after every scenario, as Fedora CoreOS's kola does them
//! (issue 20): a scenario whose asserts passed still fails when the
//! console showed a kernel oops, BUG or warning, a stack trace, a Rust
//! panic, a segfault, the OOM killer or a soft lockup.
//!
//! [`crate::Machine::check_console`] checks the console so far and returns
//! an error (common helpers call it); what is left is checked when the
//! machine is dropped or restarted. Inside [`crate::retry_on_soft_lockup`]
//! (every image scenario runs in it) the findings of dropped machines turn
//! an `Ok` into an error; outside it, dropping a machine with findings
//! panics. A scenario that provokes such lines on purpose lists them with
//! [`crate::MachineBuilder::allow_console`].

use crate::error::Error;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

/// What is looked for: (what it is, the text), the first match naming a
/// line. Each must start a word: "DEBUG:" is no "BUG:".
pub const CHECKS: &[(&str, &str)] = &[
    ("soft lockup", "soft lockup"),
    ("kernel oops", "Oops"),
    ("kernel BUG", "BUG:"),
    ("kernel warning", "WARNING: CPU"),
    ("stack trace", "Call Trace"),
    ("Rust panic", "panicked at"),
    ("segfault", "segfault"),
    ("OOM killer", "invoked oom-killer"),
];

/// One offending console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is (first matching entry of [`CHECKS`]).
    pub what: &'static str,
    /// The line, trimmed.
    pub line: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "  [{}] {}", self.what, self.line)
    }
}

/// Lines of `text` matching a check, minus those containing one of `allow`.
pub fn scan(text: &str, allow: &[String]) -> Vec<Finding> {
    text.lines()
        .filter(|line| !allow.iter().any(|a| line.contains(a.as_str())))
        .filter_map(|line| {
            CHECKS
                .iter()
                .find(|(_, needle)| starts_a_word(line, needle))
                .map(|(what, _)| Finding {
                    what,
                    line: line.trim().to_string(),
                })
        })
        .collect()
}

/// Whether `needle` occurs in `line` at the start of a word.
fn starts_a_word(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(at, _)| {
        line[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    })
}

/// The error for findings of the console logged at `log`.
pub fn error(findings: &[Finding], log: &Path) -> Error {
    Error::ConsoleTrouble {
        count: findings.len(),
        lines: findings
            .iter()
            .map(Finding::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        log: log.to_path_buf(),
    }
}

thread_local! {
    /// Findings of machines dropped on this thread since the scenario began.
    static DROPPED: RefCell<Vec<(Vec<Finding>, PathBuf)>> = const { RefCell::new(Vec::new()) };
    /// How many scenario wrappers this thread is inside.
    static IN_SCENARIO: Cell<u32> = const { Cell::new(0) };
}

/// Called when a machine with unreported `findings` goes away. Inside a
/// scenario wrapper they are kept for it; otherwise this panics (unless
/// the thread is already panicking), so a harness test fails too.
pub(crate) fn dropped(findings: Vec<Finding>, log: &Path) {
    if findings.is_empty() {
        return;
    }
    if IN_SCENARIO.with(Cell::get) > 0 {
        DROPPED.with(|d| d.borrow_mut().push((findings, log.to_path_buf())));
        return;
    }
    let err = error(&findings, log);
    if std::thread::panicking() {
        eprintln!("{err}");
    } else {
        panic!("{err}");
    }
}

/// Marks the thread as inside a scenario wrapper while it lives.
pub(crate) struct InScenario;

impl InScenario {
    /// Enter (clearing findings left from before).
    pub(crate) fn enter() -> Self {
        IN_SCENARIO.with(|c| c.set(c.get() + 1));
        take();
        InScenario
    }
}

impl Drop for InScenario {
    fn drop(&mut self) {
        IN_SCENARIO.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// The findings of machines dropped since the last call, as one error.
pub(crate) fn take() -> Option<Error> {
    let all = DROPPED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    let log = all.first().map(|(_, log)| log.clone())?;
    let findings: Vec<Finding> = all.into_iter().flat_map(|(f, _)| f).collect();
    Some(error(&findings, &log))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.000000] Linux version 6.1.0-28-amd64
walden: [service=x] DEBUG: fine
[   12.1] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   12.2] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   12.3] Call Trace:
[   13.0] WARNING: CPU: 1 PID: 77 at fs/inode.c:1 iput+0x1/0x2
thread 'main' panicked at src/main.rs:3:5:
[   14.0] walden[301]: segfault at 0 ip 0000 sp 0000 error 4
[   15.0] qemu-system-x86 invoked oom-killer: gfp_mask=0x140cca
[   16.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [sh:1]
walden: neither DEBUG: nor WhOops nor xsegfault is trouble
";

    #[test]
    fn every_check_finds_its_line_and_nothing_else() {
        let found = scan(CONSOLE, &[]);
        let what: Vec<&str> = found.iter().map(|f| f.what).collect();
        assert_eq!(
            what,
            [
                "kernel BUG",
                "kernel oops",
                "stack trace",
                "kernel warning",
                "Rust panic",
                "segfault",
                "OOM killer",
                "soft lockup",
            ],
            "{found:#?}"
        );
        // "Oopsy" starts a word with "Oops": a check is a prefix, as kola's.
        // It is still a finding, on purpose: it would be one in the kernel.
        assert_eq!(scan("walden: Oopsy\n", &[]).len(), 1);
        assert_eq!(scan("x WhOops segfaults_total\n", &[]).len(), 1);
        assert!(scan("DEBUG: a\nsubBUG: b\nxsegfault\n", &[]).is_empty());
    }

    #[test]
    fn allowed_lines_are_left_out() {
        let allow = vec!["soft lockup".to_string(), "walden[301]".to_string()];
        let found = scan(CONSOLE, &allow);
        assert!(found.iter().all(|f| !f.line.contains("soft lockup")));
        assert!(found.iter().all(|f| f.what != "segfault"));
        assert_eq!(found.len(), 6);
    }

    #[test]
    fn findings_are_kept_inside_a_scenario_and_panic_outside() {
        let log = Path::new("/x/console.log");
        let one = || {
            vec![Finding {
                what: "kernel oops",
                line: "Oops: 0000".into(),
            }]
        };
        {
            let _in = InScenario::enter();
            dropped(one(), log);
            dropped(Vec::new(), log);
            let err = take().expect("kept for the wrapper").to_string();
            assert!(err.contains("[kernel oops] Oops: 0000"), "{err}");
            assert!(err.contains("allow_console") && err.contains("/x/console.log"));
            assert!(take().is_none());
        }
        let outside = std::panic::catch_unwind(|| dropped(one(), log));
        let msg = outside.unwrap_err();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("Oops: 0000"), "{msg}");
    }
}
