//! Seeing the nested guests from the walden host, not from walden: a
//! `[[service]]` script ([`watcher`]) inside the image prints what the
//! kernel knows about each guest's QEMU process on the console, and the
//! parsers here read it back from the console text.
//!
//! Lines the watcher prints (one per line, always with the guest's name):
//!
//! - `guest-log: <line>`: the guests' serial logs
//!   (/var/log/walden/guests/NAME.log), as the guests write them;
//! - `GUEST-PIDS a=<pid> b=-`: whenever a guest's QEMU process changes
//!   (sampled every second; `-` while it has none);
//! - `GUEST-QEMU <name> pid=<pid> start=<ticks>`: once per new QEMU
//!   process, with its start time from /proc/PID/stat (clock ticks since
//!   the host booted), so the start order needs no sampling;
//! - for the guests it is told to probe, once per QEMU process after the
//!   guest printed a new `GUEST-UP`: `GUEST-ARG <name> <pid>: <arg>` for
//!   every argument of /proc/PID/cmdline, `GUEST-CGROUP <name> <pid>
//!   <path> cpu.weight=<w> cpu.max=<quota>/<period>` for the process's
//!   cgroup and each parent, and `GUEST-LISTEN <name> <pid> <file>:<line>`
//!   for the TCP sockets listening on ports 5888-5999 (VNC) in
//!   /proc/net/tcp and tcp6; then `GUEST-PROBED <name> <pid>`.
//!
//! A guest's QEMU is found by its `-name guest=NAME,...` argument, which
//! libvirt gives every domain, so a UEFI guest (whose kernel command line
//! is GRUB's, not QEMU's) is found too.

use crate::expect;
use crate::guest_assets::script_service;
use std::collections::BTreeMap;

/// The serial log of guest `name` on the image (and, under /var's overlay,
/// at the same path on the config disk's file system).
pub fn serial_log(name: &str) -> String {
    format!("/var/log/walden/guests/{name}.log")
}

/// A shell command printing the pid of guest `name`'s QEMU inside the
/// host, or nothing. (The `[,]` keeps the pattern from matching the shell
/// script that contains it.)
pub fn pgrep(name: &str) -> String {
    format!("pgrep -f 'qemu.* guest={name}[,]' | head -n 1")
}

/// The `[[service]]` that shows the guests' serial logs and QEMU processes
/// on the console (see the module docs); `probe` names the guests whose
/// QEMU arguments, cgroups and VNC listeners are printed too.
pub fn watcher(guests: &[&str], probe: &[&str]) -> String {
    script_service("guest-watch", &watcher_script(guests, probe))
}

/// The shell script of [`watcher`].
pub fn watcher_script(guests: &[&str], probe: &[&str]) -> String {
    let logs: Vec<String> = guests.iter().map(|g| serial_log(g)).collect();
    let mut each = String::new();
    for (i, g) in guests.iter().enumerate() {
        let log = serial_log(g);
        let up = format!("{} {g} ", expect::GUEST_UP);
        each.push_str(&format!(
            "  p=$({pgrep}); now=\"$now {g}=${{p:--}}\"\n\
             \x20 if [ -n \"$p\" ] && [ \"$p\" != \"$seen_{i}\" ]; then\n\
             \x20   seen_{i}=$p; probed_{i}=; u=$(grep -c '{up}' {log} 2>/dev/null); ups_{i}=${{u:-0}}\n\
             \x20   echo \"GUEST-QEMU {g} pid=$p start=$(cut -d' ' -f22 /proc/$p/stat 2>/dev/null)\" > /dev/console\n\
             \x20 fi\n",
            pgrep = pgrep(g),
        ));
        if probe.contains(g) {
            each.push_str(&format!(
                "  if [ -n \"$p\" ] && [ -z \"$probed_{i}\" ]; then\n\
                 \x20   u=$(grep -c '{up}' {log} 2>/dev/null)\n\
                 \x20   if [ \"${{u:-0}}\" -gt \"$ups_{i}\" ]; then probed_{i}=1; probe {g} $p; fi\n\
                 \x20 fi\n"
            ));
        }
    }
    format!(
        "mkdir -p /var/log/walden/guests\n\
         tail -q -n +1 -F {logs} 2>/dev/null | sed -u 's/^/guest-log: /' > /dev/console &\n\
         probe() {{\n\
         \x20 tr '\\0' '\\n' < /proc/$2/cmdline | sed \"s|^|GUEST-ARG $1 $2: |\" > /dev/console\n\
         \x20 d=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$2/cgroup)\n\
         \x20 while [ \"$d\" != /sys/fs/cgroup ] && [ -n \"$d\" ]; do\n\
         \x20   w=$(cat \"$d/cpu.weight\" 2>/dev/null); m=$(cat \"$d/cpu.max\" 2>/dev/null | tr ' ' /)\n\
         \x20   echo \"GUEST-CGROUP $1 $2 ${{d#/sys/fs/cgroup}} cpu.weight=${{w:--}} cpu.max=${{m:--}}\" > /dev/console\n\
         \x20   d=${{d%/*}}\n\
         \x20 done\n\
         \x20 grep -E ':17[0-6][0-9A-F] [0-9A-F]+:[0-9A-F]{{4}} 0A ' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sed \"s|^|GUEST-LISTEN $1 $2 |\" > /dev/console\n\
         \x20 echo \"GUEST-PROBED $1 $2\" > /dev/console\n\
         }}\n\
         prev=\n\
         while :; do\n\
         \x20 now=\n\
         {each}\
         \x20 if [ \"$now\" != \"$prev\" ]; then echo \"GUEST-PIDS$now\" > /dev/console; prev=\"$now\"; fi\n\
         \x20 sleep 1\n\
         done\n",
        logs = logs.join(" "),
    )
}

