//! Guests (issue 7): tiny nested guests (the image's kernel + a busybox
//! initramfs, see `qemu_tests::guest_assets`) started by walden through
//! libvirt inside the booted image.
//!
//! Four boots cover the issue's six scenarios:
//!
//! 1+2. `two_guests_start_in_order_and_stop_cleanly_on_the_power_button`:
//!      B `after` A; both print their marker; status lists both running;
//!      the power button shuts both down (their serial logs on the config
//!      disk end with GUEST-DOWN) before QEMU exits by itself.
//! 3.   `killed_guest_is_restarted_until_the_crash_loop_limit`.
//! 4.   `config_apply_adds_c_removes_b_and_leaves_a_alone`.
//! 5+6. `passthrough_e1000e_and_vlan_guest_reach_their_devices`: an e1000e
//!      through an emulated IOMMU into one guest, a second guest on VLAN 20
//!      of a walden bridge pinging the host's VLAN address.
//!
//! What happens inside the host is made visible by a `[[service]]` in the
//! test's host.toml ([`watcher`]): it copies the guests' serial logs
//! (/var/log/walden/guests/NAME.log) to the console with a `guest-log: `
//! prefix and prints `GUEST-PIDS a=<pid> b=-` whenever the guests' QEMU
//! processes change. Actions on the host (killing a QEMU) are services too.

mod common;

use anyhow::{bail, ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::control::ControlChannel;
use qemu_tests::guest_assets::{config_dir, script_service, TinyGuest, TinyGuestAssets};
use qemu_tests::{expect, ConfigDisk, DirectKernel, Machine, TestEnv};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// From the host being ready to a nested guest's marker: libvirt starting
/// QEMU, then the guest kernel under TCG inside TCG.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// From the power button to QEMU exiting: guests' ACPI shutdown first.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(240);

/// The host.toml every guest scenario starts from.
const HOST_TOML: &str = "schema = 1\nhostname = \"guests\"\n";

/// The serial log of guest `name` on the image (and, under /var's overlay,
/// at the same path on the config disk's file system).
fn serial_log(name: &str) -> String {
    format!("/var/log/walden/guests/{name}.log")
}

/// The QEMU process of tiny guest `name`, as `pgrep -f` finds it inside the
/// host: its `-append` holds `walden.guest=NAME`. (The backslash keeps the
/// pattern from matching the shell script that contains it.)
fn pgrep(name: &str) -> String {
    format!("pgrep -f 'qemu.*walden\\.guest={name}( |$)' | head -n 1")
}

/// The `[[service]]` that shows the guests' serial logs and QEMU pids on
/// the console (see the module docs).
fn watcher(guests: &[&str]) -> String {
    let logs: Vec<String> = guests.iter().map(|g| serial_log(g)).collect();
    let pids: String = guests
        .iter()
        .map(|g| format!("  p=$({}); now=\"$now {g}=${{p:--}}\"\n", pgrep(g)))
        .collect();
    let script = format!(
        "mkdir -p /var/log/walden/guests\n\
         tail -q -n +1 -F {logs} 2>/dev/null | sed -u 's/^/guest-log: /' > /dev/console &\n\
         prev=\n\
         while :; do\n\
         \x20 now=\n\
         {pids}\
         \x20 if [ \"$now\" != \"$prev\" ]; then echo \"GUEST-PIDS$now\" > /dev/console; prev=\"$now\"; fi\n\
         \x20 sleep 1\n\
         done\n",
        logs = logs.join(" "),
    );
    script_service("guest-watch", &script)
}

/// Parse the `GUEST-PIDS a=12 b=-` lines of the console, oldest first:
/// guest -> pid (None while it has no QEMU).
fn pid_lines(console: &str) -> Vec<BTreeMap<String, Option<u32>>> {
    console
        .lines()
        .filter_map(|l| l.split("GUEST-PIDS").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().ok()))
                .collect()
        })
        .collect()
}

