//! A running QEMU machine: its console, QMP, the walden control channel,
//! power operations, exit, restart with the same disks. Dropping it kills QEMU.

use crate::console::{Console, Match};
use crate::console_check::{self, Finding};
use crate::control::ControlChannel;
use crate::env::scaled;
use crate::error::{Error, Result};
use crate::qmp::Qmp;
use crate::ssh::{self, AdminSsh, ExecOutput};
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

/// Default limit of one [`Machine::exec`] (scaled).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the first [`Machine::exec`] of a run waits for sshd (scaled).
pub const SSH_UP_TIMEOUT: Duration = Duration::from_secs(180);

/// Everything needed to (re)start the same machine.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) args: Vec<String>,
    pub(crate) dir: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) fail_on: Vec<String>,
    pub(crate) allow_console: Vec<String>,
    pub(crate) admin: Option<AdminSsh>,
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
    /// Bytes of this run's console already checked by [`Machine::check_console`].
    checked_upto: usize,
    /// Unreported console findings of earlier runs (before a restart).
    earlier: Vec<Finding>,
    /// Whether sshd answered during this run.
    ssh_up: bool,
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
            checked_upto: 0,
            earlier: Vec::new(),
            ssh_up: false,
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

    /// A file on the `i`-th data disk ([`crate::DataDisk`]), or None if
    /// absent; like [`Machine::config_disk_file`], after QEMU exited.
    pub fn data_disk_file(&self, i: usize, path: &str) -> Result<Option<Vec<u8>>> {
        let img = self.launch.dir.join(crate::builder::data_image(i));
        if !img.is_file() {
            return Err(Error::ArtifactMissing {
                what: format!("data disk {i} (the machine has none)"),
                path: img,
            });
        }
        crate::disk::ext4_read_file(&img, path)
    }

    /// Take drive `id` (`data0`, `config`, `media0`) and its device off the
    /// command line: the next [`Machine::restart`] boots without it, as if
    /// the disk were unplugged while the machine was off. Its file stays.
    pub fn remove_drive(&mut self, id: &str) -> Result<()> {
        self.launch.args = without_drive(&self.launch.args, id).ok_or_else(|| {
            Error::unexpected("machine description", format!("no drive {id} to remove"))
        })?;
        Ok(())
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
        self.ssh_up = false;
        self.runs += 1;
        // The old run's console goes away: keep what it has not reported.
        let rest = self.unchecked_findings(true);
        self.earlier.extend(rest);
        self.checked_upto = 0;
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

    /// The config disk's image file (in the scenario's directory), to
    /// read or edit with debugfs while QEMU is stopped, before a
    /// [`Machine::restart`].
    pub fn config_disk_image(&self) -> PathBuf {
        self.launch.dir.join(CONFIG_IMAGE)
    }

    /// The admin's way in, for a machine built with
    /// [`crate::MachineBuilder::admin_ssh`].
    pub fn admin_ssh(&self) -> Option<&AdminSsh> {
        self.launch.admin.as_ref()
    }

    /// `build/qemu-tests/<test>/exec.log`: every [`Machine::exec`].
    pub fn exec_log(&self) -> PathBuf {
        self.launch.dir.join(ssh::EXEC_LOG)
    }

    fn require_admin(&self, command: &str) -> Result<AdminSsh> {
        self.launch.admin.clone().ok_or_else(|| Error::Ssh {
            command: command.to_string(),
            port: 0,
            detail: "the machine was built without admin_ssh(): there is no way in".into(),
            log: self.console_log().to_path_buf(),
        })
    }

    /// Wait (at most `timeout`, scaled) until the host's sshd lets the
    /// harness's key in through the admin NIC; returns how long it took.
    /// Fails at once when QEMU exits. [`Machine::exec`] calls it by itself
    /// when sshd has not answered yet in this run.
    pub fn wait_for_ssh(&mut self, timeout: Duration) -> Result<Duration> {
        let admin = self.require_admin("true")?;
        let exec_log = self.exec_log();
        let console_log = self.console_log().to_path_buf();
        let took = ssh::wait_for_sshd(&admin, scaled(timeout), &exec_log, &console_log, || {
            self.check_running("waiting for sshd")
        })?;
        self.ssh_up = true;
        Ok(took)
    }

    /// Run `command` on the host as root over ssh, as an admin would
    /// (`ssh root@host 'command'`), within [`EXEC_TIMEOUT`]. The exit
    /// status is the command's; see [`Machine::exec_within`].
    pub fn exec(&mut self, command: &str) -> Result<ExecOutput> {
        self.exec_within(command, EXEC_TIMEOUT)
    }

    /// [`Machine::exec`] with its own limit (scaled); ssh is killed when it
    /// runs past it. The first exec of a run waits for sshd first (at most
    /// [`SSH_UP_TIMEOUT`]). ssh failing itself (status 255: refused,
    /// reset, authentication) and the limit are errors that name the
    /// command, the port and the console log; every exec is recorded in
    /// `exec.log`.
    pub fn exec_within(&mut self, command: &str, timeout: Duration) -> Result<ExecOutput> {
        let admin = self.require_admin(command)?;
        self.check_running(&format!("about to run `{command}` over ssh"))?;
        if !self.ssh_up {
            self.wait_for_ssh(SSH_UP_TIMEOUT)?;
        }
        let exec_log = self.exec_log();
        let result = ssh::exec(
            &admin,
            command,
            scaled(timeout),
            Some(&exec_log),
            self.console_log(),
        );
        if result.is_err() {
            self.check_running(&format!("running `{command}` over ssh"))?;
        }
        result
    }

    /// [`Machine::exec`] that must exit 0; returns its stdout. A non-zero
    /// exit is an error with the command's stderr and stdout.
    pub fn exec_ok(&mut self, command: &str) -> Result<String> {
        let out = self.exec(command)?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(Error::ExecFailed {
            command: command.to_string(),
            status: out.status,
            stderr: out.stderr,
            stdout: out.stdout.trim().to_string(),
            log: self.exec_log(),
        })
    }

    /// The console checks (`crate::console_check`) on the console lines
    /// since the last check (earlier runs included): an error listing the
    /// lines of kernel or program trouble not allowed by
    /// [`crate::MachineBuilder::allow_console`]. Lines not checked here
    /// are checked when the machine is dropped.
    pub fn check_console(&mut self) -> Result<()> {
        let mut found = std::mem::take(&mut self.earlier);
        found.extend(self.unchecked_findings(false));
        if found.is_empty() {
            return Ok(());
        }
        self.console.print_tail();
        Err(console_check::error(&found, self.console_log()))
    }

    /// Findings in this run's console past the last check, moving the
    /// check mark: to the end of the last complete line, or to the end
    /// when `all` (the console is over).
    fn unchecked_findings(&mut self, all: bool) -> Vec<Finding> {
        let text = self.console.text();
        let start = self.checked_upto.min(text.len());
        let end = if all {
            text.len()
        } else {
            text[start..].rfind('\n').map_or(start, |p| start + p + 1)
        };
        self.checked_upto = end;
        console_check::scan(&text[start..end], &self.launch.allow_console)
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
        // The console checks on what no check_console() has seen.
        let mut found = std::mem::take(&mut self.earlier);
        found.extend(self.unchecked_findings(true));
        console_check::dropped(found, self.console.log_path());
    }
}

