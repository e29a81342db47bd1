//! The supervisor (`walden supervise`): the ordered bring-up of named steps
//! ([`bringup`]), then a table of supervised services kept running by one
//! event loop ([`engine`]): readiness, restart with exponential backoff and a
//! crash-loop limit, and an orderly stop in reverse dependency order on
//! SIGTERM/SIGINT.
//!
//! Run standalone, the supervisor makes itself a child subreaper so orphans
//! of services are reparented to it and reaped. On the appliance orphans go
//! to walden's PID 1, which reaps them at once (libvirt's daemonized QEMU
//! processes must vanish promptly when they exit). Services start with a clean
//! environment and signal state, in their own session, without inherited
//! fds; their stdout/stderr lines are logged with `service=NAME`.
//!
//! Modes (`Status.mode`): "pid1" when started by walden's PID 1 loop,
//! "systemd" with `--systemd` (READY=1/STATUS=/WATCHDOG=1/STOPPING=1 via
//! sd-notify), "standalone" otherwise.
//!
//! Caveat for code running inside the supervisor: the loop reaps with
//! `waitpid(-1)`, so helpers must not `wait()` for their own children on
//! another thread while the loop runs; steps run on the loop's thread
//! between turns and may use `Command::status()` freely.

pub mod appliance;
pub mod apply;
pub mod backoff;
pub mod bringup;
pub mod commands;
pub mod config_state;
pub mod config_watch;
pub mod engine;
pub mod host_files;
pub mod mounts_steps;
pub mod notify;
pub mod reaper;
pub mod runtime;
pub mod service;
pub mod signals;
pub mod spawn;
pub mod status;

#[cfg(test)]
mod tests;

use bringup::{run_steps, BringUp, Step};
use engine::{LoopExit, Supervisor};
use notify::Notifier;
use status::{SharedStatus, Status};
use std::path::{Path, PathBuf};

/// Arguments of `walden supervise`.
#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    /// Run under systemd: skip PID 1 duties, report through sd-notify.
    #[arg(long)]
    pub systemd: bool,
    /// Root of the host file system (a temp tree in tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Config directory [default: <root>/config].
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Runtime directory for the control socket [default: <root>/run/walden].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Also log to DIR/walden.log.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

impl SuperviseArgs {
    /// The paths these arguments describe.
    pub fn paths(&self) -> crate::context::Paths {
        let mut paths = crate::context::Paths::under(&self.root);
        if let Some(c) = &self.config {
            paths.config = c.clone();
        }
        if let Some(r) = &self.run_dir {
            paths.run = r.clone();
        }
        paths.log_dir = self.log_dir.clone();
        paths
    }
}

/// Errors of the supervisor core.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Two services share a name.
    #[error("service {service:?} is listed twice; give every service a unique name")]
    DuplicateService {
        /// The name.
        service: String,
    },
    /// A service has nothing to run.
    #[error("service {service:?} has an empty argv; give it a command to run")]
    EmptyArgv {
        /// The service.
        service: String,
    },
    /// `after` names a service that does not exist.
    #[error("service {service:?} is after {dependency:?}, which is not a service; define it or remove it from `after`")]
    UnknownDependency {
        /// The service.
        service: String,
        /// The missing dependency.
        dependency: String,
    },
    /// `after` lists form a cycle.
    #[error(
        "services {services} depend on each other in a cycle; break it in their `after` lists"
    )]
    DependencyCycle {
        /// The services that could not be ordered.
        services: String,
    },
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        /// Signal name.
        signal: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The self-pipe could not be created.
    #[error("cannot create the supervisor's wake-up pipe: {0}; too many open files?")]
    WakePipe(std::io::Error),
    /// poll(2) failed.
    #[error("waiting for events failed: {0}")]
    Poll(nix::Error),
    /// The runtime directory could not be created.
    #[error("cannot create the run directory {path}: {source}; pass --run-dir to use another")]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Supervisor run mode, as reported in `Status.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Child of walden's PID 1 on the appliance: runs the whole bring-up.
    Pid1,
    /// Child of walden's PID 1 inside a container or PID namespace: the
    /// machine is not ours, so only config and services run.
    Container,
    /// A systemd service (`--systemd`).
    Systemd,
    /// Anything else (a shell, a test).
    Standalone,
}

impl Mode {
    /// Decide the mode from the flag, the parent pid and whether we are in
    /// the initial PID namespace.
    pub fn detect(systemd: bool, parent_pid: i32, scope: crate::pid1::Scope) -> Self {
        match (systemd, parent_pid, scope) {
            (true, _, _) => Mode::Systemd,
            (false, 1, crate::pid1::Scope::InitialNamespace) => Mode::Pid1,
            (false, 1, crate::pid1::Scope::ChildNamespace) => Mode::Container,
            _ => Mode::Standalone,
        }
    }

