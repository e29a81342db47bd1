//! Starting a service process: clean environment, clean signal state, its
//! own session and process group, no inherited fds, and its stdout/stderr
//! forwarded line by line to the log under the service's name.

use super::service::ServiceSpec;
use nix::unistd::Pid;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// PATH given to every service (the environment is otherwise clean).
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest log line taken from a service; longer output is split.
const MAX_LINE: u64 = 16 * 1024;

/// Stack size of an output-forwarding thread: it only reads and logs.
const READER_STACK: usize = 64 * 1024;

/// Start `spec`'s process. Returns its pid, which is also its process group
/// and session id. The caller reaps it (never `Child::wait`).
pub fn spawn(spec: &ServiceSpec) -> io::Result<Pid> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    // Read before fork: getrlimit is not on the async-signal-safe list.
    let max_fd = open_file_limit();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed because other threads of the
    // parent may have held locks (e.g. the allocator's) at fork time.
    // `child_setup` makes raw syscalls only (sigprocmask, sigaction, setsid,
    // close_range, fcntl), allocates nothing and touches no locks; `max_fd`
    // is a plain integer captured by value.
    unsafe {
        cmd.pre_exec(move || child_setup(max_fd));
    }
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    if let Some(out) = child.stdout.take() {
        forward_output(&spec.name, "stdout", out);
    }
    if let Some(err) = child.stderr.take() {
        forward_output(&spec.name, "stderr", err);
    }
    // Dropping `child` neither waits nor kills; the event loop reaps `pid`.
    Ok(pid)
}

/// Soft RLIMIT_NOFILE, capped: the bound of the fallback fd loop.
fn open_file_limit() -> libc::c_int {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc == 0 {
        lim.rlim_cur.min(65_536) as libc::c_int
    } else {
        4096
    }
}

/// Runs in the child between fork and exec (see the SAFETY note in [`spawn`]).
fn child_setup(max_fd: libc::c_int) -> io::Result<()> {
    // SAFETY: every call below is a raw, async-signal-safe syscall wrapper
    // operating on stack values this function owns.
    unsafe {
        // The supervisor's threads may block signals; a service must start
        // with an empty mask or it would never see e.g. SIGTERM.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // Handled signals reset at exec anyway, ignored ones stay ignored:
        // reset all to the default so nothing we ignore leaks into services.
        // Linux has signals 1..=64 (_NSIG - 1).
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                reset_disposition(sig);
            }
        }
        // Own session and process group: stop signals go to the whole group.
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        // Mark every fd >= 3 close-on-exec rather than closing it: std's
        // Command reports exec failures (ENOENT, ...) through a CLOEXEC pipe
        // that must stay open until exec.
        let rc = libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if rc != 0 {
            // Kernels before 5.11: set the flag fd by fd (EBADF for closed
            // slots is harmless).
            for fd in 3..max_fd {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Set `sig` to SIG_DFL with the raw syscall: the C library's sigaction
/// refuses the signals it reserves (32, 33), yet an inherited SIG_IGN on
/// them would leak into services too. The kernel's `struct sigaction` is
/// {handler, flags, restorer, mask} on these architectures.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
fn reset_disposition(sig: libc::c_int) {
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::uintptr_t,
        flags: libc::c_ulong,
        restorer: libc::uintptr_t,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: rt_sigaction reads `dfl` (a valid kernel sigaction on the
    // stack, 8-byte signal set) and writes nothing (null old action).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &dfl as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            std::mem::size_of::<u64>(),
        );
    }
}

/// Set `sig` to SIG_DFL through the C library (reserved signals stay as they are).
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
fn reset_disposition(sig: libc::c_int) {
    // SAFETY: sigaction reads a zeroed (SIG_DFL, empty mask) struct on the stack.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
    }
}

/// Log each line `pipe` yields as `service=NAME stream=STREAM`, on a small
/// thread that ends at EOF (when the service and everything that inherited
/// the pipe have exited).
fn forward_output(name: &str, stream: &'static str, pipe: impl Read + Send + 'static) {
    let service = name.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("out-{name}"))
        .stack_size(READER_STACK)
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::with_capacity(256);
            loop {
                buf.clear();
                match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            buf.pop();
                        }
                        let line = String::from_utf8_lossy(&buf);
                        tracing::info!(service = %service, stream, "{line}");
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(service = %service, stream, "reading output failed: {e}");
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // The pipe is dropped with the closure: the service sees EPIPE on
        // write. Nothing better can be done when threads cannot be created.
        tracing::error!(service = %name, stream, "cannot start output thread: {e}; output is lost");
    }
}
