//! The bring-up table for each mode (DESIGN.md section 2, "supervise").
//!
//! On the appliance (mode "pid1"): early mounts -> boot record -> vfio-early
//! (`walden.vfio=`) -> udevd + coldplug triggers -> config disk -> /etc
//! and /var overlays -> config (last-known-good on refusal) -> hostname ->
//! host files -> consoles -> libvirt -> udev settle (the coldplug runs
//! alongside the steps since the triggers) -> control port -> mounts (data
//! disks, swap) -> network -> vfio -> services -> network mounts -> guests
//! -> record the config generation -> health. Under systemd the host's own mounts and
//! devices are used: config, network, vfio, services, generation. In a
//! container or standalone: only config and services. Steps that do not
//! apply say why in status.

use super::bringup::{services_step, BringUp, Step, StepError, StepOutcome};
use super::engine::{LoopExit, Supervisor};
use super::service::{Readiness, ServiceSpec};
use super::Mode;
use crate::boot::cmdline::{Cmdline, DeviceSpec};
use crate::boot::record::{BootRecord, BOOT_RECORD};
use crate::config::{Config, ServiceConfig};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// util-linux's getty (the console login of `walden.rescue`).
pub const AGETTY: &str = "/sbin/agetty";
/// e2fsprogs' checker, run before the config disk is mounted.
pub const E2FSCK: &str = "e2fsck";
/// Longest e2fsck of the config disk may take (a small disk: seconds).
const E2FSCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Label of the config disk unless `walden.config=` names another.
pub const CONFIG_LABEL: &str = "WALDEN-CONFIG";
/// How long to look for a late config disk (USB) before giving up.
const CONFIG_DISK_WAIT: Duration = Duration::from_secs(10);
/// udevd must create its control socket within this time.
const UDEVD_READY: Duration = Duration::from_secs(15);
/// udevadm settle's own limit.
const UDEV_SETTLE: Duration = Duration::from_secs(30);
/// How long the services step waits for readiness.
const SERVICES_READY: Duration = Duration::from_secs(60);

/// The bring-up steps for `mode`, in order.
pub fn steps(mode: Mode) -> Vec<Step> {
    let mut steps = Vec::new();
    let image_steps = crate::images::ImageSteps::default();
    if mode == Mode::Pid1 {
        // Without /proc, /sys and /dev nothing else can work.
        steps.push(Step::new("early-mounts", early_mounts).required());
        steps.push(Step::new("boot-record", boot_record));
        // Trial boots and rollbacks of the boot image (issue 8).
        steps.push(image_steps.boot_step());
        // walden.vfio= devices must be on vfio-pci before coldplug loads host drivers.
        steps.push(Step::new("vfio-early", crate::vfio::early_step));
        steps.push(Step::new("udev", udev));
        steps.push(Step::new("config-disk", config_disk));
        steps.push(Step::new("etc-overlay", super::config_state::persist_step));
    }
    let config_state = super::config_state::ConfigState::default();
    steps.push(config_state.load_step());
    if mode == Mode::Pid1 {
        steps.push(Step::new("hostname", hostname));
        // [watchdog] timeout from the config on, not only at the end.
        steps.push(Step::new("watchdog", crate::images::health::watchdog_step));
        steps.push(Step::new("host-files", super::host_files::step));
        steps.push(Step::new("consoles", consoles));
        // virtlogd + libvirtd join the services below (issue 7).
        steps.push(Step::new(
            "libvirt",
            crate::guests::runtime::setup::libvirt_step,
        ));
        steps.push(Step::new("udev-settle", udev_settle));
        // The virtio port's driver is loaded by the coldplug.
        steps.push(Step::new("control-port", control_port));
        // Data disks and swap once udev named the disks; before the
        // network, whose DHCP clients and guests may need them.
        steps.push(Step::new("mounts", super::mounts_steps::local_step));
    }
    // Binding host devices is for a real host (the appliance, or a distro
    // under systemd); never in standalone/container runs against a test root.
    if matches!(mode, Mode::Pid1 | Mode::Systemd) {
        // DESIGN.md: config -> network -> vfio -> services.
        steps.push(Step::new("network", crate::net::step::network_step));
        steps.push(Step::new("vfio", crate::vfio::config_step));
    }
    steps.push(services_step(SERVICES_READY));
    if mode == Mode::Pid1 {
        // nfs/cifs shares once the DHCP clients (services) may have a lease.
        steps.push(Step::new(
            "network-mounts",
            super::mounts_steps::network_step,
        ));
    }
    if matches!(mode, Mode::Pid1 | Mode::Systemd) {
        // Guests in `after` order once libvirtd is ready (issue 7).
        steps.push(Step::new(
            "guests",
            crate::guests::runtime::step::guests_step,
        ));
    }
    if matches!(mode, Mode::Pid1 | Mode::Systemd) {
        steps.push(config_state.record_step());
    }
    if mode == Mode::Pid1 {
        // Last: mark a trial image good once healthy, or record why not.
        steps.push(image_steps.health_step());
    }
    steps
}

