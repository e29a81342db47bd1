//! Logging: tracing to stderr (the console on the appliance) and, when a log
//! directory is configured, appended to `walden.log` in it.
//!
//! Console lines look like `walden: ready in 812 ms` or
//! `walden: warning: [svc=udevd] ...`: short, prefixed, grep-able, and stable
//! enough for the qemu-tests to match. File lines add a UTC timestamp and the
//! level. The filter comes from `WALDEN_LOG` (`error`, `warn`, `info`,
//! `debug`, `trace`; default `info`).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Console prefix of every line walden prints.
pub const PREFIX: &str = "walden";

/// Install the global subscriber. Safe to call more than once (later calls
/// are ignored). A log directory that cannot be opened is reported on the
/// console and logging continues to stderr only: losing the file must not
/// stop the machine from booting.
pub fn init(log_dir: Option<&Path>) {
    let max = std::env::var("WALDEN_LOG")
        .ok()
        .and_then(|v| v.parse::<Level>().ok())
        .unwrap_or(Level::INFO);
    let mut file_error = None;
    let file = log_dir.and_then(|dir| match open_log(dir) {
        Ok(f) => Some(Mutex::new(f)),
        Err(e) => {
            file_error = Some(format!("cannot open log file in {}: {e}", dir.display()));
            None
        }
    });
    let layer = LineLayer { max, file };
    let subscriber = tracing_subscriber::registry().with(layer);
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(err) = file_error {
        tracing::warn!("{err}; logging to the console only");
    }
}

fn open_log(dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("walden.log"))
}

/// Writes one line per event to stderr and the optional file.
struct LineLayer {
    max: Level,
    file: Option<Mutex<File>>,
}

impl<S> Layer<S> for LineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *meta.level() <= self.max
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        let mut scope = String::new();
        if let Some(span_scope) = ctx.event_scope(event) {
            for span in span_scope.from_root() {
                let _ = write!(scope, "[{}] ", span.name());
            }
        }
        let level = *event.metadata().level();
        let tag = match level {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
            Level::INFO => "",
        };
        let body = format_body(&scope, &visitor);
        console_line(&format!("{PREFIX}: {tag}{body}"));
        if let Some(file) = &self.file {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{} {:5} {body}", utc_now(), level);
        }
    }
}

/// Write `line` and its newline to stderr, the console, in one write(2).
/// PID 1 and the supervisor share the console: a line written in pieces
/// (what `writeln!` on unbuffered stderr does: one write per piece) can be
/// cut by the other's, as CI saw ("walden: walden: [service=sshd] ...",
/// then "power button pressed" on a line of its own). Best effort: a
/// closed console must not stop walden.
pub fn console_line(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

fn format_body(scope: &str, v: &LineVisitor) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(scope);
    for (k, val) in &v.fields {
        let _ = write!(out, "[{k}={val}] ");
    }
    out.push_str(&v.message);
    out
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(now.as_secs(), now.subsec_millis())
}

/// A UTC calendar time: year, month, day, hour, minute, second.
pub type Civil = (i64, i64, i64, u64, u64, u64);

/// Seconds since the epoch as a UTC calendar time (civil-from-days,
/// Howard Hinnant), so walden needs no date crate.
pub fn civil_utc(secs: u64) -> Civil {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Format seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn format_utc(secs: u64, millis: u32) -> String {
    let (y, mo, d, h, mi, s) = civil_utc(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_matches_known_instants() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day) 12:34:56
        assert_eq!(format_utc(951_827_696, 7), "2000-02-29T12:34:56.007Z");
        // 2026-11-21 22:48:14
        assert_eq!(format_utc(1_795_301_294, 999), "2026-11-21T22:48:14.999Z");
    }

    #[test]
    fn body_puts_scope_and_fields_before_message() {
        let v = LineVisitor {
            message: "exited".into(),
            fields: vec![("service", "udevd".into())],
        };
        assert_eq!(
            format_body("[bringup] ", &v),
            "[bringup] [service=udevd] exited"
        );
    }
}