/// The `GUEST-PIDS a=12 b=-` lines of the console, oldest first: guest ->
/// pid (None while it has no QEMU).
pub fn pid_lines(console: &str) -> Vec<BTreeMap<String, Option<u32>>> {
    console
        .lines()
        .filter_map(|l| l.split("GUEST-PIDS").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().ok()))
                .collect()
        })
        .collect()
}

/// One QEMU process the watcher saw (`GUEST-QEMU` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuStart {
    /// The guest.
    pub name: String,
    /// The process.
    pub pid: u32,
    /// Its start time, clock ticks since the host booted.
    pub start: u64,
}

/// Every `GUEST-QEMU` line of the console, in console order.
pub fn qemu_starts(console: &str) -> Vec<QemuStart> {
    console
        .lines()
        .filter_map(|l| l.split("GUEST-QEMU ").nth(1))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            let name = w.next()?.to_string();
            let pid = w.next()?.strip_prefix("pid=")?.parse().ok()?;
            let start = w.next()?.strip_prefix("start=")?.parse().ok()?;
            Some(QemuStart { name, pid, start })
        })
        .collect()
}

/// The QEMU processes of guest `name`, in console order.
pub fn qemus_of(console: &str, name: &str) -> Vec<QemuStart> {
    qemu_starts(console)
        .into_iter()
        .filter(|q| q.name == name)
        .collect()
}

/// The command line of guest `name`'s first probed QEMU (`GUEST-ARG`
/// lines), one argument per entry; empty when it was not probed.
pub fn qemu_args(console: &str, name: &str) -> Vec<String> {
    let prefix = format!("GUEST-ARG {name} ");
    let mut pid: Option<&str> = None;
    let mut out = Vec::new();
    for line in console.lines() {
        let Some(rest) = line.split(&prefix).nth(1) else {
            continue;
        };
        let Some((p, arg)) = rest.split_once(": ") else {
            continue;
        };
        if *pid.get_or_insert(p) == p {
            out.push(arg.to_string());
        }
    }
    out
}

/// Whether the probe of guest `name`'s QEMU is complete (`GUEST-PROBED`).
pub fn probed(console: &str, name: &str) -> bool {
    let prefix = format!("GUEST-PROBED {name} ");
    console.lines().any(|l| l.contains(&prefix))
}

/// The value after `flag` in `args` for every occurrence (`-device X`).
pub fn flag_values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

/// One cgroup of a probed guest's QEMU (`GUEST-CGROUP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// Path below /sys/fs/cgroup.
    pub path: String,
    /// cpu.weight, or "-" when the cgroup has none.
    pub weight: String,
    /// cpu.max as `quota/period`, or "-".
    pub max: String,
}

/// The `GUEST-CGROUP` lines of guest `name`: its QEMU's cgroup and parents.
pub fn cgroups(console: &str, name: &str) -> Vec<CgroupLine> {
    let prefix = format!("GUEST-CGROUP {name} ");
    console
        .lines()
        .filter_map(|l| l.split(&prefix).nth(1))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace().skip(1);
            let path = w.next()?.to_string();
            let weight = w.next()?.strip_prefix("cpu.weight=")?.to_string();
            let max = w.next()?.strip_prefix("cpu.max=")?.to_string();
            Some(CgroupLine { path, weight, max })
        })
        .collect()
}

