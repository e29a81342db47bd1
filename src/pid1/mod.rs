//! PID 1: a small loop that reaps every child, runs `walden supervise` as
//! its child (restarting it with backoff), maps signals to shutdown requests
//! and performs the final shutdown (DESIGN.md section 2).
//!
//! * `walden` as PID 1 (any argv; main.rs checks getpid() first) starts
//!   `<this exe> supervise <args>`, where `<args>` are the arguments after a
//!   literal `--` (e.g. `walden init -- --root /tmp/x`).
//! * Signals: SIGTERM/SIGINT reboot, SIGUSR1 halt, SIGUSR2 power off, SIGHUP
//!   rescans for the power button (see [`signals`]). Ctrl-Alt-Del is turned
//!   into SIGINT. The ACPI power button powers off ([`power_button`]).
//! * Shutdown: SIGTERM to the supervisor, which stops guests and services in
//!   order; after it exits (or after [`SUPERVISOR_STOP_TIMEOUT`]) the final
//!   shutdown runs ([`shutdown`]).
//! * In a child PID namespace (tests, containers) PID 1 leaves swap, mounts,
//!   Ctrl-Alt-Del, the console and the power button alone; the final
//!   reboot(2) then ends the namespace: its parent sees init killed by SIGINT
//!   (power off, halt) or SIGHUP (reboot). If reboot(2) fails there, PID 1
//!   exits with status 0 instead.
//! * Emergency shell: as the real init, after [`restart::EMERGENCY_AFTER`]
//!   quick supervisor failures in a row, `/bin/sh` (if the image has one) is
//!   started on /dev/console, one at a time; restarts of the supervisor go on.
//!
//! PID 1 must never end: no unwrap on runtime errors, and the loop runs under
//! `catch_unwind` as a last resort.

mod lifecycle;
pub mod machine;
pub mod mountinfo;
pub mod power_button;
pub mod request;
pub mod restart;
pub mod shutdown;
pub mod signals;
pub mod watchdog;

pub use shutdown::Scope;

use crate::context::Paths;
use lifecycle::Init;
use nix::sys::stat::{umask, Mode};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// What PID 1 is asked to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// reboot(2) with RB_AUTOBOOT.
    Reboot,
    /// reboot(2) with RB_HALT_SYSTEM.
    Halt,
    /// reboot(2) with RB_POWER_OFF.
    PowerOff,
}

impl Action {
    /// How the console names the last step ("walden: power off").
    pub fn verb(self) -> &'static str {
        match self {
            Action::Reboot => "reboot",
            Action::Halt => "halt",
            Action::PowerOff => "power off",
        }
    }

    /// The command that requests it (`walden poweroff`).
    pub fn command(self) -> &'static str {
        match self {
            Action::Reboot => "reboot",
            Action::Halt => "halt",
            Action::PowerOff => "poweroff",
        }
    }

    /// The systemctl verb with the same meaning, for hints.
    pub fn systemctl(self) -> &'static str {
        self.command()
    }
}

