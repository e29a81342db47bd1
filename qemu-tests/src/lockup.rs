//! One retry for a scenario whose guest kernel reported a CPU soft lockup.
//!
//! Under TCG the booted image's kernel now and then reports "watchdog: BUG:
//! soft lockup - CPU#1 stuck for 22s!" and that CPU never comes back (seen
//! in CI in ssh-keygen, and in `make bench` in the nested QEMU). That is the
//! emulator and the kernel, not walden: walden is a user process and cannot
//! stop a CPU in the kernel. A scenario that failed after such a report is
//! run once more; the first attempt's logs are kept beside the second's, and
//! the retry is printed (past libtest's capture) so it shows in every run's
//! output. A scenario that fails again, or fails without a lockup, fails.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the kernel prints when a CPU has not scheduled for 20 s or more.
pub const SOFT_LOCKUP: &str = "watchdog: BUG: soft lockup - CPU#";

/// The console log of the last machine whose kernel reported a lockup.
static SEEN: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Called as a console is dropped: remember its log if the kernel locked up.
pub(crate) fn note(console_text: &str, log: &Path) {
    if console_text.contains(SOFT_LOCKUP) {
        *SEEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(log.to_path_buf());
    }
}

fn take_seen() -> Option<PathBuf> {
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Run `scenario`; when it fails after a guest kernel soft lockup, keep its
/// directory as `<dir>.soft-lockup` and run it once more.
pub fn retry_on_soft_lockup<E: Display>(scenario: impl Fn() -> Result<(), E>) -> Result<(), E> {
    take_seen();
    let err = match scenario() {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Some(log) = take_seen() else {
        return Err(err);
    };
    let kept = log.parent().map(|dir| {
        let to = dir.with_extension("soft-lockup");
        let _ = std::fs::remove_dir_all(&to);
        match std::fs::rename(dir, &to) {
            Ok(()) => to.display().to_string(),
            Err(e) => format!("{} (not kept: {e})", dir.display()),
        }
    });
    let _ = writeln!(
        std::io::stderr(),
        "RETRY: the guest kernel reported a CPU soft lockup ({}) and the scenario failed: {err}; \
         running it once more",
        kept.unwrap_or_else(|| log.display().to_string())
    );
    scenario()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn only_a_failure_after_a_lockup_is_retried_and_only_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("scenario");
        std::fs::create_dir(&dir).unwrap();
        let log = dir.join("console.log");

        // Passing: run once.
        let runs = Cell::new(0);
        let ok: Result<(), String> = retry_on_soft_lockup(|| {
            runs.set(runs.get() + 1);
            Ok(())
        });
        assert!(ok.is_ok());
        assert_eq!(runs.get(), 1);

        // Failing without a lockup: run once, its error kept.
        runs.set(0);
        let e = retry_on_soft_lockup(|| {
            runs.set(runs.get() + 1);
            note("walden: ready in 12 s\n", &log);
            Err("timed out")
        });
        assert_eq!((e, runs.get()), (Err("timed out"), 1));

        // Failing after a lockup, twice: run twice, the second error kept,
        // the first attempt's directory kept aside.
        runs.set(0);
        let e = retry_on_soft_lockup(|| {
            runs.set(runs.get() + 1);
            std::fs::create_dir_all(&dir).unwrap();
            note(
                "[ 32.7] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [x:1]\n",
                &log,
            );
            Err(format!("attempt {}", runs.get()))
        });
        assert_eq!(e, Err("attempt 2".to_string()));
        assert_eq!(runs.get(), 2);
        assert!(tmp.path().join("scenario.soft-lockup").is_dir());

        // Failing after a lockup, then passing: the retry's pass counts.
        runs.set(0);
        let ok = retry_on_soft_lockup(|| {
            runs.set(runs.get() + 1);
            if runs.get() == 1 {
                note(SOFT_LOCKUP, &log);
                return Err("locked");
            }
            Ok(())
        });
        assert_eq!((ok, runs.get()), (Ok(()), 2));
    }
}