    /// The string in `Status.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pid1 => "pid1",
            Mode::Container => "container",
            Mode::Systemd => "systemd",
            Mode::Standalone => "standalone",
        }
    }
}

/// Milliseconds since the kernel started, from `<proc>/uptime`.
pub fn kernel_uptime_ms(proc: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc.join("uptime")).ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// `walden supervise`: set up, bring up, supervise until SIGTERM/SIGINT,
/// stop everything, return.
pub fn run(args: SuperviseArgs) -> anyhow::Result<()> {
    // The real /proc, whatever --root says: the namespace is this process's.
    let scope = crate::pid1::Scope::detect(Path::new("/proc"));
    let mode = Mode::detect(args.systemd, nix::unistd::getppid().as_raw(), scope);
    // Created first: its clock is the supervisor's start for every timing.
    let status = SharedStatus::new(Status::new(mode.as_str()));
    let paths = args.paths();
    crate::logging::init(paths.log_dir.as_deref());
    std::fs::create_dir_all(&paths.run).map_err(|source| SupervisorError::RunDir {
        path: paths.run.clone(),
        source,
    })?;
    if mode == Mode::Pid1 {
        status.lock().kernel_ms = kernel_uptime_ms(&paths.proc);
    }
    // Only a standalone supervisor collects orphans itself. On the
    // appliance (and under systemd) orphans go to init, which reaps them at
    // once: libvirt daemonizes QEMU and waits for the process to vanish
    // when it stops one, and this loop does not reap while a bring-up step
    // or a config apply runs on its thread (define then took >30 s).
    if std::process::id() != 1 && mode == Mode::Standalone {
        if let Err(e) = reaper::become_subreaper() {
            tracing::warn!(
                "cannot become a child subreaper ({e}); orphans of services go to PID 1"
            );
        }
    }
    let notifier = if args.systemd {
        Notifier::from_env()
    } else {
        Notifier::disabled()
    };
    let supervisor = Supervisor::new(status.clone(), notifier)?;
    let ctl = crate::control::Ctl {
        status,
        commands: Some(supervisor.commands()),
    };
    // Kept alive until return: dropping it removes the socket.
    let _server = crate::control::serve(&paths.control_socket(), ctl)?;
    let mut bringup = BringUp::new(paths, supervisor);
    supervise(&mut bringup, appliance::steps(mode))?;
    Ok(())
}

/// Run the bring-up `steps`, supervise until a stop is requested, then stop
/// every service in reverse dependency order.
pub fn supervise(bringup: &mut BringUp, steps: Vec<Step>) -> Result<(), SupervisorError> {
    run_steps(bringup, steps);
    let mode = mode_of(&bringup.supervisor.status().lock().mode);
    let commands = bringup.supervisor.commands();
    let mut applies = apply::ApplyState::default();
    while !bringup.supervisor.stop_requested() {
        let waiting = commands.clone();
        let exit = bringup
            .supervisor
            .run_until(move |_| waiting.pending(), applies.deadline())?;
        match exit {
            // The config disk appeared after boot (maintenance mode).
            LoopExit::Reload if config_watch::take_appeared() => {
                run_steps(
                    bringup,
                    config_watch::late_steps(appliance::steps(Mode::Pid1)),
                );
            }
            LoopExit::Reload => {
                tracing::info!(
                    "SIGHUP: use `walden config apply` to apply a changed config; ignored"
                )
            }
            LoopExit::Condition => {
                while let Some((command, reply)) = commands.pop() {
                    let answer = apply::handle(bringup, &mut applies, mode, command);
                    // The client may have given up; the result is in status.
                    let _ = reply.send(answer);
                }
            }
            LoopExit::Deadline => apply::revert_if_due(bringup, &mut applies, mode),
            LoopExit::Stop => {}
        }
    }
    // Guests first (ACPI shutdown, reverse `after` order, forced off after
    // their timeouts), while libvirtd still runs; then the services.
    if let Some(guests) = &bringup.guests {
        bringup.supervisor.set_phase(status::Phase::Stopping);
        tracing::info!("stopping guests");
        let outcome = guests.shutdown_all(crate::guests::runtime::handle::SHUTDOWN_LIMIT);
        guests.stop_monitor();
        tracing::info!("guests: {outcome}");
    }
    bringup.supervisor.shutdown()
}

/// The mode a status string names (the supervisor records it at start).
fn mode_of(s: &str) -> Mode {
    [Mode::Pid1, Mode::Container, Mode::Systemd, Mode::Standalone]
        .into_iter()
        .find(|m| m.as_str() == s)
        .unwrap_or(Mode::Standalone)
}
