//! Tests of the health verdict.

use super::*;
use crate::supervisor::status::{ServiceStatus, StepStatus};

fn step(name: &str, state: StepState) -> StepStatus {
    StepStatus {
        name: name.into(),
        state,
        started_ms: Some(0),
        duration_ms: Some(1),
        detail: Some("d".into()),
        error: (state == StepState::Failed).then(|| format!("{name} broke")),
    }
}

fn status(steps: &[(&str, StepState)]) -> Status {
    let mut s = Status::new("pid1");
    s.steps = steps.iter().map(|(n, st)| step(n, *st)).collect();
    s
}

#[test]
fn healthy_needs_config_applied_and_nothing_failed() {
    use StepState::*;
    let good = [
        ("config", Done),
        ("network", Done),
        ("vfio", Skipped),
        ("services", Done),
        ("hostname", Failed), // not a health step
    ];
    assert_eq!(unhealthy(&status(&good)), None);
    let cases: [(&[(&str, StepState)], &str); 4] = [
        (&[("config", Skipped)], "no config applied"),
        (&[("config", Failed)], "config not applied: config broke"),
        (
            &[("config", Done), ("network", Failed)],
            "step network failed: network broke",
        ),
        (&[], "no config step ran"),
    ];
    for (steps, want) in cases {
        let got = unhealthy(&status(steps)).unwrap();
        assert!(got.contains(want), "{steps:?}: {got}");
    }
    let mut s = status(&good);
    s.config_refused = Some("host.toml:3:1: unknown key".into());
    assert!(unhealthy(&s)
        .unwrap()
        .contains("config refused by this version"));
    let mut s = status(&good);
    s.services.push(ServiceStatus {
        name: "exporter".into(),
        state: ServiceState::Failed,
        pid: None,
        restarts: 5,
        last_exit: None,
        last_error: Some("crash loop".into()),
    });
    assert_eq!(
        unhealthy(&s).unwrap(),
        "service exporter is Failed: crash loop"
    );
}

#[test]
fn the_operators_command_decides_too() {
    assert_eq!(command_fails(&[]), None);
    assert_eq!(command_fails(&["true".into()]), None);
    assert!(command_fails(&["false".into()])
        .unwrap()
        .contains("health command false failed"));
    assert!(command_fails(&["/nonexistent/check".into()])
        .unwrap()
        .contains("cannot start"));
}

#[test]
fn boot_image_status_reads_back_without_optional_fields() {
    let s: BootImageStatus =
        serde_json::from_str(r#"{"media":"iso","state":"single-version","summary":"x"}"#).unwrap();
    assert_eq!(s.tries_left, None);
    assert_eq!(s.state, "single-version");
}

#[test]
fn health_and_watchdog_settings_are_read_from_host_toml() {
    let host = r#"schema = 1
hostname = "h"
[health]
timeout = "90s"
on_failure = "stay"
command = ["/usr/local/bin/check", "--quick"]
[watchdog]
timeout = "15s"
"#;
    let c = crate::config::from_strs(host, &[]).unwrap();
    assert_eq!(c.host.health.timeout, Duration::from_secs(90));
    assert_eq!(c.host.health.on_failure, HealthFailure::Stay);
    assert_eq!(c.host.health.command, ["/usr/local/bin/check", "--quick"]);
    assert_eq!(c.host.watchdog.timeout, Duration::from_secs(15));
    let c = crate::config::from_strs("schema = 1\nhostname = \"h\"\n", &[]).unwrap();
    assert_eq!(c.host.health, crate::config::HealthConfig::default());
    assert_eq!(c.host.watchdog.timeout, Duration::from_secs(60));
    for bad in [
        "[watchdog]\ntimeout = \"2h\"\n",
        "[health]\non_failure = \"explode\"\n",
        "[watchdog]\ntimeuot = \"5s\"\n",
    ] {
        let text = format!("schema = 1\nhostname = \"h\"\n{bad}");
        assert!(crate::config::from_strs(&text, &[]).is_err(), "{bad}");
    }
}

#[test]
fn the_watchdog_timeout_is_published_from_the_config_and_follows_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = BringUp::for_tests(
        tmp.path(),
        "schema = 1\nhostname = \"h\"\n[watchdog]\ntimeout = \"15s\"\n",
    );
    std::fs::create_dir_all(&b.paths.run).unwrap();
    let file = b.paths.run.join(WATCHDOG_TIMEOUT_FILE);
    assert!(
        matches!(watchdog_step(&mut b), Ok(StepOutcome::Done(d)) if d.contains("15 s published"))
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "15\n");
    // `config apply` without [watchdog]: back to the default.
    b.config = Some(crate::config::from_strs("schema = 1\nhostname = \"h\"\n", &[]).unwrap());
    watchdog_step(&mut b).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "60\n");
    assert!(matches!(watchdog_step(&mut b), Ok(StepOutcome::Done(d)) if d.contains("unchanged")));
}

#[test]
fn each_trial_try_records_its_own_outcome() {
    // GRUB counts the first try down to TRIES - 1 before booting it.
    assert_eq!(try_number(2), 1);
    assert_eq!(try_number(0), 3);
    // A try that hangs leaves its start's record: not an earlier try's reason.
    assert_eq!(
        no_verdict(0),
        "try 3 of 3 never reported health (a hang, a kernel panic or a watchdog reset)"
    );
    assert_eq!(
        try_failed(1, "health command /bin/false failed"),
        "try 2 of 3: health command /bin/false failed"
    );
}
