//! The scenarios run inside helper processes (see the parent module's
//! docs): each drives a real supervisor with real processes and asserts on
//! the spot.

use super::read_pid;
use crate::context::Paths;
use crate::supervisor::bringup::{services_step, BringUp};
use crate::supervisor::engine::{LoopExit, Supervisor};
use crate::supervisor::notify::Notifier;
use crate::supervisor::runtime::{Event, EventKind};
use crate::supervisor::service::{Backoff, CrashLimit, Readiness, RestartPolicy, ServiceSpec};
use crate::supervisor::status::{Phase, ServiceState, SharedStatus, Status, StepState};
use nix::sys::signal::{kill, Signal};
use std::path::Path;
use std::time::{Duration, Instant};

fn new_supervisor(notifier: Notifier) -> Supervisor {
    let status = SharedStatus::new(Status::new("standalone"));
    Supervisor::new(status, notifier).expect("supervisor")
}

fn sh(name: &str, script: &str) -> ServiceSpec {
    ServiceSpec::new(name, &["sh", "-c", script])
}

fn events_of<'a>(events: &'a [Event], service: &str) -> impl Iterator<Item = &'a Event> {
    let service = service.to_string();
    events.iter().filter(move |e| e.service == service)
}

fn first_at(events: &[Event], service: &str, want: impl Fn(&EventKind) -> bool) -> u64 {
    events_of(events, service)
        .find(|e| want(&e.kind))
        .unwrap_or_else(|| panic!("no such event for {service}: {events:#?}"))
        .at_ms
}

pub(super) fn scenario_crash_loop() {
    let mut sup = new_supervisor(Notifier::disabled());
    let mut spec = ServiceSpec::new("crasher", &["false"]);
    spec.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(2),
        factor: 2.0,
    };
    // Default limit: 5 restarts within 60 s.
    assert_eq!(spec.crash_limit, CrashLimit::default());
    sup.add_services(vec![spec]).expect("table");
    sup.start_services();
    let exit = sup
        .run_until(
            |s| !s.services_in(ServiceState::Failed).is_empty(),
            Some(Instant::now() + Duration::from_secs(20)),
        )
        .expect("loop");
    assert_eq!(
        exit,
        LoopExit::Condition,
        "never failed: {:#?}",
        sup.events()
    );

    let events = sup.events();
    let spawns: Vec<u64> = events_of(&events, "crasher")
        .filter(|e| matches!(e.kind, EventKind::Spawned { .. }))
        .map(|e| e.at_ms)
        .collect();
    let delays: Vec<u128> = events_of(&events, "crasher")
        .filter_map(|e| match e.kind {
            EventKind::RestartScheduled(d) => Some(d.as_millis()),
            _ => None,
        })
        .collect();
    assert_eq!(delays, vec![50, 100, 200, 400, 800], "{events:#?}");
    assert_eq!(spawns.len(), 6, "1 start + 5 restarts: {events:#?}");
    let exits: Vec<u64> = events_of(&events, "crasher")
        .filter(|e| matches!(e.kind, EventKind::Exited(_)))
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(exits.len(), 6, "{events:#?}");
    // How long the supervisor waited between an exit and the next start:
    // at least the backoff delay, growing, and not absurdly late.
    let waits: Vec<u64> = exits.iter().zip(&spawns[1..]).map(|(e, s)| s - e).collect();
    for (wait, delay) in waits.iter().zip(&delays) {
        assert!(
            u128::from(*wait) >= *delay,
            "waited {wait} ms < delay {delay} ms: {waits:?}"
        );
        assert!(
            u128::from(*wait) < *delay + 1000,
            "waited {wait} ms for {delay} ms: {waits:?}"
        );
    }
    assert!(
        waits.windows(2).all(|w| w[1] > w[0]),
        "waits not growing: {waits:?}"
    );

    let st = sup.status().snapshot();
    let row = &st.services[0];
    assert_eq!(row.state, ServiceState::Failed);
    assert_eq!(row.restarts, 5);
    assert_eq!(row.pid, None);
    assert_eq!(
        row.last_error.as_deref(),
        Some("crash loop: 5 restarts within 60s; last exit: exit code 1")
    );
    // Failed means failed: nothing is restarted any more.
    let before = sup.events().len();
    sup.run_until(|_| false, Some(Instant::now() + Duration::from_millis(500)))
        .expect("loop");
    assert_eq!(sup.events().len(), before);
    sup.shutdown().expect("shutdown");
}

