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

/// Console lines that end a wait at once: nothing good follows them.
pub const FATAL: &[&str] = &["Kernel panic - not syncing", "---[ end Kernel panic"];

/// A line the harness types into a shell to prove it is interactive, and
/// what the shell prints back (the arithmetic proves a shell evaluated it,
/// not the terminal echo).
pub const SHELL_PROBE: (&str, &str) = ("echo walden-probe-$((40+2))\n", "walden-probe-42");