/// How long the supervisor gets to stop guests and services after SIGTERM.
/// Guests' own shutdown timeouts are enforced by the supervisor; this bound
/// only keeps a hung supervisor from holding the power off forever. Five
/// minutes covers a few guests with the default 120 s timeout in sequence.
pub const SUPERVISOR_STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// PATH for PID 1 and its children when the kernel gave none.
pub const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Write `walden: <line>` to the console (PID 1's stderr). Never panics.
pub fn console(line: &str) {
    crate::logging::console_line(&format!("{}: {line}", crate::logging::PREFIX));
}

/// Ask PID 1 for `action` by signal (`walden poweroff`, `/sbin/reboot`, ...).
pub fn request(action: Action) -> anyhow::Result<u8> {
    request::send(&Paths::default().proc, action)?;
    Ok(0)
}

/// The arguments for `walden supervise`: everything after the first `--`.
pub fn supervise_args(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    argv.into_iter().skip_while(|a| a != "--").skip(1).collect()
}

/// Which program runs `walden supervise`. On the image PID 1 is
/// `walden-init`, the build of walden without libvirt (the stage 1 one: it
/// never runs guests, and not mapping libvirt's ~50 libraries keeps PID 1's
/// resident memory at a quarter); it starts the full `walden` beside it.
/// A build with libvirt, or one with no `walden` beside it, runs itself.
pub fn supervise_exe(current: PathBuf, has_libvirt: bool) -> PathBuf {
    if has_libvirt {
        return current;
    }
    match current.parent().map(|d| d.join("walden")) {
        Some(full) if full != current && full.is_file() => full,
        _ => current,
    }
}

/// The PID 1 loop; never returns.
pub fn run() -> ! {
    // Before any thread exists, so every thread inherits the mask.
    let signals = signals::handled_set();
    if let Err(err) = signals::block(&signals) {
        console(&format!(
            "cannot block signals: {err}; shutdown requests may be lost"
        ));
    }
    let paths = Paths::default();
    let scope = Scope::detect(&paths.proc);
    prepare_environment(scope);
    let exe = supervise_exe(
        std::env::current_exe()
            .or_else(|_| std::env::args_os().next().map(PathBuf::from).ok_or(()))
            .unwrap_or_else(|()| PathBuf::from("/sbin/init")),
        cfg!(feature = "libvirt"),
    );
    let args = supervise_args(std::env::args_os());
    // The hardware watchdog is the real machine's; never in a namespace.
    let mut watchdog = (scope == Scope::InitialNamespace).then(|| {
        watchdog::Watchdog::new(
            paths.dev.join("watchdog"),
            paths.run.join(crate::images::health::WATCHDOG_TIMEOUT_FILE),
            paths.control_socket(),
        )
    });
    let mut init = Init::new(signals, scope, paths, exe, args);
    console(&format!("PID 1 up ({scope:?})"));
    init.start_power_button();
    loop {
        if let Some(w) = watchdog.as_mut() {
            w.tick(init.shutting_down());
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init.step()));
        if outcome.is_err() {
            // The next step reaps; reaping here would hide the supervisor's
            // exit from the state machine.
            console("internal error (panic) in the PID 1 loop; carrying on");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// PATH, umask; as the machine's init also a session and Ctrl-Alt-Del as
/// SIGINT. PID 1 deliberately takes no controlling terminal: a Ctrl-C typed
/// on the console would then reach it as SIGINT, which means reboot.
fn prepare_environment(scope: Scope) {
    if std::env::var_os("PATH").is_none() {
        // Single-threaded still: nothing reads the environment concurrently.
        std::env::set_var("PATH", DEFAULT_PATH);
    }
    umask(Mode::from_bits_truncate(0o022));
    if scope == Scope::InitialNamespace {
        let _ = nix::unistd::setsid();
        if let Err(err) = nix::sys::reboot::set_cad_enabled(false) {
            console(&format!("cannot route Ctrl-Alt-Del to SIGINT: {err}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_build_without_libvirt_starts_the_full_walden_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let init = tmp.path().join("walden-init");
        let full = tmp.path().join("walden");
        std::fs::write(&init, "").unwrap();
        // Nothing beside it: itself.
        assert_eq!(supervise_exe(init.clone(), false), init);
        std::fs::write(&full, "").unwrap();
        assert_eq!(supervise_exe(init.clone(), false), full);
        // The full build itself, and any build with libvirt, runs itself.
        assert_eq!(supervise_exe(full.clone(), false), full);
        assert_eq!(supervise_exe(init.clone(), true), init);
    }

    #[test]
    fn supervise_args_are_those_after_the_double_dash() {
        let cases: [(&[&str], &[&str]); 5] = [
            (
                &["walden", "init", "--", "--root", "/tmp/x"],
                &["--root", "/tmp/x"],
            ),
            (&["/sbin/init"], &[]),
            (&["/sbin/init", "single"], &[]),
            (&["walden", "--", "a", "--", "b"], &["a", "--", "b"]),
            (&["walden", "init", "--"], &[]),
        ];
        for (argv, want) in cases {
            assert_eq!(supervise_args(os(argv)), os(want), "{argv:?}");
        }
    }

    #[test]
    fn action_words() {
        assert_eq!(Action::PowerOff.verb(), "power off");
        assert_eq!(Action::PowerOff.command(), "poweroff");
        assert_eq!(Action::Reboot.systemctl(), "reboot");
        assert_eq!(Action::Halt.verb(), "halt");
    }
}