/// A service that logs start/stop to `log`, becomes ready by creating
/// `<name>.ready` after a moment, and stops on SIGTERM.
fn chain_service(dir: &Path, name: &str, after: &[&str]) -> ServiceSpec {
    let log = dir.join("order.log");
    let ready = dir.join(format!("{name}.ready"));
    let script = format!(
        "trap 'echo stop {name} >> {log}; exit 0' TERM; echo start {name} >> {log}; \
         sleep 0.2; touch {ready}; while :; do sleep 0.05; done",
        log = log.display(),
        ready = ready.display()
    );
    let mut spec = sh(name, &script);
    spec.after = after.iter().map(|s| s.to_string()).collect();
    spec.ready = Readiness::Path(ready);
    spec.stop_timeout = Duration::from_secs(5);
    spec
}

pub(super) fn scenario_dependencies(dir: &Path) {
    let sup = new_supervisor(Notifier::disabled());
    let status = sup.status().clone();
    let handle = sup.handle();
    // Listed out of order on purpose: the table orders them.
    let specs = vec![
        chain_service(dir, "c", &["b"]),
        chain_service(dir, "a", &[]),
        chain_service(dir, "b", &["a"]),
    ];
    let mut bringup = BringUp {
        services: specs,
        ..BringUp::new(Paths::under(dir), sup)
    };
    // Stop from another thread once ready, as SIGTERM would.
    let stopper = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status.snapshot().phase != Phase::Ready && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        handle.request_stop();
    });
    crate::supervisor::supervise(&mut bringup, vec![services_step(Duration::from_secs(15))])
        .expect("supervise");
    stopper.join().expect("stopper thread");

    let sup = &bringup.supervisor;
    let st = sup.status().snapshot();
    assert_eq!(st.phase, Phase::Stopped);
    assert!(st.ready_ms.is_some());
    assert_eq!(st.steps.len(), 1);
    assert_eq!(st.steps[0].state, StepState::Done, "{:?}", st.steps[0]);
    assert_eq!(st.steps[0].detail.as_deref(), Some("3 services ready"));
    assert!(
        st.services.iter().all(|s| s.state == ServiceState::Stopped),
        "{st:#?}"
    );

    let ev = sup.events();
    let spawned = |n| first_at(&ev, n, |k| matches!(k, EventKind::Spawned { .. }));
    let ready = |n| first_at(&ev, n, |k| *k == EventKind::Ready);
    let stop_sent = |n| first_at(&ev, n, |k| matches!(k, EventKind::StopSignal(_)));
    let stopped = |n| first_at(&ev, n, |k| *k == EventKind::Stopped);
    assert!(spawned("b") >= ready("a"), "{ev:#?}");
    assert!(spawned("c") >= ready("b"), "{ev:#?}");
    assert!(
        ready("a") >= spawned("a") + 150,
        "readiness waited for the file: {ev:#?}"
    );
    assert!(stop_sent("b") >= stopped("c"), "{ev:#?}");
    assert!(stop_sent("a") >= stopped("b"), "{ev:#?}");

    // The services' own view agrees.
    let log = std::fs::read_to_string(dir.join("order.log")).expect("order.log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        vec!["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    );
}

/// State and parent of a process from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces; fields after the last ')' are fixed.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(('Z', ppid)) = proc_stat(pid) {
            if ppid == me {
                out.push(pid);
            }
        }
    }
    out
}

