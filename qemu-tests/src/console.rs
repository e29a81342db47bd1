//! The serial console: captured from QEMU's stdout by a reader thread,
//! cleaned (no carriage returns, no terminal escape sequences), appended to a
//! log file, and searched by waiters with timeouts.
//!
//! Waits are ordered: each successful wait moves a cursor past its match, so
//! `wait_for("a")` then `wait_for("b")` asserts that "b" came after "a".

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many console lines a failed wait prints.
pub const TAIL_LINES: usize = 80;

/// How long a match waits for the rest of its line (115200 baud sends a
/// line in milliseconds, but a busy TCG guest can pause mid-line).
pub const LINE_GRACE: Duration = Duration::from_secs(5);

/// Removes `\r` and ANSI/VT100 escape sequences from a byte stream, keeping
/// state across chunk boundaries. Firmware (OVMF, GRUB) paints the serial
/// console with cursor moves and colours; matching works on plain text.
/// Cursor positioning (`ESC [ row ; col H`) becomes a line break, so
/// firmware menus painted in place stay readable line by line in the log.
#[derive(Debug)]
pub struct Cleaner {
    state: EscState,
    /// Whether the last byte kept was a newline (or nothing was kept yet).
    at_line_start: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum EscState {
    #[default]
    Text,
    /// Just saw ESC.
    Esc,
    /// Inside `ESC [ ...` until a final byte 0x40..=0x7e.
    Csi,
    /// `ESC (`, `ESC )` and friends: one more byte follows.
    Charset,
    /// `ESC ] ...` until BEL or ESC.
    Osc,
}

impl Default for Cleaner {
    fn default() -> Self {
        Self {
            state: EscState::Text,
            at_line_start: true,
        }
    }
}

impl Cleaner {
    /// Clean one chunk, appending the kept bytes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match (self.state, b) {
                (EscState::Text, 0x1b) => EscState::Esc,
                (EscState::Text, b'\r') => EscState::Text,
                (EscState::Text, _) => {
                    out.push(b);
                    self.at_line_start = b == b'\n';
                    EscState::Text
                }
                (EscState::Csi, b'H' | b'f') => {
                    if !self.at_line_start {
                        out.push(b'\n');
                        self.at_line_start = true;
                    }
                    EscState::Text
                }
                (EscState::Esc, b'[') => EscState::Csi,
                (EscState::Esc, b']') => EscState::Osc,
                (EscState::Esc, b'(' | b')' | b'*' | b'+' | b'#' | b'%') => EscState::Charset,
                (EscState::Esc, _) => EscState::Text,
                (EscState::Csi, 0x40..=0x7e) => EscState::Text,
                (EscState::Csi, _) => EscState::Csi,
                (EscState::Charset, _) => EscState::Text,
                (EscState::Osc, 0x07) => EscState::Text,
                (EscState::Osc, 0x1b) => EscState::Esc,
                (EscState::Osc, _) => EscState::Osc,
            };
        }
    }
}

/// The captured text and the waiters' cursor.
#[derive(Debug, Default)]
struct Buffer {
    text: Vec<u8>,
    cursor: usize,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    buf: Mutex<Buffer>,
    grew: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait at most `timeout` for the reader to append text (or close).
    fn wait_grew<'a>(
        &self,
        buf: MutexGuard<'a, Buffer>,
        timeout: Duration,
    ) -> MutexGuard<'a, Buffer> {
        self.grew
            .wait_timeout(buf, timeout)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

/// A successful wait: which pattern matched and the whole console line around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Index of the matching pattern in the list given to [`Console::wait_for_any`].
    pub index: usize,
    /// The full console line containing the match.
    pub line: String,
}

/// A captured serial console.
#[derive(Debug)]
pub struct Console {
    shared: Arc<Shared>,
    log: PathBuf,
    reader: Option<JoinHandle<()>>,
}

impl Console {
    /// Start capturing `source` (QEMU's stdout) into memory and into the log
    /// file `log` (appended, so a restarted machine continues the same log).
    pub fn capture(source: impl Read + Send + 'static, log: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io("open console log", log, e))?;
        let shared = Arc::new(Shared::default());
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("qemu-console".into())
            .spawn(move || read_loop(source, file, &reader_shared))
            .map_err(|e| Error::io("spawn console reader for", log, e))?;
        Ok(Self {
            shared,
            log: log.to_path_buf(),
            reader: Some(reader),
        })
    }

