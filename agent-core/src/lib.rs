//! The QEMU guest agent protocol, with no I/O, no clock and no memory of its own.
//!
//! One engine serves a Linux binary, a bare-metal image and any firmware that embeds it, so it
//! is written the way smoltcp or quinn-proto are: the caller feeds received bytes to
//! [`Agent::feed`], and every response is written to a caller-supplied [`Transmit`] sink. All
//! storage (the request frame, the file I/O chunk, the transmit buffer) is a slice the platform
//! owns; nothing is sized by input, and nothing allocates.
//!
//! Command families are capability traits ([`commands`]). A platform implements the families it
//! can serve and returns them from [`Platform`]; a command whose family is missing answers
//! upstream's unsupported error and shows `"enabled": false` in `guest-info`, so `guest-info`
//! never lies.
//!
//! Layers, each using only the ones below it (no module imports from a module that imports
//! it):
//! - [`engine`]: the driver. Frames bytes with [`json`], checks the envelope and the
//!   [`Policy`], routes each command to its family in [`commands`].
//! - [`commands`]: one module per family (argument types, return types, backend trait) and
//!   [`commands::args`], the argument checks; [`commands::platform`] hands families out.
//! - [`reply`]: the response envelope (`return`/`error`, the echoed `id`).
//! - [`json`] (framing, parsing, the tape), [`out`] (upstream's JSON writer), [`policy`],
//!   [`schema`] (the one table of the 44 commands) and [`error`], with upstream's hash
//!   functions and the GLib-tolerant base64 decoder at the bottom.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![warn(missing_docs)]
// An error carries its message inline (no allocator), so `Result`s are a few hundred bytes by
// design; they are returned once per command, never in a hot loop.
#![allow(clippy::result_large_err)]

mod b64;
pub mod commands;
mod decimal;
pub mod engine;
pub mod error;
pub mod json;
pub mod out;
pub mod policy;
pub mod prelude;
mod qdict;
pub mod reply;
pub mod schema;

#[cfg(test)]
mod tests;

pub use commands::Platform;
pub use engine::{
    Agent, BufferError, Buffers, Chunk, Frame, NestSlot, Nesting, Policy, StaticBuffers, Tx, run,
};
pub use error::{Error, Result};
pub use out::{Transmit, TxError};
pub use schema::Command;
