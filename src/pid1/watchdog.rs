//! The hardware watchdog (/dev/watchdog), kept alive by PID 1 while the
//! supervisor answers on its control socket, so a wedged boot or a hung
//! supervisor turns into a reset (and a trial image loses a try).
//!
//! * Opened as soon as the device exists (the driver is loaded by udev's
//!   coldplug in bring-up); the timeout is set to 60 s, or to what the
//!   supervisor published from host.toml `[watchdog] timeout` in
//!   `/run/walden/watchdog.timeout`. The console says `hardware watchdog
//!   /dev/watchdog armed (N s)`, and `... timeout set to N s` when a
//!   published timeout arrives later (the driver may load before or after
//!   the supervisor's "watchdog" step) or changes with `config apply`.
//! * A background thread asks the supervisor for its status on the control
//!   socket every quarter timeout. PID 1's loop pings the device only while
//!   the last answer is younger than half the timeout: a stopped, deadlocked
//!   or crash-looping supervisor stops the pings and the machine resets.
//! * Orderly shutdown: magic close (write `V`, then close) disarms it.
//!   Closing without `V` leaves the timer running (the kernel's default).

use nix::{ioctl_read, ioctl_readwrite};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeout without a `[watchdog]` setting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);

/// PID 1's handle on the hardware watchdog.
pub struct Watchdog {
    device: PathBuf,
    timeout_file: PathBuf,
    socket: PathBuf,
    file: Option<File>,
    timeout: Duration,
    last_ping: Option<Instant>,
    /// Milliseconds since `epoch` of the supervisor's last answer (0: none).
    answered: Arc<AtomicU64>,
    /// How often the probe thread asks, in milliseconds (a quarter timeout).
    probe_every: Arc<AtomicU64>,
    epoch: Instant,
    prober: bool,
    closed: bool,
}

impl Watchdog {
    /// A watchdog for `dev` (`/dev/watchdog`), reading the configured
    /// timeout from `timeout_file` and probing the supervisor at `socket`.
    pub fn new(device: PathBuf, timeout_file: PathBuf, socket: PathBuf) -> Self {
        Self {
            device,
            timeout_file,
            socket,
            file: None,
            timeout: DEFAULT_TIMEOUT,
            last_ping: None,
            answered: Arc::new(AtomicU64::new(0)),
            probe_every: Arc::new(AtomicU64::new(1000)),
            epoch: Instant::now(),
            prober: false,
            closed: false,
        }
    }

    /// One turn of PID 1's loop: open when the device appears, apply a new
    /// timeout, ping while the supervisor is responsive; magic close once
    /// `shutting_down`.
    pub fn tick(&mut self, shutting_down: bool) {
        if self.closed {
            return;
        }
        if shutting_down {
            self.close();
            return;
        }
        if self.file.is_none() && !self.open() {
            return;
        }
        self.apply_timeout();
        if !self.responsive() {
            return;
        }
        let interval = self.interval();
        if self.last_ping.is_none_or(|t| t.elapsed() >= interval) {
            self.ping();
        }
    }

    fn open(&mut self) -> bool {
        if !self.device.exists() {
            return false;
        }
        match File::options().write(true).open(&self.device) {
            Ok(f) => {
                self.file = Some(f);
                self.timeout = Duration::ZERO; // forces apply_timeout
                self.apply_timeout();
                super::console(&format!(
                    "hardware watchdog {} armed ({} s)",
                    self.device.display(),
                    self.timeout.as_secs()
                ));
                self.start_prober();
                // The supervisor has this long to answer for the first time.
                self.answered
                    .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                self.ping();
                true
            }
            Err(e) => {
                super::console(&format!("cannot open {}: {e}", self.device.display()));
                self.closed = true; // do not retry every tick
                false
            }
        }
    }

