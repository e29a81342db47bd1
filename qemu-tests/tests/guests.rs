//! Guests (issue 7): tiny nested guests started by walden through libvirt
//! inside the booted image (see `qemu_tests::guest_assets`): the stub guest
//! (a multiboot kernel of a few KiB, up at once) where the guest OS does
//! not matter, in boots 1-3; the image's kernel with a busybox initramfs
//! where the guest's own view of devices does, in boots 4 and 5. Every guest key is set away from its
//! default somewhere here and its effect is seen from outside walden: in
//! the guest's own serial output, in its QEMU process on the host, or in
//! the files on the config disk after power-off.
//!
//! Five boots:
//!
//! 1. `two_guests_start_in_order_and_stop_cleanly_on_the_power_button`:
//!    b `after` z (which sorts after b by name): z's QEMU starts first
//!    (process start times); z's `memory`, `vcpus` (the RAM and CPUs its
//!    firmware reports to the guest), `cpu` (cpu.weight and cpu.max of its cgroup), `balloon`
//!    and `vnc` (its QEMU's argv, the VNC socket on 127.0.0.1) against b's
//!    defaults; the power button shuts z and b down through ACPI (their
//!    serial logs on the config disk end with GUEST-DOWN), while i, which
//!    ignores the button, is forced off after its `shutdown_timeout` of 10 s.
//! 2. `killed_guest_is_restarted_until_the_crash_loop_limit`: a
//!    (`on-failure`) is killed until walden gives up; n (`restart =
//!    "never"`) is killed once and stays off; m (`autostart = false`) does
//!    not run until `walden guest start`, then `list`, `console`,
//!    `restart`, `stop` from a host service, each seen in m's QEMU
//!    processes and markers.
//! 3. `config_apply_adds_c_removes_b_and_leaves_a_alone`.
//! 4. `passthrough_e1000e_and_vlan_guest_reach_their_devices`: two e1000e
//!    through an emulated IOMMU into one guest (by `label` and by
//!    `device`), a second guest with an e1000 NIC of a given MAC on VLAN 20
//!    of a walden bridge pinging the host's VLAN address.
//! 5. `guest_disks_are_made_and_attached_as_configured_and_a_uefi_guest_boots`:
//!    every `[[disk]]` key (the guest's view of each disk, the QEMU argv,
//!    the images on the config disk) and `firmware = "uefi"` (OVMF -> GRUB
//!    -> the kernel).
//!
//! What happens inside the host is made visible by a `[[service]]` in the
//! test's host.toml (`qemu_tests::guest_watch::watcher`): it copies the
//! guests' serial logs (/var/log/walden/guests/NAME.log) to the console
//! with a `guest-log: ` prefix, prints `GUEST-PIDS a=<pid> b=-` whenever the
//! guests' QEMU processes change, each new QEMU's start time, and for some
//! guests its argv and cgroup. Actions on the host (killing a QEMU, the
//! `walden guest` CLI) are services too.

mod common;

use anyhow::{bail, ensure, Context};
use common::BOOT_TIMEOUT;
use qemu_tests::control::ControlChannel;
use qemu_tests::guest_assets::{
    config_dir, script_service, up_facts, TinyGuest, TinyGuestAssets, UpFacts,
};
use qemu_tests::guest_watch::{
    cgroups, flag_values, listeners, pgrep, pid_lines, qemu_args, qemus_of, serial_log, watcher,
};
use qemu_tests::{expect, ConfigDisk, DirectKernel, Machine, TestEnv};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// From the host being ready to a nested guest's marker: libvirt starting
/// QEMU, then the guest kernel under TCG inside TCG (the host has no SVM,
/// `qemu_tests::builder::TCG_CPU`); two or three guests booting at once
/// take about three minutes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// From the power button to QEMU exiting: guests' ACPI shutdown first.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(240);

/// The host.toml every guest scenario starts from.
const HOST_TOML: &str = "schema = 1\nhostname = \"guests\"\n";

/// Build the tiny guest's assets and a config directory with `host_toml`
/// (plus the watcher of `guests`, probing those in `probe`) and `guests`.
fn config(
    env: &TestEnv,
    host_toml: &str,
    guests: &[TinyGuest],
    probe: &[&str],
) -> anyhow::Result<(PathBuf, TinyGuestAssets)> {
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let names: Vec<&str> = guests.iter().map(|g| g.name.as_str()).collect();
    let host = format!("{host_toml}{}", watcher(&names, probe));
    let dir = config_dir(&env.dir().join("config-src"), &host, guests, &assets)?;
    Ok((dir, assets))
}

