//! Supervisor tests with real processes.
//!
//! The supervisor reaps with `waitpid(-1)` and makes itself a subreaper;
//! both act on the whole process, so inside the shared test binary they
//! would steal other tests' children. Each scenario therefore runs in a
//! fresh copy of this test binary (the "re-exec" trick): the parent test
//! starts it with `--exact supervisor::tests::helper_process_entry` and
//! `WALDEN_SUPERVISOR_HELPER=<scenario>`, the scenario asserts inside the
//! helper (a failed assertion fails the helper's exit status), and the
//! parent checks the exit status and what is visible from outside.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "WALDEN_SUPERVISOR_HELPER";
const DIR_ENV: &str = "WALDEN_SUPERVISOR_HELPER_DIR";
const ENTRY: &str = "supervisor::tests::helper_process_entry";

mod scenarios;

// ---------------------------------------------------------------- parent side

/// Start the helper process for `scenario` with `dir` as its scratch dir.
fn start_helper(scenario: &str, dir: &Path, env: &[(&str, &str)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let log = std::fs::File::create(dir.join("helper.log")).expect("helper log");
    // `sh -c 'export WATCHDOG_PID=$$; exec ...'`: exec keeps the pid, so the
    // helper sees its own pid in WATCHDOG_PID as systemd would set it.
    Command::new("sh")
        .arg("-c")
        .arg(r#"export WATCHDOG_PID=$$; exec "$0" "$@""#)
        .arg(exe)
        .args(["--exact", ENTRY, "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, scenario)
        .env(DIR_ENV, dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("spawn helper")
}

/// Wait for the helper with a timeout (killing it when exceeded).
fn finish_helper(mut child: Child, dir: &Path, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait helper") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "helper did not finish within {timeout:?}:\n{}",
                helper_log(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn helper_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("helper.log")).unwrap_or_default()
}

/// Run `scenario` to completion and assert it passed.
fn run_scenario(scenario: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = start_helper(scenario, dir.path(), &[]);
    let status = finish_helper(child, dir.path(), Duration::from_secs(60));
    assert!(
        status.success(),
        "scenario {scenario} failed:\n{}",
        helper_log(dir.path())
    );
}

#[test]
fn crash_loop_backs_off_with_growing_delays_then_fails() {
    run_scenario("crash_loop");
}

#[test]
fn dependencies_start_in_order_and_stop_in_reverse() {
    run_scenario("dependencies");
}

#[test]
fn bringup_records_steps_and_continues_past_optional_failures() {
    run_scenario("bringup");
}

#[test]
fn orphaned_grandchild_is_reaped() {
    run_scenario("orphan");
}

#[test]
fn children_get_clean_signals_fds_and_env_and_output_is_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = start_helper("clean_child", dir.path(), &[]);
    let status = finish_helper(child, dir.path(), Duration::from_secs(30));
    let log = helper_log(dir.path());
    assert!(status.success(), "scenario failed:\n{log}");
    // The service's stdout and stderr lines are logged with its name.
    assert!(
        log.lines()
            .any(|l| l.contains("service=talker") && l.contains("hello on stdout")),
        "no stdout line logged:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("service=talker") && l.contains("hello on stderr")),
        "no stderr line logged:\n{log}"
    );
}

/// Wait for the next datagram on the notify socket.
fn next_message(sock: &UnixDatagram, deadline: Instant) -> Option<String> {
    let mut buf = [0u8; 4096];
    let left = deadline.checked_duration_since(Instant::now())?;
    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .ok()?;
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn sigterm_stops_everything_within_timeouts_and_systemd_is_notified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let sock_str = sock_path.to_str().expect("utf-8 path");
    // WatchdogSec=0.3s: pings expected every 150 ms.
    let child = start_helper(
        "sigterm",
        dir.path(),
        &[("NOTIFY_SOCKET", sock_str), ("WATCHDOG_USEC", "300000")],
    );
    let helper_pid = Pid::from_raw(child.id() as i32);

    // READY=1 only after bring-up; watchdog pings keep coming.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut messages = Vec::new();
    while !messages.iter().any(|m: &String| m.contains("READY=1")) {
        match next_message(&sock, deadline) {
            Some(m) => messages.push(m),
            None => {
                let _ = kill(helper_pid, Signal::SIGKILL);
                panic!(
                    "no READY=1 within 20s; got {messages:?}:\n{}",
                    helper_log(dir.path())
                );
            }
        }
    }
    let ready = messages
        .iter()
        .find(|m| m.contains("READY=1"))
        .cloned()
        .unwrap_or_default();
    assert!(
        ready.contains("STATUS=ready: 2/2 services running"),
        "{ready:?}"
    );
    let mut pings = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while pings < 2 {
        match next_message(&sock, until) {
            Some(m) => pings += m.lines().filter(|l| *l == "WATCHDOG=1").count(),
            None => panic!(
                "fewer than 2 WATCHDOG=1 after READY:\n{}",
                helper_log(dir.path())
            ),
        }
    }

    let pids: Vec<Pid> = ["polite.pid", "stubborn.pid"]
        .iter()
        .map(|f| read_pid(&dir.path().join(f)))
        .collect();
    let t0 = Instant::now();
    kill(helper_pid, Signal::SIGTERM).expect("SIGTERM helper");
    // polite stops at once, stubborn ignores SIGTERM: 400 ms stop timeout,
    // then SIGKILL. Generous bound for a loaded CI machine.
    let status = finish_helper(child, dir.path(), Duration::from_secs(10));
    let took = t0.elapsed();
    assert!(
        status.success(),
        "helper failed:\n{}",
        helper_log(dir.path())
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "service pid {pid} still exists"
        );
    }
    let mut rest = String::new();
    while let Some(m) = next_message(&sock, Instant::now() + Duration::from_millis(200)) {
        rest.push_str(&m);
    }
    assert!(rest.contains("STOPPING=1"), "no STOPPING=1 in {rest:?}");
}

/// Read a pid file a service writes (retrying while it is still empty).
fn read_pid(path: &Path) -> Pid {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return Pid::from_raw(pid);
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn mode_and_paths_from_arguments() {
    use super::{Mode, SuperviseArgs};
    use crate::pid1::Scope::{ChildNamespace, InitialNamespace};
    assert_eq!(Mode::detect(true, 1, InitialNamespace).as_str(), "systemd");
    assert_eq!(Mode::detect(false, 1, InitialNamespace).as_str(), "pid1");
    assert_eq!(Mode::detect(false, 1, ChildNamespace).as_str(), "container");
    assert_eq!(
        Mode::detect(false, 4242, InitialNamespace).as_str(),
        "standalone"
    );
    let args = SuperviseArgs {
        systemd: false,
        root: PathBuf::from("/tmp/r"),
        config: None,
        run_dir: Some(PathBuf::from("/tmp/run")),
        log_dir: None,
    };
    let paths = args.paths();
    assert_eq!(paths.config, Path::new("/tmp/r/config"));
    assert_eq!(paths.run, Path::new("/tmp/run"));
    assert_eq!(paths.proc, Path::new("/tmp/r/proc"));
}

#[test]
fn kernel_uptime_from_proc() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("uptime"), "12.345 40.00\n").expect("write");
    assert_eq!(super::kernel_uptime_ms(dir.path()), Some(12_345));
    assert_eq!(super::kernel_uptime_ms(&dir.path().join("missing")), None);
}

// ---------------------------------------------------------------- helper side

/// Entry point of the helper processes (see the module docs). In a normal
/// test run the variable is unset and this returns at once.
#[test]
fn helper_process_entry() {
    let Ok(scenario) = std::env::var(HELPER_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("helper dir"));
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::io::stderr)
        .try_init();
    super::reaper::become_subreaper().expect("PR_SET_CHILD_SUBREAPER");
    match scenario.as_str() {
        "crash_loop" => scenarios::scenario_crash_loop(),
        "dependencies" => scenarios::scenario_dependencies(&dir),
        "orphan" => scenarios::scenario_orphan(&dir),
        "clean_child" => scenarios::scenario_clean_child(),
        "sigterm" => scenarios::scenario_sigterm(&dir),
        "bringup" => scenarios::scenario_bringup(&dir),
        other => panic!("unknown helper scenario {other:?}"),
    }
}
