//! Medians, ratios and bench/RESULTS.md.

use crate::apply::ApplyResult;
use crate::hosts::HostKind;
use crate::run::RunResult;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Everything the report needs besides the runs.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// "Intel(R) Xeon(R) ..., 2 cores, 7.8 GiB RAM".
    pub machine: String,
    /// UTC date and time of the start.
    pub date: String,
    /// `git rev-parse HEAD` (+ "-dirty").
    pub commit: String,
    /// The command that produced the file.
    pub command: String,
    /// `uptime` before and after.
    pub load: Vec<String>,
    /// Runs per host and case, e.g. "1 guest: 5, 4 guests: 2".
    pub runs: String,
    /// How long the whole bench took.
    pub wall: String,
    /// Sizes in bytes: (what, walden, baseline).
    pub sizes: Vec<(String, u64, u64)>,
    /// Runs that failed, with why.
    pub failures: Vec<String>,
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn select(runs: &[RunResult], host: HostKind, guests: usize) -> Vec<&RunResult> {
    runs.iter()
        .filter(|r| r.host == host && r.guests == guests)
        .collect()
}

fn fmt_opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    match v {
        None => "-".into(),
        Some(x) if unit.is_empty() => format!("{x:.digits$}"),
        Some(x) => format!("{x:.digits$} {unit}"),
    }
}

fn ratio(w: Option<f64>, b: Option<f64>) -> String {
    match (w, b) {
        (Some(w), Some(b)) if b > 0.0 => format!("{:.2}", w / b),
        _ => "-".into(),
    }
}

/// One table row comparing `f` over both hosts' runs of a case.
fn row(
    out: &mut String,
    what: &str,
    runs: &[RunResult],
    guests: usize,
    unit: &str,
    f: impl Fn(&RunResult) -> Option<f64>,
) {
    let w: Vec<f64> = select(runs, HostKind::Walden, guests)
        .into_iter()
        .filter_map(&f)
        .collect();
    let b: Vec<f64> = select(runs, HostKind::Baseline, guests)
        .into_iter()
        .filter_map(&f)
        .collect();
    let (mw, mb) = (median(&w), median(&b));
    let digits = if unit == "s" { 1 } else { 0 };
    let _ = writeln!(
        out,
        "| {what} | {} | {} | {} | {}/{} |",
        fmt_opt(mw, unit, digits),
        fmt_opt(mb, unit, digits),
        ratio(mw, mb),
        w.len(),
        b.len()
    );
}

fn mib(r: &RunResult, key: &str) -> Option<f64> {
    r.mem.get(key).map(|k| *k as f64 / 1024.0)
}