/// Boot the USB image (BIOS) with the config directory `dir`.
fn boot(env: &TestEnv, dir: PathBuf) -> anyhow::Result<Machine> {
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
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
        if m.console().is_closed() {
            m.console().print_tail();
            bail!(
                "{what}: QEMU exited first (console {})",
                m.console_log().display()
            );
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

/// Guest z of the power-button scenario: every top-level key that shapes
/// the QEMU process set away from its default.
const Z_MEMORY_MIB: u64 = 200;
const Z_VCPUS: u32 = 2;
const Z_CPU_WEIGHT: u32 = 600;
const Z_CPU_MAX_PCT: u32 = 30;
/// Guest i's shutdown_timeout (below the 15 s ACPI repeat: one press).
const I_SHUTDOWN_TIMEOUT_S: u64 = 10;

fn two_guests_start_in_order_and_stop_cleanly_on_the_power_button_once() -> anyhow::Result<()> {
    let Some(env) =
        TestEnv::with_image("two_guests_start_in_order_and_stop_cleanly_on_the_power_button")?
    else {
        return Ok(());
    };
    // b waits for z, which sorts after it by name: only `after` can make
    // z's QEMU start first. z has memory, vcpus, cpu, balloon and vnc set;
    // b has the defaults to compare with. i ignores the power button.
    let guests = [
        TinyGuest::new("z")
            .stub()
            .memory_mib(Z_MEMORY_MIB as u32)
            .vcpus(Z_VCPUS)
            .cpu(Z_CPU_WEIGHT, Z_CPU_MAX_PCT)
            .balloon()
            .vnc(),
        TinyGuest::new("b").stub().after("z"),
        TinyGuest::new("i")
            .stub()
            .ignoring_the_power_button()
            .shutdown_timeout(&format!("{I_SHUTDOWN_TIMEOUT_S}s")),
    ];
    let (dir, _) = config(&env, HOST_TOML, &guests, &["z", "b"])?;
    let mut m = boot(&env, dir)?;

    // In any order: i does not wait for anyone.
    wait_console(
        &m,
        "the markers of z, b and i and the probes of z and b",
        GUEST_TIMEOUT,
        |t| {
            let up = ["z", "b", "i"]
                .iter()
                .all(|g| t.contains(&expect::guest_up(g)));
            (up && qemu_tests::guest_watch::probed(t, "z")
                && qemu_tests::guest_watch::probed(t, "b"))
            .then_some(())
        },
    )?;
    let console = m.console().text();
    let mut problems = Vec::new();
    problems.extend(check_start_order(&console));
    problems.extend(check_memory_and_vcpus(&console));
    problems.extend(check_cpu_cgroup(&console));
    problems.extend(check_balloon_and_vnc(&console));
    let s = status(&env)?;
    eprintln!("guests: {}", s["guests"]);
    if let Err(e) = assert_running(&s, &["z", "b", "i"]) {
        problems.push(format!("{e:#}"));
    }

    // The power button: z and b shut down through ACPI; i ignores it and is
    // forced off after its shutdown_timeout. (Problems so far are reported
    // at the end, with these.)
    let before = pid_lines(&m.console().text()).len();
    let pressed = Instant::now();
    m.powerdown()?;
    wait_console(
        &m,
        "guest i's QEMU gone after the power button",
        POWEROFF_TIMEOUT,
        |t| {
            // The watcher's sample, or walden's line when the watcher, a
            // service, is stopped before its next sample (services stop
            // right after the last guest). That i was forced off, not shut
            // down, is read from its own log below.
            let sampled = pid_lines(t)
                .get(before..)?
                .iter()
                .any(|l| l.get("i").copied().flatten().is_none());
            (sampled || t.contains("walden: [guest=i] stopped")).then_some(())
        },
    )?;
    let i_gone = pressed.elapsed();
    eprintln!("guest i's QEMU was gone {i_gone:.1?} after the power button");
    let exit = m.wait_exit(POWEROFF_TIMEOUT)?;
    ensure!(
        exit.success(),
        "QEMU exited with {exit} after the power button"
    );
    m.wait_for_console("walden: power off", Duration::from_secs(1))?;
    for name in ["z", "b"] {
        let log = log_on_config_disk(&m, name)?;
        if !log.contains(&expect::guest_down(name)) {
            problems.push(format!(
                "guest {name} did not get the ACPI power button before the host powered off; its log:\n{log}"
            ));
        }
    }
    let log = log_on_config_disk(&m, "i")?;
    if !log.contains(&format!("{} i ", expect::GUEST_IGNORED))
        || log.contains(&expect::guest_down("i"))
    {
        problems.push(format!(
            "guest i should have seen the power button and ignored it; its log:\n{log}"
        ));
    }
    // Forced off after 10 s, not after the default 120 s (nor at once):
    // the watcher samples every second, the harness every half second.
    let timeout = Duration::from_secs(I_SHUTDOWN_TIMEOUT_S);
    if i_gone < timeout - Duration::from_secs(1) || i_gone > timeout * 4 {
        problems.push(format!(
            "shutdown_timeout: guest i (shutdown_timeout = \"{I_SHUTDOWN_TIMEOUT_S}s\") was forced off {i_gone:.1?} after the power button"
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// `after`: z's QEMU process started before b's (start times from
/// /proc/PID/stat), each started once.
fn check_start_order(console: &str) -> Vec<String> {
    let (z, b) = (qemus_of(console, "z"), qemus_of(console, "b"));
    eprintln!("QEMU processes: z {z:?}, b {b:?}");
    match (z.as_slice(), b.as_slice()) {
        ([z], [b]) if z.start < b.start => vec![],
        ([z], [b]) => vec![format!(
            "after: b's QEMU (pid {}, start {}) did not start after z's (pid {}, start {})",
            b.pid, b.start, z.pid, z.start
        )],
        _ => vec![format!(
            "after: expected one QEMU each for z and b, the watcher saw z {z:?}, b {b:?}"
        )],
    }
}

/// The GUEST-UP facts of guest `name`.
fn facts(console: &str, name: &str) -> Option<UpFacts> {
    let marker = expect::guest_up(name);
    console
        .lines()
        .find(|l| l.contains(&marker))
        .and_then(up_facts)
}

/// `memory`, `vcpus`: what z's firmware tells its OS (the stub guest
/// prints the RAM of the multiboot memory map, a little under `memory`,
/// and the enabled CPUs of the ACPI MADT), against b's defaults.
fn check_memory_and_vcpus(console: &str) -> Vec<String> {
    let (z, b) = (facts(console, "z"), facts(console, "b"));
    eprintln!("guest z: {z:?}, guest b: {b:?}");
    let mut problems = Vec::new();
    let mib = 1024;
    match z {
        Some(f) if f.mem_kib > (Z_MEMORY_MIB - 64) * mib && f.mem_kib <= Z_MEMORY_MIB * mib => {}
        _ => problems.push(format!(
            "memory: guest z (memory = \"{Z_MEMORY_MIB}MiB\") sees {z:?}"
        )),
    }
    if z.map(|f| f.cpus) != Some(Z_VCPUS) {
        problems.push(format!("vcpus: guest z (vcpus = {Z_VCPUS}) sees {z:?}"));
    }
    if !b.is_some_and(|f| f.cpus == 1 && f.mem_kib <= 128 * mib) {
        problems.push(format!("guest b (defaults, 128MiB) sees {b:?}"));
    }
    problems
}

/// `cpu.weight`, `cpu.max`: the cgroup libvirt made for z's QEMU (or a
/// parent) has them; b's has neither.
fn check_cpu_cgroup(console: &str) -> Vec<String> {
    let (z, b) = (cgroups(console, "z"), cgroups(console, "b"));
    eprintln!("z's cgroups: {z:?}\nb's cgroups: {b:?}");
    let weight = Z_CPU_WEIGHT.to_string();
    // global_quota = period x vcpus x percent / 100 (docs/guests.md).
    let quota = 100_000 * u64::from(Z_VCPUS) * u64::from(Z_CPU_MAX_PCT) / 100;
    let max = format!("{quota}/100000");
    let mut problems = Vec::new();
    if !z.iter().any(|c| c.weight == weight) {
        problems.push(format!(
            "cpu.weight: no cgroup of z's QEMU has cpu.weight {weight}: {z:?}"
        ));
    }
    if !z.iter().any(|c| c.max == max) {
        problems.push(format!(
            "cpu.max: no cgroup of z's QEMU has cpu.max {max}: {z:?}"
        ));
    }
    if b.is_empty() || b.iter().any(|c| c.weight == weight || c.max == max) {
        problems.push(format!("guest b's cgroups (no cpu keys): {b:?}"));
    }
    problems
}

/// `balloon`, `vnc`: z's QEMU has a virtio balloon and a VNC server on
/// 127.0.0.1 (and nothing listens on another address); b's has neither.
fn check_balloon_and_vnc(console: &str) -> Vec<String> {
    let (z, b) = (qemu_args(console, "z"), qemu_args(console, "b"));
    let balloon = |args: &[String]| {
        flag_values(args, "-device")
            .iter()
            .any(|d| d.contains("virtio-balloon"))
    };
    let vnc = |args: &[String]| -> Vec<String> {
        flag_values(args, "-vnc")
            .iter()
            .map(|v| v.to_string())
            .collect()
    };
    eprintln!(
        "z: balloon {} vnc {:?}; b: balloon {} vnc {:?}",
        balloon(&z),
        vnc(&z),
        balloon(&b),
        vnc(&b)
    );
    let mut problems = Vec::new();
    if z.is_empty() || b.is_empty() {
        problems.push(format!(
            "the watcher printed no QEMU arguments (z: {} args, b: {} args)",
            z.len(),
            b.len()
        ));
        return problems;
    }
    if !balloon(&z) {
        problems.push("balloon: z's QEMU has no virtio-balloon device".into());
    }
    if balloon(&b) {
        problems.push("balloon: b's QEMU has a virtio-balloon device (default is none)".into());
    }
    if !vnc(&z).iter().all(|v| v.starts_with("127.0.0.1:")) || vnc(&z).is_empty() {
        problems.push(format!("vnc: z's QEMU has -vnc {:?}", vnc(&z)));
    }
    if !vnc(&b).is_empty() {
        problems.push(format!("vnc: b's QEMU has -vnc {:?}", vnc(&b)));
    }
    let listening = listeners(console, "z");
    eprintln!("VNC-range listeners: {listening:?}");
    let vnc_ports: Vec<_> = listening
        .iter()
        .filter(|l| (5900..6000).contains(&l.port))
        .collect();
    if vnc_ports.is_empty() || vnc_ports.iter().any(|l| l.v6 || l.addr != "0100007F") {
        problems.push(format!(
            "vnc: expected VNC listening on 127.0.0.1 only, /proc/net/tcp* show {vnc_ports:?}"
        ));
    }
    problems
}

/// Kills guest A's QEMU with SIGKILL, from inside the host: the first two
/// times once the (re)started guest printed its marker (proving the
/// restart), later ones 2 s after each restart, until walden stops
/// restarting it (no QEMU for 60 s) or 12 kills. 60 s: after the fifth
/// restart within its window walden gives up; were it still restarting,
/// the next delay would be 32 s (1 s doubling), well within the 60 s.
fn killer() -> String {
    let script = format!(
        "log={log}\n\
         kills=0 seen=0 cur= since=0 dead= last=$(date +%s)\n\
         while [ $kills -lt 12 ]; do\n\
         \x20 sleep 1; now=$(date +%s); p=$({pgrep})\n\
         \x20 if [ -z \"$p\" ] || [ \"$p\" = \"$dead\" ]; then\n\
         \x20   if [ $kills -gt 0 ] && [ $((now - last)) -ge 60 ]; then echo \"GUEST-KILLER: a not restarted within 60 s after $kills kills\" > /dev/console; exit 0; fi\n\
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

/// Kills guest `name`'s QEMU once with SIGKILL, from inside the host, as
/// soon as the guest printed its marker.
fn killer_once(name: &str) -> String {
    let script = format!(
        "t=0\n\
         while ! grep -q '{up}' {log} 2>/dev/null; do sleep 1; t=$((t + 1)); [ $t -lt 600 ] || exit 0; done\n\
         p=$({pgrep})\n\
         [ -n \"$p\" ] && kill -9 $p && echo \"GUEST-KILLER: killed {name} pid $p\" > /dev/console\n",
        up = expect::guest_up(name),
        log = serial_log(name),
        pgrep = pgrep(name),
    );
    script_service(&format!("guest-killer-{name}"), &script)
}

/// What the `walden guest` CLI service prints: `GUEST-CLI: <step>` and
/// `GUEST-CLI <what>: <output line>`.
const CLI: &str = "GUEST-CLI";

/// Drives guest `name` (autostart = false) with the `walden guest` CLI from
/// inside the host, once guest `autostarted`'s marker shows that walden's
/// autostart is long done: checks it has no QEMU, `list`, `start` (waits
/// for its marker), `list`, `console` (types a line, which the guest
/// echoes), `restart` (waits for a second marker), `stop` (waits for its
/// QEMU to go, then for walden to notice: it polls libvirt every second,
/// so `list` may say `stopping` for a moment), `list`. Each step and its output go to the console; a
/// wait gives up after 300 s with a `timeout` line and the steps go on.
fn guest_cli(name: &str, autostarted: &str) -> String {
    let script = format!(
        "log={log}\n\
         say() {{ echo \"{CLI}: $*\" > /dev/console; }}\n\
         count() {{ c=$(grep -c \"$1 {name} \" $log 2>/dev/null); echo ${{c:-0}}; }}\n\
         qemu() {{ p=$({pgrep}); echo ${{p:--}}; }}\n\
         cli() {{ say \"walden guest $*\"; walden guest \"$@\" 2>&1 | sed \"s|^|{CLI} $1: |\" > /dev/console; }}\n\
         wait_for() {{ t=0; while ! eval \"$2\"; do sleep 1; t=$((t + 1)); if [ $t -ge 300 ]; then say \"timeout waiting for $1\"; return; fi; done; }}\n\
         wait_for 'guest {autostarted} up' \"grep -q '{auto_up}' {auto_log} 2>/dev/null\"\n\
         sleep 5\n\
         say \"before start: qemu=$(qemu) ups=$(count {up})\"\n\
         cli list\n\
         cli start {name}\n\
         wait_for 'the first marker' '[ $(count {up}) -ge 1 ]'\n\
         say \"started: qemu=$(qemu) ups=$(count {up})\"\n\
         cli list\n\
         say \"walden guest console {name}\"\n\
         (sleep 5; printf 'walden-console-probe\\r'; sleep 5; printf '\\035') | timeout 60 script -qfec 'walden guest console {name}' /dev/null 2>&1 | tr -d '\\r' | sed 's|^|{CLI} console: |' > /dev/console\n\
         cli restart {name}\n\
         wait_for 'the second marker' '[ $(count {up}) -ge 2 ]'\n\
         say \"restarted: qemu=$(qemu) ups=$(count {up}) downs=$(count {down})\"\n\
         cli stop {name}\n\
         wait_for 'its QEMU to go' '[ $(qemu) = - ]'\n\
         say \"stopped: qemu=$(qemu) ups=$(count {up}) downs=$(count {down})\"\n\
         wait_for 'walden guest list to say stopped' \"walden guest list 2>/dev/null | grep -q '^{name}  *stopped '\"\n\
         cli list\n\
         say done\n",
        log = serial_log(name),
        pgrep = pgrep(name),
        up = expect::GUEST_UP,
        down = expect::GUEST_DOWN,
        auto_up = expect::guest_up(autostarted),
        auto_log = serial_log(autostarted),
    );
    script_service("guest-cli", &script)
}

#[test]
fn killed_guest_is_restarted_until_the_crash_loop_limit() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(killed_guest_is_restarted_until_the_crash_loop_limit_once)
}

/// Guest a (restart = "on-failure") is killed until walden gives up; guest
/// n (restart = "never") is killed once and stays off; guest m (autostart
/// = false) runs only when `walden guest start|restart` says so, answers on
/// `walden guest console` and stops on `walden guest stop`.
fn killed_guest_is_restarted_until_the_crash_loop_limit_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("killed_guest_is_restarted_until_the_crash_loop_limit")?
    else {
        return Ok(());
    };
    let guests = [
        TinyGuest::new("a").stub().restart("on-failure"),
        TinyGuest::new("n").stub().restart("never"),
        TinyGuest::new("m").stub().manual(),
    ];
    let host = format!(
        "{HOST_TOML}{}{}{}",
        killer(),
        killer_once("n"),
        guest_cli("m", "n")
    );
    let (dir, _) = config(&env, &host, &guests, &[])?;
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
    // The CLI steps run beside the crash loop; they may have ended before.
    let cli_done = wait_console(
        &m,
        "the end of the CLI steps",
        Duration::from_secs(900),
        |t| t.contains(&format!("{CLI}: done")).then_some(()),
    );
    let mut problems = Vec::new();
    // The console's order of killer and log lines is not the guest's, so
    // count: restarted by its policy means a second QEMU booted to the marker.
    let console = m.console().text();
    let ups = console.matches(&expect::guest_up("a")).count();
    let kills = console.matches("GUEST-KILLER: killed a pid").count();
    eprintln!("guest a booted {ups} times, killed {kills} times");
    if ups < 2 || kills < 2 {
        problems.push(format!(
            "guest a was not restarted after its QEMU was killed (booted {ups} times, killed {kills} times)"
        ));
    }
    if !end.line.contains("not restarted") {
        problems.push(format!(
            "walden kept restarting a crashing guest: {}",
            end.line
        ));
    }
    let s = status(&env)?;
    match guest(&s, "a")? {
        Some(g) => {
            eprintln!("a: {g}");
            let text = g.to_string().to_lowercase();
            if g["state"] == "running"
                || !(text.contains("crash") && (text.contains("loop") || text.contains("limit")))
            {
                problems.push(format!(
                    "status does not say guest a hit its crash-loop limit: {g}"
                ));
            }
        }
        None => problems.push("guest a is not in status after its crash loop".into()),
    }
    problems.extend(check_never_restarted(&console, "n"));
    match cli_done {
        Ok(()) => problems.extend(check_cli(&m.console().text(), "m")),
        Err(e) => problems.push(format!("the walden guest CLI steps: {e:#}")),
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// `restart = "never"`: guest `name` was killed once and never started
/// again, minutes later (on-failure would have restarted it after 1 s).
fn check_never_restarted(console: &str, name: &str) -> Vec<String> {
    let ups = console.matches(&expect::guest_up(name)).count();
    let qemus = qemus_of(console, name);
    let killed = console
        .lines()
        .find_map(|l| l.split(&format!("GUEST-KILLER: killed {name} pid ")).nth(1))
        .and_then(|p| p.trim().parse::<u32>().ok());
    let last = pid_lines(console).last().and_then(|l| l.get(name).copied());
    eprintln!("guest {name}: {ups} markers, QEMUs {qemus:?}, killed pid {killed:?}, last pid line {last:?}");
    match (killed, qemus.as_slice()) {
        (Some(k), [q]) if q.pid == k && ups == 1 && last == Some(None) => vec![],
        _ => vec![format!(
            "restart = \"never\": guest {name} should boot once, be killed and stay off: {ups} markers, QEMUs {qemus:?}, killed pid {killed:?}, last pid line {last:?}"
        )],
    }
}

/// The index of the first console line containing `pattern` at or after
/// line `from`.
fn line_index(lines: &[&str], from: usize, pattern: &str) -> Option<usize> {
    lines
        .iter()
        .skip(from)
        .position(|l| l.contains(pattern))
        .map(|i| i + from)
}

/// `autostart = false` and `walden guest list|start|console|restart|stop`
/// on guest `name`, from the host's view: QEMU processes (watcher) and the
/// guest's markers around each step of [`guest_cli`].
fn check_cli(console: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = console.lines().collect();
    let step = |from: usize, what: &str| line_index(&lines, from, &format!("{CLI}: {what}"));
    let up = expect::guest_up(name);
    let down = expect::guest_down(name);
    let qemu_line = format!("GUEST-QEMU {name} ");
    let mut problems = Vec::new();
    for l in lines.iter().filter(|l| l.contains(CLI)) {
        eprintln!("{l}");
        if l.contains(&format!("{CLI}: timeout")) {
            problems.push(l.to_string());
        }
    }
    let (Some(before), Some(start), Some(restart), Some(stop), Some(_)) = (
        step(0, "before start:"),
        step(0, &format!("walden guest start {name}")),
        step(0, &format!("walden guest restart {name}")),
        step(0, &format!("walden guest stop {name}")),
        step(0, "done"),
    ) else {
        return vec![format!("the CLI steps for guest {name} are incomplete")];
    };
    // autostart = false: nothing ran before `walden guest start`, although
    // the autostart guests had booted.
    if !lines[before].contains("qemu=- ups=0") {
        problems.push(format!("autostart = false: {}", lines[before]));
    }
    if let Some(i) = line_index(&lines, 0, &qemu_line).filter(|&i| i < start) {
        problems.push(format!(
            "autostart = false: {} before `walden guest start`",
            lines[i]
        ));
    }
    if let Some(i) = line_index(&lines, 0, &up).filter(|&i| i < start) {
        problems.push(format!(
            "autostart = false: {} before `walden guest start`",
            lines[i]
        ));
    }
    // list before start: stopped, no pid.
    let listed = |from: usize| {
        lines[from..]
            .iter()
            .find(|l| l.starts_with(&format!("{CLI} list: {name} ")))
            .map(|l| l.split_whitespace().skip(3).take(2).collect::<Vec<_>>())
    };
    if listed(before) != Some(vec!["stopped", "-"]) {
        problems.push(format!(
            "walden guest list before start: {:?}",
            listed(before)
        ));
    }
    // start: a QEMU and the marker.
    let qemus = qemus_of(console, name);
    let first = qemus.first().map(|q| q.pid);
    let started = step(start, "started:");
    match started {
        Some(i) if first.is_some_and(|p| lines[i].contains(&format!("qemu={p} ups=1"))) => {
            // list after start: running, with the pid the host sees.
            let want = vec!["running".to_string(), first.unwrap_or(0).to_string()];
            let got = listed(i).map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            if got != Some(want.clone()) {
                problems.push(format!(
                    "walden guest list after start: {got:?}, want {want:?}"
                ));
            }
        }
        _ => problems.push(format!(
            "walden guest start: {:?}, QEMUs {qemus:?}",
            started.map(|i| lines[i])
        )),
    }
    // console: the guest echoed the typed line through `walden guest console`.
    let echo = format!(
        "{CLI} console: {} {name}: walden-console-probe",
        expect::GUEST_ECHO
    );
    if !lines.iter().any(|l| l.contains(&echo)) {
        problems.push(format!("walden guest console: no {echo:?} in its output"));
    }
    // restart: ACPI shutdown (GUEST-DOWN), a new QEMU, a second marker.
    let restarted = step(restart, "restarted:");
    let second = qemus.get(1).map(|q| q.pid);
    match (restarted, second) {
        (Some(i), Some(p))
            if qemus.len() == 2
                && Some(p) != first
                && lines[i].contains(&format!("qemu={p} ups=2 downs=1")) => {}
        _ => problems.push(format!(
            "walden guest restart: {:?}, QEMUs {qemus:?}",
            restarted.map(|i| lines[i])
        )),
    }
    // stop: ACPI shutdown, no QEMU, not started again.
    match step(stop, "stopped:") {
        Some(i) if lines[i].contains("qemu=- ups=2 downs=2") => {}
        other => problems.push(format!("walden guest stop: {:?}", other.map(|i| lines[i]))),
    }
    if qemus.len() != 2 || !lines[stop..].iter().any(|l| l.contains(&down)) {
        problems.push(format!(
            "walden guest stop: QEMUs {qemus:?}, no {down:?} after the stop"
        ));
    }
    if listed(stop).map(|v| v.first().map(|s| s.to_string())) != Some(Some("stopped".into())) {
        problems.push(format!("walden guest list after stop: {:?}", listed(stop)));
    }
    problems
}

#[test]
fn config_apply_adds_c_removes_b_and_leaves_a_alone() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(config_apply_adds_c_removes_b_and_leaves_a_alone_once)
}

fn config_apply_adds_c_removes_b_and_leaves_a_alone_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("config_apply_adds_c_removes_b_and_leaves_a_alone")? else {
        return Ok(());
    };
    let a = TinyGuest::new("a").stub();
    let (b, c) = (TinyGuest::new("b").stub(), TinyGuest::new("c").stub());
    // The watcher follows all three from the start; c has no log yet.
    let names = ["a", "b", "c"];
    let assets = TinyGuestAssets::build(env.artifacts()?, env.dir())?;
    let host = format!("{HOST_TOML}{}", watcher(&names, &[]));
    let dir = config_dir(
        &env.dir().join("config-src"),
        &host,
        &[a.clone(), b],
        &assets,
    )?;
    let mut m = boot(&env, dir)?;
    // In either order: stub guests come up within a second of each other
    // (two waits for the console's next match would miss b before a).
    wait_console(&m, "the markers of a and b", GUEST_TIMEOUT, |t| {
        (t.contains(&expect::guest_up("a")) && t.contains(&expect::guest_up("b"))).then_some(())
    })?;
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

/// The e1000e QEMU adds at 00:10.0 for passthrough by label.
const PASSTHROUGH_NIC: &str = "0000:00:10.0";

/// The second e1000e, at 00:11.0, passed through by address.
const PASSTHROUGH_NIC_2: &str = "0000:00:11.0";

/// The VLAN guest's NIC: an e1000 with a fixed MAC.
const VLAN_GUEST_MAC: &str = "52:54:00:ab:cd:20";

/// Host with two e1000e under [[vfio]] (one labelled) and a VLAN-filtering
/// bridge with the host's own address on VLAN 20.
const PASSTHROUGH_VLAN_HOST_TOML: &str = r#"schema = 1
hostname = "guests"

[[vfio]]
pci = "0000:00:10.0"
label = "nic"

[[vfio]]
pci = "0000:00:11.0"

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

/// The e1000e (8086:10d3) functions guest `name` lists on its PCI buses.
fn e1000e_devices(console: &str, name: &str) -> Vec<String> {
    expect::guest_pci(console, name)
        .into_iter()
        .filter(|(_, id)| id == expect::E1000E_PCI_ID)
        .map(|(at, _)| at)
        .collect()
}

fn passthrough_e1000e_and_vlan_guest_reach_their_devices_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image("passthrough_e1000e_and_vlan_guest_reach_their_devices")?
    else {
        return Ok(());
    };
    let guests = [
        TinyGuest::new("p")
            .stub()
            .pci_label("nic")
            .pci_device(PASSTHROUGH_NIC_2),
        TinyGuest::new("v")
            .stub()
            .nic_pinging("br0", Some(20), "10.20.0.2/24", "10.20.0.1")
            .nic_mac_model(VLAN_GUEST_MAC, "e1000"),
    ];
    let (dir, _) = config(&env, PASSTHROUGH_VLAN_HOST_TOML, &guests, &[])?;
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
            "-device",
            "e1000e,addr=0x11",
        ])
        .start()?;
    wait_ready(&mut m, &env)?;

    // Both guests are independent: collect both outcomes, then report.
    let mut problems = Vec::new();
    // Guest p (the stub) lists its PCI functions before its marker: the
    // guest renumbers the devices, two distinct e1000e must be there (the
    // guest has no e1000e of its own: p has no NIC).
    m.wait_for_console(&expect::guest_up("p"), GUEST_TIMEOUT)?;
    let devices = e1000e_devices(&m.console().text(), "p");
    if devices.len() == 2 {
        eprintln!("guest p's e1000e devices: {devices:?}");
    } else {
        problems.push(format!(
            "passthrough: guest p lists e1000e ({}) at {devices:?}, want two (host {PASSTHROUGH_NIC} by label, {PASSTHROUGH_NIC_2} by address); its PCI functions: {:?}",
            expect::E1000E_PCI_ID,
            expect::guest_pci(&m.console().text(), "p")
        ));
    }
    let nic = wait_console(&m, "guest v's NIC", GUEST_TIMEOUT, |t| {
        t.lines()
            .find(|l| l.contains(&format!("{} v ", expect::GUEST_NIC)))
            .map(str::to_string)
    });
    match nic {
        Ok(line)
            if line.contains(&format!("mac={VLAN_GUEST_MAC} "))
                && line.trim_end().ends_with("driver=e1000") =>
        {
            eprintln!("{line}")
        }
        Ok(line) => problems.push(format!(
            "nic: guest v (mac = {VLAN_GUEST_MAC}, model = e1000) reports {line}"
        )),
        Err(e) => problems.push(format!("nic: {e:#}")),
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

/// The host block device given to guest d: an extra virtio disk of the
/// walden host with this serial (udev's /dev/disk/by-id name), this size
/// and this text at its start.
const DEVICE_SERIAL: &str = "walden-guest-disk";
const DEVICE_MIB: u64 = 40;
const DEVICE_MARK: &str = "WALDEN-DEVICE";

/// The base image shipped on the config disk, its size and first bytes.
const BASE_ON_IMAGE: &str = "/config/images/tiny/base.qcow2";
const BASE_MIB: u64 = 48;
const BASE_MARK: &str = "WALDEN-BASE";

/// Images walden creates for guest d (under /var: on the config disk).
const NEW_QCOW2: &str = "/var/lib/walden/vm/d-new.qcow2";
const NEW_QCOW2_MIB: u64 = 64;
const OVERLAY: &str = "/var/lib/walden/vm/d-overlay.qcow2";
const NEW_RAW: &str = "/var/lib/walden/vm/d-raw.img";
const NEW_RAW_MIB: u64 = 24;

/// A raw file of `mib` MiB at `path` starting with `mark`.
fn marked_raw(path: &Path, mib: u64, mark: &str) -> anyhow::Result<()> {
    let mut bytes = mark.as_bytes().to_vec();
    bytes.resize(4096, 0);
    std::fs::write(path, &bytes).with_context(|| format!("write {}", path.display()))?;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(mib << 20)?;
    Ok(())
}

/// `qemu-img info --output=json` of `bytes` (a file read from the config
/// disk), written to `dir/name` first.
fn image_info(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<Value> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
    let out = qemu_tests::tools::run(
        "qemu-img",
        ["info", "--output=json", &path.display().to_string()],
    )?;
    Ok(serde_json::from_str(&out)?)
}

/// One `GUEST-DISK` line: device name, sectors, read-only, first bytes.
#[derive(Debug)]
struct GuestDisk {
    dev: String,
    sectors: u64,
    ro: bool,
    head: String,
}

/// Guest `name`'s `GUEST-DISK` lines.
fn guest_disks(console: &str, name: &str) -> Vec<GuestDisk> {
    let prefix = format!("{} {name} ", expect::GUEST_DISK);
    console
        .lines()
        .filter_map(|l| l.split(&prefix).nth(1))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            let dev = w.next()?.to_string();
            let sectors = w.next()?.strip_prefix("size=")?.parse().ok()?;
            let ro = w.next()? == "ro=1";
            let head = w.next()?.strip_prefix("head=")?.to_string();
            Some(GuestDisk {
                dev,
                sectors,
                ro,
                head,
            })
        })
        .collect()
}

#[test]
fn guest_disks_are_made_and_attached_as_configured_and_a_uefi_guest_boots() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(
        guest_disks_are_made_and_attached_as_configured_and_a_uefi_guest_boots_once,
    )
}

/// Guest d has four disks, each with its own keys, so that each key's
/// effect is told apart: a new qcow2 of `size` with cache = "none" and io =
/// "native"; an overlay of a `base` on `bus = "scsi"`; a new raw image
/// (`format`); a host block device (`device`) `read_only`. It prints what
/// its kernel sees; after power-off the images are read from the config
/// disk.
/// Guest u boots through UEFI (OVMF -> GRUB from its disk -> the stub
/// guest: what is checked is the firmware path, not a second Linux).
fn guest_disks_are_made_and_attached_as_configured_and_a_uefi_guest_boots_once(
) -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image(
        "guest_disks_are_made_and_attached_as_configured_and_a_uefi_guest_boots",
    )?
    else {
        return Ok(());
    };
    let q = |k: &str, v: &str| format!("{k} = \"{v}\"");
    let d = TinyGuest::new("d")
        .stub_initrd(MODULE_ON_IMAGE)
        .kernel_arg("walden.disks=4")
        .disk(&[
            &q("path", NEW_QCOW2),
            &q("size", &format!("{NEW_QCOW2_MIB}MiB")),
            &q("cache", "none"),
            &q("io", "native"),
        ])
        .disk(&[
            &q("path", OVERLAY),
            &q("base", BASE_ON_IMAGE),
            &q("bus", "scsi"),
        ])
        .disk(&[
            &q("path", NEW_RAW),
            &q("size", &format!("{NEW_RAW_MIB}MiB")),
            &q("format", "raw"),
        ])
        .disk(&[
            &q("device", &format!("/dev/disk/by-id/virtio-{DEVICE_SERIAL}")),
            "read_only = true",
        ]);
    let u = TinyGuest::new("u").uefi();
    let (dir, _) = config(&env, HOST_TOML, &[d, u], &["d", "u"])?;
    // d's initrd: the stub reports the module QEMU handed it.
    std::fs::write(dir.join(MODULE_REL), MODULE_MARK)?;
    // The base image, on the config disk.
    let base_raw = env.dir().join("base.raw");
    marked_raw(&base_raw, BASE_MIB, BASE_MARK)?;
    let base = dir.join("images/tiny/base.qcow2");
    qemu_tests::tools::run(
        "qemu-img",
        [
            "convert",
            "-O",
            "qcow2",
            &base_raw.display().to_string(),
            &base.display().to_string(),
        ],
    )?;
    let device = env.dir().join("guest-device.raw");
    marked_raw(&device, DEVICE_MIB, DEVICE_MARK)?;
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .config_disk(ConfigDisk::from_dir(dir))
        .extra_args([
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id=guestdisk", device.display()),
            "-device".to_string(),
            format!("virtio-blk-pci,drive=guestdisk,serial={DEVICE_SERIAL}"),
        ])
        .start()?;
    wait_ready(&mut m, &env)?;
    let mut problems = Vec::new();
    // Each guest's outcome is collected (u's failure must not hide d's).
    for name in ["d", "u"] {
        let probe = wait_console(
            &m,
            &format!("guest {name}'s marker and probe"),
            GUEST_TIMEOUT,
            |t| {
                (t.contains(&expect::guest_up(name)) && qemu_tests::guest_watch::probed(t, name))
                    .then_some(())
            },
        );
        if let Err(e) = probe {
            problems.push(format!("{e:#}"));
        }
    }
    let console = m.console().text();
    let module = format!(
        "GUEST-MODULE d size={} head={MODULE_MARK}",
        MODULE_MARK.len()
    );
    if !console.lines().any(|l| l.trim_end().ends_with(&module)) {
        problems.push(format!(
            "boot.initrd: guest d does not report {MODULE_ON_IMAGE} as its boot module ({module:?})"
        ));
    }
    problems.extend(check_guest_disks(&console));
    problems.extend(check_cache_and_io(&console));
    let u_args = qemu_args(&console, "u");
    if !u_args.iter().any(|a| a.contains("OVMF_CODE")) {
        problems.push(format!(
            "firmware = \"uefi\": guest u's QEMU has no OVMF pflash: {u_args:?}"
        ));
    }

    m.powerdown()?;
    let exit = m.wait_exit(POWEROFF_TIMEOUT)?;
    ensure!(
        exit.success(),
        "QEMU exited with {exit} after the power button"
    );
    // UEFI: the guest's own serial log shows OVMF's boot manager, then the
    // stub's marker, and the power button reached it.
    let log = log_on_config_disk(&m, "u")?;
    if !(log.contains("BdsDxe")
        && log.contains(&expect::guest_up("u"))
        && log.contains(&expect::guest_down("u")))
    {
        problems.push(format!(
            "firmware = \"uefi\": guest u's serial log lacks OVMF's BdsDxe, its marker or its power-off:\n{log}"
        ));
    }
    let log = log_on_config_disk(&m, "d")?;
    if !log.contains(&expect::guest_down("d")) {
        problems.push(format!("guest d did not power off on the button:\n{log}"));
    }
    problems.extend(check_images_on_config_disk(&m, env.dir())?);
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// What guest d's kernel sees: each disk by size, bus, read-only flag and
/// first bytes.
fn check_guest_disks(console: &str) -> Vec<String> {
    let disks = guest_disks(console, "d");
    eprintln!("guest d's disks: {disks:#?}");
    let sectors = |mib: u64| mib << 11;
    let find = |mib: u64| disks.iter().find(|d| d.sectors == sectors(mib));
    let mut problems = Vec::new();
    if disks.len() != 4 {
        problems.push(format!("guest d sees {} disks, not 4", disks.len()));
    }
    match find(NEW_QCOW2_MIB) {
        Some(d) if d.dev.starts_with("vd") && !d.ro => {}
        other => problems.push(format!(
            "path + size: no writable {NEW_QCOW2_MIB} MiB virtio disk in guest d: {other:?}"
        )),
    }
    match find(BASE_MIB) {
        Some(d) if !d.ro && d.head.starts_with(BASE_MARK) => {}
        other => problems.push(format!(
            "base: no writable {BASE_MIB} MiB disk starting with {BASE_MARK} in guest d: {other:?}"
        )),
    }
    if !find(BASE_MIB).is_some_and(|d| d.dev.starts_with("sd")) {
        problems.push(format!(
            "bus = \"scsi\": the {BASE_MIB} MiB disk is not a SCSI disk (sd*) in guest d: {:?}",
            find(BASE_MIB)
        ));
    }
    match find(NEW_RAW_MIB) {
        Some(d) if d.dev.starts_with("vd") && !d.ro => {}
        other => problems.push(format!(
            "format = \"raw\": no writable {NEW_RAW_MIB} MiB virtio disk in guest d: {other:?}"
        )),
    }
    match find(DEVICE_MIB) {
        Some(d) if d.head.starts_with(DEVICE_MARK) && d.ro => {}
        Some(d) if d.head.starts_with(DEVICE_MARK) => {
            problems.push(format!("read_only: guest d can write to {d:?}"))
        }
        other => problems.push(format!(
            "device: no {DEVICE_MIB} MiB disk starting with {DEVICE_MARK} in guest d: {other:?}"
        )),
    }
    problems
}

/// `cache = "none"` and `io = "native"` reach QEMU for that disk only: its
/// -blockdev has O_DIRECT and Linux AIO, the overlay's has neither.
fn check_cache_and_io(console: &str) -> Vec<String> {
    let args = qemu_args(console, "d");
    let blockdevs = flag_values(&args, "-blockdev");
    let of = |file: &str| {
        blockdevs
            .iter()
            .find(|b| b.contains(&format!("\"filename\":\"{file}\"")))
            .map(|b| b.to_string())
    };
    let (new, overlay) = (of(NEW_QCOW2), of(OVERLAY));
    eprintln!("-blockdev of {NEW_QCOW2}: {new:?}\n-blockdev of {OVERLAY}: {overlay:?}");
    let mut problems = Vec::new();
    match &new {
        Some(b) if b.contains("\"aio\":\"native\"") && b.contains("\"direct\":true") => {}
        _ => problems.push(format!(
            "cache = \"none\", io = \"native\": {NEW_QCOW2}'s -blockdev is {new:?}"
        )),
    }
    match &overlay {
        Some(b) if !b.contains("\"aio\":\"native\"") && !b.contains("\"direct\":true") => {}
        _ => problems.push(format!(
            "{OVERLAY}'s -blockdev (default cache and io) is {overlay:?}"
        )),
    }
    problems
}

/// The images walden made, read from the config disk after power-off.
fn check_images_on_config_disk(m: &Machine, dir: &Path) -> anyhow::Result<Vec<String>> {
    let out = dir.join("from-config-disk");
    std::fs::create_dir_all(&out)?;
    let mut problems = Vec::new();
    let mut info = |path: &str| -> anyhow::Result<Option<Value>> {
        match m.config_disk_file(path)? {
            Some(bytes) => {
                let name = path.rsplit('/').next().unwrap_or("image");
                let v = image_info(&out, name, &bytes)?;
                eprintln!("{path}: {v}");
                Ok(Some(v))
            }
            None => {
                problems.push(format!("path: {path} is not on the config disk"));
                Ok(None)
            }
        }
    };
    let new = info(NEW_QCOW2)?;
    let overlay = info(OVERLAY)?;
    let raw = info(NEW_RAW)?;
    let mib = |v: &Value| v["virtual-size"].as_u64().map(|b| b >> 20);
    if let Some(v) = new {
        if v["format"] != "qcow2" || mib(&v) != Some(NEW_QCOW2_MIB) {
            problems.push(format!("path + size: {NEW_QCOW2} is {v}"));
        }
    }
    if let Some(v) = overlay {
        if v["format"] != "qcow2" || v["backing-filename"] != BASE_ON_IMAGE {
            problems.push(format!("base: {OVERLAY} is {v}"));
        }
    }
    if let Some(v) = raw {
        if v["format"] != "raw" || mib(&v) != Some(NEW_RAW_MIB) {
            problems.push(format!("format = \"raw\": {NEW_RAW} is {v}"));
        }
    }
    Ok(problems)
}

/// Guest d's `[boot] initrd`: 16 bytes the stub reports as they are.
const MODULE_MARK: &str = "WALDEN-MODULE-D_";
const MODULE_REL: &str = "images/tiny/module-d.bin";
const MODULE_ON_IMAGE: &str = "/config/images/tiny/module-d.bin";

/// Where Debian's ipxe package puts its bootable ISO: a real ISO the
/// project did not make (ISOLINUX, then iPXE, in VGA text mode).
const IPXE_ISO: &str = "/usr/lib/ipxe/ipxe.iso";

/// The ISO as guest c's `[[cdrom]]` sees it, on the config disk.
const IPXE_ON_IMAGE: &str = "/config/images/iso/ipxe.iso";

/// Guest c of [`installer_iso_boots_from_a_guest_cdrom_which_is_ejected_and_inserted`]:
/// an empty thin disk and Debian's iPXE ISO in a CD-ROM drive, the
/// CD-ROM first (`[boot] order`; the default tries the disks first), a
/// screen (VNC, so a VGA).
const ISO_GUEST_TOML: &str =
    "schema = 1\nmemory = \"128MiB\"\nshutdown_timeout = \"5s\"\nvnc = true\n\n\
[boot]\norder = [\"cdrom\", \"disk\"]\n\n\
[[disk]]\npath = \"/var/lib/walden/vm/c.qcow2\"\nsize = \"64MiB\"\n\n\
[[cdrom]]\npath = \"/config/images/iso/ipxe.iso\"\n";

/// The text on guest c's VGA screen, read from its text buffer (0xb8000,
/// 80x25 cells of character + attribute) through QEMU's monitor as
/// libvirt passes it on: what the guest's firmware and the ISO printed.
fn guest_screen(m: &mut Machine, name: &str) -> anyhow::Result<String> {
    let out = m.exec_ok(&format!(
        "virsh -c qemu:///system qemu-monitor-command {name} --hmp 'xp /4000bx 0xb8000'"
    ))?;
    let bytes: Vec<u8> = out
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, v)| v))
        .flat_map(|v| v.split_whitespace())
        .filter_map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
        .collect();
    let chars: String = bytes.iter().step_by(2).map(|&b| b as char).collect();
    let lines: Vec<String> = chars
        .as_bytes()
        .chunks(80)
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Ok(lines.join("\n"))
}

