//! Final-shutdown plan against a recording [`Machine`].

use super::*;
use std::cell::RefCell;
use std::collections::HashMap;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/test_data/pid1/mountinfo.txt"
));
const SWAPS: &str = "Filename\tType\tSize\tUsed\tPriority\n/dev/vda2 partition 1048572 0 -2\n";

/// One recorded side effect.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Log(String),
    KillAll(Signal),
    Wait,
    Swapoff(PathBuf),
    Umount(PathBuf, bool),
    RemountRo(PathBuf),
    Sync,
    Reboot(Action),
}

/// Records calls; umount/remount failures are scripted per path with errno
/// values consumed in order (an empty or missing list means success).
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<Call>>,
    umount_errors: RefCell<HashMap<PathBuf, Vec<i32>>>,
    remount_errors: HashMap<PathBuf, i32>,
    mountinfo: Option<String>,
    /// /proc/swaps; [`SWAPS`] when unset.
    swaps: Option<String>,
}

impl Recorder {
    fn with_fixture() -> Self {
        Self {
            mountinfo: Some(FIXTURE.to_string()),
            ..Self::default()
        }
    }
    fn push(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }
    fn logs(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Log(l) => Some(l),
                _ => None,
            })
            .collect()
    }
    fn effects(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| !matches!(c, Call::Log(_)))
            .collect()
    }
}

impl Machine for Recorder {
    fn log(&self, line: &str) {
        self.push(Call::Log(line.to_string()));
    }
    fn kill_all(&self, signal: Signal) -> io::Result<()> {
        self.push(Call::KillAll(signal));
        Ok(())
    }
    fn wait_all_exited(&self, _timeout: Duration) -> bool {
        self.push(Call::Wait);
        true
    }
    fn read_swaps(&self) -> io::Result<String> {
        Ok(self.swaps.clone().unwrap_or_else(|| SWAPS.to_string()))
    }
    fn swapoff(&self, path: &Path) -> io::Result<()> {
        self.push(Call::Swapoff(path.to_path_buf()));
        Ok(())
    }
    fn read_mountinfo(&self) -> io::Result<String> {
        self.mountinfo
            .clone()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        self.push(Call::Umount(target.to_path_buf(), detach));
        let mut errors = self.umount_errors.borrow_mut();
        match errors.get_mut(target) {
            Some(list) if !list.is_empty() => Err(io::Error::from_raw_os_error(list.remove(0))),
            _ => Ok(()),
        }
    }
    fn remount_ro(&self, target: &Path) -> io::Result<()> {
        self.push(Call::RemountRo(target.to_path_buf()));
        match self.remount_errors.get(target) {
            Some(errno) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }
    fn sync(&self) {
        self.push(Call::Sync);
    }
    fn reboot(&self, action: Action) -> io::Error {
        self.push(Call::Reboot(action));
        io::Error::from_raw_os_error(libc::EPERM)
    }
}

fn umount(path: &str) -> Call {
    Call::Umount(PathBuf::from(path), false)
}

#[test]
fn plan_is_reverse_order_without_root_and_api_mounts() {
    let mounts = parse_mountinfo(FIXTURE).unwrap();
    let plan: Vec<String> = plan_unmounts(&mounts)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        plan,
        [
            "/media/usb stick",
            "/var/lib/libvirt/qemu state",
            "/tmp",
            "/var",
            "/etc",
            "/config",
            "/run/walden/media",
        ]
    );
}

#[test]
fn keep_rules_table() {
    let cases = [
        ("/", true),
        ("/proc", true),
        ("/proc/sys/fs/binfmt_misc", true),
        ("/sys/fs/cgroup", true),
        ("/dev", true),
        ("/dev/pts", true),
        ("/run", true),
        ("/run/walden/media", false),
        ("/devices", false),
        ("/config", false),
        ("/system", false),
    ];
    for (path, kept) in cases {
        assert_eq!(is_kept(Path::new(path)), kept, "{path}");
    }
}

#[test]
fn initial_namespace_runs_every_step_in_order() {
    let machine = Recorder::with_fixture();
    let err = final_shutdown(&machine, Action::PowerOff, Scope::InitialNamespace);
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let mut want = vec![
        Call::KillAll(Signal::SIGTERM),
        Call::Wait,
        Call::KillAll(Signal::SIGKILL),
        Call::Wait,
        Call::Swapoff(PathBuf::from("/dev/vda2")),
    ];
    want.extend(
        [
            "/media/usb stick",
            "/var/lib/libvirt/qemu state",
            "/tmp",
            "/var",
            "/etc",
            "/config",
            "/run/walden/media",
        ]
        .map(umount),
    );
    want.extend([
        Call::RemountRo(PathBuf::from("/")),
        Call::Sync,
        Call::Reboot(Action::PowerOff),
    ]);
    assert_eq!(machine.effects(), want);

    // The console lines the QEMU power-off scenario looks for, in order.
    let logs = machine.logs();
    let expected = [
        "sending SIGTERM to all processes",
        "sending SIGKILL",
        "swapoff",
        "unmounting /config",
        "sync",
        "power off",
    ];
    let mut at = 0;
    for line in expected {
        let found = logs[at..].iter().position(|l| l == line);
        assert!(
            found.is_some(),
            "{line:?} missing after index {at} in {logs:#?}"
        );
        at += found.unwrap_or(0) + 1;
    }
}

