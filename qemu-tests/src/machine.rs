//! A running QEMU machine: its console, QMP, the walden control channel,
//! power operations, exit, restart with the same disks. Dropping it kills QEMU.

use crate::console::{Console, Match};
use crate::control::ControlChannel;
use crate::env::scaled;
use crate::error::{Error, Result};
use crate::qmp::Qmp;
use crate::status::Status;
use crate::tools::render;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The config disk's file name in the test directory.
pub(crate) const CONFIG_IMAGE: &str = "config.img";

/// How long QEMU may take to open its QMP socket.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything needed to (re)start the same machine.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) args: Vec<String>,
    pub(crate) dir: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) fail_on: Vec<String>,
}

/// A running machine. Build one with [`crate::TestEnv::machine`].
#[derive(Debug)]
pub struct Machine {
    launch: Launch,
    child: Child,
    stdin: Option<ChildStdin>,
    console: Console,
    qmp: Qmp,
    control: Option<ControlChannel>,
    runs: u32,
}

impl Machine {
    pub(crate) fn launch(launch: Launch) -> Result<Self> {
        let cmdline = render(QEMU, &launch.args);
        let cmd_file = launch.dir.join("qemu.cmdline");
        std::fs::write(&cmd_file, format!("{cmdline}\n"))
            .map_err(|e| Error::io("write", &cmd_file, e))?;
        let (mut child, stdin, console) = spawn(&launch, &cmdline)?;
        let qmp = match connect_qmp(&launch, &mut child) {
            Ok(qmp) => qmp,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut machine = Self {
            qmp,
            launch,
            child,
            stdin: Some(stdin),
            console,
            control: None,
            runs: 1,
        };
        machine.check_running("starting")?;
        Ok(machine)
    }

    /// The console capture (for `contains`, `text`, `tail`).
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// `build/qemu-tests/<test>/console.log`.
    pub fn console_log(&self) -> &Path {
        self.console.log_path()
    }

    /// Wait for `pattern` on the console after the previous match; return
    /// its whole line. Fails early on a fail-fast pattern (kernel panic) or
    /// when QEMU exits; prints the console tail on failure.
    pub fn wait_for_console(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_for_any(&[pattern], timeout).map(|m| m.line)
    }

    /// Like [`Machine::wait_for_console`] for the first of several patterns.
    pub fn wait_for_any(&mut self, patterns: &[&str], timeout: Duration) -> Result<Match> {
        let fatal: Vec<&str> = self
            .launch
            .fail_on
            .iter()
            .map(String::as_str)
            .filter(|f| !patterns.contains(f))
            .collect();
        let timeout = scaled(timeout);
        match self.console.wait_for_any(patterns, &fatal, timeout) {
            Err(Error::ConsoleClosed { pattern, .. }) => {
                Err(self.exited_error(&format!("waiting for {pattern:?}")))
            }
            other => other,
        }
    }

    /// Type `text` on the serial console.
    pub fn send_console(&mut self, text: &str) -> Result<()> {
        let log = self.console.log_path().to_path_buf();
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            Error::io("write console", &log, std::io::ErrorKind::BrokenPipe.into())
        })?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| Error::io("write console", &log, e))
    }

    /// Execute a QMP command and return its result.
    pub fn qmp(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.qmp.execute(command, arguments)
    }

    /// QMP events received so far.
    pub fn qmp_events(&self) -> &[Value] {
        &self.qmp.events
    }

    /// Press the ACPI power button.
    pub fn powerdown(&mut self) -> Result<()> {
        self.qmp("system_powerdown", None).map(drop)
    }

    /// Hard reset.
    pub fn reset(&mut self) -> Result<()> {
        self.qmp("system_reset", None).map(drop)
    }

    /// Stop QEMU at once (pulling the plug) and wait for it to exit.
    pub fn quit(&mut self) -> Result<ExitStatus> {
        self.qmp.quit()?;
        self.wait_exit(Duration::from_secs(30))
    }

    /// Wait until QEMU exits by itself (the guest powered off, or rebooted
    /// under `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Error::io("wait for", QEMU, e))?
            {
                self.stdin = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.console.print_tail();
                return Err(Error::Timeout {
                    what: format!(
                        "QEMU to exit (console log {})",
                        self.console_log().display()
                    ),
                    timeout: scaled(timeout),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `walden status --json` over the virtio-serial control channel,
    /// waiting up to a minute for walden to serve it.
    pub fn status(&mut self) -> Result<Status> {
        self.status_within(Duration::from_secs(60))
    }

    /// The whole status as JSON (fields the harness's [`Status`] leaves out).
    pub fn status_json(&mut self) -> Result<Value> {
        self.status()?;
        let timeout = scaled(Duration::from_secs(60));
        let channel = self.control.as_mut().ok_or_else(|| Error::Control {
            path: self.launch.scratch.join("ctl.sock"),
            detail: "no control channel".into(),
        })?;
        let result = channel.request("status", timeout);
        if result.is_err() {
            self.control = None;
        }
        result
    }

    /// [`Machine::status`] with an explicit timeout.
    pub fn status_within(&mut self, timeout: Duration) -> Result<Status> {
        let timeout = scaled(timeout);
        let mut channel = match self.control.take() {
            Some(ch) => ch,
            None => ControlChannel::connect(&self.launch.scratch.join("ctl.sock"), timeout)?,
        };
        let result = channel.status(timeout);
        if result.is_ok() {
            self.control = Some(channel);
        } else {
            // Reconnect next time (the channel may be half-way through a line).
            self.check_running("reading walden status")?;
        }
        result
    }

    /// A control command (see [`ControlChannel::command`]) on the channel
    /// a previous [`Machine::status`] opened.
    pub fn command(&mut self, request: &Value, timeout: Duration) -> Result<Value> {
        self.status()?;
        let timeout = scaled(timeout);
        let channel = self.control.as_mut().ok_or_else(|| Error::Control {
            path: self.launch.scratch.join("ctl.sock"),
            detail: "no control channel".into(),
        })?;
        let result = channel.command(request, timeout);
        if result.is_err() {
            self.control = None;
        }
        result
    }

    /// Send a control command and return at once (see [`ControlChannel::send`]).
    pub fn send_command(&mut self, request: &Value) -> Result<()> {
        self.status()?;
        let channel = self.control.as_mut().ok_or_else(|| Error::Control {
            path: self.launch.scratch.join("ctl.sock"),
            detail: "no control channel".into(),
        })?;
        channel.send(request)
    }

    /// A file on the config disk (path inside its file system, e.g.
    /// "/var/log/walden/walden.log"), or None if absent. Call it after QEMU
    /// exited: the guest's page cache is not on the disk before that.
    pub fn config_disk_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let img = self.launch.dir.join(CONFIG_IMAGE);
        if !img.is_file() {
            return Err(Error::ArtifactMissing {
                what: "config disk (the machine has none)".into(),
                path: img,
            });
        }
        crate::disk::ext4_read_file(&img, path)
    }

    /// A raw copy of boot medium `index` (0 for the first `usb_image` or
    /// ISO) as this machine left it, for [`crate::disk::esp_read_file`] and
    /// [`crate::disk::esp_list_dir`]. Call it after QEMU exited. The copy
    /// is a disk file of the scenario (removed when it ends).
    pub fn media_copy(&self, index: usize) -> Result<PathBuf> {
        // The overlay's name is the builder's (`media{i}.qcow2`).
        let overlay = self.launch.dir.join(format!("media{index}.qcow2"));
        if !overlay.is_file() {
            return Err(Error::ArtifactMissing {
                what: format!("boot medium {index} of this machine"),
                path: overlay,
            });
        }
        let raw = self.launch.dir.join(format!("media{index}-after.img"));
        crate::disk::raw_copy(&overlay, &raw)?;
        Ok(raw)
    }

    /// Quit QEMU and start it again with the same disk files (config disk,
    /// media overlays, UEFI variables), as a power cycle does.
    pub fn restart(&mut self) -> Result<()> {
        // After a power-off QEMU is already gone: there is nothing to quit.
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if !exited {
            self.quit()?;
        }
        self.stdin = None;
        self.control = None;
        self.runs += 1;
        let log = self.launch.dir.join("console.log");
        if let Ok(mut f) = OpenOptions::new().append(true).open(&log) {
            let _ = writeln!(f, "\n===== qemu-tests: restart (run {}) =====", self.runs);
        }
        let cmdline = render(QEMU, &self.launch.args);
        let (child, stdin, console) = spawn(&self.launch, &cmdline)?;
        self.child = child;
        self.stdin = Some(stdin);
        // Dropping the old console joins its reader: QEMU has exited.
        self.console = console;
        self.qmp = connect_qmp(&self.launch, &mut self.child)?;
        Ok(())
    }

    /// An error if QEMU is no longer running.
    fn check_running(&mut self, during: &str) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(_)) => Err(self.exited_error(during)),
            _ => Ok(()),
        }
    }

    /// Describe QEMU's exit (waiting briefly for it to be reaped).
    fn exited_error(&mut self, during: &str) -> Error {
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => break "still running, console closed".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        Error::QemuExited {
            status,
            during: during.to_string(),
            stderr: stderr_tail(&self.launch.dir),
            log: self.console_log().to_path_buf(),
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Always: a failed scenario must not leave QEMU behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start QEMU with the console on its stdio and stderr to a file.
fn spawn(launch: &Launch, cmdline: &str) -> Result<(Child, ChildStdin, Console)> {
    let err_path = launch.dir.join("qemu.stderr.log");
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(&err_path)
        .map_err(|e| Error::io("open", &err_path, e))?;
    let mut child = Command::new(QEMU)
        .args(&launch.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|source| Error::QemuSpawn {
            command: cmdline.to_string(),
            source,
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err(Error::unexpected("QEMU process", "no stdio pipes"));
    };
    match Console::capture(stdout, &launch.dir.join("console.log")) {
        Ok(console) => Ok((child, stdin, console)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Connect QMP to a just-started QEMU; if QEMU exits first (bad
/// arguments, missing file), report its exit and stderr at once.
fn connect_qmp(launch: &Launch, child: &mut Child) -> Result<Qmp> {
    let path = launch.scratch.join("qmp.sock");
    let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
    loop {
        match Qmp::connect(&path, Duration::from_millis(200)) {
            Ok(qmp) => return Ok(qmp),
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::QemuExited {
                        status: status.to_string(),
                        during: "starting".into(),
                        stderr: stderr_tail(&launch.dir),
                        log: launch.dir.join("console.log"),
                    });
                }
                if Instant::now() >= deadline {
                    return Err(e);
                }
            }
        }
    }
}

/// The end of QEMU's stderr log.
fn stderr_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("qemu.stderr.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
