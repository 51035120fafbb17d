//! Logging in upstream's line format, `<secs>.<usec>: <level>: <message>`, to stderr or to the
//! `-l` file (opened for appending).
//!
//! As upstream: only `error` and `critical` lines are written unless `-v` is given, and nothing
//! is written while filesystems are frozen (a write to a frozen log file would block the agent
//! until the thaw that only the agent can perform). The microseconds are printed without zero
//! padding, as upstream's `"%lu.%lu"` does, so that log scrapers written for qemu-ga parse ours.
//! Command audit lines (upstream's `slog`, sent to syslog) are logged at `info` level here:
//! an initramfs has no syslog.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Mutex;

/// Log levels, as GLib's (the whole set, so that `-v` output reads as upstream's).
#[allow(
    dead_code,
    reason = "error and message are part of the level set but unused so far"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `error`
    Error,
    /// `critical`
    Critical,
    /// `warning`
    Warning,
    /// `message`
    Message,
    /// `info`
    Info,
    /// `debug`
    Debug,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Critical => "critical",
            Level::Warning => "warning",
            Level::Message => "message",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

struct Logger {
    file: Option<File>,
    verbose: bool,
    enabled: bool,
}

static LOGGER: Mutex<Logger> = Mutex::new(Logger {
    file: None,
    verbose: false,
    enabled: true,
});

fn with<R>(f: impl FnOnce(&mut Logger) -> R) -> R {
    let mut guard = match LOGGER.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut guard)
}

/// Log every level (`-v`).
pub fn set_verbose(verbose: bool) {
    with(|l| l.verbose = verbose);
}

/// Turn logging off while frozen and on again after the thaw.
pub fn set_enabled(enabled: bool) {
    with(|l| l.enabled = enabled);
}

/// Log to `path` (appending, close-on-exec) instead of stderr.
pub fn open_file(path: &str) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o666)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    with(|l| l.file = Some(f));
    Ok(())
}

/// The line for `msg` at `level`, stamped with the current time.
pub fn format_line(level: Level, msg: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{}: {}: {}\n",
        now.as_secs(),
        now.subsec_micros(),
        level.name(),
        msg
    )
}

/// Write one line if `level` is enabled.
pub fn log(level: Level, msg: &str) {
    with(|l| {
        if !l.enabled || (!l.verbose && level > Level::Critical) {
            return;
        }
        let line = format_line(level, msg);
        let _ = match &mut l.file {
            Some(f) => f.write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    });
}

/// `log!(Level::Debug, "text {}", x)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        $crate::log::log($level, &format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let line = format_line(Level::Critical, "x y");
        let (stamp, rest) = line.split_once(": ").unwrap();
        assert_eq!(rest, "critical: x y\n");
        let (secs, usecs) = stamp.split_once('.').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_700_000_000);
        assert!(usecs.parse::<u32>().unwrap() < 1_000_000);
    }
}
