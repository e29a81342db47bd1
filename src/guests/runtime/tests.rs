//! The guest runtime against libvirt's `test:///default` driver: the real
//! [`Libvirt`] implementation and the real engine, with a recording
//! wrapper that can also inject a start failure, a guest that ignores ACPI,
//! or a slow call.
//!
//! `test:///default` is shared by every connection of the process, so each
//! test uses guest names of its own.

use super::backend::Backend;
use super::hypervisor::{DomainInfo, DomainState, Hypervisor, StopReason};
use super::libvirt::Libvirt;
use super::*;
use crate::config::Config;
use crate::guests::env::{DomainEnv, DomainType};
use crate::supervisor::backoff::{Backoff, CrashLimit};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TEST_URI: &str = "test:///default";

/// The real libvirt client, recording every changing call.
struct Recorder {
    inner: Libvirt,
    calls: Mutex<Vec<String>>,
    fail_start: Mutex<HashSet<String>>,
    ignore_shutdown: Mutex<HashSet<String>>,
    /// Guests that miss the first ACPI press (still booting) only.
    miss_first_press: Mutex<HashSet<String>>,
    slow: Mutex<Option<Duration>>,
    /// The device XML of each `update_device`: libvirt's test driver has
    /// no device updates (the image scenario changes real media).
    updates: Mutex<Vec<String>>,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Libvirt::new(TEST_URI, None),
            calls: Mutex::new(Vec::new()),
            fail_start: Mutex::new(HashSet::new()),
            ignore_shutdown: Mutex::new(HashSet::new()),
            miss_first_press: Mutex::new(HashSet::new()),
            updates: Mutex::new(Vec::new()),
            slow: Mutex::new(None),
        })
    }
    fn log(&self, call: &str, name: &str) {
        self.calls.lock().unwrap().push(format!("{call} {name}"));
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn index(&self, call: &str) -> usize {
        self.calls()
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no call {call:?} in {:?}", self.calls()))
    }
}

impl Hypervisor for Recorder {
    fn define(&self, name: &str, xml: &str) -> Result<(), RuntimeError> {
        self.log("define", name);
        self.inner.define(name, xml)
    }
    fn undefine(&self, name: &str) -> Result<(), RuntimeError> {
        self.log("undefine", name);
        self.inner.undefine(name)
    }
    fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.log("start", name);
        if self.fail_start.lock().unwrap().contains(name) {
            return Err(RuntimeError::Libvirt {
                op: "start",
                guest: name.into(),
                message: "injected failure".into(),
            });
        }
        self.inner.start(name)
    }
    fn shutdown(&self, name: &str) -> Result<(), RuntimeError> {
        self.log("shutdown", name);
        if self.ignore_shutdown.lock().unwrap().contains(name) {
            return Ok(());
        }
        if self.miss_first_press.lock().unwrap().remove(name) {
            return Ok(());
        }
        self.inner.shutdown(name)
    }
    fn destroy(&self, name: &str) -> Result<(), RuntimeError> {
        self.log("destroy", name);
        self.inner.destroy(name)
    }
    fn state(&self, name: &str) -> Result<Option<DomainState>, RuntimeError> {
        self.inner.state(name)
    }
    fn list(&self) -> Result<Vec<DomainInfo>, RuntimeError> {
        let slow = *self.slow.lock().unwrap();
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
        self.inner.list()
    }
    fn managed(&self, name: &str) -> Result<bool, RuntimeError> {
        self.inner.managed(name)
    }
    fn update_device(&self, name: &str, xml: &str) -> Result<(), RuntimeError> {
        self.log("update_device", name);
        // The test driver says "not supported": record what was asked.
        let unsupported = self.inner.update_device(name, xml).unwrap_err();
        assert!(
            unsupported.to_string().contains("not supported"),
            "{unsupported}"
        );
        self.updates.lock().unwrap().push(xml.to_string());
        Ok(())
    }
}

fn quick_policy() -> Policy {
    Policy {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            factor: 2.0,
        },
        crash_limit: CrashLimit {
            max_restarts: 2,
            window: Duration::from_secs(60),
        },
        poll: Duration::from_millis(50),
        call_timeout: Duration::from_secs(10),
        acpi_repeat: Duration::from_millis(200),
        // test:///default is shared by the tests running side by side.
        forget_orphans: false,
    }
}

