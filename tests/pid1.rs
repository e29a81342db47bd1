//! PID 1 for real: the built binary runs as init of a fresh PID + mount
//! namespace (`unshare --pid --fork --mount-proc walden init -- --root X`).
//! The test watches it from the host's /proc and from its console log.
//!
//! Needs root and util-linux `unshare`/`nsenter`; without them the tests print
//! "SKIPPED: reason" and pass, unless WALDEN_REQUIRE_PRIVILEGED=1 (CI), where
//! they fail.
//!
//! These tests do not depend on what `walden supervise` does with the empty
//! root: whether it keeps running or exits at once, PID 1 must restart it.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_walden");

/// None (after printing why) when the test cannot run here.
fn prerequisites(test: &str) -> Option<()> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["unshare", "nsenter", "sh", "sleep"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let reason = if !root {
        "needs root for PID namespaces"
    } else if !tools {
        "needs unshare, nsenter (util-linux), sh and sleep"
    } else {
        return Some(());
    };
    if std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {reason} (WALDEN_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("SKIPPED: {test}: {reason}");
    None
}

/// Poll `check` every 50 ms until it returns Some or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process as the host's /proc shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    state: char,
    /// Pid inside the innermost namespace (last NSpid field).
    ns_pid: i32,
    cmdline: Vec<String>,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let ppid = field("PPid:")?.parse().ok()?;
    let state = field("State:")?.chars().next()?;
    let ns_pid = field("NSpid:")?.split_whitespace().last()?.parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = cmdline
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    Some(Proc {
        pid,
        ppid,
        state,
        ns_pid,
        cmdline,
    })
}

fn children_of(parent: i32) -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .filter(|p| p.ppid == parent)
        .collect()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A PID namespace whose init is the walden binary; killed on drop.
