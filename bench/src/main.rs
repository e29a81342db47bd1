//! `make bench`: walden's image against a Debian baseline with systemd and
//! libvirt autostarting the same guests, booted under the same QEMU
//! settings, alternating runs; medians and ratios go to bench/RESULTS.md.
//! What is measured and how: bench/README.md.
//!
//! Environment:
//! - `BENCH_RUNS` (default 2): runs per host with 1 guest
//! - `BENCH_RUNS_4` (default 1, at most `BENCH_RUNS`; 0 skips): runs per host with 4 guests
//! - `BENCH_APPLY_RUNS` (default 3; 0 skips): applies of each kind on 200 guests
//! - `BENCH_HOSTS` (default "walden,baseline"): which hosts to boot
//! - `BENCH_OUT` (default bench/RESULTS.md): where the report goes (with
//!   bench/PERFORMANCE.md, the performance pass's record, appended)
//! - `BENCH_COMMAND`: the command line recorded in the report
//!
//! The raw results are also written to build/bench/results.json.

mod apply;
mod hosts;
mod report;
mod run;

use anyhow::Context;
use hosts::{BaselineRoot, HostKind};
use qemu_tests::artifacts::{build_dir, repo_root};
use qemu_tests::guest_assets::TinyGuestAssets;
use qemu_tests::Artifacts;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The QEMU settings both hosts share (for the report).
pub fn qemu_settings() -> String {
    format!(
        "q35, {}, 2 vCPUs, 2048 MiB, direct kernel boot (-kernel/-initrd) for both, no NIC; \
         walden's root on its USB image (usb-storage), the baseline's on virtio-blk",
        qemu_tests::builder::accel_args().join(" ")
    )
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number of runs")),
        _ => Ok(default),
    }
}

/// stdout of a command, trimmed, or "" when it fails.
fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine_description() -> String {
    let lscpu = output("lscpu", &[]);
    let field = |k: &str| {
        lscpu
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "{}, {} CPUs, {:.1} GiB RAM",
        field("Model name:"),
        field("CPU(s):"),
        mem_kib as f64 / 1048576.0
    )
}

fn size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("size of {}", path.display()))?
        .len())
}

