//! Privileged tests of [`super::apply`] itself, for what `walden net apply`
//! does not do: the undo of removed keys ([`super::undo`]), which only the
//! supervisor asks for by passing the config it applied before. A helper
//! thread moves into a network namespace of its own (`unshare(CLONE_NEWNET)`
//! affects that thread only; the `ip` commands it runs inherit it) and the
//! namespace goes away with the thread. Without root the test prints
//! "SKIPPED: reason" and passes, unless WALDEN_REQUIRE_PRIVILEGED=1.

use crate::config::NetworkConfig;
use serde_json::Value;
use std::process::Command;

fn network(host_net: &str) -> NetworkConfig {
    let text = format!("schema = 1\nhostname = \"h\"\n{host_net}");
    crate::config::from_strs(&text, &[]).unwrap().host.network
}

/// `ip ARGS` in the calling thread's network namespace.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mtu(link: &str) -> u64 {
    let text = ip(&["-j", "link", "show", "dev", link]).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v[0]["mtu"].as_u64().unwrap()
}

/// Run `body` on a thread that sits in a fresh network namespace; Err
/// (a reason to skip) when the namespace cannot be made.
fn in_netns(body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::spawn(move || {
        let ns = || std::fs::read_link("/proc/thread-self/ns/net").ok();
        let before = ns();
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET) failed: {e} (needs root)"))?;
        // Never touch the host's network: be sure this thread moved.
        if ns().is_none() || ns() == before {
            return Err("the thread is still in its old network namespace".into());
        }
        ip(&["link", "set", "lo", "up"]).map_err(|e| format!("{e} (iproute2 `ip` is needed)"))?;
        body();
        Ok(())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn skip(test: &str, reason: &str) {
    assert!(
        std::env::var("WALDEN_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{test}: {reason} (WALDEN_REQUIRE_PRIVILEGED=1)"
    );
    eprintln!("SKIPPED: {test}: {reason}");
}

#[test]
fn a_removed_mtu_goes_back_to_1500_when_the_previous_config_is_given() {
    const JUMBO: &str = "[[network.link]]\nname = \"eth0\"\nmtu = 9000\n\
        [[network.bridge]]\nname = \"br0\"\nports = [\"eth0\"]\nmtu = 9000\n";
    const PLAIN: &str = "[[network.link]]\nname = \"eth0\"\n\
        [[network.bridge]]\nname = \"br0\"\nports = [\"eth0\"]\n";
    let result = in_netns(|| {
        ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ])
        .unwrap();
        ip(&["link", "set", "peer0", "up"]).unwrap();
        let etc = tempfile::tempdir().unwrap();
        let (jumbo, plain) = (network(JUMBO), network(PLAIN));
        super::apply(&jumbo, None, etc.path()).unwrap();
        assert_eq!((mtu("eth0"), mtu("br0")), (9000, 9000));
        // Without the previous config (as `walden net apply`): left as is.
        let report = super::apply(&plain, None, etc.path()).unwrap();
        assert!(report.changes.is_empty(), "{report:?}");
        assert_eq!((mtu("eth0"), mtu("br0")), (9000, 9000));
        // With it (as the supervisor's network step): back to the default.
        let report = super::apply(&plain, Some(&jumbo), etc.path()).unwrap();
        assert_eq!((mtu("eth0"), mtu("br0")), (1500, 1500), "{report:?}");
        // And that is the steady state.
        let report = super::apply(&plain, Some(&jumbo), etc.path()).unwrap();
        assert!(report.changes.is_empty(), "{report:?}");
    });
    if let Err(reason) = result {
        skip(
            "a_removed_mtu_goes_back_to_1500_when_the_previous_config_is_given",
            &reason,
        );
    }
}