pub(super) fn scenario_orphan(dir: &Path) {
    let mut sup = new_supervisor(Notifier::disabled());
    let pidfile = dir.join("grandchild.pid");
    let mut spec = sh(
        "daemonizer",
        &format!("sleep 30 & echo $! > {}; exit 0", pidfile.display()),
    );
    spec.restart = RestartPolicy::Never;
    sup.add_services(vec![spec]).expect("table");
    sup.start_services();
    let exit = sup
        .run_until(
            |s| s.services_in(ServiceState::Stopped).len() == 1,
            Some(Instant::now() + Duration::from_secs(10)),
        )
        .expect("loop");
    assert_eq!(exit, LoopExit::Condition, "{:#?}", sup.events());
    let grandchild = read_pid(&pidfile);

    // The service is gone; its child was reparented to us (the subreaper).
    let me = std::process::id() as i32;
    let (_, ppid) = proc_stat(grandchild.as_raw()).expect("grandchild alive");
    assert_eq!(ppid, me, "grandchild not reparented to the subreaper");

    kill(grandchild, Signal::SIGKILL).expect("kill grandchild");
    let gone = sup
        .run_until(
            |_| !Path::new(&format!("/proc/{grandchild}")).exists(),
            Some(Instant::now() + Duration::from_secs(5)),
        )
        .expect("loop");
    assert_eq!(
        gone,
        LoopExit::Condition,
        "grandchild {grandchild} was not reaped"
    );
    assert_eq!(zombie_children(), Vec::<i32>::new(), "zombies left");
    sup.shutdown().expect("shutdown");
    assert_eq!(
        zombie_children(),
        Vec::<i32>::new(),
        "zombies left after stop"
    );
}

pub(super) fn scenario_clean_child() {
    // Pollute what children could inherit: a blocked signal, an ignored
    // signal, an fd without CLOEXEC, an environment variable.
    // SAFETY: plain libc calls on values owned here; this helper process
    // runs nothing else.
    let leaked_fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        libc::dup(2)
    };
    assert!(leaked_fd > 2);
    std::env::set_var("NOTIFY_SOCKET", "/nonexistent/notify.sock");
    // `sleep` is exec'd directly, so /proc shows exactly what it inherited
    // (a shell would change its own mask while forking).
    let mut clean = ServiceSpec::new("clean", &["sleep", "30"]);
    clean.env = vec![("CUSTOM".into(), "yes".into())];
    let mut talker = sh("talker", "echo hello on stdout; echo hello on stderr >&2");
    talker.restart = RestartPolicy::Never;
    let mut sup = new_supervisor(Notifier::disabled());
    sup.add_services(vec![clean, talker]).expect("table");
    sup.start_services();
    let exit = sup
        .run_until(
            |s| {
                s.services_in(ServiceState::Running).len() == 1
                    && s.services_in(ServiceState::Stopped).len() == 1
            },
            Some(Instant::now() + Duration::from_secs(10)),
        )
        .expect("loop");
    assert_eq!(exit, LoopExit::Condition, "{:#?}", sup.status().snapshot());
    let st = sup.status().snapshot();
    let pid = st
        .services
        .iter()
        .find(|s| s.name == "clean")
        .and_then(|s| s.pid)
        .expect("pid");

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        field("SigBlk:"),
        "0000000000000000",
        "blocked signals inherited"
    );
    assert_eq!(
        field("SigIgn:"),
        "0000000000000000",
        "ignored signals inherited"
    );
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, vec!["0", "1", "2"], "inherited fds");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let mut env: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    env.sort();
    assert_eq!(
        env,
        vec![
            "CUSTOM=yes".to_string(),
            format!("PATH={}", crate::supervisor::spawn::SERVICE_PATH)
        ]
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // fields[2] = pgrp, fields[3] = session (after state and ppid).
    assert_eq!(fields[2], pid.to_string(), "own process group");
    assert_eq!(fields[3], pid.to_string(), "own session");

    sup.shutdown().expect("shutdown");
    // Output threads log until EOF; give them a moment to flush.
    std::thread::sleep(Duration::from_millis(200));
}

