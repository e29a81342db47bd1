//! One measured boot: power-on -> every guest's marker -> memory line ->
//! (walden) status -> power button -> QEMU exit.

use crate::hosts::{self, BaselineRoot, Case, HostKind};
use anyhow::{bail, Context};
use qemu_tests::{expect, Machine, TestEnv};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Power-on to the last guest's marker, at most: four TCG guests in a TCG
/// host took 440 s on an idle machine here and over 900 s with a load of 4.
const GUESTS_TIMEOUT: Duration = Duration::from_secs(1500);
/// Last marker to the observer's memory line (it waits 10 s itself).
const MEM_TIMEOUT: Duration = Duration::from_secs(120);
/// Power button to QEMU exit, at most (guests get 60 s each, in parallel).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);
/// Console lines that end a run at once: walden gave up on its guests.
const GIVE_UP: &[&str] = &["[step=guests] failed"];
/// A host CPU stuck this long in its kernel (the soft-lockup watchdog's
/// "stuck for N s") does not come back: seen once here under TCG, with a
/// nested QEMU starting; the run would otherwise sit out GUESTS_TIMEOUT.
const LOCKUP_GIVE_UP_S: u64 = 120;
/// A host console silent this long while guests boot has hung: the guests'
/// serial logs are copied to it, and nested kernels print every few seconds.
/// Seen once here under TCG (nothing after libvirtd's start for 25 min).
const SILENT_GIVE_UP: Duration = Duration::from_secs(600);
/// How often the console is scanned for markers.
const POLL: Duration = Duration::from_millis(100);

/// What one boot measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Which host.
    pub host: HostKind,
    /// How many guests.
    pub guests: usize,
    /// Run index within its case.
    pub index: usize,
    /// Seconds from power-on to each guest's marker on the host console.
    pub guest_up_s: BTreeMap<String, f64>,
    /// Seconds from power-on to the last marker.
    pub all_guests_s: f64,
    /// walden: seconds from power-on to "walden: ready in".
    pub host_ready_s: Option<f64>,
    /// The observer's BENCH-MEM fields (KiB).
    pub mem: BTreeMap<String, u64>,
    /// The host's whole /proc/meminfo at the same moment (BENCH-MEMINFO, KiB).
    pub meminfo: BTreeMap<String, u64>,
    /// walden: `walden status --json` once the guests were up.
    pub status: Option<Value>,
    /// Seconds from the power button to QEMU's exit.
    pub shutdown_s: f64,
    /// Whether every guest printed GUEST-DOWN (ACPI shutdown) before the
    /// host powered off, and QEMU exited with success.
    pub clean_shutdown: bool,
    /// What was not clean.
    pub shutdown_notes: Vec<String>,
    /// The run's console log.
    pub console_log: String,
}

/// Boot `kind` with `case` once and measure it.
pub fn run(
    kind: HostKind,
    case: &Case,
    baseline: &BaselineRoot,
    index: usize,
) -> anyhow::Result<RunResult> {
    let name = format!("bench-{}-{}g-{index}", kind.as_str(), case.guests.len());
    let env = TestEnv::with_image(&name)?
        .context("no walden image: run `make image` first (make bench does)")?;
    let mut m = hosts::machine(&env, kind, case, baseline)?.start()?;
    let t0 = Instant::now();
    m.qmp("cont", None).context("power on (QMP cont)")?;
    let log = m.console_log().display().to_string();
    let result = measure(&mut m, kind, case, index, t0, &log);
    if result.is_err() {
        m.console().print_tail();
    }
    result.with_context(|| format!("{name} (console {log})"))
}