/// A listening TCP socket near a probed guest (`GUEST-LISTEN`): whether it
/// came from /proc/net/tcp6, its address (as the kernel prints it, hex)
/// and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// From /proc/net/tcp6.
    pub v6: bool,
    /// The local address in /proc/net/tcp's hex ("0100007F" is 127.0.0.1).
    pub addr: String,
    /// The local port.
    pub port: u16,
}

/// The `GUEST-LISTEN` lines of guest `name`.
pub fn listeners(console: &str, name: &str) -> Vec<Listener> {
    let prefix = format!("GUEST-LISTEN {name} ");
    console
        .lines()
        .filter_map(|l| l.split(&prefix).nth(1))
        .filter_map(|rest| {
            // "<pid> /proc/net/tcp:   3: 0100007F:170C 00000000:0000 0A ..."
            let (_, rest) = rest.split_once(' ')?;
            let (file, rest) = rest.split_once(':')?;
            let local = rest.split_whitespace().nth(1)?;
            let (addr, port) = local.split_once(':')?;
            Some(Listener {
                v6: file.ends_with("tcp6"),
                addr: addr.to_string(),
                port: u16::from_str_radix(port, 16).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_script_is_valid_shell_and_finds_qemu_by_its_name_argument() {
        let script = watcher_script(&["z", "b"], &["z"]);
        assert!(script.contains("guest=z[,]"), "{script}");
        assert!(script.contains("probe z $p"), "{script}");
        assert!(script.contains("GUEST-PROBED $1 $2"), "{script}");
        assert!(!script.contains("probe b $p"), "{script}");
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The pattern does not match the script that contains it.
        assert!(!script.contains("guest=z,"), "{script}");
    }

    const CONSOLE: &str = "\
GUEST-PIDS z=- b=-
GUEST-QEMU z pid=313 start=4012
GUEST-PIDS z=313 b=-
GUEST-QEMU b pid=376 start=4135
walden: something GUEST-PIDS z=313 b=376
GUEST-ARG z 313: /usr/bin/qemu-system-x86_64
GUEST-ARG z 313: -vnc
GUEST-ARG z 313: 127.0.0.1:0,audiodev=audio1
GUEST-ARG z 313: -device
GUEST-ARG z 313: {\"driver\":\"virtio-balloon-pci\"}
GUEST-ARG z 999: -later
GUEST-CGROUP z 313 /machine/qemu-1-z.libvirt-qemu/libvirt/emulator cpu.weight=- cpu.max=-
GUEST-CGROUP z 313 /machine/qemu-1-z.libvirt-qemu/libvirt cpu.weight=600 cpu.max=60000/100000
GUEST-LISTEN z 313 /proc/net/tcp:   2: 0100007F:170C 00000000:0000 0A 00000000:00000000 00:00000000 00000000  108        0 1 1 0000 100 0 0 10 0
GUEST-PROBED z 313
";

    #[test]
    fn parsers_read_the_watchers_lines() {
        let pids = pid_lines(CONSOLE);
        assert_eq!(pids.len(), 3);
        assert_eq!(pids[2]["b"], Some(376));
        assert_eq!(pids[0]["z"], None);
        assert_eq!(
            qemu_starts(CONSOLE),
            [
                QemuStart {
                    name: "z".into(),
                    pid: 313,
                    start: 4012
                },
                QemuStart {
                    name: "b".into(),
                    pid: 376,
                    start: 4135
                }
            ]
        );
        assert_eq!(qemus_of(CONSOLE, "b").len(), 1);
        let args = qemu_args(CONSOLE, "z");
        assert_eq!(args.len(), 5, "{args:?}");
        assert_eq!(flag_values(&args, "-vnc"), ["127.0.0.1:0,audiodev=audio1"]);
        assert!(qemu_args(CONSOLE, "b").is_empty());
        assert!(probed(CONSOLE, "z") && !probed(CONSOLE, "b"));
        let cg = cgroups(CONSOLE, "z");
        assert_eq!(cg.len(), 2);
        assert_eq!(cg[1].weight, "600");
        assert_eq!(cg[1].max, "60000/100000");
        assert_eq!(
            listeners(CONSOLE, "z"),
            [Listener {
                v6: false,
                addr: "0100007F".into(),
                port: 5900
            }]
        );
    }
}
