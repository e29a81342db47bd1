//! Attaching a file to a loop device through /dev/loop-control, so stage 1
//! needs no losetup.

use super::BootError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;

/// Attach `file` read-only to a free loop device and return the device
/// node. `dev` is the /dev directory.
pub fn attach(file: &Path, dev: &Path) -> Result<PathBuf, BootError> {
    let fail = |reason: String| BootError::Loop {
        file: file.to_path_buf(),
        reason,
    };
    let ctl = File::open(dev.join("loop-control")).map_err(|e| {
        fail(format!(
            "{}/loop-control: {e} (is the loop module loaded?)",
            dev.display()
        ))
    })?;
    // The backing file is opened read-only, which makes the loop device
    // read-only too.
    let backing = File::open(file).map_err(|e| fail(e.to_string()))?;
    // A device another process grabs between GET_FREE and SET_FD reports
    // EBUSY: ask for the next free one.
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(fail(format!(
                "LOOP_CTL_GET_FREE: {}",
                std::io::Error::last_os_error()
            )));
        }
        let node = dev.join(format!("loop{n}"));
        let loopdev =
            open_when_present(&node).map_err(|e| fail(format!("{}: {e}", node.display())))?;
        // SAFETY: LOOP_SET_FD takes the backing file descriptor by value;
        // both descriptors stay open for the duration of the call.
        let rc = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
        if rc == 0 {
            return Ok(node);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(fail(format!("LOOP_SET_FD on {}: {err}", node.display())));
        }
    }
    Err(fail("every loop device was busy".to_string()))
}

/// devtmpfs creates the node for a new loop device asynchronously; wait
/// for it briefly.
fn open_when_present(node: &Path) -> std::io::Result<File> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match OpenOptions::new().read(true).open(node) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}