    /// The timeout the supervisor published, or the default.
    fn wanted(&self) -> Duration {
        std::fs::read_to_string(&self.timeout_file)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|s| (1..=3600).contains(s))
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
    }

    fn apply_timeout(&mut self) {
        let want = self.wanted();
        if want == self.timeout {
            return;
        }
        let Some(f) = &self.file else { return };
        // Zero while `open` arms the device: its "armed" line names the value.
        let rearmed = self.timeout != Duration::ZERO;
        let mut secs = want.as_secs() as libc::c_int;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one int through the
        // pointer, which points at `secs` for the duration of the call.
        match unsafe { wdioc_settimeout(f.as_raw_fd(), &mut secs) } {
            Ok(_) => {
                self.set_timeout(Duration::from_secs(secs.max(1) as u64));
                if rearmed {
                    super::console(&format!(
                        "hardware watchdog {} timeout set to {} s",
                        self.device.display(),
                        self.timeout.as_secs()
                    ));
                }
            }
            Err(e) => {
                super::console(&format!(
                    "watchdog: cannot set the timeout to {} s: {e}; keeping the driver's",
                    want.as_secs()
                ));
                self.set_timeout(want);
            }
        }
    }

    fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.probe_every
            .store(self.interval().as_millis() as u64, Ordering::Relaxed);
    }

    fn interval(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_secs(1))
    }

    fn responsive(&self) -> bool {
        let last = self.answered.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(last) < (self.timeout / 2).as_millis() as u64
    }

    fn ping(&mut self) {
        let Some(f) = &self.file else { return };
        let mut dummy: libc::c_int = 0;
        // SAFETY: WDIOC_KEEPALIVE writes at most one int through the pointer.
        if unsafe { wdioc_keepalive(f.as_raw_fd(), &mut dummy) }.is_err() {
            // Some drivers only take the write(2) form.
            let _ = (&*f).write_all(b"\0");
        }
        self.last_ping = Some(Instant::now());
    }

    /// Magic close: `V` then close, so an orderly power off is not reset.
    pub fn close(&mut self) {
        if let Some(mut f) = self.file.take() {
            let _ = f.write_all(b"V");
            drop(f);
            super::console("hardware watchdog disarmed");
        }
        self.closed = true;
    }

    fn start_prober(&mut self) {
        if self.prober {
            return;
        }
        let answered = self.answered.clone();
        let socket = self.socket.clone();
        let epoch = self.epoch;
        let every = self.probe_every.clone();
        let spawned = std::thread::Builder::new()
            .name("watchdog-probe".into())
            .spawn(move || loop {
                // A quarter timeout apart, each answer awaited as long.
                let every = Duration::from_millis(every.load(Ordering::Relaxed).max(250));
                if probe(&socket, every) {
                    answered.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                std::thread::sleep(every);
            });
        match spawned {
            Ok(_) => self.prober = true,
            Err(e) => super::console(&format!("watchdog: cannot start the probe thread: {e}")),
        }
    }
}

/// Whether the supervisor answers a status request on `socket` in time.
pub fn probe(socket: &Path, timeout: Duration) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    if s.set_read_timeout(Some(timeout)).is_err() || s.set_write_timeout(Some(timeout)).is_err() {
        return false;
    }
    if s.write_all(b"{\"action\":\"status\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(BufReader::new(s).read_line(&mut line), Ok(n) if n > 0) && line.contains("\"ok\":true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn probe_needs_an_ok_answer_in_time() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("c.sock");
        assert!(!probe(&sock, Duration::from_millis(200)), "no socket");
        let l = UnixListener::bind(&sock).unwrap();
        let answer = |reply: &'static str| {
            let l = l.try_clone().unwrap();
            std::thread::spawn(move || {
                let (s, _) = l.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                assert!(line.contains("status"));
                if !reply.is_empty() {
                    (&s).write_all(reply.as_bytes()).unwrap();
                } else {
                    std::thread::sleep(Duration::from_millis(600));
                }
            })
        };
        let t = answer("{\"ok\":true,\"result\":{}}\n");
        assert!(probe(&sock, Duration::from_secs(2)));
        t.join().unwrap();
        let t = answer("{\"ok\":false,\"error\":\"x\"}\n");
        assert!(!probe(&sock, Duration::from_secs(2)));
        t.join().unwrap();
        // A supervisor that does not answer (stopped, deadlocked).
        let t = answer("");
        assert!(!probe(&sock, Duration::from_millis(200)));
        t.join().unwrap();
    }

    #[test]
    fn pings_only_while_responsive_and_closes_with_v() {
        // A regular file stands in for the device: the ioctls fail on it, so
        // pings fall back to write(2) and show up as bytes.
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("watchdog");
        std::fs::write(&dev, b"").unwrap();
        let tfile = tmp.path().join("watchdog.timeout");
        std::fs::write(&tfile, "8\n").unwrap();
        let mut w = Watchdog::new(dev.clone(), tfile, tmp.path().join("none.sock"));
        w.tick(false);
        assert_eq!(w.timeout, Duration::from_secs(8));
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0", "first ping at open");
        // Within the grace after opening: pings go on (interval 2 s).
        w.last_ping = Some(Instant::now() - Duration::from_secs(3));
        w.tick(false);
        assert_eq!(std::fs::read(&dev).unwrap().len(), 2);
        // No answer for longer than half the timeout: no more pings.
        w.answered.store(0, Ordering::Relaxed);
        w.epoch = Instant::now() - Duration::from_secs(5);
        w.last_ping = Some(Instant::now() - Duration::from_secs(3));
        w.tick(false);
        assert_eq!(
            std::fs::read(&dev).unwrap().len(),
            2,
            "unresponsive: no ping"
        );
        w.tick(true);
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0\0V");
        w.tick(false);
        assert_eq!(std::fs::read(&dev).unwrap().len(), 3, "closed stays closed");
    }

    #[test]
    fn missing_device_is_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = Watchdog::new(
            tmp.path().join("watchdog"),
            tmp.path().join("t"),
            tmp.path().join("s"),
        );
        w.tick(false);
        assert!(w.file.is_none());
        w.tick(true);
    }
}