fn early_mounts(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let done =
        crate::boot::early::mount_early(&b.paths).map_err(|e| StepError::new(e.to_string()))?;
    Ok(StepOutcome::Done(if done.is_empty() {
        "all API file systems were already mounted".into()
    } else {
        format!("mounted {}", done.join(" "))
    }))
}

fn boot_record(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let path = b.paths.root.join(BOOT_RECORD.trim_start_matches('/'));
    if !path.exists() {
        return Ok(StepOutcome::Skipped(format!(
            "no {} (not booted through walden's stage 1)",
            path.display()
        )));
    }
    let rec = BootRecord::load(&path).map_err(|e| StepError::new(e.to_string()))?;
    let detail = format!(
        "booted {} from {} ({} {}), stage 1 took {} ms",
        rec.version,
        rec.boot_kind,
        rec.media_fstype,
        rec.media_device,
        ((rec.stage1_end_s - rec.stage1_start_s) * 1000.0).max(0.0) as u64
    );
    b.supervisor.status().lock().image_version = Some(rec.version);
    Ok(StepOutcome::Done(detail))
}

fn udev(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let argv = crate::boot::udev::udevd_argv();
    if !b.paths.root.join(argv[0].trim_start_matches('/')).exists() {
        return Ok(StepOutcome::Skipped(format!(
            "{} is not in this root",
            argv[0]
        )));
    }
    let mut spec = ServiceSpec::new("udevd", &[]);
    spec.argv = argv;
    spec.ready = Readiness::Path(b.paths.root.join("run/udev/control"));
    let sup = &mut b.supervisor;
    sup.add_services(vec![spec])?;
    sup.start_services();
    let deadline = Instant::now() + UDEVD_READY;
    match sup.run_until(Supervisor::settled, Some(deadline))? {
        LoopExit::Deadline => {
            return Err(StepError::new(format!(
                "udevd did not create /run/udev/control within {}s; devices are not named, see its log lines",
                UDEVD_READY.as_secs()
            )))
        }
        LoopExit::Stop => return Err(StepError::new("stop requested while starting udevd")),
        LoopExit::Condition | LoopExit::Reload => {}
    }
    crate::boot::udev::trigger(&b.paths.root)
        .map(|done| StepOutcome::Done(format!("{done}; settled later (udev-settle)")))
        .map_err(|e| StepError::new(e.to_string()))
}

/// Wait for the coldplug events the udev step triggered: network interface
/// names and host drivers must be final before the network and vfio steps.
/// The steps between (config disk, overlays, config, host files) run while
/// udevd works.
fn udev_settle(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let udevd = b
        .supervisor
        .status()
        .lock()
        .services
        .iter()
        .any(|s| s.name == "udevd");
    if !udevd {
        return Ok(StepOutcome::Skipped("udevd was not started".into()));
    }
    crate::boot::udev::settle(&b.paths.root, UDEV_SETTLE)
        .map(StepOutcome::Done)
        .map_err(|e| StepError::new(e.to_string()))
}

