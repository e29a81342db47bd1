//! host.toml: this machine's name, network, vfio devices, mounts, swap, ssh
//! keys, health timeout and extra services.

use super::ids::{Hostname, Name, PciAddress, PciId};
use super::mount;
pub use super::mount::{MountConfig, MountSource, SwapConfig};
use super::network::NetworkConfig;
use super::network_read;
use super::reader::{self, Tbl, Val};
use super::service::{self, ServiceConfig};
use super::source::At;
use super::units::HumanDuration;
use std::time::Duration;

/// Everything host.toml says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Host name (validated as RFC 1123).
    pub hostname: String,
    /// Time zone name from the tz database ("Europe/Berlin"), if set.
    pub timezone: Option<String>,
    /// `[network]`.
    pub network: NetworkConfig,
    /// `[[vfio]]`: PCI devices bound to vfio-pci for guests.
    pub vfio: Vec<VfioDevice>,
    /// `[[mount]]`: extra file systems.
    pub mounts: Vec<MountConfig>,
    /// `[swap]`.
    pub swap: Option<SwapConfig>,
    /// `[ssh]`.
    pub ssh: SshConfig,
    /// `[health]`.
    pub health: HealthConfig,
    /// `[watchdog]`.
    pub watchdog: WatchdogConfig,
    /// `[[service]]`: extra supervised services.
    pub services: Vec<ServiceConfig>,
}

/// `[health]`: how long a boot may take to become healthy, and what
/// happens when it does not (DESIGN.md section 5, docs/upgrade.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time from boot until config, network and autostart guests must be up (default 10m).
    pub timeout: Duration,
    /// What a boot that is not healthy in time does (default: reboot).
    pub on_failure: HealthFailure,
    /// An extra check of the operator's: healthy only when it exits 0.
    pub command: Vec<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            on_failure: HealthFailure::Reboot,
            command: Vec::new(),
        }
    }
}

/// `[health] on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFailure {
    /// Reboot, so a version on trial uses up a try (and finally rolls back).
    Reboot,
    /// Stay up and report the failure in `walden status`.
    Stay,
}

/// `[watchdog]`: the hardware watchdog PID 1 keeps alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Seconds without a ping before the machine resets (default 60 s).
    pub timeout: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
        }
    }
}

/// `[ssh]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshConfig {
    /// authorized_keys lines for root.
    pub authorized_keys: Vec<String>,
}

/// Which devices a `[[vfio]]` entry selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VfioSelect {
    /// `pci = "0000:03:00.0"`: one device by address.
    Address(PciAddress),
    /// `id = "1000:0072"`: devices by vendor:device id.
    Id {
        /// The id.
        id: PciId,
        /// Which of the devices with that id.
        which: IdSelect,
    },
}

/// Which of the devices that share a PCI id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdSelect {
    /// Neither `index` nor `all`: exactly one such device must exist.
    Only,
    /// `index = N`: the N-th (from 0) in PCI address order.
    Index(u32),
    /// `all = true`: every one.
    All,
}

/// A `[[vfio]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioDevice {
    /// Origin in host.toml.
    pub at: At,
    /// Selected device(s).
    pub select: VfioSelect,
    /// Name guests can use in `[[pci]] label = ..`.
    pub label: Option<Name>,
}

/// Read host.toml's root table.
pub(crate) fn read(root: &Tbl<'_>) -> HostConfig {
    reader::schema(root);
    let hostname = root
        .req(
            "hostname",
            "set the machine's name, e.g. hostname = \"mountain\"",
        )
        .and_then(|v| v.parse::<Hostname>())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let timezone = root.opt("timezone").and_then(|v| timezone(&v));
    let network = root
        .opt("network")
        .and_then(|v| v.table())
        .map(|t| {
            let net = network_read::read(&t);
            t.finish();
            net
        })
        .unwrap_or_else(|| NetworkConfig {
            safe_apply: true,
            ..NetworkConfig::default()
        });
    let each = |key: &'static str| root.opt(key).and_then(|v| v.tables()).unwrap_or_default();
    let vfio = each("vfio").into_iter().filter_map(vfio).collect();
    let mounts = each("mount").into_iter().filter_map(mount::mount).collect();
    let services = each("service")
        .into_iter()
        .filter_map(service::read)
        .collect();
    let swap = root
        .opt("swap")
        .and_then(|v| v.table())
        .and_then(mount::swap);
    let ssh = root
        .opt("ssh")
        .and_then(|v| v.table())
        .map(ssh)
        .unwrap_or_default();
    let health = root
        .opt("health")
        .and_then(|v| v.table())
        .map(|t| {
            let h = health(&t);
            t.finish();
            h
        })
        .unwrap_or_default();
    let watchdog = root
        .opt("watchdog")
        .and_then(|v| v.table())
        .map(|t| {
            let timeout = t.opt("timeout").and_then(|v| {
                let d = v.parse::<HumanDuration>()?.0;
                if (1..=3600).contains(&d.as_secs()) {
                    Some(d)
                } else {
                    v.error(
                        "the watchdog timeout must be between 1s and 1h",
                        "e.g. timeout = \"60s\"",
                    )
                }
            });
            t.finish();
            WatchdogConfig {
                timeout: timeout.unwrap_or(WatchdogConfig::default().timeout),
            }
        })
        .unwrap_or_default();
    HostConfig {
        hostname,
        timezone,
        network,
        vfio,
        mounts,
        swap,
        ssh,
        health,
        watchdog,
        services,
    }
}