/// Build the tiny guest's assets and a config directory with `host_toml`
/// (plus the watcher of `guests`) and `guests`.
fn config(
    env: &TestEnv,
    host_toml: &str,
    guests: &[TinyGuest],
) -> anyhow::Result<(PathBuf, TinyGuestAssets)> {
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let names: Vec<&str> = guests.iter().map(|g| g.name.as_str()).collect();
    let host = format!("{host_toml}{}", watcher(&names));
    let dir = config_dir(&env.dir().join("config-src"), &host, guests, &assets)?;
    Ok((dir, assets))
}

/// Boot the USB image (BIOS) with the config directory `dir`.
fn boot(env: &TestEnv, dir: PathBuf) -> anyhow::Result<Machine> {
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .config_disk(ConfigDisk::from_dir(dir))
        .start()?;
    wait_ready(&mut m, env)?;
    Ok(m)
}

/// Wait for walden's ready line; fail at once with walden's own words when
/// the guests step fails or bring-up ends in maintenance mode first.
fn wait_ready(m: &mut Machine, env: &TestEnv) -> anyhow::Result<()> {
    let seen = m.wait_for_any(
        &[
            expect::READY,
            expect::GUESTS_STEP_FAILED,
            expect::MAINTENANCE,
        ],
        BOOT_TIMEOUT,
    )?;
    ensure!(
        seen.line.contains(expect::READY),
        "the host did not start its guests: {}\n(console {})",
        seen.line,
        m.console_log().display()
    );
    require_guest_runtime(env)
}

/// Fail at once, not after the guest timeouts, when the image has no guest
/// runtime (status without `guests`); print the guests' states otherwise.
fn require_guest_runtime(env: &TestEnv) -> anyhow::Result<()> {
    let s = status(env)?;
    let list = s["guests"].as_array().with_context(|| {
        let steps: Vec<String> = s["steps"]
            .as_array()
            .map(|a| a.iter().map(|st| format!("{}={}", st["name"].as_str().unwrap_or("?"), st["state"].as_str().unwrap_or("?"))).collect())
            .unwrap_or_default();
        format!(
            "walden status has no `guests` list: the guest runtime of issue 7 is not in this image (rebuild it with `make image`); steps: {}",
            steps.join(" ")
        )
    })?;
    eprintln!("guests after ready: {}", Value::Array(list.clone()));
    Ok(())
}

/// `walden config apply` over the control channel: `files` (name ->
/// content) replace the config set; returns walden's report. (The
/// scenarios never use `Machine::status`, so the channel is free.)
fn config_apply(env: &TestEnv, files: Value) -> anyhow::Result<Value> {
    let mut ch = ControlChannel::connect(&env.scratch().join("ctl.sock"), Duration::from_secs(60))?;
    // Commands are sent once: make sure walden answers first.
    ch.request("status", Duration::from_secs(60))?;
    let request = json!({"action": "config-apply", "files": files});
    Ok(ch.command(&request, Duration::from_secs(300))?)
}

/// The status JSON (`walden status --json`).
fn status(env: &TestEnv) -> anyhow::Result<Value> {
    let mut ch = ControlChannel::connect(&env.scratch().join("ctl.sock"), Duration::from_secs(60))?;
    Ok(ch.request("status", Duration::from_secs(60))?)
}

/// The status's entry for guest `name` (the `guests` list is what `walden
/// guest list` shows), or None when it is not listed.
fn guest<'a>(status: &'a Value, name: &str) -> anyhow::Result<Option<&'a Value>> {
    let list = status["guests"].as_array().with_context(|| {
        format!(
            "walden status has no `guests` list (the guest runtime of issue 7 is not in this image?): {status}"
        )
    })?;
    Ok(list.iter().find(|g| g["name"] == name))
}

/// Check that status lists every guest in `names` as running.
fn assert_running(status: &Value, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let g = guest(status, name)?
            .with_context(|| format!("guest {name} is not in status: {}", status["guests"]))?;
        ensure!(g["state"] == "running", "guest {name} is not running: {g}");
    }
    Ok(())
}