fn control_port(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let ctl = crate::control::Ctl {
        status: b.supervisor.status().clone(),
        commands: Some(b.supervisor.commands()),
    };
    Ok(match crate::control::serve_virtio_port(&b.paths, ctl) {
        Some(dev) => {
            StepOutcome::Done(format!("serving the control protocol on {}", dev.display()))
        }
        None => StepOutcome::Skipped(format!(
            "no virtio-serial port named {}",
            crate::control::VIRTIO_PORT
        )),
    })
}

/// Which disk is the config disk: `walden.config=` or the default label.
fn config_spec(proc: &Path) -> DeviceSpec {
    std::fs::read_to_string(proc.join("cmdline"))
        .ok()
        .and_then(|text| Cmdline::parse(&text).ok())
        .and_then(|c| c.config)
        .unwrap_or_else(|| DeviceSpec::Label(CONFIG_LABEL.into()))
}

fn config_disk(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let paths = &b.paths;
    if paths.config.join("host.toml").exists() {
        return Ok(StepOutcome::Skipped(format!(
            "{} already holds host.toml",
            paths.config.display()
        )));
    }
    let spec = config_spec(&paths.proc);
    let found = crate::boot::media::find(
        &paths.sys,
        &paths.dev,
        &spec,
        CONFIG_DISK_WAIT,
        Duration::from_millis(250),
        |_| {
            tracing::info!(
                "waiting up to {}s for the config disk ({spec})",
                CONFIG_DISK_WAIT.as_secs()
            )
        },
    )
    .map_err(|e| {
        // Maintenance mode: the login still starts, and a watcher runs the
        // config bring-up when the disk shows up.
        let watching = super::config_watch::start(paths.sys.clone(), paths.dev.clone(), spec.clone());
        let e = match e {
            crate::boot::BootError::MediaNotFound {
                spec,
                waited_s,
                seen,
            } => format!("no config disk with {spec} after waiting {waited_s} s; looked at: {seen}"),
            other => other.to_string(),
        };
        StepError::maintenance(format!(
            "{e}; maintenance mode: attach a disk labelled {CONFIG_LABEL} (walden provision DEVICE, \
             or mkfs.ext4 -L {CONFIG_LABEL}){}",
            if watching { "; it is picked up without a reboot" } else { "" }
        ))
    })?;
    let dev = &found.device;
    let t = std::time::Instant::now();
    let fsck = fsck(dev);
    let fsck_s = t.elapsed().as_secs_f64();
    std::fs::create_dir_all(&paths.config)
        .map_err(|e| StepError::new(format!("cannot create {}: {e}", paths.config.display())))?;
    nix::mount::mount(
        Some(dev.as_path()),
        &paths.config,
        Some(found.probe.fstype.mount_name()),
        nix::mount::MsFlags::MS_NOATIME | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| {
        StepError::new(format!(
            "cannot mount the config disk {} at {}: {e}",
            dev.display(),
            paths.config.display()
        ))
    })?;
    Ok(StepOutcome::Done(format!(
        "mounted {} ({}) at {}; {fsck} (e2fsck {fsck_s:.1} s, mount {:.1} s)",
        dev.display(),
        found.probe,
        paths.config.display(),
        t.elapsed().as_secs_f64() - fsck_s
    )))
}

