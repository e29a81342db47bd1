//! `walden config check [DIR]`: validate a config directory offline.

use super::diag::Diagnostic;
use super::error::ConfigError;
use super::facts::{check_against_host, HostFacts};
use super::{load, Config};
use serde::Serialize;
use std::path::Path;

/// The config directory on the appliance; only there is the config compared
/// with the machine's memory and CPUs (elsewhere it may be for another box).
const LIVE_CONFIG: &str = "/config";

/// Counts shown by a successful check.
#[derive(Debug, Serialize)]
struct Summary {
    hostname: String,
    guests: usize,
    autostart: usize,
    bridges: usize,
    vfio_devices: usize,
    services: usize,
    warnings: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    dir: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fatal: Option<String>,
    errors: &'a [Diagnostic],
    warnings: &'a [Diagnostic],
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary(config: &Config) -> Summary {
    Summary {
        hostname: config.host.hostname.clone(),
        guests: config.guests.len(),
        autostart: config.guests.iter().filter(|g| g.autostart).count(),
        bridges: config.host.network.bridges.len(),
        vfio_devices: config.host.vfio.len(),
        services: config.host.services.len(),
        warnings: config.warnings.len(),
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config OK: host {}, {} ({} autostart), {}, {}, {}",
            self.hostname,
            plural(self.guests, "guest", "guests"),
            self.autostart,
            plural(self.bridges, "bridge", "bridges"),
            plural(self.vfio_devices, "vfio device", "vfio devices"),
            plural(self.warnings, "warning", "warnings"),
        )
    }
}

fn is_live(dir: &Path) -> bool {
    dir.canonicalize()
        .is_ok_and(|d| d == Path::new(LIVE_CONFIG))
}

fn print_json(report: &Report<'_>) {
    match serde_json::to_string_pretty(report) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("walden config check: cannot encode the report: {e}"),
    }
}

/// `walden config check DIR`: prints a summary or every problem; returns the
/// exit code: 0 valid (warnings allowed), 1 problems found, 2 no readable host.toml.
pub fn check_command(dir: &Path, json: bool) -> u8 {
    match load(dir) {
        Ok(mut config) => {
            if is_live(dir) {
                if let Some(facts) = HostFacts::read(Path::new("/proc")) {
                    config.warnings.extend(check_against_host(&config, facts));
                }
            }
            let summary = summary(&config);
            if json {
                print_json(&Report {
                    ok: true,
                    dir,
                    summary: Some(summary),
                    fatal: None,
                    errors: &[],
                    warnings: &config.warnings,
                });
            } else {
                for w in &config.warnings {
                    println!("warning: {w}");
                }
                println!("{summary}");
            }
            0
        }
        Err(ConfigError::Invalid(diags)) => {
            if json {
                print_json(&Report {
                    ok: false,
                    dir,
                    summary: None,
                    fatal: None,
                    errors: &diags.0,
                    warnings: &[],
                });
            } else {
                for d in diags.iter() {
                    println!("{d}");
                }
                println!(
                    "{} in {}",
                    plural(diags.len(), "problem", "problems"),
                    dir.display()
                );
            }
            1
        }
        Err(e @ ConfigError::NoHostFile { .. }) => {
            if json {
                print_json(&Report {
                    ok: false,
                    dir,
                    summary: None,
                    fatal: Some(e.to_string()),
                    errors: &[],
                    warnings: &[],
                });
            } else {
                eprintln!("walden config check: {e}");
            }
            2
        }
    }
}