/// Poll the console until `check` returns Some, or fail after `timeout`.
fn wait_console<T>(
    m: &Machine,
    what: &str,
    timeout: Duration,
    check: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + qemu_tests::scaled(timeout);
    loop {
        if let Some(v) = check(&m.console().text()) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            m.console().print_tail();
            bail!(
                "{what}: not seen within {timeout:?} (console {})",
                m.console_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A guest's serial log from the config disk (after QEMU exited).
fn log_on_config_disk(m: &Machine, name: &str) -> anyhow::Result<String> {
    let bytes = m
        .config_disk_file(&serial_log(name))?
        .with_context(|| format!("{} is not on the config disk", serial_log(name)))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn two_guests_start_in_order_and_stop_cleanly_on_the_power_button() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(
        two_guests_start_in_order_and_stop_cleanly_on_the_power_button_once,
    )
}

fn two_guests_start_in_order_and_stop_cleanly_on_the_power_button_once() -> anyhow::Result<()> {
    let Some(env) =
        TestEnv::with_image("two_guests_start_in_order_and_stop_cleanly_on_the_power_button")?
    else {
        return Ok(());
    };
    let guests = [TinyGuest::new("a"), TinyGuest::new("b").after("a")];
    let (dir, _) = config(&env, HOST_TOML, &guests)?;
    let mut m = boot(&env, dir)?;

    m.wait_for_console(&expect::guest_up("a"), GUEST_TIMEOUT)?;
    m.wait_for_console(&expect::guest_up("b"), GUEST_TIMEOUT)?;
    // A started first: no pid line shows B's QEMU without A's.
    let lines = pid_lines(&m.console().text());
    let b_first = lines.iter().find(|l| {
        l.get("b").copied().flatten().is_some() && l.get("a").copied().flatten().is_none()
    });
    ensure!(b_first.is_none(), "B's QEMU ran before A's: {b_first:?}");
    let s = status(&env)?;
    eprintln!("guests: {}", s["guests"]);
    assert_running(&s, &["a", "b"])?;

    m.powerdown()?;
    let exit = m.wait_exit(POWEROFF_TIMEOUT)?;
    ensure!(
        exit.success(),
        "QEMU exited with {exit} after the power button"
    );
    m.wait_for_console("walden: power off", Duration::from_secs(1))?;
    for name in ["a", "b"] {
        let log = log_on_config_disk(&m, name)?;
        ensure!(
            log.contains(&expect::guest_down(name)),
            "guest {name} did not get the ACPI power button before the host powered off; its log:\n{log}"
        );
    }
    Ok(())
}

/// Kills guest A's QEMU with SIGKILL, from inside the host: the first two
/// times once the (re)started guest printed its marker (proving the
/// restart), later ones 2 s after each restart, until walden stops
/// restarting it (no QEMU for 90 s) or 12 kills.
fn killer() -> String {
    let script = format!(
        "log={log}\n\
         kills=0 seen=0 cur= since=0 dead= last=$(date +%s)\n\
         while [ $kills -lt 12 ]; do\n\
         \x20 sleep 1; now=$(date +%s); p=$({pgrep})\n\
         \x20 if [ -z \"$p\" ] || [ \"$p\" = \"$dead\" ]; then\n\
         \x20   if [ $kills -gt 0 ] && [ $((now - last)) -ge 90 ]; then echo \"GUEST-KILLER: a not restarted within 90 s after $kills kills\" > /dev/console; exit 0; fi\n\
         \x20   continue\n\
         \x20 fi\n\
         \x20 [ \"$p\" = \"$cur\" ] || {{ cur=$p; since=$now; }}\n\
         \x20 ups=$(grep -c 'GUEST-UP a ' $log 2>/dev/null); ups=${{ups:-0}}\n\
         \x20 if [ $kills -lt 2 ]; then [ $ups -gt $seen ] || continue; else [ $((now - since)) -ge 2 ] || continue; fi\n\
         \x20 kill -9 $p && kills=$((kills + 1)) && seen=$ups && dead=$p && last=$now && echo \"GUEST-KILLER: killed a pid $p, kill $kills\" > /dev/console\n\
         done\n\
         echo \"GUEST-KILLER: a still restarting after $kills kills\" > /dev/console\n",
        log = serial_log("a"),
        pgrep = pgrep("a"),
    );
    script_service("guest-killer", &script)
}

#[test]
fn killed_guest_is_restarted_until_the_crash_loop_limit() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(killed_guest_is_restarted_until_the_crash_loop_limit_once)
}

fn killed_guest_is_restarted_until_the_crash_loop_limit_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("killed_guest_is_restarted_until_the_crash_loop_limit")?
    else {
        return Ok(());
    };
    let guests = [TinyGuest::new("a").restart("on-failure")];
    let host = format!("{HOST_TOML}{}", killer());
    let (dir, _) = config(&env, &host, &guests)?;
    let mut m = boot(&env, dir)?;

    m.wait_for_console(&expect::guest_up("a"), GUEST_TIMEOUT)?;
    let end = m.wait_for_any(
        &[
            "GUEST-KILLER: a not restarted",
            "GUEST-KILLER: a still restarting",
        ],
        Duration::from_secs(900),
    )?;
    eprintln!("{}", end.line);
    // The console's order of killer and log lines is not the guest's, so
    // count: restarted by its policy means a second QEMU booted to the marker.
    let console = m.console().text();
    let ups = console.matches(&expect::guest_up("a")).count();
    let kills = console.matches("GUEST-KILLER: killed a pid").count();
    eprintln!("guest a booted {ups} times, killed {kills} times");
    ensure!(
        ups >= 2 && kills >= 2,
        "guest a was not restarted after its QEMU was killed (booted {ups} times, killed {kills} times)"
    );
    ensure!(
        end.line.contains("not restarted"),
        "walden kept restarting a crashing guest: {}",
        end.line
    );
    let s = status(&env)?;
    let g = guest(&s, "a")?.context("guest a is not in status after its crash loop")?;
    eprintln!("a: {g}");
    ensure!(
        g["state"] != "running",
        "guest a runs after the crash loop: {g}"
    );
    let text = g.to_string().to_lowercase();
    ensure!(
        text.contains("crash") && (text.contains("loop") || text.contains("limit")),
        "status does not say guest a hit its crash-loop limit: {g}"
    );
    Ok(())
}

#[test]
fn config_apply_adds_c_removes_b_and_leaves_a_alone() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(config_apply_adds_c_removes_b_and_leaves_a_alone_once)
}

