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

use crate::console_check::{self, InScenario};
use crate::error::Error;
use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the kernel prints when a CPU has not scheduled for 20 s or more.
pub const SOFT_LOCKUP: &str = "watchdog: BUG: soft lockup - CPU#";

thread_local! {
    /// The console log of the last machine whose kernel reported a lockup,
    /// per thread: a scenario drops its machines on its own thread, and
    /// libtest runs scenarios on threads side by side.
    static SEEN: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Called as a console is dropped: remember its log if the kernel locked up.
pub(crate) fn note(console_text: &str, log: &Path) {
    if console_text.contains(SOFT_LOCKUP) {
        SEEN.with(|s| *s.borrow_mut() = Some(log.to_path_buf()));
    }
}

fn take_seen() -> Option<PathBuf> {
    SEEN.with(|s| s.borrow_mut().take())
}

/// Run `scenario`; when it fails after a guest kernel soft lockup, keep its
/// directory as `<dir>.soft-lockup` and run it once more.
///
/// It also applies the console checks (`console_check`): a scenario that
/// returned `Ok` fails when a machine it dropped had console lines of
/// kernel or program trouble it did not allow (a soft lockup among them,
/// so such a run gets its retry too).
pub fn retry_on_soft_lockup<E: Display + From<Error>>(
    scenario: impl Fn() -> Result<(), E>,
) -> Result<(), E> {
    let _inside = InScenario::enter();
    take_seen();
    let err = match checked(&scenario) {
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
    checked(&scenario)
}

/// One run of `scenario`, failed also by the console findings of the
/// machines it dropped. When it failed anyway, the findings are printed
/// beside its own error.
fn checked<E: Display + From<Error>>(scenario: &impl Fn() -> Result<(), E>) -> Result<(), E> {
    let result = scenario();
    match (result, console_check::take()) {
        (Ok(()), None) => Ok(()),
        (Ok(()), Some(trouble)) => Err(E::from(trouble)),
        (Err(e), None) => Err(e),
        (Err(e), Some(trouble)) => {
            eprintln!("the console check failed too: {trouble}");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console_check::Finding;
    use std::cell::Cell;

    /// The error text of a run (anyhow, as scenarios return).
    fn text(r: anyhow::Result<()>) -> Option<String> {
        r.err().map(|e| e.to_string())
    }

    #[test]
    fn only_a_failure_after_a_lockup_is_retried_and_only_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("scenario");
        std::fs::create_dir(&dir).unwrap();
        let log = dir.join("console.log");

        // Passing: run once.
        let runs = Cell::new(0);
        let ok = retry_on_soft_lockup(|| -> anyhow::Result<()> {
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
            anyhow::bail!("timed out")
        });
        assert_eq!((text(e).as_deref(), runs.get()), (Some("timed out"), 1));

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
            anyhow::bail!("attempt {}", runs.get())
        });
        assert_eq!(text(e).as_deref(), Some("attempt 2"));
        assert_eq!(runs.get(), 2);
        assert!(tmp.path().join("scenario.soft-lockup").is_dir());

        // Failing after a lockup, then passing: the retry's pass counts.
        runs.set(0);
        let ok = retry_on_soft_lockup(|| {
            runs.set(runs.get() + 1);
            if runs.get() == 1 {
                note(SOFT_LOCKUP, &log);
                anyhow::bail!("locked");
            }
            Ok(())
        });
        assert_eq!((text(ok), runs.get()), (None, 2));
    }

    fn oops() -> Vec<Finding> {
        vec![Finding {
            what: "kernel oops",
            line: "[ 9.1] Oops: 0000 [#1] SMP".into(),
        }]
    }

    #[test]
    fn a_passing_scenario_fails_on_console_trouble_of_its_machines() {
        let log = Path::new("/x/console.log");
        let e = retry_on_soft_lockup(|| -> anyhow::Result<()> {
            console_check::dropped(oops(), log);
            Ok(())
        });
        let msg = text(e).expect("console trouble fails the scenario");
        assert!(
            msg.contains("Oops: 0000") && msg.contains("allow_console"),
            "{msg}"
        );

        // A failing scenario keeps its own error (the findings are printed).
        let e = retry_on_soft_lockup(|| -> anyhow::Result<()> {
            console_check::dropped(oops(), log);
            anyhow::bail!("its own error")
        });
        assert_eq!(text(e).as_deref(), Some("its own error"));

        // Nothing is left over for the next scenario on this thread.
        assert!(retry_on_soft_lockup(|| -> anyhow::Result<()> { Ok(()) }).is_ok());
    }

    #[test]
    fn a_soft_lockup_on_a_passing_run_is_trouble_and_gets_the_retry() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("scenario");
        let log = dir.join("console.log");
        let runs = Cell::new(0);
        let ok = retry_on_soft_lockup(|| -> anyhow::Result<()> {
            runs.set(runs.get() + 1);
            std::fs::create_dir_all(&dir).unwrap();
            if runs.get() == 1 {
                let line = "watchdog: BUG: soft lockup - CPU#1 stuck for 22s!\n";
                note(line, &log);
                console_check::dropped(console_check::scan(line, &[]), &log);
            }
            Ok(())
        });
        assert_eq!((text(ok), runs.get()), (None, 2));
    }
}