fn measure(
    m: &mut Machine,
    kind: HostKind,
    case: &Case,
    index: usize,
    t0: Instant,
    log: &str,
) -> anyhow::Result<RunResult> {
    let markers: Vec<(String, String)> = case
        .guests
        .iter()
        .map(|g| (g.clone(), format!("guest-log: {}", expect::guest_up(g))))
        .collect();
    let mut guest_up_s = BTreeMap::new();
    let mut host_ready_s = None;
    let mut silence = Silence::new(t0);
    while guest_up_s.len() < markers.len() {
        let text = m.console().text();
        let now = t0.elapsed().as_secs_f64();
        let quiet = silence.after(text.len(), Instant::now());
        if quiet > qemu_tests::scaled(SILENT_GIVE_UP) {
            let state = m
                .qmp("query-status", None)
                .map(|v| v["status"].as_str().unwrap_or("?").to_string())
                .unwrap_or_else(|e| format!("unknown ({e})"));
            // Whether walden still answers tells a frozen host from a stuck step.
            let walden = match kind {
                HostKind::Walden => match m.status_json() {
                    Ok(v) => format!("; walden answers: {}", status_summary(&v)),
                    Err(e) => format!("; walden does not answer: {e}"),
                },
                HostKind::Baseline => String::new(),
            };
            bail!(
                "the host hung while waiting for every guest's GUEST-UP marker: its console \
                 printed nothing for {} s (last output {:.0} s after power-on; QEMU says the \
                 machine is {state}{walden})",
                quiet.as_secs(),
                silence.since.duration_since(t0).as_secs_f64()
            );
        }
        for (g, marker) in &markers {
            if !guest_up_s.contains_key(g) && text.contains(marker.as_str()) {
                guest_up_s.insert(g.clone(), now);
            }
        }
        if host_ready_s.is_none() && text.contains(expect::READY) {
            host_ready_s = Some(now);
        }
        check_alive(
            m,
            &text,
            t0,
            GUESTS_TIMEOUT,
            "every guest's GUEST-UP marker",
        )?;
        std::thread::sleep(POLL);
    }
    let all_guests_s = guest_up_s.values().copied().fold(0.0, f64::max);
    let (mem, meminfo) = wait_mem(m, t0 + Duration::from_secs_f64(all_guests_s))?;
    let status = match kind {
        HostKind::Walden => Some(m.status_json().context("walden status --json")?),
        HostKind::Baseline => None,
    };

    let before = m.console().text().len();
    let t_button = Instant::now();
    m.powerdown()
        .context("power button (QMP system_powerdown)")?;
    let exit = m.wait_exit(SHUTDOWN_TIMEOUT)?;
    let shutdown_s = t_button.elapsed().as_secs_f64();
    let text = m.console().text();
    let after = text.get(before..).unwrap_or("");
    let mut notes = Vec::new();
    if !exit.success() {
        notes.push(format!("QEMU exited with {exit}"));
    }
    for g in &case.guests {
        if !after.contains(&expect::guest_down(g)) {
            notes.push(format!(
                "{g}: no GUEST-DOWN on the console after the power button"
            ));
        }
    }
    Ok(RunResult {
        host: kind,
        guests: case.guests.len(),
        index,
        guest_up_s,
        all_guests_s,
        host_ready_s,
        mem,
        meminfo,
        status,
        shutdown_s,
        clean_shutdown: notes.is_empty(),
        shutdown_notes: notes,
        console_log: log.to_string(),
    })
}

/// Fail when QEMU is gone, the kernel panicked, or `timeout` passed.
fn check_alive(
    m: &Machine,
    text: &str,
    t0: Instant,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    if let Some(p) = expect::FATAL.iter().find(|p| text.contains(**p)) {
        bail!("kernel panic ({p}) while waiting for {what}");
    }
    if let Some(line) = text.lines().find(|l| GIVE_UP.iter().any(|p| l.contains(p))) {
        bail!("while waiting for {what}: {}", line.trim());
    }
    if let Some(line) = text
        .lines()
        .find(|l| lockup_s(l).is_some_and(|s| s >= LOCKUP_GIVE_UP_S))
    {
        bail!(
            "the host's kernel hung while waiting for {what} (given up after a CPU was stuck \
             {LOCKUP_GIVE_UP_S} s or more): {}",
            line.trim()
        );
    }
    if m.console().is_closed() {
        bail!("QEMU exited while waiting for {what}");
    }
    if t0.elapsed() > qemu_tests::scaled(timeout) {
        bail!("{what}: not seen within {timeout:?} of power-on");
    }
    Ok(())
}