fn config_apply_adds_c_removes_b_and_leaves_a_alone_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("config_apply_adds_c_removes_b_and_leaves_a_alone")? else {
        return Ok(());
    };
    let a = TinyGuest::new("a");
    let (b, c) = (TinyGuest::new("b"), TinyGuest::new("c"));
    // The watcher follows all three from the start; c has no log yet.
    let names = ["a", "b", "c"];
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let host = format!("{HOST_TOML}{}", watcher(&names));
    let dir = config_dir(
        &env.dir().join("config-src"),
        &host,
        &[a.clone(), b],
        &assets,
    )?;
    let mut m = boot(&env, dir)?;
    m.wait_for_console(&expect::guest_up("a"), GUEST_TIMEOUT)?;
    m.wait_for_console(&expect::guest_up("b"), GUEST_TIMEOUT)?;
    let a_pid = wait_console(&m, "A's and B's QEMU pids", Duration::from_secs(30), |t| {
        let last = pid_lines(t).pop()?;
        last.get("b").copied().flatten()?;
        last.get("a").copied().flatten()
    })?;
    assert_running(&status(&env)?, &["a", "b"])?;

    // `walden config apply` with the new set: host.toml and a unchanged,
    // c added, b gone.
    let files = json!({
        "host.toml": host,
        "guests/a.toml": a.toml(),
        "guests/c.toml": c.toml(),
    });
    let report = config_apply(&env, files)?;
    eprintln!("apply: {report}");
    ensure!(report["state"] == "applied", "config apply: {report}");

    m.wait_for_console(&expect::guest_up("c"), GUEST_TIMEOUT)?;
    wait_console(&m, "B's QEMU gone", GUEST_TIMEOUT, |t| {
        let last = pid_lines(t).pop()?;
        last.get("b").copied().flatten().is_none().then_some(())
    })?;
    ensure!(
        m.console().contains(&expect::guest_down("b")),
        "B was not shut down through ACPI (no GUEST-DOWN b in its log)"
    );
    // A untouched: every pid line from A's first QEMU on has the same one
    // (lines before it are from before A started).
    let changed: Vec<_> = pid_lines(&m.console().text())
        .into_iter()
        .skip_while(|l| l.get("a").copied().flatten() != Some(a_pid))
        .filter(|l| l.get("a").copied().flatten() != Some(a_pid))
        .collect();
    ensure!(
        changed.is_empty(),
        "A's QEMU changed from pid {a_pid}: {changed:?}"
    );
    let s = status(&env)?;
    eprintln!("guests: {}", s["guests"]);
    assert_running(&s, &["a", "c"])?;
    let listed = guest(&s, "a")?.and_then(|g| g["pid"].as_u64());
    ensure!(
        listed.is_none_or(|p| p == u64::from(a_pid)),
        "status lists A with QEMU pid {listed:?}, the host saw {a_pid}"
    );
    if let Some(g) = guest(&s, "b")? {
        bail!("guest b is still listed (not undefined): {g}");
    }
    Ok(())
}