struct Namespace {
    unshare: Child,
    /// Host pid of the namespace's PID 1.
    init: i32,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Namespace {
    /// Start `walden init -- --root <tmp>` as PID 1 of a new namespace and
    /// wait until it says it is up.
    fn start() -> Namespace {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let log = dir.path().join("console.log");
        let out = fs::File::create(&log).unwrap();
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                BIN,
                "init",
                "--",
                "--root",
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let parent = i32::try_from(unshare.id()).unwrap();
        let mut ns = Namespace {
            unshare,
            init: 0,
            log,
            _dir: dir,
        };
        ns.init = wait_for(Duration::from_secs(5), || {
            children_of(parent)
                .into_iter()
                .find(|p| p.ns_pid == 1 && p.cmdline.iter().any(|a| a == "init"))
                .map(|p| p.pid)
        })
        .unwrap_or_else(|| panic!("no PID 1 under unshare; log:\n{}", ns.console()));
        // Safety net: never signal an init that believes it owns the machine.
        let scoped = wait_for(Duration::from_secs(5), || {
            ns.console()
                .contains("walden: PID 1 up (ChildNamespace)")
                .then_some(())
        });
        assert!(
            scoped.is_some(),
            "PID 1 did not report a child namespace:\n{}",
            ns.console()
        );
        ns
    }

    fn console(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Namespace pids from "started supervise (pid N)" lines, in order.
    fn supervise_starts(&self) -> Vec<i32> {
        self.console()
            .lines()
            .filter_map(|l| l.strip_prefix("walden: started supervise (pid "))
            .filter_map(|rest| rest.strip_suffix(')')?.parse().ok())
            .collect()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.unshare.try_wait().ok().flatten())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.init > 0 && alive(self.init) {
            // SIGKILL to a namespace's init ends every process in it.
            // SAFETY: kill(2) with a pid we started and a valid signal.
            unsafe { libc::kill(self.init, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.wait_exit(Duration::from_secs(5));
    }
}

fn send(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a valid signal; the pid is one this test started.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

fn nsenter(ns: &Namespace, command: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .args(["--target", &ns.init.to_string(), "--pid", "--mount", "--"])
        .args(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn pid1_restarts_supervise_reaps_orphans_and_powers_off() {
    if prerequisites("pid1_restarts_supervise_reaps_orphans_and_powers_off").is_none() {
        return;
    }
    let mut ns = Namespace::start();

    // PID 1 is our binary.
    let exe = fs::read_link(format!("/proc/{}/exe", ns.init)).unwrap();
    assert_eq!(exe, fs::canonicalize(BIN).unwrap());

    // A supervise child is started...
    let first = wait_for(Duration::from_secs(5), || {
        ns.supervise_starts().first().copied()
    });
    assert!(first.is_some(), "no supervise started:\n{}", ns.console());

    // ...and restarted when killed (or when it exits on its own).
    let before = ns.supervise_starts().len();
    let victim = children_of(ns.init)
        .into_iter()
        .find(|p| p.cmdline.iter().any(|a| a == "supervise") && p.state != 'Z');
    if let Some(victim) = &victim {
        send(victim.pid, libc::SIGKILL);
    }
    let restarted = wait_for(Duration::from_secs(10), || {
        (ns.supervise_starts().len() > before).then_some(())
    });
    assert!(
        restarted.is_some(),
        "supervise not restarted:\n{}",
        ns.console()
    );
    if let Some(victim) = victim {
        let line = format!("supervise (pid {}) was killed by SIGKILL", victim.ns_pid);
        assert!(
            ns.console().contains(&line),
            "{line:?} missing:\n{}",
            ns.console()
        );
        let latest = ns.supervise_starts().last().copied();
        assert_ne!(latest, Some(victim.ns_pid));
    }

    // An orphan: its parent shell exits at once, PID 1 inherits and reaps it.
    // (Its output goes to /dev/null, or nsenter's captured pipes would stay
    // open until it ends.)
    let out = nsenter(&ns, &["sh", "-c", "sleep 2.345 >/dev/null 2>&1 & exit 0"]);
    assert!(out.status.success(), "nsenter: {out:?}");
    let orphan = wait_for(Duration::from_secs(2), || {
        children_of(ns.init)
            .into_iter()
            .find(|p| p.cmdline == ["sleep", "2.345"])
    })
    .expect("the orphaned sleep was not reparented to PID 1");
    let reaped = wait_for(Duration::from_secs(6), || {
        (!alive(orphan.pid)).then_some(())
    });
    assert!(reaped.is_some(), "orphan {} not reaped", orphan.pid);
    let no_zombies = wait_for(Duration::from_secs(2), || {
        children_of(ns.init)
            .iter()
            .all(|p| p.state != 'Z')
            .then_some(())
    });
    assert!(
        no_zombies.is_some(),
        "zombies left: {:?}",
        children_of(ns.init)
    );

    // SIGUSR2 = power off: everything in the namespace ends; the kernel turns
    // reboot(RB_POWER_OFF) of a namespace init into death by SIGINT, which
    // unshare passes on.
    let members: Vec<i32> = children_of(ns.init).iter().map(|p| p.pid).collect();
    send(ns.init, libc::SIGUSR2);
    let status = ns.wait_exit(Duration::from_secs(10));
    let console = ns.console();
    let status = status.unwrap_or_else(|| panic!("namespace did not end:\n{console}"));
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{console}");
    for line in [
        "walden: SIGUSR2 received: power off",
        "walden: sending SIGTERM to all processes",
        "walden: sending SIGKILL",
        "walden: sync",
        "walden: power off",
    ] {
        assert!(
            console.lines().any(|l| l == line),
            "{line:?} missing:\n{console}"
        );
    }
    assert!(!alive(ns.init));
    for pid in members {
        assert!(!alive(pid), "pid {pid} outlived the namespace");
    }
}

#[test]
fn walden_reboot_inside_the_namespace_signals_its_pid1() {
    if prerequisites("walden_reboot_inside_the_namespace_signals_its_pid1").is_none() {
        return;
    }
    let mut ns = Namespace::start();
    let started = wait_for(Duration::from_secs(5), || {
        ns.supervise_starts().first().copied()
    });
    assert!(started.is_some(), "no supervise started:\n{}", ns.console());

    let out = nsenter(&ns, &[BIN, "reboot"]);
    // The command may be caught by the shutdown's own kill(-1, SIGTERM)
    // before it has exited, as /sbin/reboot on a real machine can be.
    let ended =
        out.status.success() || matches!(out.status.signal(), Some(libc::SIGTERM | libc::SIGKILL));
    assert!(ended, "walden reboot: {out:?}");
    let status = ns.wait_exit(Duration::from_secs(10));
    let console = ns.console();
    let status = status.unwrap_or_else(|| panic!("namespace did not end:\n{console}"));
    // reboot(RB_AUTOBOOT) in a PID namespace: init dies by SIGHUP.
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}\n{console}");
    assert!(
        console.contains("walden: SIGTERM received: reboot"),
        "{console}"
    );
    assert!(console.lines().any(|l| l == "walden: reboot"), "{console}");
}

#[test]
fn walden_halt_inside_the_namespace_halts_its_pid1() {
    if prerequisites("walden_halt_inside_the_namespace_halts_its_pid1").is_none() {
        return;
    }
    let mut ns = Namespace::start();
    let started = wait_for(Duration::from_secs(5), || {
        ns.supervise_starts().first().copied()
    });
    assert!(started.is_some(), "no supervise started:\n{}", ns.console());

    let out = nsenter(&ns, &[BIN, "halt"]);
    // As with reboot: the shutdown's kill(-1, SIGTERM) may catch the command.
    let ended =
        out.status.success() || matches!(out.status.signal(), Some(libc::SIGTERM | libc::SIGKILL));
    assert!(ended, "walden halt: {out:?}");
    let status = ns.wait_exit(Duration::from_secs(10));
    let console = ns.console();
    let status = status.unwrap_or_else(|| panic!("namespace did not end:\n{console}"));
    // reboot(RB_HALT_SYSTEM) in a PID namespace: init dies by SIGINT (as
    // for power off; the console says which one PID 1 did).
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{console}");
    assert!(
        console.contains("walden: SIGUSR1 received: halt"),
        "{console}"
    );
    assert!(console.lines().any(|l| l == "walden: halt"), "{console}");
    assert!(!console.contains("power off"), "{console}");
}

#[test]
fn poweroff_refuses_when_pid1_is_another_program() {
    if prerequisites("poweroff_refuses_when_pid1_is_another_program").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Invoked by argv[0], as /sbin/poweroff would be.
    let poweroff = dir.path().join("poweroff");
    std::os::unix::fs::symlink(BIN, &poweroff).unwrap();

    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let parent = i32::try_from(unshare.id()).unwrap();
    let init = wait_for(Duration::from_secs(5), || {
        children_of(parent)
            .into_iter()
            .find(|p| p.ns_pid == 1)
            .map(|p| p.pid)
    });
    let result = init.map(|init| {
        Command::new("nsenter")
            .args(["--target", &init.to_string(), "--pid", "--mount", "--"])
            .arg(&poweroff)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    if let Some(init) = init {
        send(init, libc::SIGKILL);
    }
    let _ = unshare.kill();
    let _ = wait_for(Duration::from_secs(5), || unshare.try_wait().ok().flatten());

    let out = result.expect("no PID 1 under unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("poweroff: PID 1 is not walden (it is \"sleep\")"),
        "{stderr}"
    );
    assert!(stderr.contains("systemctl poweroff"), "{stderr}");
}
