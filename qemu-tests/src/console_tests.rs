use super::*;
use std::os::unix::net::UnixStream;

fn clean(chunks: &[&[u8]]) -> String {
    let mut c = Cleaner::default();
    let mut out = Vec::new();
    for chunk in chunks {
        c.feed(chunk, &mut out);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn cleaner_strips_escapes_and_carriage_returns() {
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b"plain\r\n"], "plain\n"),
        (&[b"\x1b[2J\x1b[01;01HBdsDxe: boot\r\n"], "BdsDxe: boot\n"),
        // Text painted at cursor positions comes out as separate lines.
        (
            &[b"menu\x1b[3;1Hentry\x1b[4;1H", b"\x1b[5;1Hlast"],
            "menu\nentry\nlast",
        ),
        (&[b"\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m"], "Shell> "),
        (&[b"\x1bc\x1b[?7lSeaBIOS"], "SeaBIOS"),
        (&[b"a\x1b(Bb"], "ab"),
        (&[b"t\x1b]0;title\x07x"], "tx"),
        // An escape split across two reads is still removed.
        (
            &[b"walden: re\x1b[0", b";1mady\r", b"\n"],
            "walden: ready\n",
        ),
    ];
    for (chunks, want) in cases {
        assert_eq!(clean(chunks), *want, "input {chunks:?}");
    }
}

fn console_with_writer() -> (Console, UnixStream, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = UnixStream::pair().unwrap();
    let console = Console::capture(reader, &dir.path().join("console.log")).unwrap();
    (console, writer, dir)
}

#[test]
fn waits_for_text_that_arrives_later_and_returns_its_line() {
    let (console, mut writer, _dir) = console_with_writer();
    let feeder = std::thread::spawn(move || {
        writer.write_all(b"booting\r\nwalden: rea").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        writer.write_all(b"dy in 1234 ms\r\nmore\r\n").unwrap();
        writer
    });
    let m = console
        .wait_for_any(&["walden: ready in"], &[], Duration::from_secs(5))
        .unwrap();
    assert_eq!(m.index, 0);
    assert_eq!(m.line, "walden: ready in 1234 ms");
    drop(feeder.join().unwrap());
}

#[test]
fn a_match_returns_its_whole_line_even_when_the_rest_comes_later() {
    let (console, mut writer, _dir) = console_with_writer();
    writer
        .write_all(b"walden: error: rolled back from 2.0: ")
        .unwrap();
    let feeder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        writer.write_all(b"watchdog reset\r\n").unwrap();
        writer
    });
    let m = console
        .wait_for_any(&["rolled back from 2.0:"], &[], Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        m.line,
        "walden: error: rolled back from 2.0: watchdog reset"
    );
    drop(feeder.join().unwrap());
}

#[test]
fn waits_are_ordered_by_a_cursor() {
    let (console, mut writer, _dir) = console_with_writer();
    writer.write_all(b"second\nfirst\n").unwrap();
    console
        .wait_for_any(&["first"], &[], Duration::from_secs(5))
        .unwrap();
    // "second" came before "first": it is behind the cursor now.
    let err = console
        .wait_for_any(&["second"], &[], Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, Error::ConsoleTimeout { .. }), "{err}");
    assert!(console.contains("second"));
}

#[test]
fn earliest_of_several_patterns_wins() {
    let (console, mut writer, _dir) = console_with_writer();
    writer
        .write_all(b"x\nwalden stage1: dropping to emergency shell\nwalden: ready in 5 ms\n")
        .unwrap();
    let m = console
        .wait_for_any(
            &["walden: ready in", "emergency shell"],
            &[],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(m.index, 1);
    assert_eq!(m.line, "walden stage1: dropping to emergency shell");
}

#[test]
fn fatal_pattern_fails_fast_with_its_line() {
    let (console, mut writer, _dir) = console_with_writer();
    writer
        .write_all(b"[    3.1] Kernel panic - not syncing: Attempted to kill init!\n")
        .unwrap();
    let started = Instant::now();
    let err = console
        .wait_for_any(
            &["walden: ready in"],
            &["Kernel panic"],
            Duration::from_secs(30),
        )
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match err {
        Error::ConsoleFatal { line, fatal, .. } => {
            assert!(line.contains("Attempted to kill init"), "{line}");
            assert_eq!(fatal, "Kernel panic");
        }
        other => panic!("wrong error {other}"),
    }
}

#[test]
fn timeout_is_reported_with_the_log_path() {
    let (console, _writer, _dir) = console_with_writer();
    let started = Instant::now();
    let err = console
        .wait_for_any(&["never"], &[], Duration::from_millis(300))
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let msg = err.to_string();
    assert!(
        msg.contains("\"never\"") && msg.contains("console.log"),
        "{msg}"
    );
}

#[test]
fn closed_console_ends_the_wait_and_log_has_everything() {
    let (console, mut writer, dir) = console_with_writer();
    writer.write_all(b"line one\r\n\x1b[0mline two\n").unwrap();
    drop(writer);
    let err = console
        .wait_for_any(&["never"], &[], Duration::from_secs(10))
        .unwrap_err();
    assert!(matches!(err, Error::ConsoleClosed { .. }), "{err}");
    let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
    assert_eq!(log, "line one\nline two\n");
    assert_eq!(console.tail(1), "line two");
}

#[test]
fn tail_keeps_the_last_lines() {
    let text: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let t = tail(text.as_bytes(), 3);
    assert_eq!(t, "line 197\nline 198\nline 199");
}
