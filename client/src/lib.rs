//! A host-side client for the QEMU guest agent protocol.
//!
//! Firmware and VM test harnesses drive a guest agent from the host the way libvirt does: over a
//! byte stream with no framing of its own, where stale bytes from an earlier client, a silent
//! agent or a guest that resets mid-answer are normal events, not exceptions. This crate is the
//! client the project's own suites, benchmarks and soak runs use for that, published as a
//! library so a harness gets the same behaviour: re-synchronisation first ([`Client::sync`],
//! [`Client::sync_delimited`]), a deadline on every read, typed helpers for the commands a
//! harness reaches for (exec, files, info), and raw access ([`Client::send_raw`],
//! [`Client::read_line`]) for everything else. The `qga-client` command (feature `cli`, on by
//! default) is a thin layer over it.
//!
//! Values are `serde_json` values: the client checks the wire rules it needs (one line per
//! response, the optional 0xFF prefix, ASCII) and leaves the meaning of answers to the caller.
//!
//! ```no_run
//! use std::time::Duration;
//! use qga_client::{Address, Client};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let address: Address = "/tmp/qga.sock".parse()?;
//! let mut agent = Client::connect_to(&address)?;
//! agent.sync_delimited()?; // skip whatever an earlier client left behind
//! agent.ping()?;
//! let out = agent.run("/bin/uname", &["-r"], Duration::from_secs(10))?;
//! println!("kernel {}", String::from_utf8_lossy(&out.stdout).trim());
//! agent.push(b"hello", "/tmp/greeting", 32 * 1024)?;
//! assert_eq!(agent.pull("/tmp/greeting", 32 * 1024)?, b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! Errors say what went wrong in a way a harness can act on: [`ClientError::Agent`] carries the
//! agent's `class` and `desc`, [`ClientError::Timeout`] and [`ClientError::Closed`] what was
//! being waited for.

mod address;
#[cfg(feature = "cli")]
pub mod cli;
mod client;
mod error;
mod sys;
mod wire;

pub use address::{Address, AddressError};
pub use client::{Client, DEFAULT_TIMEOUT, FILE_READ_MAX};
pub use error::{ClientError, Result};
pub use wire::{
    ExecOutput, FileChunk, b64_decode, b64_encode, decode_exec_status, into_return, parse_line,
};
