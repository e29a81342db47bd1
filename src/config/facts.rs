//! Comparing a config with the machine it runs on (memory, CPUs).
//!
//! These are warnings, not errors: a config may be written for another
//! machine, and overcommitting CPUs is often fine.

use super::diag::Diagnostic;
use super::units::Size;
use super::Config;
use std::path::Path;

/// What walden knows about the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// Total memory in bytes.
    pub mem_bytes: u64,
    /// Online CPUs.
    pub cpus: u32,
}

/// Memory kept for the host itself when comparing guest memory with the machine.
pub const HOST_RESERVE: Size = Size(512 << 20);

impl HostFacts {
    /// Read the facts of the running machine from `proc` (normally /proc).
    pub fn read(proc: &Path) -> Option<Self> {
        let meminfo = std::fs::read_to_string(proc.join("meminfo")).ok()?;
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let cpus = std::thread::available_parallelism().ok()?.get();
        Some(HostFacts {
            mem_bytes: kib * 1024,
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
        })
    }
}

/// Warnings for autostart guests that need more memory or CPUs than the host has.
pub fn check_against_host(config: &Config, facts: HostFacts) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let warn = |at: &super::At, key: &str, message: String, hint: &str| Diagnostic {
        file: at.file.clone(),
        // The guest file as a whole: facts are not tied to one line.
        line: 1,
        column: 1,
        key: key.to_string(),
        message,
        hint: Some(hint.to_string()),
    };
    let usable = facts.mem_bytes.saturating_sub(HOST_RESERVE.bytes());
    let mut mem_total: u64 = 0;
    let mut cpu_total: u32 = 0;
    let mut mem_warned = false;
    for g in config.guests.iter().filter(|g| g.autostart) {
        if g.vcpus > facts.cpus {
            out.push(warn(
                &g.at,
                "vcpus",
                format!("{} vcpus but the host has {} CPUs", g.vcpus, facts.cpus),
                "lower vcpus to at most the host's CPU count",
            ));
        }
        mem_total = mem_total.saturating_add(g.memory.bytes());
        cpu_total = cpu_total.saturating_add(g.vcpus);
        if mem_total > usable && !mem_warned {
            mem_warned = true;
            out.push(warn(
                &g.at,
                "memory",
                format!(
                    "autostart guests up to this one need {} but the host has {} ({} kept for the host)",
                    Size(mem_total),
                    Size(facts.mem_bytes),
                    HOST_RESERVE
                ),
                "lower guest memory or set autostart = false on some guests",
            ));
        }
    }
    if cpu_total > facts.cpus.saturating_mul(4) {
        if let Some(g) = config.guests.iter().rfind(|g| g.autostart) {
            out.push(warn(
                &g.at,
                "vcpus",
                format!(
                    "autostart guests have {cpu_total} vcpus in total on {} host CPUs",
                    facts.cpus
                ),
                "more than 4 vcpus per CPU is heavy overcommit; lower vcpus",
            ));
        }
    }
    out
}
