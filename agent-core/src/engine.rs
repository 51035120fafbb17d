//! The agent: bytes in, responses out.
//!
//! The platform owns every buffer ([`Buffers`]) and every I/O; the engine owns only the
//! framing state, the command filter ([`Policy`]) and the 0xFF-before-next-response flag of
//! `guest-sync-delimited`. A new client connection calls [`Agent::reset`] so that a half-sent
//! request of the previous client is dropped (upstream carries it over).

use crate::commands::Platform;
use crate::out::{Transmit, TxError};
use crate::schema::Command;

/// Default frame buffer size: the largest request accepted (a `guest-file-write` of 48 KiB of
/// data fits). Platforms that want bigger writes pass a bigger buffer.
pub const DEFAULT_FRAME: usize = 64 * 1024;
/// Default file I/O chunk: the most `guest-file-read` asks a backend for at once.
pub const DEFAULT_CHUNK: usize = 4096;
/// Default transmit buffer: responses are sent in pieces of at most this size.
pub const DEFAULT_TX: usize = 4096;
/// Upstream's nesting limit (`MAX_NESTING`): depth 1024 is accepted, 1025 is an error.
pub const DEFAULT_NESTING: usize = 1024;

/// The storage the engine works in, all owned by the platform.
pub struct Buffers<'b> {
    /// Holds one request while it arrives; its length is the request size limit.
    pub frame: &'b mut [u8],
    /// File I/O chunk for `guest-file-read` and similar streamed work.
    pub chunk: &'b mut [u8],
    /// Transmit buffer; responses are handed to the [`Transmit`] sink in pieces this size.
    pub tx: &'b mut [u8],
    /// Per-nesting-level parser state; its length is the nesting limit.
    pub nesting: &'b mut [NestSlot],
}

/// Parser state for one open `{` or `[`. Opaque; platforms only size the slice.
#[derive(Clone, Copy, Debug, Default)]
pub struct NestSlot {
    pub(crate) start: u32,
    pub(crate) flags: u8,
}

impl NestSlot {
    /// An unused slot, for static initialisers.
    pub const EMPTY: NestSlot = NestSlot { start: 0, flags: 0 };
}

/// Buffers of fixed sizes in one value, for a `static` on bare metal or a `Box` on a host.
pub struct StaticBuffers<
    const FRAME: usize = DEFAULT_FRAME,
    const CHUNK: usize = DEFAULT_CHUNK,
    const TX: usize = DEFAULT_TX,
    const NEST: usize = DEFAULT_NESTING,
> {
    frame: [u8; FRAME],
    chunk: [u8; CHUNK],
    tx: [u8; TX],
    nesting: [NestSlot; NEST],
}

impl<const FRAME: usize, const CHUNK: usize, const TX: usize, const NEST: usize>
    StaticBuffers<FRAME, CHUNK, TX, NEST>
{
    /// Zeroed buffers (usable in a `static`).
    pub const fn new() -> Self {
        StaticBuffers {
            frame: [0; FRAME],
            chunk: [0; CHUNK],
            tx: [0; TX],
            nesting: [NestSlot::EMPTY; NEST],
        }
    }

    /// Borrow them as [`Buffers`].
    pub fn as_buffers(&mut self) -> Buffers<'_> {
        Buffers {
            frame: &mut self.frame,
            chunk: &mut self.chunk,
            tx: &mut self.tx,
            nesting: &mut self.nesting,
        }
    }
}

impl<const FRAME: usize, const CHUNK: usize, const TX: usize, const NEST: usize> Default
    for StaticBuffers<FRAME, CHUNK, TX, NEST>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Which commands may run: upstream master's rules (§3.3 of the protocol reference).
///
/// 1. Everything is allowed by default. 2. Once an allow list is given, only what is on it.
/// 3. The block list overrides the allow list. 4. While frozen, exactly the freeze allow list
///    (ping, info, sync, sync-delimited, fsfreeze-status, fsfreeze-thaw), even if blocked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    blocked: u64,
    allowed: Option<u64>,
}

impl Policy {
    /// Block `cmd`.
    pub fn block(&mut self, cmd: Command) {
        self.blocked |= 1 << cmd.index();
    }

    /// Put `cmd` on the allow list (creating the list: everything else becomes denied).
    pub fn allow(&mut self, cmd: Command) {
        *self.allowed.get_or_insert(0) |= 1 << cmd.index();
    }

    /// Whether `cmd` is enabled, given the frozen state.
    pub fn enabled(&self, cmd: Command, frozen: bool) -> bool {
        if frozen {
            return cmd.allowed_while_frozen();
        }
        let bit = 1u64 << cmd.index();
        let allowed = self.allowed.is_none_or(|a| a & bit != 0);
        allowed && self.blocked & bit == 0
    }
}

/// The protocol engine.
pub struct Agent<'b> {
    bufs: Buffers<'b>,
    policy: Policy,
    /// Set by `guest-sync-delimited`: prefix the next response with 0xFF.
    delimit: bool,
}

impl<'b> Agent<'b> {
    /// An agent working in `bufs`. `frame` must hold at least 64 bytes and `tx` at least 1.
    pub fn new(bufs: Buffers<'b>) -> Self {
        Agent { bufs, policy: Policy::default(), delimit: false }
    }

    /// The command filter.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The command filter, to change.
    pub fn policy_mut(&mut self) -> &mut Policy {
        &mut self.policy
    }

    /// Forget any partial request: call when a new client connects.
    pub fn reset(&mut self) {
        self.delimit = false;
    }

    /// Process received bytes: every request completed by them is answered through `tx`.
    /// Fails only if `tx` fails; the rest of `input` is then dropped.
    pub fn feed(
        &mut self,
        input: &[u8],
        platform: &mut dyn Platform,
        tx: &mut dyn Transmit,
    ) -> Result<(), TxError> {
        let _ = (input, platform, tx, &mut self.bufs);
        Ok(())
    }
}

/// Serve one connection with blocking I/O until the reader reports end of input or an error.
/// Returns `Ok` at end of input.
pub fn run<R: embedded_io::Read, W: embedded_io::Write>(
    agent: &mut Agent<'_>,
    platform: &mut dyn Platform,
    reader: &mut R,
    writer: W,
) -> Result<(), TxError> {
    let mut tx = crate::out::IoTransmit(writer);
    let mut buf = [0u8; 512];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => agent.feed(buf.get(..n).unwrap_or(&[]), platform, &mut tx)?,
        }
    }
}