    /// The log file everything is written to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Wait until one of `patterns` appears after the cursor, failing early
    /// if one of `fatal` appears first or the console closes. On success the
    /// cursor moves past the match. On failure the last [`TAIL_LINES`] lines
    /// go to stderr (shown by the test runner for failing tests).
    pub fn wait_for_any(
        &self,
        patterns: &[&str],
        fatal: &[&str],
        timeout: Duration,
    ) -> Result<Match> {
        let deadline = Instant::now() + timeout;
        let wanted = patterns.join("\" or \"");
        let mut buf = self.shared.lock();
        loop {
            if let Some((index, start, end)) = earliest(&buf.text, buf.cursor, patterns, fatal) {
                buf = self.rest_of_line(buf, end);
                let line = line_around(&buf.text, start, end);
                buf.cursor = end;
                if index < patterns.len() {
                    return Ok(Match { index, line });
                }
                drop(buf);
                self.print_tail();
                return Err(Error::ConsoleFatal {
                    pattern: wanted,
                    fatal: fatal[index - patterns.len()].to_string(),
                    line,
                    log: self.log.clone(),
                });
            }
            if buf.closed {
                drop(buf);
                self.print_tail();
                return Err(Error::ConsoleClosed {
                    pattern: wanted,
                    log: self.log.clone(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(buf);
                self.print_tail();
                return Err(Error::ConsoleTimeout {
                    pattern: wanted,
                    timeout,
                    log: self.log.clone(),
                });
            }
            buf = self.shared.wait_grew(buf, deadline - now);
        }
    }

    /// Wait (at most [`LINE_GRACE`]) until the line holding a match that ends
    /// at `end` is complete, so the line returned is the whole line and not
    /// the part the serial port had sent when the pattern matched.
    fn rest_of_line<'a>(
        &'a self,
        mut buf: MutexGuard<'a, Buffer>,
        end: usize,
    ) -> MutexGuard<'a, Buffer> {
        let deadline = Instant::now() + LINE_GRACE;
        loop {
            let now = Instant::now();
            if buf.closed || buf.text[end..].contains(&b'\n') || now >= deadline {
                return buf;
            }
            buf = self.shared.wait_grew(buf, deadline - now);
        }
    }

    /// Whether `pattern` appears anywhere in the console so far (ignores the cursor).
    pub fn contains(&self, pattern: &str) -> bool {
        find(&self.shared.lock().text, 0, pattern.as_bytes()).is_some()
    }

    /// Everything captured so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().text).into_owned()
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.shared.lock().text, n)
    }

    /// Print the tail and the log path to stderr.
    pub fn print_tail(&self) {
        eprintln!(
            "----- last {TAIL_LINES} console lines ({}) -----\n{}\n----- end of console -----",
            self.log.display(),
            self.tail(TAIL_LINES)
        );
    }

    /// Whether QEMU's stdout has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // The reader ends when QEMU's stdout closes, which the owner ensures
        // by killing QEMU first; joining keeps the log file complete.
        if let Some(reader) = self.reader.take() {
            if self.is_closed() || reader.is_finished() {
                let _ = reader.join();
            }
        }
        crate::lockup::note(&self.text(), &self.log);
    }
}

fn read_loop(mut source: impl Read, mut log: File, shared: &Shared) {
    let mut cleaner = Cleaner::default();
    let mut chunk = [0u8; 8192];
    let mut clean = Vec::with_capacity(chunk.len());
    loop {
        let n = match source.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        clean.clear();
        cleaner.feed(&chunk[..n], &mut clean);
        // A log write failure must not stop the capture the waiters rely on.
        let _ = log.write_all(&clean);
        shared.lock().text.extend_from_slice(&clean);
        shared.grew.notify_all();
    }
    let _ = log.flush();
    shared.lock().closed = true;
    shared.grew.notify_all();
}

/// First occurrence of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The earliest match among `patterns` then `fatal` (indices continue), as
/// (index, start, end). Ties go to the wanted pattern.
fn earliest(
    hay: &[u8],
    from: usize,
    patterns: &[&str],
    fatal: &[&str],
) -> Option<(usize, usize, usize)> {
    patterns
        .iter()
        .chain(fatal)
        .enumerate()
        .filter_map(|(i, p)| find(hay, from, p.as_bytes()).map(|s| (i, s, s + p.len())))
        .min_by_key(|&(i, s, _)| (s, i))
}

/// The full line containing `hay[start..end]`.
fn line_around(hay: &[u8], start: usize, end: usize) -> String {
    let begin = hay[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let stop = hay[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(hay.len(), |p| p + end);
    String::from_utf8_lossy(&hay[begin..stop]).into_owned()
}

fn tail(hay: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(hay);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