#[test]
fn busy_mount_is_retried_then_remounted_read_only() {
    let mut machine = Recorder::with_fixture();
    // /config is busy while /etc (its overlay upper) is mounted: succeeds on pass two.
    // /run/walden/media stays busy (loop device of the root): remount ro.
    machine.umount_errors = RefCell::new(HashMap::from([
        (PathBuf::from("/config"), vec![libc::EBUSY]),
        (
            PathBuf::from("/run/walden/media"),
            vec![libc::EBUSY, libc::EBUSY, libc::EBUSY],
        ),
        (PathBuf::from("/tmp"), vec![libc::EINVAL]),
    ]));
    final_shutdown(&machine, Action::Reboot, Scope::InitialNamespace);
    let umounts: Vec<Call> = machine
        .effects()
        .into_iter()
        .filter(|c| matches!(c, Call::Umount(..) | Call::RemountRo(_)))
        .collect();
    let tail = &umounts[7..];
    assert_eq!(
        tail,
        [
            umount("/config"),
            umount("/run/walden/media"),
            umount("/run/walden/media"),
            Call::RemountRo(PathBuf::from("/run/walden/media")),
            Call::RemountRo(PathBuf::from("/")),
        ]
    );
    assert!(machine
        .logs()
        .iter()
        .any(|l| l.starts_with("unmounting /run/walden/media failed")));
    assert_eq!(
        machine.effects().last(),
        Some(&Call::Reboot(Action::Reboot))
    );
}

#[test]
fn detach_is_the_last_resort() {
    let mut machine = Recorder::with_fixture();
    machine.umount_errors = RefCell::new(HashMap::from([(
        PathBuf::from("/var"),
        vec![libc::EBUSY; 8],
    )]));
    machine.remount_errors = HashMap::from([(PathBuf::from("/var"), libc::EBUSY)]);
    final_shutdown(&machine, Action::Halt, Scope::InitialNamespace);
    let effects = machine.effects();
    let remount = effects
        .iter()
        .position(|c| *c == Call::RemountRo(PathBuf::from("/var")))
        .unwrap();
    assert_eq!(
        effects[remount + 1],
        Call::Umount(PathBuf::from("/var"), true)
    );
    assert!(machine
        .logs()
        .iter()
        .any(|l| l.contains("/var") && l.contains("MNT_DETACH")));
}

#[test]
fn child_namespace_only_kills_syncs_and_reboots() {
    let machine = Recorder::with_fixture();
    final_shutdown(&machine, Action::PowerOff, Scope::ChildNamespace);
    assert_eq!(
        machine.effects(),
        [
            Call::KillAll(Signal::SIGTERM),
            Call::Wait,
            Call::KillAll(Signal::SIGKILL),
            Call::Wait,
            Call::Sync,
            Call::Reboot(Action::PowerOff),
        ]
    );
}

#[test]
fn unreadable_mountinfo_still_remounts_root_and_reboots() {
    let machine = Recorder::default();
    final_shutdown(&machine, Action::Reboot, Scope::InitialNamespace);
    let effects = machine.effects();
    assert!(!effects.iter().any(|c| matches!(c, Call::Umount(..))));
    assert!(effects.contains(&Call::RemountRo(PathBuf::from("/"))));
    assert_eq!(effects.last(), Some(&Call::Reboot(Action::Reboot)));
    assert!(machine
        .logs()
        .iter()
        .any(|l| l.starts_with("cannot read mountinfo")));
}

#[test]
fn scope_of_this_test_process() {
    // The test runs in some PID namespace; detection must not misread it, and
    // a missing /proc means "initial" (the safe side on a real machine).
    let scope = Scope::detect(Path::new("/proc"));
    let ino = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(scope == Scope::InitialNamespace, ino == PROC_PID_INIT_INO);
    assert_eq!(
        Scope::detect(Path::new("/nonexistent-proc")),
        Scope::InitialNamespace
    );
}

/// host.toml's [[mount]]s come up after /config and the overlays (steps
/// "mounts" and "network-mounts"), so they are later in mountinfo: the
/// reverse order takes them down first, children before parents, and the
/// swap file on one of them is off before any unmount.
#[test]
fn host_mounts_and_the_swap_file_on_them_go_before_the_config_disk() {
    let mountinfo = "\
20 1 7:0 / / ro,relatime - squashfs /dev/loop0 ro
21 20 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw
22 20 0:21 / /proc rw - proc proc rw
30 20 253:1 / /config rw,relatime - ext4 /dev/vda rw
31 20 0:30 / /etc rw,relatime - overlay overlay rw
32 20 0:31 / /var rw,relatime - overlay overlay rw
40 20 253:16 / /srv/data rw,noatime - ext4 /dev/vdb rw
41 40 253:32 / /srv/data/fast rw - xfs /dev/vdc rw
42 20 0:40 / /srv/nfs rw - nfs4 nas:/vm rw
";
    let machine = Recorder {
        mountinfo: Some(mountinfo.to_string()),
        swaps: Some(
            "Filename Type Size Used Priority\n/srv/data/swapfile file 65532 0 -2\n".to_string(),
        ),
        ..Recorder::default()
    };
    final_shutdown(&machine, Action::PowerOff, Scope::InitialNamespace);
    let order: Vec<String> = machine
        .effects()
        .into_iter()
        .filter_map(|c| match c {
            Call::Swapoff(p) => Some(format!("swapoff {}", p.display())),
            Call::Umount(p, _) => Some(format!("umount {}", p.display())),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        [
            "swapoff /srv/data/swapfile",
            "umount /srv/nfs",
            "umount /srv/data/fast",
            "umount /srv/data",
            "umount /var",
            "umount /etc",
            "umount /config",
        ]
    );
}