/// The e1000e QEMU adds at 00:10.0 for passthrough.
const PASSTHROUGH_NIC: &str = "0000:00:10.0";

/// Host with the e1000e under [[vfio]] and a VLAN-filtering bridge with
/// the host's own address on VLAN 20.
const PASSTHROUGH_VLAN_HOST_TOML: &str = r#"schema = 1
hostname = "guests"

[[vfio]]
pci = "0000:00:10.0"
label = "nic"

[[network.bridge]]
name = "br0"
ports = []
vlan_filtering = true

[[network.vlan]]
name = "v20"
link = "br0"
id = 20
addresses = ["10.20.0.1/24"]
"#;

#[test]
fn passthrough_e1000e_and_vlan_guest_reach_their_devices() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(passthrough_e1000e_and_vlan_guest_reach_their_devices_once)
}

fn passthrough_e1000e_and_vlan_guest_reach_their_devices_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("passthrough_e1000e_and_vlan_guest_reach_their_devices")?
    else {
        return Ok(());
    };
    let guests = [
        TinyGuest::new("p").pci_label("nic"),
        TinyGuest::new("v").nic_pinging("br0", Some(20), "10.20.0.2/24", "10.20.0.1"),
    ];
    let (dir, _) = config(&env, PASSTHROUGH_VLAN_HOST_TOML, &guests)?;
    let a = env.artifacts()?;
    let mut kernel = DirectKernel::like_grub(a, &a.version)?;
    kernel.append = format!("{} intel_iommu=on", kernel.append);
    let mut m = env
        .machine()
        .usb_image(a.usb_image()?)
        .direct_kernel(kernel)
        .config_disk(ConfigDisk::from_dir(dir))
        .extra_args([
            "-machine",
            "kernel-irqchip=split",
            "-device",
            "intel-iommu,intremap=on",
            // No netdev: nothing leaves the machine.
            "-device",
            "e1000e,addr=0x10",
        ])
        .start()?;
    wait_ready(&mut m, &env)?;

    // Both guests are independent: collect both outcomes, then report.
    let mut problems = Vec::new();
    let seen = wait_console(
        &m,
        "the passed-through e1000e in guest p's kernel log",
        GUEST_TIMEOUT,
        |t| {
            // The guest renumbers the device: any e1000e probe line will do.
            t.lines()
                .find(|l| {
                    l.contains(&format!("{} p: ", expect::GUEST_KLOG)) && l.contains("e1000e 0000:")
                })
                .map(str::to_string)
        },
    );
    match seen {
        Ok(line) => eprintln!("{line}"),
        Err(e) => problems.push(format!(
            "passthrough: guest p's kernel log shows no e1000e device (host device {PASSTHROUGH_NIC}): {e:#}"
        )),
    }
    let ping = wait_console(&m, "guest v's ping over VLAN 20", GUEST_TIMEOUT, |t| {
        t.lines()
            .find(|l| l.contains(&format!("{} v ", expect::GUEST_PING)))
            .map(str::to_string)
    });
    match ping {
        Ok(line) if line.contains(&expect::guest_ping_ok("v", "10.20.0.1")) => eprintln!("{line}"),
        Ok(line) => problems.push(format!("VLAN: guest v did not reach 10.20.0.1: {line}")),
        Err(e) => problems.push(format!("VLAN: {e:#}")),
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