/// `[health]`: timeout, on_failure, command.
fn health(t: &Tbl<'_>) -> HealthConfig {
    let default = HealthConfig::default();
    HealthConfig {
        timeout: t
            .opt("timeout")
            .and_then(|v| v.parse::<HumanDuration>())
            .map_or(default.timeout, |d| d.0),
        on_failure: t
            .opt("on_failure")
            .and_then(|v| {
                v.choice(&[
                    ("reboot", HealthFailure::Reboot),
                    ("stay", HealthFailure::Stay),
                ])
            })
            .unwrap_or(default.on_failure),
        command: t.opt("command").map(|v| v.str_list()).unwrap_or_default(),
    }
}

/// Every name of the tz database walden's image carries (see the file's header).
const TZ_NAMES: &str = include_str!("tz_names.txt");

/// Whether `name` is a zone or link of the tz database.
pub fn is_time_zone(name: &str) -> bool {
    tz_names().any(|n| n == name)
}

/// Every time zone name `timezone` accepts.
pub fn tz_names() -> impl Iterator<Item = &'static str> {
    TZ_NAMES
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn timezone(v: &Val<'_>) -> Option<String> {
    let s = v.str()?;
    if is_time_zone(s) {
        return Some(s.to_string());
    }
    // The closest names by edit distance, case-insensitively.
    let lower = s.to_ascii_lowercase();
    let mut near: Vec<(usize, &str)> = tz_names()
        .map(|n| (reader::edit_distance(&lower, &n.to_ascii_lowercase()), n))
        .filter(|(d, _)| *d <= 3)
        .collect();
    near.sort();
    let hint = match near.first() {
        Some((_, best)) => format!("did you mean \"{best}\"?"),
        None => "use a tz database name, e.g. \"UTC\" or \"Europe/Berlin\" (`timedatectl list-timezones` on any Linux machine lists them)".to_string(),
    };
    v.error(format!("unknown time zone {s:?}"), &hint)
}

fn vfio(t: Tbl<'_>) -> Option<VfioDevice> {
    let pci = t.opt("pci").and_then(|v| v.parse::<PciAddress>());
    let id = t.opt("id").and_then(|v| v.parse::<PciId>());
    let index = t.opt("index").and_then(|v| v.u32(0, 255));
    let all = t.opt("all").and_then(|v| v.bool()).unwrap_or(false);
    let label = t.opt("label").and_then(|v| v.parse::<Name>());
    let has = |k| t.opt(k).is_some();
    let hint = "give either pci = \"0000:03:00.0\" or id = \"1000:0072\"";
    let select = match (has("pci"), has("id")) {
        (true, true) => {
            t.error("give `pci` or `id`, not both", hint);
            None
        }
        (false, false) => {
            t.error("a [[vfio]] entry needs `pci` or `id`", hint);
            None
        }
        (true, false) => {
            if has("index") || has("all") {
                t.error(
                    "`index` and `all` only apply to `id`",
                    "remove them; `pci` selects exactly one device",
                );
            }
            pci.map(VfioSelect::Address)
        }
        (false, true) => {
            let which = match (index, all) {
                (Some(_), true) => {
                    t.error("give `index` or `all = true`, not both", "keep one of them");
                    IdSelect::All
                }
                (Some(i), false) => IdSelect::Index(i),
                (None, true) => IdSelect::All,
                (None, false) => IdSelect::Only,
            };
            id.map(|id| VfioSelect::Id { id, which })
        }
    };
    let at = t.at();
    t.finish();
    Some(VfioDevice {
        at,
        select: select?,
        label,
    })
}

fn ssh(t: Tbl<'_>) -> SshConfig {
    let authorized_keys = t
        .opt("authorized_keys")
        .map(|v| {
            v.list(|e| {
                let s = e.str()?;
                let valid = s.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| {
                    let known = w[0].starts_with("ssh-")
                        || w[0].starts_with("ecdsa-sha2-")
                        || w[0].starts_with("sk-");
                    known && w[1].starts_with("AAAA")
                });
                if valid && !s.contains('\n') {
                    Some(s.to_string())
                } else {
                    e.error(
                        "not an SSH public key line",
                        "paste one line of a .pub file, e.g. \"ssh-ed25519 AAAAC3Nz... admin@laptop\"",
                    )
                }
            })
        })
        .unwrap_or_default();
    t.finish();
    SshConfig { authorized_keys }
}
