//! Errors: one enum, so that a harness can tell a silent agent (time-out) from a closed
//! connection, a broken wire rule and the agent's own error answer, and react to each (retry,
//! reboot, fail the test) without parsing messages.

use std::io;

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed.
    Io(io::Error),
    /// Nothing (or not enough) arrived before the deadline; the text says what was awaited.
    Timeout(String),
    /// The peer closed the stream; the text says what was awaited.
    Closed(String),
    /// The agent sent something that breaks the wire rules (not JSON, not an object, …).
    Protocol(String),
    /// The agent answered with an error response.
    Agent {
        /// `error.class`, e.g. `GenericError` or `CommandNotFound`.
        class: String,
        /// `error.desc`.
        desc: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            ClientError::Closed(what) => write!(f, "connection closed while waiting for {what}"),
            ClientError::Protocol(what) => write!(f, "protocol violation: {what}"),
            ClientError::Agent { class, desc } => write!(f, "agent error {class}: {desc}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// Result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