/// `e2fsck -p`: repair what is safe to repair, and say what happened.
/// Bounded: a check that does not end in [`E2FSCK_TIMEOUT`] is killed and
/// the disk mounted anyway (the detail says so).
fn fsck(dev: &Path) -> String {
    let mut cmd = Command::new(E2FSCK);
    cmd.arg("-p").arg(dev);
    match crate::command::run(&mut cmd, E2FSCK_TIMEOUT) {
        Ok(out) => match out.status.code() {
            Some(0) => "file system clean".into(),
            Some(1 | 2) => format!("e2fsck repaired the file system: {}", out.stdout.trim()),
            code => {
                let msg = format!(
                    "e2fsck -p {} exited with {code:?}: {}; mounting anyway, run e2fsck by hand",
                    dev.display(),
                    out.stdout.trim()
                );
                tracing::warn!("{msg}");
                msg
            }
        },
        Err(e) => {
            let msg = format!(
                "e2fsck -p {} not finished: {e}; mounting anyway",
                dev.display()
            );
            tracing::warn!("{msg}");
            msg
        }
    }
}

/// One line about a loaded config, for the "config" step's detail.
pub(crate) fn summary(c: &Config) -> String {
    format!(
        "host {}, {} guests, {} services, {} warnings",
        c.host.hostname,
        c.guests.len(),
        c.host.services.len(),
        c.warnings.len()
    )
}

fn hostname(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let Some(config) = &b.config else {
        return Ok(StepOutcome::Skipped("no config loaded".into()));
    };
    let name = config.host.hostname.to_string();
    nix::unistd::sethostname(&name)
        .map_err(|e| StepError::new(format!("cannot set the hostname to {name}: {e}")))?;
    Ok(StepOutcome::Done(name))
}

/// What every console the kernel was given (`console=`) shows: walden's
/// status screen (root has no password, so a login prompt would be a dead
/// end), or with `walden.rescue` on the kernel command line a root shell
/// (agetty logging root in without a password: only someone at the console,
/// who could edit the boot menu anyway, gets it).
fn consoles(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let cmdline = std::fs::read_to_string(b.paths.proc.join("cmdline")).unwrap_or_default();
    let rescue = Cmdline::parse(&cmdline).is_ok_and(|c| c.rescue);
    if rescue && !b.paths.root.join(AGETTY.trim_start_matches('/')).exists() {
        return Err(StepError::new(format!(
            "walden.rescue asks for a root shell, but {AGETTY} is not in this root"
        )));
    }
    let walden = std::env::current_exe().unwrap_or_else(|_| WALDEN.into());
    let specs = console_services(&cmdline, rescue, &walden);
    let ttys: Vec<String> = console_ttys(&cmdline).into_iter().map(|t| t.0).collect();
    b.services.extend(specs);
    Ok(StepOutcome::Done(if rescue {
        format!("walden.rescue: root shell on {}", ttys.join(", "))
    } else {
        format!("status screen on {}", ttys.join(", "))
    }))
}

/// The walden of the root file system (the status screen runs it).
const WALDEN: &str = "/usr/sbin/walden";

/// One service per console: the status screen (`console-TTY`), or with
/// `rescue` a root shell through agetty (`getty-TTY`).
fn console_services(cmdline: &str, rescue: bool, walden: &Path) -> Vec<ServiceSpec> {
    console_ttys(cmdline)
        .into_iter()
        .map(|(tty, baud)| {
            if rescue {
                let mut spec = ServiceSpec::new(format!("getty-{tty}"), &[AGETTY]);
                spec.argv = vec![
                    AGETTY.into(),
                    "--autologin".into(),
                    "root".into(),
                    "-L".into(),
                    baud,
                    tty,
                    "vt100".into(),
                ];
                spec
            } else {
                let mut spec = ServiceSpec::new(format!("console-{tty}"), &[]);
                spec.argv = vec![
                    walden.display().to_string(),
                    "console-screen".into(),
                    format!("/dev/{tty}"),
                ];
                spec
            }
        })
        .collect()
}