/// The whole RESULTS.md.
pub fn markdown(
    ctx: &Context,
    runs: &[RunResult],
    apply: Option<&ApplyResult>,
    apply_note: &str,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# walden vs a systemd + libvirt Debian baseline\n");
    let _ = writeln!(
        o,
        "Written by `make bench` (bench/README.md says what is measured and how). \
         Medians over the runs; ratio = walden / baseline (below 1 is better for walden).\n"
    );
    let _ = writeln!(o, "- machine: {}", ctx.machine);
    let _ = writeln!(o, "- date: {}", ctx.date);
    let _ = writeln!(o, "- commit: {}", ctx.commit);
    let _ = writeln!(o, "- command: `{}`", ctx.command);
    let _ = writeln!(
        o,
        "- runs per host: {} (alternating walden/baseline)",
        ctx.runs
    );
    let _ = writeln!(o, "- QEMU: {}", crate::qemu_settings());
    for l in &ctx.load {
        let _ = writeln!(o, "- load: {l}");
    }
    let _ = writeln!(o, "- whole bench: {}\n", ctx.wall);

    let cases: Vec<usize> = {
        let mut c: Vec<usize> = runs.iter().map(|r| r.guests).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let _ = writeln!(o, "| metric | walden | baseline | ratio | runs (w/b) |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- |");
    for &g in &cases {
        let s = if g == 1 { "" } else { "s" };
        row(
            &mut o,
            &format!("power-on to every guest's marker, {g} guest{s}"),
            runs,
            g,
            "s",
            |r| Some(r.all_guests_s),
        );
    }
    for &g in &cases {
        let s = if g == 1 { "" } else { "s" };
        row(
            &mut o,
            &format!("power button to QEMU exit, {g} guest{s}"),
            runs,
            g,
            "s",
            |r| Some(r.shutdown_s),
        );
    }
    for &g in &cases {
        let (w, b) = (
            select(runs, HostKind::Walden, g),
            select(runs, HostKind::Baseline, g),
        );
        let clean = |v: &[&RunResult]| v.iter().filter(|r| r.clean_shutdown).count();
        let _ = writeln!(
            o,
            "| guests shut down cleanly (ACPI), {g} guest(s) | {}/{} runs | {}/{} runs | | |",
            clean(&w),
            w.len(),
            clean(&b),
            b.len()
        );
    }
    for (what, key) in [
        (
            "host memory in use excluding guests (free(1)'s used + tmpfs, minus the guests' QEMU anonymous memory)",
            "host_kib",
        ),
        (
            "host memory unavailable excluding guests (MemTotal - MemAvailable, incl. the kernel's free-page reserves, minus the guests' QEMU PSS)",
            "host_avail_kib",
        ),
    ] {
        for &g in &cases {
            row(&mut o, &format!("{what}, {g} guest(s)"), runs, g, "MiB", |r| {
                mib(r, key)
            });
        }
    }
    for &g in &cases {
        row(
            &mut o,
            &format!("PID 1 RSS (walden / systemd), {g} guest(s)"),
            runs,
            g,
            "MiB",
            |r| mib(r, "pid1_rss_kib"),
        );
    }
    for &g in &cases {
        for (what, key) in [
            ("RSS", "walden_rss_kib"),
            (
                "PSS (shared pages split among their users)",
                "walden_pss_kib",
            ),
            (
                "USS (pages only walden uses, incl. its two binaries' clean text)",
                "walden_uss_kib",
            ),
            (
                "anonymous (heap, stacks, dirty data: not page cache)",
                "walden_anon_kib",
            ),
        ] {
            row(
                &mut o,
                &format!("walden {what}, PID 1 + supervise (target < 8 MiB), {g} guest(s)"),
                runs,
                g,
                "MiB",
                |r| (r.host == HostKind::Walden).then(|| mib(r, key)).flatten(),
            );
        }
        row(
            &mut o,
            &format!("libvirtd RSS, {g} guest(s)"),
            runs,
            g,
            "MiB",
            |r| mib(r, "libvirtd_rss_kib"),
        );
    }
    // Where the host's memory goes (/proc/meminfo; AnonPages includes the
    // guests' QEMU processes).
    for (what, key) in [
        ("anonymous pages incl. guests' QEMU", "anon_kib"),
        ("the guests' QEMU anonymous memory", "guests_anon_kib"),
        ("shmem/tmpfs", "shmem_kib"),
        ("unreclaimable slab", "sunreclaim_kib"),
        ("kernel stacks", "kernelstack_kib"),
        ("page tables", "pagetables_kib"),
        ("percpu", "percpu_kib"),
        ("vmalloc", "vmalloc_kib"),
    ] {
        for &g in &cases {
            row(
                &mut o,
                &format!("host meminfo: {what}, {g} guest(s)"),
                runs,
                g,
                "MiB",
                |r| mib(r, key),
            );
        }
    }
    for (what, w, b) in &ctx.sizes {
        let (w, b) = (*w as f64 / 1048576.0, *b as f64 / 1048576.0);
        let _ = writeln!(o, "| {what} | {w:.1} MiB | {b:.1} MiB | {:.2} | |", w / b);
    }
    match apply {
        Some(a) => {
            let _ = writeln!(
                o,
                "| `walden config apply`, 200 guests, nothing changed | {} | n/a | | {} |",
                fmt_opt(median(&a.noop_s).map(|s| s * 1000.0), "ms", 0),
                a.noop_s.len()
            );
            let _ = writeln!(
                o,
                "| `walden config apply`, 200 guests, one added | {} | n/a | | {} |",
                fmt_opt(median(&a.add_one_s).map(|s| s * 1000.0), "ms", 0),
                a.add_one_s.len()
            );
        }
        None => {
            let _ = writeln!(
                o,
                "| `walden config apply`, 200 guests | not measured: {apply_note} | | | |"
            );
        }
    }
    if let Some(a) = apply {
        let _ = writeln!(
            o,
            "\nApply: round trip over the control channel (the host under TCG); walden booted \
             to ready with 200 idle guests in {:.1} s. First no-op apply as walden reports it: \
             {}. First one-added apply: {}.",
            a.ready_s,
            apply_summary(&a.noop_report),
            apply_summary(&a.add_one_report)
        );
    }
    if !ctx.failures.is_empty() {
        let _ = writeln!(o, "\n**Failed runs** (not in the medians):\n");
        for f in &ctx.failures {
            let _ = writeln!(o, "- {}", f.replace('\n', " "));
        }
    }
    for &g in &cases {
        phases(&mut o, runs, g);
    }
    raw(&mut o, runs);
    o
}

/// An apply report in one line: total and per-step milliseconds.
fn apply_summary(report: &serde_json::Value) -> String {
    let steps: Vec<String> = report["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|st| {
                    format!(
                        "{} {}",
                        st["name"].as_str().unwrap_or("?"),
                        st["duration_ms"]
                            .as_u64()
                            .map_or("-".into(), |d| d.to_string())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} ms ({}; steps in ms: {})",
        report["duration_ms"]
            .as_u64()
            .map_or("-".into(), |d| d.to_string()),
        report["message"].as_str().unwrap_or(""),
        steps.join(", ")
    )
}

/// walden's bring-up steps (from `walden status`), medians over its runs.
fn phases(o: &mut String, runs: &[RunResult], guests: usize) {
    let mut starts: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for r in select(runs, HostKind::Walden, guests) {
        let Some(steps) = r.status.as_ref().and_then(|s| s["steps"].as_array()) else {
            continue;
        };
        for st in steps {
            let name = st["name"].as_str().unwrap_or("?").to_string();
            if !order.contains(&name) {
                order.push(name.clone());
            }
            if let Some(v) = st["started_ms"].as_f64() {
                starts.entry(name.clone()).or_default().push(v);
            }
            if let Some(v) = st["duration_ms"].as_f64() {
                durations.entry(name).or_default().push(v);
            }
        }
    }
    if order.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## walden's bring-up, {guests} guest(s) (`walden status` steps, medians)\n"
    );
    let _ = writeln!(o, "| step | started (ms after supervise) | duration_ms |");
    let _ = writeln!(o, "| --- | --- | --- |");
    for name in order {
        let s = median(starts.get(&name).map_or(&[][..], |v| v));
        let d = median(durations.get(&name).map_or(&[][..], |v| v));
        let _ = writeln!(
            o,
            "| {name} | {} | {} |",
            fmt_opt(s, "", 0),
            fmt_opt(d, "", 0)
        );
    }
}

/// Every run, for the record.
fn raw(o: &mut String, runs: &[RunResult]) {
    let _ = writeln!(o, "\n## Every run\n");
    let _ = writeln!(
        o,
        "| host | guests | run | walden ready | all guests up | shutdown | host MiB | clean | notes |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in runs {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} s | {:.1} s | {} | {} | {} |",
            r.host.as_str(),
            r.guests,
            r.index,
            fmt_opt(r.host_ready_s, "s", 1),
            r.all_guests_s,
            r.shutdown_s,
            fmt_opt(mib(r, "host_kib"), "", 0),
            if r.clean_shutdown { "yes" } else { "no" },
            r.shutdown_notes.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratio_is_walden_over_baseline() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25");
        assert_eq!(ratio(None, Some(4.0)), "-");
    }
}
