//! walden: init, supervisor and config tool of the walden appliance.
//!
//! This file only dispatches on argv[0] and the subcommand; every concern
//! lives in its module (DESIGN.md section 3).

mod boot;
mod cli;
mod command;
mod config;
mod context;
mod control;
mod guests;
mod images;
mod logging;
mod mounts;
mod net;
mod pid1;
mod requires;
mod state;
mod supervisor;
mod vfio;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "walden",
    version,
    about = "walden: a headless virtualisation appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as PID 1 (the image's /sbin/init does this by itself).
    Init,
    /// Bring the host up and keep it there (the PID 1 loop runs this).
    Supervise(supervisor::SuperviseArgs),
    /// Show the supervisor's state: steps, timings, services.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Control socket to ask.
        #[arg(long, default_value = context::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Work with configuration directories.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Power the machine off (signals PID 1).
    Poweroff,
    /// Reboot the machine (signals PID 1).
    Reboot,
    /// Halt the machine (signals PID 1).
    Halt,
    /// Make DEVICE (a disk or an image file) a WALDEN-CONFIG config disk.
    Provision {
        /// Block device (partitioned: GPT, one partition) or image file (file system directly).
        device: PathBuf,
        /// Seed the disk with this config directory (validated first).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Overwrite a disk that has partitions or a file system without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Host networking: apply host.toml's [network] now, or show it.
    #[command(subcommand)]
    Net(net::NetCommand),
    /// Guests: list, start, stop, restart, or attach to a serial console.
    Guest {
        #[command(subcommand)]
        command: guests::runtime::cli::GuestCommand,
        /// Control socket to ask.
        #[arg(long, global = true, default_value = context::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Versions on the boot media: list, install, rollback, remove.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Show the status screen on a console (the appliance runs one per console).
    #[command(hide = true)]
    ConsoleScreen {
        /// The terminal, e.g. /dev/ttyS0.
        tty: PathBuf,
        /// Control socket to ask.
        #[arg(long, default_value = context::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Check that a root file system (an image being built) has every
    /// program and file walden uses (image/build.sh runs it).
    #[command(hide = true)]
    CheckRoot {
        /// The root directory.
        root: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config directory offline: host.toml and guests/*.toml.
    Check {
        /// Directory holding host.toml.
        #[arg(default_value = "/config")]
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the recorded config generations, newest first.
    History {
        /// Config directory (the config disk).
        #[arg(long, default_value = "/config")]
        config: PathBuf,
    },
    /// Show what changed from generation GEN (default: last-good) to the config now.
    Diff {
        /// Generation number.
        generation: Option<u64>,
        /// Config directory (the config disk).
        #[arg(long, default_value = "/config")]
        config: PathBuf,
    },
    /// Validate a config and apply it to the running host now: DIR's set is
    /// installed on the config disk first (default: apply /config as it is).
    Apply {
        /// Config directory with host.toml and guests/ (default: /config).
        dir: Option<PathBuf>,
        /// Restart guests whose definition changed (default: mark them "restart pending").
        #[arg(long)]
        restart_changed: bool,
        /// Do not wait for `walden config confirm` after a network change.
        #[arg(long)]
        no_safe: bool,
        /// Seconds to wait for `walden config confirm` before a network change reverts.
        #[arg(long, value_name = "SECS")]
        confirm_timeout: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Control socket to ask.
        #[arg(long, default_value = context::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Keep a network change made by `config apply` (it reverts otherwise).
    Confirm {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Control socket to ask.
        #[arg(long, default_value = context::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Copy generation GEN (default: last-good) back into the config; reboot to run it.
    Rollback {
        /// Generation number.
        generation: Option<u64>,
        /// Config directory (the config disk).
        #[arg(long, default_value = "/config")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();

    // Names the binary answers to without a subcommand (busybox style).
    match argv0.as_str() {
        "poweroff" => return exit(pid1::request(pid1::Action::PowerOff)),
        "reboot" => return exit(pid1::request(pid1::Action::Reboot)),
        "halt" => return exit(pid1::request(pid1::Action::Halt)),
        _ => {}
    }
    // Stage 1: the kernel runs /init from the initramfs (boot::stage1).
    let argv0_full = std::env::args_os().next().unwrap_or_default();
    if std::process::id() == 1 && argv0_full == "/init" {
        boot::stage1::run();
    }
    if std::process::id() == 1 {
        // As PID 1 nothing may end the process: pid1::run never returns.
        pid1::run();
    }

    let cli = Cli::parse();
    match cli.command {
        Command::Init => {
            eprintln!(
                "walden init: not PID 1 (pid {}); refusing to act as init",
                std::process::id()
            );
            ExitCode::from(2)
        }
        Command::Supervise(args) => exit(supervisor::run(args).map(|()| 0)),
        Command::Status { json, socket } => exit(cli::status(&socket, json)),
        Command::Config(ConfigCommand::Check { dir, json }) => {
            ExitCode::from(config::check_command(&dir, json))
        }
        Command::Config(ConfigCommand::History { config }) => exit(
            state::cli::history(&config)
                .map(print_ok)
                .map_err(Into::into),
        ),
        Command::Config(ConfigCommand::Diff { generation, config }) => exit(
            state::cli::diff(&config, generation)
                .map(print_ok)
                .map_err(Into::into),
        ),
        Command::Config(ConfigCommand::Rollback { generation, config }) => exit(
            state::cli::rollback(&config, generation)
                .map(print_ok)
                .map_err(Into::into),
        ),
        Command::Config(ConfigCommand::Apply {
            dir,
            restart_changed,
            no_safe,
            confirm_timeout,
            json,
            socket,
        }) => {
            let request = control::ApplyRequest {
                files: None,
                restart_changed,
                safe: no_safe.then_some(false),
                confirm_timeout_s: confirm_timeout,
            };
            exit(cli::config_apply(&socket, dir.as_deref(), request, json))
        }
        Command::Config(ConfigCommand::Confirm { json, socket }) => {
            exit(cli::config_confirm(&socket, json))
        }
        Command::Poweroff => exit(pid1::request(pid1::Action::PowerOff)),
        Command::Reboot => exit(pid1::request(pid1::Action::Reboot)),
        Command::Halt => exit(pid1::request(pid1::Action::Halt)),
        Command::Net(cmd) => exit(net::command(cmd)),
        Command::Guest { command, socket } => exit(guests::runtime::cli::command(command, &socket)),
        Command::Image(cmd) => exit(images::cli::command(cmd)),
        Command::CheckRoot { root } => exit(requires::command(&root)),
        Command::ConsoleScreen { tty, socket } => exit(cli::screen::run(&tty, &socket)),
        Command::Provision { device, from, yes } => exit(
            state::provision::provision(&device, from.as_deref(), yes, &mut state::provision::ask)
                .map(print_ok)
                .map_err(Into::into),
        ),
    }
}

/// Print a command's text output; exit code 0.
fn print_ok(text: String) -> u8 {
    print!("{text}");
    0
}

/// Turn a result into an exit code, printing the error chain.
fn exit(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        // `walden status --json | grep -q ...`: the reader left; as with
        // SIGPIPE in C tools, end quietly (141 = 128 + SIGPIPE).
        Err(err) if is_broken_pipe(&err) => ExitCode::from(141),
        Err(err) => {
            eprintln!("walden: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether `err` is, somewhere in its chain, a write to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_recognised_through_the_context() {
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the status");
        assert!(is_broken_pipe(&pipe));
        assert!(!is_broken_pipe(&anyhow::anyhow!("no reply within 5 s")));
    }
}
