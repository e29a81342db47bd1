//! The "network" bring-up step: apply `[network]`, record the links in the
//! status, and queue one DHCP client service per DHCP interface.

use crate::supervisor::bringup::{BringUp, StepError, StepOutcome};
use std::path::Path;

/// Bring-up step "network" (after "config", before "vfio" and "services").
pub fn network_step(b: &mut BringUp) -> Result<StepOutcome, StepError> {
    let Some(config) = &b.config else {
        return Ok(StepOutcome::Skipped("no config loaded".into()));
    };
    let net = &config.host.network;
    let etc = b.paths.root.join("etc");
    let report = super::apply(net, b.network_applied.as_ref(), &etc)
        .map_err(|e| StepError::new(e.to_string()))?;
    b.network_applied = Some(net.clone());
    let mut detail = report.summary();
    match super::status(net) {
        Ok(links) => b.supervisor.status().lock().network = links,
        Err(e) => tracing::warn!("network: cannot read the links back for status: {e}"),
    }
    // Status shows the links as they are when asked (DHCP leases arrive later).
    let live = net.clone();
    b.supervisor.status().set_refresher(
        "network",
        Box::new(move |s| {
            if let Ok(links) = super::status(&live) {
                s.network = links;
            }
        }),
    );
    let dhcp = super::dhcp_services(net);
    if !dhcp.is_empty() {
        let client = b
            .paths
            .root
            .join(super::dhcp::DHCPCD.trim_start_matches('/'));
        if client.exists() {
            detail.push_str(&format!(
                "; DHCP on {}",
                super::dhcp::dhcp_interfaces(net).join(", ")
            ));
            b.services.extend(dhcp);
        } else {
            return Err(StepError::new(format!(
                "{detail}; but {} is not in this root, so DHCP ({}) cannot run: add dhcpcd-base to the image or use static addresses",
                Path::new(super::dhcp::DHCPCD).display(),
                super::dhcp::dhcp_interfaces(net).join(", ")
            )));
        }
    }
    Ok(StepOutcome::Done(detail))
}