/// Bytes under `dir` as `du -sb` counts them.
fn tree_size(dir: &Path) -> u64 {
    output("du", &["-sb", &dir.display().to_string()])
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes allocated to a sparse file (`du -B1`).
fn allocated(path: &Path) -> u64 {
    output("du", &["-B1", &path.display().to_string()])
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sizes(
    a: &Artifacts,
    baseline: &BaselineRoot,
    disk: &Path,
) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let images = a.build_dir.join("images").join(&a.version);
    let walden_root = std::fs::read_dir(a.build_dir.join("cache"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("root-"))
        })
        .map(|p| tree_size(&p.join("rootfs")))
        .unwrap_or(0);
    Ok(vec![
        (
            "root image as booted (walden: root.squashfs; baseline: ext4 blocks in use)".into(),
            size(&images.join("root.squashfs"))?,
            allocated(disk),
        ),
        (
            "root file system unpacked (du -sb; walden without its binary)".into(),
            walden_root,
            tree_size(&baseline.rootfs()),
        ),
        (
            "initramfs (walden stage 1; baseline initramfs-tools)".into(),
            size(&images.join("initrd.img"))?,
            size(&baseline.initrd())?,
        ),
        (
            "kernel (the same Debian vmlinuz)".into(),
            size(&images.join("vmlinuz"))?,
            size(&baseline.kernel())?,
        ),
    ])
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let runs1 = env_usize("BENCH_RUNS", 2)?.max(1);
    let runs4 = env_usize("BENCH_RUNS_4", 1)?.min(runs1);
    let apply_runs = env_usize("BENCH_APPLY_RUNS", 3)?;
    let out = std::env::var("BENCH_OUT")
        .map(Into::into)
        .unwrap_or_else(|_| repo_root().join("bench/RESULTS.md"));
    let mut ctx = report::Context {
        machine: machine_description(),
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        commit: {
            let head = output(
                "git",
                &[
                    "-C",
                    &repo_root().display().to_string(),
                    "rev-parse",
                    "--short",
                    "HEAD",
                ],
            );
            let dirty = !output(
                "git",
                &[
                    "-C",
                    &repo_root().display().to_string(),
                    "status",
                    "--porcelain",
                ],
            )
            .is_empty();
            format!(
                "{head}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            )
        },
        command: std::env::var("BENCH_COMMAND").unwrap_or_else(|_| "make bench".into()),
        load: vec![format!("before: {}", output("uptime", &[]))],
        runs: format!("1 guest: {runs1}, 4 guests: {runs4}"),
        ..Default::default()
    };

    let a = Artifacts::locate().context("walden's image (make image)")?;
    let work = build_dir().join("bench");
    std::fs::create_dir_all(&work)?;
    let baseline = BaselineRoot::build()?;
    let assets = TinyGuestAssets::build(&a, &work)?;
    let one = hosts::prepare_case(1, &work, &assets, &baseline)?;
    let four = hosts::prepare_case(4, &work, &assets, &baseline)?;
    ctx.sizes = sizes(&a, &baseline, &one.baseline_disk)?;

    let hosts_wanted = std::env::var("BENCH_HOSTS").unwrap_or_else(|_| "walden,baseline".into());
    let wanted = |k: HostKind| hosts_wanted.split(',').any(|h| h.trim() == k.as_str());
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (case, n) in [(&one, runs1), (&four, runs4)] {
        for i in 0..n {
            // ABBA order: neither host always runs right after the other.
            let order = if i % 2 == 0 {
                [HostKind::Walden, HostKind::Baseline]
            } else {
                [HostKind::Baseline, HostKind::Walden]
            };
            for kind in order.into_iter().filter(|k| wanted(*k)) {
                eprintln!(
                    "bench: {} with {} guest(s), run {}/{n}",
                    kind.as_str(),
                    case.guests.len(),
                    i + 1
                );
                let r = match run::run(kind, case, &baseline, i) {
                    Ok(r) => r,
                    Err(e) => {
                        // A failed run is reported, not fatal: the other
                        // host's numbers still mean something.
                        eprintln!("bench:   FAILED: {e:#}");
                        failures.push(format!(
                            "{} with {} guest(s), run {i}: {e:#}",
                            kind.as_str(),
                            case.guests.len()
                        ));
                        continue;
                    }
                };
                eprintln!(
                    "bench:   guests up {:.1} s, shutdown {:.1} s (clean: {}), host memory {} KiB",
                    r.all_guests_s,
                    r.shutdown_s,
                    r.clean_shutdown,
                    r.mem.get("host_kib").copied().unwrap_or(0)
                );
                results.push(r);
            }
        }
    }
    let walden_ok = results.iter().any(|r| r.host == HostKind::Walden);
    let (apply, apply_note) = if apply_runs == 0 || !wanted(HostKind::Walden) {
        (
            None,
            "skipped (BENCH_APPLY_RUNS=0 or BENCH_HOSTS without walden)".to_string(),
        )
    } else if !walden_ok {
        // 200 guests behind the same failure would hold the QEMU lock for
        // the whole timeout and measure nothing.
        (
            None,
            "skipped: no walden run got its guests up (see the failed runs)".to_string(),
        )
    } else {
        match apply::run(&assets, &work, apply_runs) {
            Ok(r) => (Some(r), String::new()),
            Err(e) => {
                eprintln!("bench: the apply scenario failed: {e:#}");
                (None, format!("the scenario failed: {e:#}"))
            }
        }
    };
    ctx.load.push(format!("after: {}", output("uptime", &[])));
    let secs = started.elapsed().as_secs();
    ctx.wall = format!("{} min {} s", secs / 60, secs % 60);

    let json = serde_json::json!({"runs": results, "apply": apply, "failures": failures});
    let raw = work.join("results.json");
    std::fs::write(&raw, serde_json::to_string_pretty(&json)?)?;
    ctx.failures = failures;
    let mut md = report::markdown(&ctx, &results, apply.as_ref(), &apply_note);
    // The performance pass's before/after record is kept by hand beside the
    // results and carried into every report.
    let pass = repo_root().join("bench/PERFORMANCE.md");
    if let Ok(text) = std::fs::read_to_string(&pass) {
        md.push('\n');
        md.push_str(&text);
    }
    std::fs::write(&out, &md).with_context(|| format!("write {}", out.display()))?;
    eprintln!(
        "bench: wrote {} and {} in {}",
        out.display(),
        raw.display(),
        ctx.wall
    );
    Ok(())
}
