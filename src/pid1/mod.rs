//! PID 1 loop (being built).

/// What PID 1 is asked to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// reboot(2) with RB_AUTOBOOT.
    Reboot,
    /// reboot(2) with RB_HALT_SYSTEM.
    Halt,
    /// reboot(2) with RB_POWER_OFF.
    PowerOff,
}

/// Ask PID 1 for `action` by signal.
pub fn request(_action: Action) -> anyhow::Result<u8> {
    anyhow::bail!("not built yet")
}

/// The PID 1 loop; never returns.
pub fn run() -> ! {
    loop {
        std::thread::park();
    }
}