/// `args` without the `-drive ..,id=ID` and `-device ..,drive=ID` pairs;
/// None when there is no such drive.
pub(crate) fn without_drive(args: &[String], id: &str) -> Option<Vec<String>> {
    let has = |v: &str, kv: &str| v.split(',').any(|x| x == kv);
    let (drive, device) = (format!("id={id}"), format!("drive={id}"));
    let mut out = Vec::with_capacity(args.len());
    let mut found = false;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).map(String::as_str).unwrap_or("");
        let ours = (args[i] == "-drive" && has(value, &drive))
            || (args[i] == "-device" && has(value, &device));
        if ours {
            found = true;
            i += 2;
        } else {
            out.push(args[i].clone());
            i += 1;
        }
    }
    found.then_some(out)
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

#[cfg(test)]
mod tests {
    use super::without_drive;

    #[test]
    fn a_drive_and_its_device_come_off_the_command_line() {
        let args: Vec<String> = [
            "-m",
            "2048",
            "-drive",
            "file=/t/data0.img,format=raw,if=none,id=data0",
            "-device",
            "virtio-blk-pci,drive=data0,serial=data0",
            "-drive",
            "file=/t/data01.img,format=raw,if=none,id=data01",
            "-device",
            "virtio-blk-pci,drive=data01,serial=data01",
        ]
        .map(String::from)
        .to_vec();
        let left = without_drive(&args, "data0").unwrap();
        assert_eq!(left.len(), 6);
        assert!(left
            .iter()
            .all(|a| !a.ends_with("id=data0") && !a.contains("drive=data0,")));
        assert!(left.iter().any(|a| a.contains("id=data01")));
        assert_eq!(without_drive(&args, "config"), None);
    }
}