/// `console=ttyS0,115200 console=tty0` -> [("ttyS0","115200"), ("tty1","38400")].
fn console_ttys(cmdline: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for arg in cmdline.split_whitespace() {
        let Some(value) = arg.strip_prefix("console=") else {
            continue;
        };
        let (name, opts) = value.split_once(',').unwrap_or((value, ""));
        // tty0 is "the current virtual terminal": log in on tty1.
        let name = if name == "tty0" { "tty1" } else { name };
        let baud: String = opts.chars().take_while(char::is_ascii_digit).collect();
        let baud = if baud.is_empty() {
            "38400".to_string()
        } else {
            baud
        };
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), baud));
        }
    }
    out
}

impl From<&ServiceConfig> for ServiceSpec {
    fn from(c: &ServiceConfig) -> Self {
        let mut spec = ServiceSpec::new(c.name.to_string(), &[]);
        spec.argv = c.command.clone();
        spec.env = c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        spec.after = c.after.iter().map(|n| n.to_string()).collect();
        spec.ready = c.ready.clone();
        spec.restart = c.restart;
        spec.stop_signal = c.stop_signal;
        spec.stop_timeout = c.stop_timeout;
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consoles_come_from_the_kernel_command_line() {
        let c =
            console_ttys("BOOT_IMAGE=/x console=tty0 console=ttyS0,115200n8 quiet console=ttyS0");
        assert_eq!(
            c,
            vec![
                ("tty1".to_string(), "38400".to_string()),
                ("ttyS0".to_string(), "115200".to_string())
            ]
        );
        assert!(console_ttys("quiet").is_empty());
    }

    #[test]
    fn consoles_show_the_screen_or_with_rescue_a_root_shell() {
        let line = "console=tty0 console=ttyS0,115200";
        let walden = Path::new("/usr/sbin/walden");
        let screens = console_services(line, false, walden);
        let names: Vec<&str> = screens.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["console-tty1", "console-ttyS0"]);
        assert_eq!(
            screens[1].argv,
            ["/usr/sbin/walden", "console-screen", "/dev/ttyS0"]
        );
        let shells = console_services(line, true, walden);
        assert_eq!(shells[1].name, "getty-ttyS0");
        assert_eq!(
            shells[1].argv,
            [
                "/sbin/agetty",
                "--autologin",
                "root",
                "-L",
                "115200",
                "ttyS0",
                "vt100"
            ]
        );
    }

    #[test]
    fn config_disk_defaults_to_its_label_and_honours_the_command_line() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            config_spec(tmp.path()),
            DeviceSpec::Label(CONFIG_LABEL.into())
        );
        std::fs::write(
            tmp.path().join("cmdline"),
            "quiet walden.config=LABEL=MYCONF\n",
        )
        .unwrap();
        assert_eq!(config_spec(tmp.path()), DeviceSpec::Label("MYCONF".into()));
    }

    #[test]
    fn services_from_host_toml_keep_every_setting() {
        let host = r#"schema = 1
hostname = "h"
[[service]]
name = "exporter"
command = ["/usr/bin/exporter", "--port", "9100"]
env = { A = "1" }
ready = { path = "/run/exporter.sock" }
restart = "on-failure"
stop_signal = "SIGINT"
stop_timeout = "3s"
[[service]]
name = "after-it"
command = ["/bin/true"]
after = ["exporter"]
"#;
        let config = crate::config::from_strs(host, &[]).unwrap();
        let specs: Vec<ServiceSpec> = config.host.services.iter().map(ServiceSpec::from).collect();
        assert_eq!(specs[0].argv, ["/usr/bin/exporter", "--port", "9100"]);
        assert_eq!(specs[0].env, [("A".to_string(), "1".to_string())]);
        assert_eq!(specs[0].ready, Readiness::Path("/run/exporter.sock".into()));
        assert_eq!(specs[0].stop_signal, nix::sys::signal::Signal::SIGINT);
        assert_eq!(specs[0].stop_timeout, Duration::from_secs(3));
        assert_eq!(specs[1].after, ["exporter"]);
    }
}
