use super::*;
use std::io::Read as _;
use std::path::Path;

/// The value of `-o NAME=..` in `args`.
fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == "-o")
        .find_map(|w| w[1].strip_prefix(&format!("{name}=")))
}

#[test]
fn ssh_args_reach_only_the_forward_without_prompts_or_files() {
    let a = ssh_args(Path::new("/t/admin_ed25519"), 40123, "ip -j link show");
    for (name, want) in [
        ("BatchMode", "yes"),
        ("StrictHostKeyChecking", "no"),
        ("UserKnownHostsFile", "/dev/null"),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("ConnectTimeout", "10"),
        ("IdentitiesOnly", "yes"),
        ("IdentityAgent", "none"),
    ] {
        assert_eq!(option(&a, name), Some(want), "{name} in {a:?}");
    }
    // No ssh_config of the user or the system (ProxyJump, ControlMaster...).
    assert_eq!(&a[..2], ["-F", "/dev/null"]);
    let at = |s: &str| a.iter().position(|x| x == s).unwrap();
    assert_eq!(a[at("-i") + 1], "/t/admin_ed25519");
    assert_eq!(a[at("-p") + 1], "40123");
    // The destination is the loopback literal, then the command as one
    // argument after `--`, last.
    assert_eq!(
        &a[a.len() - 3..],
        ["root@127.0.0.1", "--", "ip -j link show"]
    );
    assert!(a.contains(&"-n".to_string()), "stdin from /dev/null");
}

#[test]
fn the_admin_nic_is_a_restricted_user_net_with_one_loopback_forward() {
    let a = qemu_args(40123);
    assert_eq!(a[0], "-netdev");
    let netdev: Vec<&str> = a[1].split(',').collect();
    assert_eq!(netdev[0], "user");
    for want in [
        "restrict=on",
        "net=10.0.9.0/24",
        "hostfwd=tcp:127.0.0.1:40123-:22",
    ] {
        assert!(netdev.contains(&want), "{want} in {}", a[1]);
    }
    assert_eq!(
        netdev.iter().filter(|p| p.starts_with("hostfwd")).count(),
        1
    );
    assert_eq!(a[2], "-device");
    assert!(a[3].ends_with(&format!("mac={ADMIN_MAC}")), "{}", a[3]);
    assert!(ADMIN_NET.starts_with(&ADMIN_GUEST_ADDR[..7]));
}

#[test]
fn free_port_is_bindable_again() {
    let port = free_port().unwrap();
    assert_ne!(port, 0);
    TcpListener::bind(("127.0.0.1", port)).unwrap();
}

/// A key pair made by [`AdminSsh::create`] in a temporary directory,
/// pointed at `port`.
fn admin(dir: &Path, port: u16) -> AdminSsh {
    let mut a = AdminSsh::create(dir).unwrap();
    assert!(a.public_key.starts_with("ssh-ed25519 "), "{}", a.public_key);
    assert!(a.key.is_file());
    a.port = port;
    a
}

#[test]
fn exec_on_a_closed_port_fails_naming_command_port_and_console_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap(); // released: nothing listens there
    let a = admin(dir.path(), port);
    let log = dir.path().join(EXEC_LOG);
    let console = dir.path().join("console.log");
    let err = exec(
        &a,
        "hostname",
        Duration::from_secs(20),
        Some(&log),
        &console,
    )
    .unwrap_err()
    .to_string();
    for part in [
        "`hostname`".to_string(),
        format!("-p {port}"),
        "status 255".into(),
        console.display().to_string(),
    ] {
        assert!(err.contains(&part), "{part:?} in {err}");
    }
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert!(
        recorded.contains("root@127.0.0.1 -- hostname"),
        "{recorded}"
    );
    assert!(recorded.contains("exit 255"), "{recorded}");
}

#[test]
fn exec_is_killed_at_its_deadline() {
    // Accepts and never says a word: ssh would wait for the banner for
    // ConnectTimeout (10 s); the deadline is shorter.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        std::thread::sleep(Duration::from_secs(5));
    });
    let dir = tempfile::tempdir().unwrap();
    let a = admin(dir.path(), port);
    let log = dir.path().join(EXEC_LOG);
    let started = Instant::now();
    let err = exec(
        &a,
        "sleep 100",
        Duration::from_secs(2),
        Some(&log),
        Path::new("/x/console.log"),
    )
    .unwrap_err()
    .to_string();
    assert!(started.elapsed() < Duration::from_secs(8), "{err}");
    assert!(
        err.contains("did not finish within 2s; ssh killed"),
        "{err}"
    );
    assert!(
        err.contains("`sleep 100`") && err.contains("/x/console.log"),
        "{err}"
    );
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert!(recorded.contains("killed after"), "{recorded}");
    hold.join().unwrap();
}

#[test]
fn waiting_for_sshd_gives_up_at_its_deadline_with_the_last_error() {
    // Accepts and closes at once, as QEMU's forward does while the host's
    // sshd is not up yet.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let closer = std::thread::spawn(move || {
        let mut accepted = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    drop(s);
                    accepted += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        accepted
    });
    let dir = tempfile::tempdir().unwrap();
    let a = admin(dir.path(), port);
    let log = dir.path().join(EXEC_LOG);
    let mut asked = 0;
    let started = Instant::now();
    let err = wait_for_sshd(
        &a,
        Duration::from_secs(4),
        &log,
        Path::new("/x/console.log"),
        || {
            asked += 1;
            Ok(())
        },
    )
    .unwrap_err()
    .to_string();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let accepted = closer.join().unwrap();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(
        asked >= 2 && accepted >= 2,
        "asked {asked}, accepted {accepted}"
    );
    assert!(err.contains("sshd did not answer within 4s"), "{err}");
    assert!(err.contains(&format!("-p {port}")), "{err}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("sshd did not answer"),
        "one summary line in exec.log"
    );
}

#[test]
fn waiting_for_sshd_stops_when_the_machine_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let a = admin(dir.path(), 9);
    let started = Instant::now();
    let err = wait_for_sshd(
        &a,
        Duration::from_secs(60),
        &dir.path().join(EXEC_LOG),
        Path::new("/x/console.log"),
        || Err(Error::unexpected("machine", "QEMU exited")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("QEMU exited"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn exec_log_records_command_outcome_and_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join(EXEC_LOG);
    record(&log, "ssh ... -- id -u", "exit 0 in 0.3 s", "0\n", "");
    record(&log, "ssh ... -- false", "exit 1 in 0.2 s", "", "no\n");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text,
        "===== $ ssh ... -- id -u\nexit 0 in 0.3 s\n--- stdout:\n0\n--- stderr: (empty)\n\
         ===== $ ssh ... -- false\nexit 1 in 0.2 s\n--- stdout: (empty)\n--- stderr:\nno\n"
    );
}
