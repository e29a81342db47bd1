//! What the scenarios look for on the serial console, in one place.
//!
//! These strings are the contract with stage 1 (`src/boot/`), the PID 1
//! loop (`src/pid1/`) and the supervisor. When their wording changes, change
//! it here; scenarios refer only to these constants.

/// Prefix of every stage 1 (initramfs) message.
pub const STAGE1: &str = "walden stage1:";

/// Stage 1 handing over to the image it verified.
pub const STAGE1_SWITCH_ROOT: &str = "walden stage1: switching root to";

/// walden finished bring-up: `walden: ready in <N> ms`.
pub const READY: &str = "walden: ready in ";

/// Stage 1 refusing a root.squashfs whose hash differs from the manifest.
pub const SQUASHFS_MISMATCH: &str = "does not match its manifest";

/// Stage 1 giving up and offering a shell.
pub const EMERGENCY_SHELL: &str = "walden stage1: dropping to emergency shell";

/// Stage 1 stopping on `walden.shell` with the new root assembled.
pub const STAGE1_SHELL_REQUESTED: &str = "walden stage1: walden.shell: stopping before switch_root";

/// Stage 1 starting its search for the boot media: `walden stage1:
/// looking for boot media <SPEC>` (the spec follows).
pub const STAGE1_LOOKING_FOR_MEDIA: &str = "walden stage1: looking for boot media ";

/// Stage 1 giving up on boot media `spec` (`walden stage1: no boot media
/// with <SPEC> after waiting <N> s; looked at: ...`; the line before the
/// wait says "no boot media with <SPEC> yet").
pub fn media_not_found(spec: &str) -> String {
    format!("no boot media with {spec} after waiting ")
}

/// walden gave up on bring-up (logged at error level):
/// `walden: error: maintenance mode after <N> ms`.
pub const MAINTENANCE: &str = "walden: error: maintenance mode after";

/// Stage 1's message for a requested version that is not on the media also
/// names `images/` (with the version; see [`missing_version_marks`]).
pub const MISSING_VERSION_DIR: &str = "images/";

/// The strings a "version not on the media" message must contain.
pub fn missing_version_marks(version: &str) -> [String; 2] {
    [version.to_string(), MISSING_VERSION_DIR.to_string()]
}

/// Orderly power-off steps, in the order they must appear.
pub const POWEROFF_STEPS: &[&str] = &[
    "walden: power button pressed",
    "walden: stopping supervisor",
    "walden: all services stopped",
    "walden: sending SIGTERM to all processes",
    "walden: unmounting",
    "walden: sync",
    "walden: power off",
];

/// PID 1 opened the hardware watchdog: `walden: hardware watchdog
/// /dev/watchdog armed (<N> s)`.
pub const WATCHDOG_ARMED: &str = "hardware watchdog /dev/watchdog armed";

/// PID 1 applied a timeout published after it armed the device:
/// `walden: hardware watchdog /dev/watchdog timeout set to <N> s`.
pub const WATCHDOG_SET: &str = "hardware watchdog /dev/watchdog timeout set to";

/// Console lines that end a wait at once: nothing good follows them.
pub const FATAL: &[&str] = &["Kernel panic - not syncing", "---[ end Kernel panic"];

/// A line the harness types into a shell to prove it is interactive, and
/// what the shell prints back (the arithmetic proves a shell evaluated it,
/// not the terminal echo).
pub const SHELL_PROBE: (&str, &str) = ("echo walden-probe-$((40+2))\n", "walden-probe-42");

/// The console's status screen (walden console-screen): its ssh line.
pub const SCREEN_REACH: &str = "reach it: ssh root@";
/// The screen's last line.
pub const SCREEN_END: &str = "press Enter to show this again";

/// A tiny nested guest is up and answers the power button:
/// `GUEST-UP <name> after <uptime> s, kernel <release>, mem <MemTotal> kB,
/// cpus <nproc>` on its serial log (see `guest_assets`; `up_facts` parses
/// the last two). Use [`guest_up`] for one guest.
pub const GUEST_UP: &str = "GUEST-UP";

/// A tiny guest saw the ACPI power button and powers off:
/// `GUEST-DOWN <name> power button, powering off`.
pub const GUEST_DOWN: &str = "GUEST-DOWN";

/// A tiny guest told to ignore the power button saw a press:
/// `GUEST-IGNORED <name> power button, ignored`.
pub const GUEST_IGNORED: &str = "GUEST-IGNORED";

/// A line typed on a tiny guest's serial console, sent back:
/// `GUEST-ECHO <name>: <line>`.
pub const GUEST_ECHO: &str = "GUEST-ECHO";

/// One of a tiny guest's disks (with `walden.disks=N`):
/// `GUEST-DISK <name> <dev> size=<512-byte sectors> ro=0|1 head=<first 16 bytes, other than [A-Za-z0-9_-] as .>`.
pub const GUEST_DISK: &str = "GUEST-DISK";

/// One of a tiny guest's NICs: `GUEST-NIC <name> <ifname> mac=<mac> driver=<driver>`.
pub const GUEST_NIC: &str = "GUEST-NIC";

/// QEMU's e1000e (82574L) as a guest's PCI bus shows it: vendor:device.
pub const E1000E_PCI_ID: &str = "8086:10d3";

/// A tiny guest's ping result: `GUEST-PING <name> <peer> ok|failed ...`.
pub const GUEST_PING: &str = "GUEST-PING";

/// One PCI function the stub guest sees (printed before its `GUEST-UP`):
/// `GUEST-PCI <name> <bus>:<dev>.<fn> <vendor>:<device>` (hex).
pub const GUEST_PCI: &str = "GUEST-PCI";

/// The PCI functions guest `name` listed in `text`, as
/// `(<bus>:<dev>.<fn>, <vendor>:<device>)`.
pub fn guest_pci(text: &str, name: &str) -> Vec<(String, String)> {
    let prefix = format!("{GUEST_PCI} {name} ");
    text.lines()
        .filter_map(|l| l.split(&prefix).nth(1))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// The marker of guest `name` being up (with the space after the name, so
/// guest "a" does not match "ab").
pub fn guest_up(name: &str) -> String {
    format!("{GUEST_UP} {name} ")
}

/// The marker of guest `name` powering off on the power button.
pub fn guest_down(name: &str) -> String {
    format!("{GUEST_DOWN} {name} ")
}

/// The marker of guest `name` reaching `peer`.
pub fn guest_ping_ok(name: &str, peer: &str) -> String {
    format!("{GUEST_PING} {name} {peer} ok")
}

/// The supervisor's "mounts" bring-up step failed (a `[[mount]]` or the
/// swap could not be brought up): `walden: error: [step=mounts] failed: ...`.
pub const MOUNTS_STEP_FAILED: &str = "[step=mounts] failed";

/// The supervisor's "guests" bring-up step failed (logged at error level:
/// `walden: error: [step=guests] failed: ...`); guest scenarios stop there.
pub const GUESTS_STEP_FAILED: &str = "[step=guests] failed";
