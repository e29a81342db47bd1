//! QMP framing against a scripted peer on a real Unix socket. The end-to-end
//! check against QEMU itself is `tests/harness_selftest.rs`.

use super::*;
use std::os::unix::net::UnixListener;
use std::thread::JoinHandle;

/// A peer that greets, then answers each request line with `reply(request)`
/// (several lines allowed) and records the requests.
fn peer<F>(path: &Path, reply: F) -> JoinHandle<Vec<Value>>
where
    F: Fn(&Value) -> Vec<String> + Send + 'static,
{
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut out = stream.try_clone().unwrap();
        out.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
            .unwrap();
        let mut seen = Vec::new();
        for line in BufReader::new(stream).lines() {
            let req: Value = serde_json::from_str(&line.unwrap()).unwrap();
            for l in reply(&req) {
                out.write_all(l.as_bytes()).unwrap();
                out.write_all(b"\r\n").unwrap();
            }
            let quit = req["execute"] == "quit";
            seen.push(req);
            if quit {
                break;
            }
        }
        seen
    })
}

fn ok(req: &Value, ret: Value) -> String {
    json!({ "return": ret, "id": req["id"] }).to_string()
}

#[test]
fn negotiates_and_returns_command_results() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let server = peer(&sock, |req| match req["execute"].as_str().unwrap() {
        "query-status" => vec![ok(req, json!({"status": "paused", "running": false}))],
        _ => vec![ok(req, json!({}))],
    });
    let mut qmp = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
    let status = qmp.execute("query-status", None).unwrap();
    assert_eq!(status["status"], "paused");
    qmp.quit().unwrap();
    let seen = server.join().unwrap();
    let names: Vec<&str> = seen
        .iter()
        .map(|r| r["execute"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qmp_capabilities", "query-status", "quit"]);
    // Every request carries a distinct id for matching replies.
    assert_ne!(seen[1]["id"], seen[2]["id"]);
}

#[test]
fn events_before_a_reply_are_kept_and_stale_replies_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let server = peer(&sock, |req| match req["execute"].as_str().unwrap() {
        "system_powerdown" => vec![
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#.into(),
            json!({"return": {}, "id": 999}).to_string(),
            ok(req, json!({})),
        ],
        _ => vec![ok(req, json!({}))],
    });
    let mut qmp = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
    qmp.execute("system_powerdown", None).unwrap();
    assert!(qmp.saw_event("POWERDOWN"));
    assert!(!qmp.saw_event("SHUTDOWN"));
    qmp.quit().unwrap();
    server.join().unwrap();
}

#[test]
fn command_errors_carry_class_and_description() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let server = peer(&sock, |req| {
        match req["execute"].as_str().unwrap() {
        "bogus" => vec![json!({"error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}, "id": req["id"]}).to_string()],
        _ => vec![ok(req, json!({}))],
    }
    });
    let mut qmp = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
    let err = qmp.execute("bogus", Some(json!({"x": 1}))).unwrap_err();
    assert!(
        matches!(&err, Error::QmpCommand { class, .. } if class == "CommandNotFound"),
        "{err}"
    );
    qmp.quit().unwrap();
    let seen = server.join().unwrap();
    assert_eq!(seen[1]["arguments"]["x"], 1);
}

#[test]
fn quit_tolerates_the_socket_closing_without_a_reply() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let server = peer(&sock, |req| match req["execute"].as_str().unwrap() {
        "quit" => vec![],
        _ => vec![ok(req, json!({}))],
    });
    let mut qmp = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
    qmp.quit().unwrap();
    server.join().unwrap();
}

#[test]
fn connect_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        Qmp::connect(&dir.path().join("absent.sock"), Duration::from_millis(200)).unwrap_err();
    assert!(err.to_string().contains("absent.sock"), "{err}");
}
