//! Supervisor (being built).

pub mod status;

use std::path::PathBuf;

/// Arguments of `walden supervise`.
#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    /// Run under systemd: skip PID 1 duties, report through sd-notify.
    #[arg(long)]
    pub systemd: bool,
    /// Root of the host file system (a temp tree in tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

/// `walden supervise`.
pub fn run(_args: SuperviseArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