pub(super) fn scenario_sigterm(dir: &Path) {
    let notifier = Notifier::from_env();
    assert!(
        notifier.watchdog_interval().is_some(),
        "watchdog not enabled from env"
    );
    let sup = new_supervisor(notifier);
    let mut stubborn = sh(
        "stubborn",
        &format!(
            "trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done",
            dir.join("stubborn.pid").display()
        ),
    );
    stubborn.stop_timeout = Duration::from_millis(400);
    let mut polite = sh(
        "polite",
        &format!(
            "echo $$ > {}; exec sleep 60",
            dir.join("polite.pid").display()
        ),
    );
    polite.after = vec!["stubborn".into()];
    polite.stop_timeout = Duration::from_secs(5);
    // Ready once its pid file is there, so the parent can read it after READY=1.
    stubborn.ready = Readiness::Path(dir.join("stubborn.pid"));
    polite.ready = Readiness::Path(dir.join("polite.pid"));
    let mut bringup = BringUp {
        services: vec![polite, stubborn],
        ..BringUp::new(Paths::under(dir), sup)
    };
    // The parent sends SIGTERM to this process after READY=1.
    crate::supervisor::supervise(&mut bringup, vec![services_step(Duration::from_secs(15))])
        .expect("supervise");
    let ev = bringup.supervisor.events();
    let stopped = |n| first_at(&ev, n, |k| *k == EventKind::Stopped);
    let stop_sent = |n| first_at(&ev, n, |k| matches!(k, EventKind::StopSignal(_)));
    let killed = first_at(&ev, "stubborn", |k| *k == EventKind::Killed);
    assert!(stop_sent("stubborn") >= stopped("polite"), "{ev:#?}");
    assert!(
        killed >= stop_sent("stubborn") + 350,
        "SIGKILL before the timeout: {ev:#?}"
    );
    assert!(stopped("stubborn") < killed + 1000, "{ev:#?}");
    assert_eq!(bringup.supervisor.status().snapshot().phase, Phase::Stopped);
}

pub(super) fn scenario_bringup(dir: &Path) {
    use crate::supervisor::bringup::{run_steps, Step, StepError, StepOutcome};
    let sup = new_supervisor(Notifier::disabled());
    let mut bringup = BringUp::new(Paths::under(dir), sup);
    let steps = vec![
        Step::new("config", |b: &mut BringUp| {
            b.services.push(ServiceSpec::new("idle", &["sleep", "30"]));
            Ok(StepOutcome::Done("1 services configured".into()))
        }),
        Step::new("slow", |_: &mut BringUp| {
            std::thread::sleep(Duration::from_millis(50));
            Ok(StepOutcome::Done("waited".into()))
        }),
        Step::new("optional", |_: &mut BringUp| {
            Err(StepError::new("optional broke"))
        }),
        Step::new("na", |_: &mut BringUp| {
            Ok(StepOutcome::Skipped("not here".into()))
        }),
        Step::new("boom", |_: &mut BringUp| panic!("step bug")),
        services_step(Duration::from_secs(10)),
        Step::new("must", |_: &mut BringUp| Err(StepError::new("must broke"))).required(),
        Step::new("never", |_: &mut BringUp| {
            panic!("runs after a required failure")
        }),
    ];
    let phase = run_steps(&mut bringup, steps);
    assert_eq!(phase, Phase::Maintenance);
    let st = bringup.supervisor.status().snapshot();
    let states: Vec<(&str, StepState)> = st
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("config", StepState::Done),
            ("slow", StepState::Done),
            ("optional", StepState::Failed),
            ("na", StepState::Skipped),
            ("boom", StepState::Failed),
            ("services", StepState::Done),
            ("must", StepState::Failed),
            ("never", StepState::Skipped),
        ]
    );
    assert_eq!(st.steps[0].detail.as_deref(), Some("1 services configured"));
    assert_eq!(st.steps[2].error.as_deref(), Some("optional broke"));
    assert_eq!(st.steps[3].detail.as_deref(), Some("not here"));
    assert_eq!(st.steps[4].error.as_deref(), Some("step boom panicked"));
    assert_eq!(
        st.steps[7].detail.as_deref(),
        Some("required step must failed")
    );
    let slow = &st.steps[1];
    assert!(slow.duration_ms.unwrap_or(0) >= 50, "{slow:?}");
    // Steps are timed on the supervisor's clock, in order.
    let starts: Vec<u64> = st.steps[..7]
        .iter()
        .map(|s| s.started_ms.expect("started"))
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    assert!(st.steps[7].started_ms.is_none());
    assert_eq!(st.phase, Phase::Maintenance);
    assert!(st.ready_ms.is_some());
    assert_eq!(st.last_error.as_deref(), Some("must: must broke"));
    assert_eq!(st.services.len(), 1);
    assert_eq!(st.services[0].state, ServiceState::Running);
    bringup.supervisor.shutdown().expect("shutdown");
    assert_eq!(
        bringup.supervisor.status().snapshot().services[0].state,
        ServiceState::Stopped
    );
}