/// A config with guests given as (name, extra TOML lines).
fn config(guests: &[(&str, &str)]) -> Config {
    let files: Vec<(String, String)> = guests
        .iter()
        .map(|(name, extra)| {
            (
                format!("{name}.toml"),
                format!("schema = 1\nmemory = \"64MiB\"\n{extra}\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    crate::config::from_strs("schema = 1\nhostname = \"h\"\n", &refs)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn handle(rec: &Arc<Recorder>) -> GuestHandle {
    let backend = Backend::new(DomainEnv::new(DomainType::Test), None);
    GuestHandle::new(rec.clone(), backend, quick_policy())
}

fn status(h: &GuestHandle, name: &str) -> GuestStatus {
    h.statuses()
        .into_iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no guest {name}"))
}

/// Run turns until `cond` holds (at most 10 s).
fn turn_until(h: &GuestHandle, what: &str, cond: impl Fn(&GuestHandle) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond(h) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            h.statuses()
        );
        h.turn().unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Remove this test's domains from the shared driver.
fn cleanup(rec: &Recorder, names: &[&str]) {
    for n in names {
        let _ = rec.inner.destroy(n);
        let _ = rec.inner.undefine(n);
    }
}

#[test]
fn guests_start_in_after_order_and_non_autostart_ones_are_only_defined() {
    let rec = Recorder::new();
    let names = ["ord-a", "ord-b", "ord-c", "ord-d"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    // ord-a runs after ord-c; ord-d is defined but not started.
    let c = config(&[
        ("ord-a", "after = [\"ord-c\"]"),
        ("ord-b", ""),
        ("ord-c", ""),
        ("ord-d", "autostart = false"),
    ]);
    let report = h.reconcile(&c, false).unwrap();
    assert_eq!(report.added, names);
    assert!(h.settle(Duration::from_secs(10)), "{:?}", h.statuses());
    assert!(rec.index("start ord-c") < rec.index("start ord-a"));
    for n in ["ord-a", "ord-b", "ord-c"] {
        assert_eq!(status(&h, n).state, GuestState::Running, "{n}");
        assert_eq!(rec.inner.state(n).unwrap(), Some(DomainState::Running));
    }
    assert_eq!(status(&h, "ord-d").state, GuestState::Stopped);
    assert_eq!(
        rec.inner.state("ord-d").unwrap(),
        Some(DomainState::ShutOff(StopReason::Other))
    );
    assert!(!rec.calls().contains(&"start ord-d".to_string()));
    let d = status(&h, "ord-d");
    assert_eq!(
        (d.memory.as_str(), d.vcpus, d.autostart),
        ("64MiB", 1, false)
    );
    cleanup(&rec, &names);
}

#[test]
fn a_guest_whose_prerequisite_failed_does_not_start_and_says_why() {
    let rec = Recorder::new();
    let names = ["pre-a", "pre-b"];
    cleanup(&rec, &names);
    rec.fail_start.lock().unwrap().insert("pre-a".into());
    let h = handle(&rec);
    let c = config(&[
        ("pre-a", "restart = \"never\""),
        ("pre-b", "after = [\"pre-a\"]"),
    ]);
    h.reconcile(&c, false).unwrap();
    assert!(h.settle(Duration::from_secs(10)), "{:?}", h.statuses());
    let a = status(&h, "pre-a");
    assert_eq!(a.state, GuestState::Failed);
    assert!(a.last_error.unwrap().contains("injected failure"));
    let b = status(&h, "pre-b");
    assert_eq!(b.state, GuestState::Failed);
    assert!(
        b.last_error
            .as_deref()
            .unwrap()
            .contains("prerequisite pre-a failed"),
        "{b:?}"
    );
    assert!(!rec.calls().contains(&"start pre-b".to_string()));
    // Once the prerequisite is fixed and started, the dependent follows.
    rec.fail_start.lock().unwrap().clear();
    h.start("pre-a").unwrap();
    turn_until(&h, "pre-b running", |h| {
        status(h, "pre-b").state == GuestState::Running
    });
    cleanup(&rec, &names);
}

#[test]
fn restart_policy_decides_after_a_crash_or_a_clean_shutdown() {
    let rec = Recorder::new();
    let names = ["pol-always", "pol-fail", "pol-never"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    let c = config(&[
        ("pol-always", "restart = \"always\""),
        ("pol-fail", "restart = \"on-failure\""),
        ("pol-never", "restart = \"never\""),
    ]);
    h.reconcile(&c, false).unwrap();
    assert!(h.settle(Duration::from_secs(10)));

    // Clean shutdown from inside: only "always" comes back.
    rec.inner.shutdown("pol-always").unwrap();
    rec.inner.shutdown("pol-fail").unwrap();
    turn_until(&h, "restart of pol-always", |h| {
        status(h, "pol-always").restarts == 1
            && status(h, "pol-always").state == GuestState::Running
    });
    turn_until(&h, "pol-fail stopped", |h| {
        status(h, "pol-fail").state == GuestState::Stopped
    });

    // A crash (forced off behind walden's back): on-failure restarts, never fails.
    h.start("pol-fail").unwrap();
    turn_until(&h, "pol-fail running", |h| {
        status(h, "pol-fail").state == GuestState::Running
    });
    rec.inner.destroy("pol-fail").unwrap();
    rec.inner.destroy("pol-never").unwrap();
    turn_until(&h, "restart of pol-fail", |h| {
        status(h, "pol-fail").restarts == 1 && status(h, "pol-fail").state == GuestState::Running
    });
    turn_until(&h, "pol-never failed", |h| {
        status(h, "pol-never").state == GuestState::Failed
    });
    assert!(status(&h, "pol-never")
        .last_error
        .unwrap()
        .contains("restart = never"));
    cleanup(&rec, &names);
}

#[test]
fn a_crash_loop_stops_after_the_limit_and_status_says_so() {
    let rec = Recorder::new();
    let names = ["loop-a"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    h.reconcile(&config(&[("loop-a", "restart = \"always\"")]), false)
        .unwrap();
    assert!(h.settle(Duration::from_secs(10)));
    // The limit is 2 restarts: the third crash is the loop.
    for round in 1..=2 {
        rec.inner.destroy("loop-a").unwrap();
        turn_until(&h, "restart", |h| {
            let s = status(h, "loop-a");
            s.restarts == round && s.state == GuestState::Running
        });
    }
    rec.inner.destroy("loop-a").unwrap();
    turn_until(&h, "failed", |h| {
        status(h, "loop-a").state == GuestState::Failed
    });
    let s = status(&h, "loop-a");
    assert!(s.last_error.unwrap().starts_with("crash loop: 2 restarts"));
    // Stays off.
    for _ in 0..5 {
        h.turn().unwrap();
    }
    assert_eq!(
        rec.inner.state("loop-a").unwrap(),
        Some(DomainState::ShutOff(StopReason::Destroyed))
    );
    // An explicit start forgets the loop.
    h.start("loop-a").unwrap();
    turn_until(&h, "running again", |h| {
        status(h, "loop-a").state == GuestState::Running
    });
    cleanup(&rec, &names);
}

#[test]
fn reconcile_adds_removes_and_marks_changed_guests() {
    let rec = Recorder::new();
    let names = ["rec-a", "rec-b", "rec-c"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    h.reconcile(&config(&[("rec-a", ""), ("rec-b", "")]), false)
        .unwrap();
    assert!(h.settle(Duration::from_secs(10)));
    let starts_of_a = |r: &Recorder| r.calls().iter().filter(|c| *c == "start rec-a").count();
    assert_eq!(starts_of_a(&rec), 1);

    // Same config again: nothing changes at all.
    let before = rec.calls().len();
    let report = h
        .reconcile(&config(&[("rec-a", ""), ("rec-b", "")]), false)
        .unwrap();
    assert_eq!(report.unchanged, ["rec-a", "rec-b"]);
    h.turn().unwrap();
    assert_eq!(rec.calls().len(), before, "{:?}", rec.calls());

    // Add rec-c, remove rec-b, leave rec-a alone.
    let report = h
        .reconcile(&config(&[("rec-a", ""), ("rec-c", "")]), false)
        .unwrap();
    assert_eq!(
        (report.added, report.removed, report.unchanged),
        (
            vec!["rec-c".to_string()],
            vec!["rec-b".to_string()],
            vec!["rec-a".to_string()]
        )
    );
    turn_until(&h, "rec-b gone, rec-c running", |h| {
        h.statuses().iter().all(|g| g.name != "rec-b")
            && status(h, "rec-c").state == GuestState::Running
    });
    assert_eq!(
        rec.inner.state("rec-b").unwrap(),
        None,
        "rec-b is undefined"
    );
    assert!(rec.index("shutdown rec-b") < rec.index("undefine rec-b"));
    assert_eq!(starts_of_a(&rec), 1, "rec-a untouched");

    // Change rec-a: redefined, restart pending, still running the old one.
    let changed = config(&[("rec-a", "vcpus = 2"), ("rec-c", "")]);
    let report = h.reconcile(&changed, false).unwrap();
    assert_eq!(report.changed, ["rec-a"]);
    h.turn().unwrap();
    let a = status(&h, "rec-a");
    assert!(a.restart_pending && a.state == GuestState::Running, "{a:?}");
    assert_eq!(starts_of_a(&rec), 1);

    // An explicit restart applies it.
    h.restart("rec-a").unwrap();
    turn_until(&h, "rec-a restarted", |h| {
        let a = status(h, "rec-a");
        !a.restart_pending && a.state == GuestState::Running
    });
    assert_eq!(starts_of_a(&rec), 2);
    assert_eq!(status(&h, "rec-a").vcpus, 2);

    // apply --restart-changed restarts at once.
    let report = h
        .reconcile(&config(&[("rec-a", "vcpus = 3"), ("rec-c", "")]), true)
        .unwrap();
    assert_eq!(report.restarted, ["rec-a"]);
    turn_until(&h, "rec-a restarted again", |h| {
        let a = status(h, "rec-a");
        !a.restart_pending && a.state == GuestState::Running && a.vcpus == 3
    });
    assert_eq!(starts_of_a(&rec), 3);
    cleanup(&rec, &names);
}

#[test]
fn host_shutdown_stops_dependents_first_and_forces_off_after_the_timeout() {
    let rec = Recorder::new();
    let names = ["sd-a", "sd-b", "sd-c"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    // sd-b needs sd-a; sd-c ignores ACPI and is forced off after 1 s.
    rec.ignore_shutdown.lock().unwrap().insert("sd-c".into());
    h.reconcile(
        &config(&[
            ("sd-a", ""),
            ("sd-b", "after = [\"sd-a\"]"),
            ("sd-c", "shutdown_timeout = \"1s\""),
        ]),
        false,
    )
    .unwrap();
    assert!(h.settle(Duration::from_secs(10)));
    h.spawn_monitor().unwrap();
    let t0 = Instant::now();
    let msg = h.shutdown_all(Duration::from_secs(20));
    h.stop_monitor();
    assert_eq!(msg, "all guests are off");
    assert!(t0.elapsed() >= Duration::from_secs(1));
    assert!(rec.index("shutdown sd-b") < rec.index("shutdown sd-a"));
    assert!(rec.index("shutdown sd-c") < rec.index("destroy sd-c"));
    assert!(!rec.calls().contains(&"destroy sd-a".to_string()));
    for n in names {
        assert_eq!(status(&h, n).state, GuestState::Stopped, "{n}");
        assert!(!rec.inner.state(n).unwrap().unwrap().is_active());
    }
    // Nothing restarts after a host shutdown, and requests are refused.
    assert!(h.start("sd-a").is_err());
    cleanup(&rec, &names);
}

#[test]
fn a_guest_that_missed_the_power_button_gets_it_again_before_being_forced_off() {
    let rec = Recorder::new();
    let names = ["late-a"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    // Its OS was still booting when the first press came.
    rec.miss_first_press.lock().unwrap().insert("late-a".into());
    h.reconcile(&config(&[("late-a", "shutdown_timeout = \"30s\"")]), false)
        .unwrap();
    assert!(h.settle(Duration::from_secs(10)));
    h.spawn_monitor().unwrap();
    let msg = h.shutdown_all(Duration::from_secs(20));
    h.stop_monitor();
    assert_eq!(msg, "all guests are off");
    let presses = rec
        .calls()
        .iter()
        .filter(|c| *c == "shutdown late-a")
        .count();
    assert!(presses >= 2, "pressed {presses} times: {:?}", rec.calls());
    assert!(
        !rec.calls().contains(&"destroy late-a".to_string()),
        "forced off instead of pressed again: {:?}",
        rec.calls()
    );
    cleanup(&rec, &names);
}

#[test]
fn requests_name_unknown_guests_and_commands_answer_with_a_message() {
    let rec = Recorder::new();
    cleanup(&rec, &["cmd-a"]);
    let h = handle(&rec);
    h.reconcile(&config(&[("cmd-a", "autostart = false")]), false)
        .unwrap();
    let err = h.stop("nope", false).unwrap_err().to_string();
    assert!(err.contains("no guest named \"nope\""), "{err}");
    let v = h.command("start", "cmd-a", None).unwrap();
    assert_eq!(v["message"], "starting cmd-a");
    assert!(h
        .command("pause", "cmd-a", None)
        .unwrap_err()
        .contains("unknown guest operation"));
    turn_until(&h, "cmd-a running", |h| {
        status(h, "cmd-a").state == GuestState::Running
    });
    let v = h.command("stop", "cmd-a", None).unwrap();
    assert!(v["message"].as_str().unwrap().starts_with("stopping cmd-a"));
    turn_until(&h, "cmd-a stopped", |h| {
        status(h, "cmd-a").state == GuestState::Stopped
    });
    cleanup(&rec, &["cmd-a"]);
}

#[test]
fn stop_force_destroys_at_once_without_the_acpi_shutdown() {
    let rec = Recorder::new();
    let names = ["force-a"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    // It would ignore the button for its whole (long) shutdown_timeout.
    rec.ignore_shutdown.lock().unwrap().insert("force-a".into());
    h.reconcile(&config(&[("force-a", "shutdown_timeout = \"10m\"")]), false)
        .unwrap();
    assert!(h.settle(Duration::from_secs(10)));
    // An ACPI stop first (pending for 10 minutes), then --force on top.
    h.command("stop", "force-a", None).unwrap();
    h.turn().unwrap();
    let v = h.command("force-stop", "force-a", None).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("forcing force-a off"),
        "{v}"
    );
    turn_until(&h, "force-a stopped", |h| {
        status(h, "force-a").state == GuestState::Stopped
    });
    assert!(!rec.inner.state("force-a").unwrap().unwrap().is_active());
    let calls = rec.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "destroy force-a").count(),
        1,
        "{calls:?}"
    );
    // Not restarted: a stop, not a crash.
    h.turn().unwrap();
    assert_eq!(status(&h, "force-a").state, GuestState::Stopped);
    cleanup(&rec, &names);
}

#[test]
fn a_hung_libvirt_call_times_out_instead_of_blocking() {
    let rec = Recorder::new();
    *rec.slow.lock().unwrap() = Some(Duration::from_secs(3));
    let timed = Timed::new(rec.clone(), Duration::from_millis(200));
    let t0 = Instant::now();
    let err = timed.list().unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("within 1 s"), "{err}");
}

#[test]
fn an_unreachable_libvirt_is_an_error_not_a_hang() {
    let hv = Libvirt::new("test:///nonexistent/walden-test.xml", None);
    let err = hv.list().unwrap_err().to_string();
    assert!(
        err.starts_with("cannot connect to libvirt at test:///nonexistent"),
        "{err}"
    );
}

#[test]
fn a_definition_left_from_a_removed_guest_file_is_forgotten_and_hand_made_ones_stay() {
    // A private test driver: the sweep looks at every domain it has.
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node.xml");
    std::fs::write(&node, "<node></node>\n").unwrap();
    let hv: Arc<dyn Hypervisor> =
        Arc::new(Libvirt::new(&format!("test://{}", node.display()), None));
    let backend = || Backend::new(DomainEnv::new(DomainType::Test), None);
    let policy = Policy {
        forget_orphans: true,
        ..quick_policy()
    };
    // walden defined orph-a and orph-b, then stopped (the box powered off).
    let before = GuestHandle::new(hv.clone(), backend(), policy);
    let c = config(&[
        ("orph-a", "autostart = false"),
        ("orph-b", "autostart = false"),
    ]);
    before.reconcile(&c, false).unwrap();
    // Someone defined a domain by hand with virsh.
    hv.define(
        "by-hand",
        "<domain type='test'><name>by-hand</name><memory>65536</memory>\
         <os><type>hvm</type></os></domain>",
    )
    .unwrap();
    // orph-b.toml was deleted from the config disk offline; next boot:
    let after = GuestHandle::new(hv.clone(), backend(), policy);
    let report = after
        .reconcile(&config(&[("orph-a", "autostart = false")]), false)
        .unwrap();
    assert_eq!(report.removed, ["orph-b"], "{report}");
    let names: Vec<String> = hv.list().unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["by-hand", "orph-a"]);
}

#[test]
fn a_guest_held_by_a_missing_device_waits_and_its_dependents_wait_for_it() {
    let rec = Recorder::new();
    let names = ["held-a", "held-b"];
    cleanup(&rec, &names);
    let h = handle(&rec);
    // The [[vfio]] entry selected no device: held-a's PCI label resolves to
    // nothing, so its domain cannot even be rendered.
    let c = crate::config::from_strs(
        "schema = 1\nhostname = \"h\"\n[[vfio]]\nid = \"8086:1533\"\nlabel = \"nic\"\n",
        &[
            (
                "held-a.toml",
                "schema = 1\nmemory = \"64MiB\"\n[[pci]]\nlabel = \"nic\"\n",
            ),
            (
                "held-b.toml",
                "schema = 1\nmemory = \"64MiB\"\nafter = [\"held-a\"]\n",
            ),
        ],
    )
    .unwrap();
    let why = "PCI passthrough: no PCI device with id 8086:1533 on this machine";
    h.set_host_blocks(
        "vfio",
        BTreeMap::from([("held-a".to_string(), why.to_string())]),
    );
    let report = h.reconcile(&c, false).unwrap();
    assert_eq!(report.held, ["held-a"], "{report}");
    assert!(report.errors.is_empty(), "{report}");
    assert!(h.settle(Duration::from_secs(10)), "{:?}", h.statuses());
    let a = status(&h, "held-a");
    assert_eq!(
        (a.state, a.last_error.as_deref()),
        (GuestState::Waiting, Some(why))
    );
    let b = status(&h, "held-b");
    assert_eq!(b.state, GuestState::Waiting, "{b:?}");
    assert!(
        b.last_error
            .as_deref()
            .is_some_and(|e| e.contains("held-a")),
        "{b:?}"
    );
    assert!(
        !rec.calls().iter().any(|c| c.starts_with("start ")),
        "{:?}",
        rec.calls()
    );
    cleanup(&rec, &names);
}

#[test]
fn eject_and_insert_change_a_running_guests_cdrom_and_refuse_what_cannot_work() {
    let rec = Recorder::new();
    let names = ["media-a", "media-b"];
    cleanup(&rec, &names);
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one.iso"), tmp.path().join("two.iso"));
    std::fs::write(&one, b"CD001").unwrap();
    std::fs::write(&two, b"CD001").unwrap();
    let h = handle(&rec);
    let a = format!("[[cdrom]]\npath = \"{}\"", one.display());
    h.reconcile(
        &config(&[("media-a", &a), ("media-b", "autostart = false")]),
        false,
    )
    .unwrap();
    let err = h.command("eject", "media-a", None).unwrap_err();
    assert!(err.contains("not running"), "{err}");
    turn_until(&h, "media-a running", |h| {
        status(h, "media-a").state == GuestState::Running
    });
    let err = h.command("eject", "media-b", None).unwrap_err();
    assert!(err.contains("no CD-ROM drive"), "{err}");
    let err = h
        .command("insert", "media-a", Some("/nonexistent/x.iso"))
        .unwrap_err();
    assert!(err.contains("not an ISO file"), "{err}");
    assert!(h.command("insert", "media-a", None).is_err());
    assert!(rec.updates.lock().unwrap().is_empty());

    let v = h.command("eject", "media-a", None).unwrap();
    assert!(v["message"].as_str().unwrap().starts_with("ejected"), "{v}");
    let two_s = two.display().to_string();
    let v = h.command("insert", "media-a", Some(&two_s)).unwrap();
    assert!(
        v["message"].as_str().unwrap().starts_with("inserted"),
        "{v}"
    );
    let updates = rec.updates.lock().unwrap().clone();
    assert_eq!(updates.len(), 2, "{updates:?}");
    // The drive as the domain XML names it, empty, then with the new ISO.
    for u in &updates {
        assert!(
            u.contains("device='cdrom'") && u.contains("<target dev='sda' bus='sata'/>"),
            "{u}"
        );
    }
    assert!(!updates[0].contains("<source"), "{}", updates[0]);
    assert!(
        updates[1].contains(&format!("<source file='{two_s}'/>")),
        "{}",
        updates[1]
    );
    cleanup(&rec, &names);
}
