//! Errors a backend hands back to the engine.
//!
//! Upstream's error texts are part of the protocol (libvirt and test suites match them), so the
//! texts that depend only on the request ("handle '1000' has not been found", "value '4' is
//! invalid for argument count") are composed by the engine, in one place, and backends only say
//! what went wrong underneath: an OS error text, or a whole message where upstream's text is
//! specific to the platform ("failed to freeze /mnt: Device or resource busy").
//!
//! A message is held in a fixed buffer of [`MSG_CAP`] bytes so that a `Result` never allocates;
//! a longer message is cut at a character boundary and ends in `...`.

use core::fmt::{self, Write as _};

/// Capacity of an error message in bytes. Longer messages are truncated and end in `...`.
pub const MSG_CAP: usize = 480;

/// upstream's `QERR_UNSUPPORTED` text.
pub const UNSUPPORTED: &str = "this feature or command is not currently supported";

/// A bounded error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    text: heapless::String<MSG_CAP>,
    truncated: bool,
}

impl Msg {
    /// An empty message.
    pub const fn new() -> Self {
        Msg {
            text: heapless::String::new(),
            truncated: false,
        }
    }

    /// A message formatted from `args`, truncated to [`MSG_CAP`] bytes.
    pub fn format(args: fmt::Arguments<'_>) -> Self {
        let mut m = Msg::new();
        let _ = m.write_fmt(args);
        m
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }
}

impl Default for Msg {
    fn default() -> Self {
        Msg::new()
    }
}

impl fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Ok(());
        }
        for ch in s.chars() {
            // Keep room for the "..." marker.
            if self.text.len() + ch.len_utf8() > MSG_CAP - 3 {
                self.truncated = true;
                let _ = self.text.push_str("...");
                return Ok(());
            }
            let _ = self.text.push(ch);
        }
        Ok(())
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a backend reports when a command fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The platform cannot do this: upstream's unsupported error ([`UNSUPPORTED`]).
    Unsupported,
    /// An operating-system error: its number and its text (`strerror`), e.g.
    /// `(2, "No such file or directory")`. The engine prefixes upstream's context where upstream
    /// does ("failed to open file 'x' (mode: 'r'): No such file or directory").
    Os(i32, Msg),
    /// A file handle that is not open: `handle '<n>' has not been found`.
    NoHandle(i64),
    /// A complete message, sent as the `desc` of a GenericError.
    Message(Msg),
}

impl Error {
    /// A complete message from format arguments: `Error::msg(format_args!("Invalid time"))`.
    pub fn msg(args: fmt::Arguments<'_>) -> Self {
        Error::Message(Msg::format(args))
    }

    /// An OS error with its text.
    pub fn os(code: i32, text: &str) -> Self {
        Error::Os(code, Msg::format(format_args!("{text}")))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unsupported => f.write_str(UNSUPPORTED),
            Error::Os(_, text) => f.write_str(text.as_str()),
            Error::NoHandle(h) => write!(f, "handle '{h}' has not been found"),
            Error::Message(m) => f.write_str(m.as_str()),
        }
    }
}

impl core::error::Error for Error {}

/// What a command returns: a value or an [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let long = "é".repeat(400);
        let m = Msg::format(format_args!("{long}"));
        assert!(m.as_str().len() <= MSG_CAP);
        assert!(m.as_str().ends_with("..."));
        assert!(m.as_str().starts_with("éé"));
    }

    #[test]
    fn texts() {
        assert_eq!(
            Error::NoHandle(1000).to_string(),
            "handle '1000' has not been found"
        );
        assert_eq!(Error::Unsupported.to_string(), UNSUPPORTED);
        assert_eq!(
            Error::os(2, "No such file or directory").to_string(),
            "No such file or directory"
        );
    }
}
