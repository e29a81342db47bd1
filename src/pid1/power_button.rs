//! ACPI power button watcher: finds the input devices named "Power Button"
//! under /dev/input and calls back on each KEY_POWER press.
//!
//! The evdev and button modules may load after PID 1 starts, so the watcher
//! rescans the directory every [`RESCAN_EVERY`] for [`RESCAN_FOR`]. A watcher
//! that found nothing in that window ends; PID 1 starts a new one on SIGHUP.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Name the ACPI button driver gives its input devices.
pub const DEVICE_NAME: &str = "Power Button";
/// Event type of key events (`EV_KEY`).
pub const EV_KEY: u16 = 1;
/// Key code of the power key (`KEY_POWER`).
pub const KEY_POWER: u16 = 116;
/// How often to look for new event devices while rescanning.
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// How long after start to keep looking for new event devices.
pub const RESCAN_FOR: Duration = Duration::from_secs(60);

/// Size of `struct input_event` on this architecture (timeval + u16 + u16 + i32).
const EVENT_SIZE: usize = std::mem::size_of::<libc::input_event>();
/// Offset of the `type` field: right after the timeval.
const TYPE_OFFSET: usize = EVENT_SIZE - 8;

/// One decoded `struct input_event` (the timestamp is not needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    /// Event type (EV_KEY, EV_SYN, ...).
    pub kind: u16,
    /// Key or axis code.
    pub code: u16,
    /// 1 = press, 0 = release, 2 = autorepeat for keys.
    pub value: i32,
}

impl InputEvent {
    /// Whether this is the power key going down.
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// Decode the whole events in `bytes` (native layout); a trailing partial
/// event is ignored (evdev never returns one).
pub fn parse_events(bytes: &[u8]) -> Vec<InputEvent> {
    bytes
        .chunks_exact(EVENT_SIZE)
        .map(|raw| {
            let t = &raw[TYPE_OFFSET..];
            InputEvent {
                kind: u16::from_ne_bytes([t[0], t[1]]),
                code: u16::from_ne_bytes([t[2], t[3]]),
                value: i32::from_ne_bytes([t[4], t[5], t[6], t[7]]),
            }
        })
        .collect()
}

nix::ioctl_read_buf!(eviocgname, b'E', 0x06, u8);

/// The name of the input device open as `file` (EVIOCGNAME).
fn device_name(file: &File) -> io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the fd is open for the whole call and the kernel writes at most
    // buf.len() bytes, the length encoded in the request.
    let len = unsafe { eviocgname(file.as_raw_fd(), &mut buf) }
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let len = usize::try_from(len).unwrap_or(0).min(buf.len());
    let name = &buf[..len];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Open the `event*` devices in `dev_dir` not in `seen` whose name is
/// [`DEVICE_NAME`]; every path looked at is added to `seen`.
fn scan(dev_dir: &Path, seen: &mut HashSet<PathBuf>) -> Vec<File> {
    let Ok(entries) = std::fs::read_dir(dev_dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_event = entry.file_name().to_string_lossy().starts_with("event");
        if !is_event || seen.contains(&path) {
            continue;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path);
        let Ok(file) = opened else {
            // Not ready yet (udev still setting permissions): try again next scan.
            continue;
        };
        seen.insert(path.clone());
        if device_name(&file).is_ok_and(|name| name == DEVICE_NAME) {
            super::console(&format!("watching {} (power button)", path.display()));
            found.push(file);
        }
    }
    found
}

/// Start a thread watching the power buttons in `dev_dir` (/dev/input);
/// `on_press` runs on each press. Fails only if the thread cannot start.
pub fn watch(dev_dir: &Path, on_press: impl Fn() + Send + 'static) -> io::Result<JoinHandle<()>> {
    let dev_dir = dev_dir.to_path_buf();
    std::thread::Builder::new()
        .name("power-button".into())
        .spawn(move || watch_loop(&dev_dir, &on_press))
}

fn watch_loop(dev_dir: &Path, on_press: &dyn Fn()) {
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut devices: Vec<File> = Vec::new();
    let mut last_scan: Option<Instant> = None;
    let mut buf = vec![0u8; EVENT_SIZE * 64];
    loop {
        let rescanning = started.elapsed() < RESCAN_FOR;
        if rescanning && last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            devices.extend(scan(dev_dir, &mut seen));
            last_scan = Some(Instant::now());
        }
        if !rescanning && devices.is_empty() {
            return;
        }
        if devices.is_empty() {
            std::thread::sleep(RESCAN_EVERY);
            continue;
        }
        let mut fds: Vec<PollFd> = devices
            .iter()
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let timeout = PollTimeout::try_from(RESCAN_EVERY).unwrap_or(PollTimeout::NONE);
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        let ready: Vec<(usize, PollFlags)> = fds
            .iter()
            .enumerate()
            .filter_map(|(i, fd)| fd.revents().filter(|r| !r.is_empty()).map(|r| (i, r)))
            .collect();
        drop(fds);
        let mut gone = Vec::new();
        for (index, revents) in ready {
            if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                gone.push(index);
                continue;
            }
            match (&devices[index]).read(&mut buf) {
                Ok(n) => {
                    let presses = parse_events(&buf[..n]);
                    if presses.iter().any(InputEvent::is_power_press) {
                        on_press();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => gone.push(index),
            }
        }
        // Unplugged devices: drop them (highest index first keeps indices valid).
        for index in gone.into_iter().rev() {
            devices.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut bytes = vec![0xAAu8; TYPE_OFFSET]; // timestamp: ignored
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(code.to_ne_bytes());
        bytes.extend(value.to_ne_bytes());
        bytes
    }

    #[test]
    fn layout_matches_the_kernel_struct() {
        assert_eq!(TYPE_OFFSET, std::mem::size_of::<libc::timeval>());
        assert_eq!(raw_event(0, 0, 0).len(), EVENT_SIZE);
    }

    #[test]
    fn press_release_and_sync() {
        let mut bytes = raw_event(EV_KEY, KEY_POWER, 1);
        bytes.extend(raw_event(0, 0, 0)); // EV_SYN
        bytes.extend(raw_event(EV_KEY, KEY_POWER, 0));
        let events = parse_events(&bytes);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            InputEvent {
                kind: EV_KEY,
                code: KEY_POWER,
                value: 1
            }
        );
        let presses: Vec<bool> = events.iter().map(InputEvent::is_power_press).collect();
        assert_eq!(presses, [true, false, false]);
    }

    #[test]
    fn other_keys_repeats_and_partial_events_are_not_presses() {
        let mut bytes = raw_event(EV_KEY, 115, 1); // KEY_VOLUMEUP
        bytes.extend(raw_event(EV_KEY, KEY_POWER, 2)); // autorepeat
        bytes.extend(raw_event(4, KEY_POWER, 1)); // EV_MSC with the same code
        bytes.extend(&raw_event(EV_KEY, KEY_POWER, 1)[..EVENT_SIZE - 1]);
        let events = parse_events(&bytes);
        assert_eq!(events.len(), 3);
        assert!(!events.iter().any(InputEvent::is_power_press));
    }

    #[test]
    fn watcher_skips_files_that_are_not_power_buttons() {
        // No real event devices: the thread keeps rescanning (for a minute),
        // never calls back, and does not die on files that are not devices.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mouse0"), b"").unwrap();
        // A regular file named like a device: EVIOCGNAME fails, so it is skipped.
        std::fs::write(dir.path().join("event0"), b"").unwrap();
        let handle = watch(dir.path(), || panic!("no press expected")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!handle.is_finished());
    }
}