/// The source of guest `name`'s CD-ROM drive sda as libvirt's live
/// definition has it ("-": empty).
fn cdrom_source(m: &mut Machine, name: &str) -> anyhow::Result<String> {
    let out = m.exec_ok(&format!("virsh -c qemu:///system domblklist {name}"))?;
    out.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("sda")).then(|| f.next().unwrap_or("").to_string())
        })
        .with_context(|| format!("no sda in `virsh domblklist {name}`:\n{out}"))
}

#[test]
fn installer_iso_boots_from_a_guest_cdrom_which_is_ejected_and_inserted() -> anyhow::Result<()> {
    qemu_tests::retry_on_soft_lockup(installer_iso_once)
}

/// Issue 17's install media: guest c has an empty disk and Debian's iPXE
/// ISO in a CD-ROM drive, booted first (`[boot] order`). Its own screen
/// shows the firmware booting the ISO from the CD-ROM (ISOLINUX, then
/// iPXE) without trying the disk. `walden guest eject` empties the running guest's
/// drive and `walden guest insert` puts the ISO back, as libvirt's live
/// definition shows; an ISO that is not there is refused with a message.
fn installer_iso_once() -> anyhow::Result<()> {
    let Some(env) = TestEnv::with_image(
        "installer_iso_boots_from_a_guest_cdrom_which_is_ejected_and_inserted",
    )?
    else {
        return Ok(());
    };
    let (dir, _) = config(&env, HOST_TOML, &[], &[])?;
    std::fs::create_dir_all(dir.join("guests"))?;
    std::fs::write(dir.join("guests/c.toml"), ISO_GUEST_TOML)?;
    let iso_dir = dir.join("images/iso");
    std::fs::create_dir_all(&iso_dir)?;
    std::fs::copy(IPXE_ISO, iso_dir.join("ipxe.iso"))
        .with_context(|| format!("{IPXE_ISO}: install Debian's ipxe package (make deps)"))?;
    let a = env.artifacts()?;
    let mut m = env
        .machine()
        .usb_image_direct(a)?
        .config_disk(ConfigDisk::from_dir(dir))
        .admin_ssh()
        .start()?;
    wait_ready(&mut m, &env)?;

    // The screen, until iPXE is up (its banner), or what it showed last.
    let deadline = Instant::now() + Duration::from_secs(300);
    let screen = loop {
        let screen = guest_screen(&mut m, "c")?;
        if screen.contains("Open Source Network Boot Firmware") || Instant::now() >= deadline {
            break screen;
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    eprintln!("guest c's screen:\n{screen}");
    let at = |s: &str| screen.find(s);
    match (at("Booting from DVD/CD"), at("iPXE"), at("Booting from Hard Disk")) {
        // With the disk first (the default) it would be tried, and fail,
        // before the CD-ROM; iPXE finding no NIC hands back to the
        // firmware, which then tries the disk.
        (Some(cd), Some(ipxe), hd) if cd < ipxe && hd.is_none_or(|h| h > ipxe) => {}
        _ => bail!(
            "order = [\"cdrom\", \"disk\"]: guest c's screen should show the CD-ROM booting iPXE, no disk tried before:\n{screen}"
        ),
    }

    let source = cdrom_source(&mut m, "c")?;
    ensure!(
        source == IPXE_ON_IMAGE,
        "drive sda holds {source:?} at start"
    );
    let said = m.exec_ok("walden guest eject c")?;
    eprintln!("eject: {said}");
    let source = cdrom_source(&mut m, "c")?;
    ensure!(source == "-", "after eject, drive sda holds {source:?}");
    let refused = m.exec("walden guest insert c /config/images/iso/nope.iso")?;
    ensure!(
        !refused.success() && refused.stderr.contains("nope.iso"),
        "insert of a missing ISO: {refused:?}"
    );
    let said = m.exec_ok(&format!("walden guest insert c {IPXE_ON_IMAGE}"))?;
    eprintln!("insert: {said}");
    let source = cdrom_source(&mut m, "c")?;
    ensure!(
        source == IPXE_ON_IMAGE,
        "after insert, drive sda holds {source:?}"
    );

    // iPXE does not answer the ACPI button: pull the plug, then power off.
    m.exec_ok("walden guest stop --force c")?;
    m.powerdown()?;
    let exit = m.wait_exit(POWEROFF_TIMEOUT)?;
    ensure!(
        exit.success(),
        "QEMU exited with {exit} after the power button"
    );
    Ok(())
}
