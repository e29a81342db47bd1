//! Host networking (DESIGN.md section 3): links, bonds, bridges, VLANs,
//! addresses, routes and DNS from host.toml's `[network]`, over netlink.
//!
//! The pure part — [`observed`] (the kernel's state as data),
//! [`desired`] (the config resolved against it: NICs by name or MAC) and
//! [`plan`] (an ordered list of [`Op`]s) — is unit-tested without root. The
//! effect part — [`observe`] (netlink dumps) and [`apply`] (one netlink
//! request per op) — runs on a small current-thread tokio runtime, because
//! the rtnetlink crates are async. Applying twice is a no-op; links walden
//! did not create (marked with the interface alias "walden") and that the
//! config does not mention are left alone; routes walden adds carry
//! protocol "static", so it removes only its own.
//!
//! DHCP runs as supervised `dhcpcd` services ([`dhcp_services`]); IPv6
//! SLAAC is the kernel's and stays on. resolv.conf is written from
//! `[network.dns]` ([`resolv`]).

pub mod apply;
pub mod cli;
pub mod desired;
pub mod dhcp;
pub mod error;
pub mod observe;
pub mod observed;
pub mod op;
pub mod plan;
pub mod resolv;
pub mod status;
pub mod step;
pub mod undo;

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod sim;

pub use cli::{command, NetCommand};
pub use dhcp::dhcp_services;
pub use error::NetError;
pub use plan::Plan;
pub use status::LinkStatus;

use crate::config::NetworkConfig;
use observed::Observed;
use op::Op;
use serde::Serialize;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a whole apply or status may take; the kernel answers netlink
/// requests at once, so hitting this means something is badly wrong.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The operations carried out, in order, as text ("create bond bond0 (802.3ad)").
    pub changes: Vec<String>,
    /// resolv.conf, when it was (re)written.
    pub resolv_conf: Option<PathBuf>,
}

impl ApplyReport {
    /// One line for logs and the bring-up status.
    pub fn summary(&self) -> String {
        let mut s = match self.changes.len() {
            0 => "network already as configured".to_string(),
            n => format!("{n} changes: {}", self.changes.join("; ")),
        };
        if let Some(p) = &self.resolv_conf {
            s.push_str(&format!("; updated {}", p.display()));
        }
        s
    }
}

/// Run `work` with a netlink handle on a fresh current-thread runtime.
fn with_netlink<T, F, Fut>(work: F) -> Result<T, NetError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(NetError::Socket)?;
    rt.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        let conn = tokio::spawn(connection);
        let result = tokio::time::timeout(NETLINK_TIMEOUT, work(handle)).await;
        conn.abort();
        result.map_err(|_| NetError::Invalid {
            what: "netlink".into(),
            reason: format!(
                "the kernel did not answer within {}s",
                NETLINK_TIMEOUT.as_secs()
            ),
        })?
    })
}

/// Read the kernel's current network state.
pub fn observe_now() -> Result<Observed, NetError> {
    with_netlink(|h| async move { observe::observe(&h).await })
}

/// What [`apply`] would do now, without doing it.
pub fn plan_now(config: &NetworkConfig) -> Result<Plan, NetError> {
    plan::plan(config, &observe_now()?)
}

/// Bring the kernel's network to `config`: observe, plan, apply each
/// operation in order (stopping at the first failure), then write
/// resolv.conf under `root_etc` when `[network.dns]` is set (and remove
/// walden's when it no longer is). `previous` is the config this host
/// applied last, if any: an `mtu` it had and `config` lacks is reset
/// ([`undo::with_mtu_resets`]).
pub fn apply(
    config: &NetworkConfig,
    previous: Option<&NetworkConfig>,
    root_etc: &Path,
) -> Result<ApplyReport, NetError> {
    let effective = undo::with_mtu_resets(config, previous);
    let config = &effective;
    let changes = with_netlink(|h| async move {
        let observed = observe::observe(&h).await?;
        let plan = plan::plan(config, &observed)?;
        let mut changes = Vec::new();
        for op in &plan.ops {
            tracing::info!(op = %op, "network");
            apply::run(&h, op).await?;
            changes.push(op.to_string());
        }
        Ok(changes)
    })?;
    let resolv_conf = resolv::write(&config.dns, root_etc)?;
    Ok(ApplyReport {
        changes,
        resolv_conf,
    })
}

/// Make `vid` the only VLAN of bridge port `port`, untagged with PVID: a
/// guest's tap on a `vlan_filtering` bridge (libvirt cannot tag ports of
/// a Linux bridge). The kernel gives a new port VLAN 1; it is removed.
pub fn set_port_vlan(port: &str, vid: u16) -> Result<(), NetError> {
    let mut ops = vec![Op::AddBridgeVlan {
        link: port.to_string(),
        vlan: observed::PortVlan::native(vid),
        bridge_self: false,
    }];
    if vid != 1 {
        ops.push(Op::DelBridgeVlan {
            link: port.to_string(),
            vid: 1,
            bridge_self: false,
        });
    }
    with_netlink(|h| async move {
        for op in &ops {
            tracing::info!(op = %op, "network");
            apply::run(&h, op).await?;
        }
        Ok(())
    })
}

/// Each managed link as the kernel has it now (for `walden status`).
pub fn status(config: &NetworkConfig) -> Result<Vec<LinkStatus>, NetError> {
    Ok(status::link_status(config, &observe_now()?))
}
