//! `tiny-guest CONFIG_DIR`: put the tiny guests under CONFIG_DIR/images/tiny/:
//! the stub guest (stub.elf, qemu-tests/stub: prints `GUEST-UP <name>` and
//! powers off on the ACPI button), which examples/minimal's and
//! examples/appliance-qemu's guests boot, and the tiny Linux guest (the
//! built image's kernel and a busybox initramfs). `make run` calls it, so
//! the examples' guests really run.

use qemu_tests::artifacts::Artifacts;
use qemu_tests::guest_assets::TinyGuestAssets;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: tiny-guest CONFIG_DIR");
        return ExitCode::from(2);
    };
    let result = Artifacts::locate().and_then(|a| {
        let assets = TinyGuestAssets::build(&a, &dir)?;
        assets.install(&dir)?;
        // build() leaves its work file beside the config; only images/ is wanted.
        let _ = std::fs::remove_file(&assets.initrd);
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tiny-guest: {e}");
            ExitCode::from(1)
        }
    }
}
