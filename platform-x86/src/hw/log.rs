//! The debug log: lines written to the COM port the agent does not use. Best effort and
//! unbuffered; nothing if no port was chosen.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU16, Ordering};

static PORT: AtomicU16 = AtomicU16::new(0);

/// Send the log to the (initialised) UART at `base`; 0 turns the log off.
pub fn set_port(base: u16) {
    PORT.store(base, Ordering::Relaxed);
}

struct Sink(super::uart::Uart);

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes());
        Ok(())
    }
}

/// Write formatted text to the log.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let port = PORT.load(Ordering::Relaxed);
    if port == 0 {
        return;
    }
    if let Some(uart) = super::uart::Uart::attach(port) {
        let _ = Sink(uart).write_fmt(args);
    }
}

/// Write one line, prefixed with `qga-x86: `.
pub fn line(args: fmt::Arguments<'_>) {
    write_fmt(format_args!("qga-x86: {args}\n"));
}

/// `log!("fmt", args)`: one line to the debug log.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::hw::log::line(format_args!($($arg)*))
    };
}
