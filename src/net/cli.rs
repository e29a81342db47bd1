//! `walden net apply` and `walden net show`: the network module from the
//! command line, for admins (and for the privileged tests, which run it
//! inside network namespaces).

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

/// `walden net ...`
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Bring the kernel's network to host.toml's [network] now and print
    /// what changed: links, addresses, routes, resolv.conf only (no DHCP
    /// client, no confirm-or-revert; on an appliance use `walden config apply`).
    Apply {
        /// Config directory holding host.toml.
        #[arg(default_value = "/config")]
        dir: PathBuf,
        /// Where resolv.conf goes.
        #[arg(long, default_value = "/etc")]
        etc: PathBuf,
        /// Print the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show each link host.toml manages as the kernel has it now.
    Show {
        /// Config directory holding host.toml.
        #[arg(default_value = "/config")]
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `walden net` command; the exit code on success.
pub fn command(cmd: NetCommand) -> anyhow::Result<u8> {
    match cmd {
        NetCommand::Apply {
            dir,
            etc,
            dry_run,
            json,
        } => {
            let config = load(&dir)?;
            let net = &config.host.network;
            if dry_run {
                let plan = super::plan_now(net)?;
                let ops: Vec<String> = plan.ops.iter().map(|o| o.to_string()).collect();
                if json {
                    println!("{}", serde_json::to_string_pretty(&ops)?);
                } else if plan.is_empty() {
                    println!("nothing to do: the network is as configured");
                } else {
                    ops.iter().for_each(|o| println!("{o}"));
                }
                return Ok(0);
            }
            let report = super::apply(net, None, &etc)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                report.changes.iter().for_each(|c| println!("{c}"));
                if let Some(p) = &report.resolv_conf {
                    println!("updated {}", p.display());
                }
                if report.changes.is_empty() && report.resolv_conf.is_none() {
                    println!("nothing to do: the network is as configured");
                }
            }
            Ok(0)
        }
        NetCommand::Show { dir, json } => {
            let config = load(&dir)?;
            let links = super::status(&config.host.network)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&links)?);
            } else {
                print!("{}", super::status::render(&links));
            }
            Ok(0)
        }
    }
}

fn load(dir: &std::path::Path) -> anyhow::Result<crate::config::Config> {
    crate::config::load(dir).with_context(|| format!("cannot use the config in {}", dir.display()))
}