/// `phase ready, guests: g1 running` from `walden status --json`, with the
/// step still running if any and the last error.
fn status_summary(v: &Value) -> String {
    let guests: Vec<String> = v["guests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            format!(
                "{} {}",
                g["name"].as_str().unwrap_or("?"),
                g["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let running: Vec<&str> = v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] == "running")
        .filter_map(|s| s["name"].as_str())
        .collect();
    let mut out = format!(
        "phase {}, guests: {}",
        v["phase"].as_str().unwrap_or("?"),
        if guests.is_empty() {
            "none".to_string()
        } else {
            guests.join(", ")
        }
    );
    if !running.is_empty() {
        out.push_str(&format!(", steps not finished: {}", running.join(" ")));
    }
    if let Some(e) = v["last_error"].as_str() {
        out.push_str(&format!(", last error: {e}"));
    }
    out
}

/// How long the console has not grown.
struct Silence {
    len: usize,
    since: Instant,
}

impl Silence {
    fn new(now: Instant) -> Self {
        Self { len: 0, since: now }
    }

    /// The console is `len` bytes at `now`: how long it has been that size.
    fn after(&mut self, len: usize, now: Instant) -> Duration {
        if len != self.len {
            self.len = len;
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }
}

/// N of a kernel line "watchdog: BUG: soft lockup - CPU#0 stuck for Ns!".
fn lockup_s(line: &str) -> Option<u64> {
    let rest = line.split("soft lockup - CPU#").nth(1)?;
    let secs = rest.split("stuck for ").nth(1)?;
    secs.split('s').next()?.parse().ok()
}

/// Name -> KiB, as the observer prints them.
type Fields = BTreeMap<String, u64>;

/// Wait for the observer's BENCH-MEM line and parse its fields and those
/// of the BENCH-MEMINFO line printed just before it.
fn wait_mem(m: &Machine, since: Instant) -> anyhow::Result<(Fields, Fields)> {
    loop {
        let text = m.console().text();
        if let Some(line) = text.lines().find(|l| l.contains("BENCH-MEM ")) {
            let meminfo = text
                .lines()
                .find(|l| l.contains("BENCH-MEMINFO "))
                .map(|l| parse_fields(l, "BENCH-MEMINFO "))
                .unwrap_or_default();
            return Ok((parse_fields(line, "BENCH-MEM "), meminfo));
        }
        check_alive(
            m,
            &text,
            since,
            MEM_TIMEOUT,
            "the observer's BENCH-MEM line",
        )?;
        std::thread::sleep(POLL);
    }
}

/// `TAG a_kib=1 b_kib=2` -> {a_kib: 1, b_kib: 2}.
pub fn parse_fields(line: &str, tag: &str) -> BTreeMap<String, u64> {
    line.split(tag)
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soft_lockup_line_gives_its_seconds() {
        let l = "[  316.588107] watchdog: BUG: soft lockup - CPU#0 stuck for 279s! [qemu-system-x86:216]";
        assert_eq!(lockup_s(l), Some(279));
        assert_eq!(
            lockup_s("[ 40.36] rcu: INFO: rcu_preempt self-detected stall on CPU"),
            None
        );
        assert_eq!(lockup_s("walden: ready in 5 ms"), None);
    }

    #[test]
    fn a_stuck_walden_is_summarised_from_its_status() {
        let v = serde_json::json!({
            "phase": "bring-up",
            "guests": [{"name": "g1", "state": "starting"}],
            "steps": [
                {"name": "services", "state": "done"},
                {"name": "guests", "state": "running"},
                {"name": "health", "state": "pending"}
            ],
            "last_error": null
        });
        assert_eq!(
            status_summary(&v),
            "phase bring-up, guests: g1 starting, steps not finished: guests"
        );
    }

    #[test]
    fn silence_counts_from_the_last_growth_of_the_console() {
        let t0 = Instant::now();
        let mut s = Silence::new(t0);
        assert_eq!(s.after(10, t0 + Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(
            s.after(10, t0 + Duration::from_secs(65)),
            Duration::from_secs(60)
        );
        assert_eq!(s.after(11, t0 + Duration::from_secs(70)), Duration::ZERO);
        assert_eq!(s.since, t0 + Duration::from_secs(70));
    }

    #[test]
    fn mem_line_parses_past_console_noise() {
        let m = parse_fields(
            "[  3.1] x BENCH-MEM total_kib=2000 used_kib=300 host_kib=200 bad=x",
            "BENCH-MEM ",
        );
        assert_eq!(m["total_kib"], 2000);
        assert_eq!(m["host_kib"], 200);
        assert!(!m.contains_key("bad"));
    }

    #[test]
    fn meminfo_line_keeps_names_with_parentheses() {
        let m = parse_fields(
            "BENCH-MEMINFO MemTotal=2014136 Active(anon)=98716 HugePages_Total=0",
            "BENCH-MEMINFO ",
        );
        assert_eq!(m["Active(anon)"], 98716);
        assert_eq!(m.len(), 3);
    }
}
