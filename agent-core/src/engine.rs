//! The agent: bytes in, responses out.
//!
//! The platform owns every buffer ([`Buffers`]) and every I/O; the engine owns only the
//! framing state and the command filter ([`Policy`]). [`Agent::feed`] frames the byte stream
//! (see [`crate::json`]) and answers each request as soon as it is complete, in upstream's order
//! of checks (`qmp_dispatch`): parse error, not an object, the envelope members in QDict order,
//! command lookup, the disabled check (block and allow lists, frozen state), argument decoding
//! ([`crate::commands::args`]), the family's presence ("not currently supported"), then the
//! command itself.
//!
//! Capacities, all chosen by the platform through [`Buffers`] (defaults and minimums in
//! brackets). [`Agent::new`] refuses a buffer below its minimum ([`BufferError`]), and
//! [`StaticBuffers`] refuses one when the image is compiled, so no combination of sizes can
//! hang or panic the engine.
//! - `frame` ([`DEFAULT_FRAME`], at least [`MIN_FRAME`]): the largest request. A bigger one is
//!   read to its end and answered with one "JSON token size limit exceeded"; the request after
//!   it is served.
//! - `chunk` ([`DEFAULT_CHUNK`], at least [`MIN_CHUNK`]): how much `guest-file-read` asks a
//!   backend for at once; a `count` of any size up to upstream's 48 MiB is streamed through it.
//!   It is also the parser's scratch space while a request arrives (a Bloom filter that finds
//!   duplicate keys in objects of more than 64 keys quickly; below 64 bytes the parser does
//!   without it and is only slower on such objects), so its contents do not survive a request.
//! - `tx` ([`DEFAULT_TX`], at least [`MIN_TX`]): responses reach the [`Transmit`] sink in
//!   pieces of at most this size.
//! - `nesting` ([`DEFAULT_NESTING`], at least [`MIN_NESTING`]): the nesting limit, upstream's
//!   1024 by default; a request with `arguments` is two levels deep.
//!
//! Where this engine differs from upstream on purpose: a new client connection calls
//! [`Agent::reset`], so a half-sent request of the previous client is dropped (upstream carries
//! it over); an oversized request gets one error and does not garble the next one; a backend
//! error after part of a response was sent ends that response as valid JSON (see
//! streamed lists and `guest-file-read`); objects of more than 64 members echoed in `id` keep
//! request order.

use core::fmt;

use crate::commands::args::{self, Args};
use crate::commands::{self, Element, Emitter, Platform};
use crate::error::Error;
use crate::json::tape::{self, Kind, Number};
use crate::json::{Event, Framer, Value};
use crate::out::{Out, ToJson, Transmit, TxError};
use crate::schema::Command;

/// Default frame buffer size: about the largest request accepted (a `guest-file-write` of
/// 47 KiB of data fits; 48 KiB does not). Platforms that want bigger writes pass a bigger
/// buffer.
pub const DEFAULT_FRAME: usize = 64 * 1024;
/// Default file I/O chunk: the most `guest-file-read` asks a backend for at once.
pub const DEFAULT_CHUNK: usize = 4096;
/// Default transmit buffer: responses are sent in pieces of at most this size.
pub const DEFAULT_TX: usize = 4096;
/// Upstream's nesting limit (`MAX_NESTING`): depth 1024 is accepted, 1025 is an error.
pub const DEFAULT_NESTING: usize = 1024;

/// The smallest frame buffer: room for `{"execute": "guest-sync-delimited", "arguments":
/// {"id": <any int64>}}`, so a client can always resynchronise.
pub const MIN_FRAME: usize = 128;
/// The smallest file I/O chunk (`guest-file-read` reads a byte at a time with it).
pub const MIN_CHUNK: usize = 1;
/// The smallest transmit buffer: the engine needs a byte of room to make progress.
pub const MIN_TX: usize = 1;
/// The smallest nesting slice: a request with `arguments` is an object in an object.
pub const MIN_NESTING: usize = 2;

/// A buffer given to [`Agent::new`] is smaller than the engine's minimum for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferError {
    /// Which buffer: `"frame"`, `"chunk"`, `"tx"` or `"nesting"` (the [`Buffers`] field).
    pub buffer: &'static str,
    /// Its length as given.
    pub len: usize,
    /// The minimum ([`MIN_FRAME`], [`MIN_CHUNK`], [`MIN_TX`] or [`MIN_NESTING`]).
    pub min: usize,
}

impl fmt::Display for BufferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the `{}` buffer holds {} but the engine needs at least {}",
            self.buffer, self.len, self.min
        )
    }
}

impl core::error::Error for BufferError {}

/// The storage the engine works in, all owned by the platform. Each field has a minimum length
/// ([`MIN_FRAME`], [`MIN_CHUNK`], [`MIN_TX`], [`MIN_NESTING`]) that [`Agent::new`] checks.
pub struct Buffers<'b> {
    /// Holds one request while it arrives; its length is the request size limit.
    pub frame: &'b mut [u8],
    /// File I/O chunk for `guest-file-read`; while a request arrives, also the parser's
    /// duplicate-key filter for objects of many keys (scratch: nothing in it survives).
    pub chunk: &'b mut [u8],
    /// Transmit buffer; responses are handed to the [`Transmit`] sink in pieces this size.
    pub tx: &'b mut [u8],
    /// Per-nesting-level parser state; its length is the nesting limit.
    pub nesting: &'b mut [NestSlot],
}

impl Buffers<'_> {
    /// The first buffer below its minimum, if any.
    pub fn check(&self) -> Result<(), BufferError> {
        let sizes = [
            ("frame", self.frame.len(), MIN_FRAME),
            ("chunk", self.chunk.len(), MIN_CHUNK),
            ("tx", self.tx.len(), MIN_TX),
            ("nesting", self.nesting.len(), MIN_NESTING),
        ];
        match sizes.into_iter().find(|&(_, len, min)| len < min) {
            Some((buffer, len, min)) => Err(BufferError { buffer, len, min }),
            None => Ok(()),
        }
    }
}

/// Parser state for one open `{` or `[`. Opaque; platforms only size the slice.
#[derive(Clone, Copy, Debug, Default)]
pub struct NestSlot {
    /// Tape position of the container's tag.
    pub(crate) start: usize,
    /// Bloom filter of the object's keys (duplicate detection).
    pub(crate) bloom: u64,
    /// How many keys the object has so far.
    pub(crate) keys: u32,
    /// What the parser expected in the enclosing container.
    pub(crate) parent: u8,
    pub(crate) flags: u8,
}

impl NestSlot {
    /// An unused slot, for static initialisers.
    pub const EMPTY: NestSlot = NestSlot {
        start: 0,
        bloom: 0,
        keys: 0,
        parent: 0,
        flags: 0,
    };
}

/// Buffers of fixed sizes in one value, for a `static` on bare metal or a `Box` on a host.
///
/// Each buffer is named by its type, so the sizes cannot be given in the wrong order:
/// `StaticBuffers<Frame<{ 64 * 1024 }>, Chunk<4096>, Tx<4096>, Nesting<1024>>` (any suffix may
/// be left out for its default; `StaticBuffers<Tx<4096>>` does not compile). A size below the
/// engine's minimum fails to compile, so [`StaticBuffers::agent`] cannot fail.
///
/// ```compile_fail
/// // A transmit buffer where the frame buffer goes: a type error.
/// static B: agent_core::StaticBuffers<agent_core::Tx<4096>> = agent_core::StaticBuffers::new();
/// ```
///
/// ```compile_fail
/// // A frame buffer below `MIN_FRAME`: an error when the static is evaluated.
/// static B: agent_core::StaticBuffers<agent_core::Frame<16>> = agent_core::StaticBuffers::new();
/// ```
pub struct StaticBuffers<
    F: FrameBuf = Frame<DEFAULT_FRAME>,
    C: ChunkBuf = Chunk<DEFAULT_CHUNK>,
    T: TxBuf = Tx<DEFAULT_TX>,
    N: NestingBuf = Nesting<DEFAULT_NESTING>,
> {
    frame: F,
    chunk: C,
    tx: T,
    nesting: N,
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! static_buffer {
    ($(#[$m:meta])* $name:ident, $tr:ident, $field:literal, $elem:ty, $zero:expr, $min:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name<const N: usize>([$elem; N]);

        #[doc = concat!("The `", $field, "` buffer of a [`StaticBuffers`]: only [`", stringify!($name), "`] is one.")]
        pub trait $tr: sealed::Sealed {
            /// The zeroed buffer; evaluating it checks the size against the minimum.
            const NEW: Self;
            /// The buffer as a slice.
            fn slice(&mut self) -> &mut [$elem];
        }

        impl<const N: usize> sealed::Sealed for $name<N> {}

        impl<const N: usize> $tr for $name<N> {
            const NEW: Self = {
                assert!(
                    N >= $min,
                    concat!("the `", $field, "` buffer is smaller than ", stringify!($min))
                );
                $name([$zero; N])
            };
            fn slice(&mut self) -> &mut [$elem] {
                &mut self.0
            }
        }
    };
}

static_buffer!(
    /// A frame buffer of `N` bytes (at least [`MIN_FRAME`]).
    Frame, FrameBuf, "frame", u8, 0, MIN_FRAME
);
static_buffer!(
    /// A file I/O chunk of `N` bytes (at least [`MIN_CHUNK`]).
    Chunk, ChunkBuf, "chunk", u8, 0, MIN_CHUNK
);
static_buffer!(
    /// A transmit buffer of `N` bytes (at least [`MIN_TX`]).
    Tx, TxBuf, "tx", u8, 0, MIN_TX
);
static_buffer!(
    /// A nesting limit of `N` levels (at least [`MIN_NESTING`]).
    Nesting, NestingBuf, "nesting", NestSlot, NestSlot::EMPTY, MIN_NESTING
);

impl<F: FrameBuf, C: ChunkBuf, T: TxBuf, N: NestingBuf> StaticBuffers<F, C, T, N> {
    /// Zeroed buffers (usable in a `static`).
    pub const fn new() -> Self {
        StaticBuffers {
            frame: F::NEW,
            chunk: C::NEW,
            tx: T::NEW,
            nesting: N::NEW,
        }
    }

    /// Borrow them as [`Buffers`].
    pub fn as_buffers(&mut self) -> Buffers<'_> {
        Buffers {
            frame: self.frame.slice(),
            chunk: self.chunk.slice(),
            tx: self.tx.slice(),
            nesting: self.nesting.slice(),
        }
    }

    /// An agent working in these buffers (their sizes were checked when this was compiled).
    pub fn agent(&mut self) -> Agent<'_> {
        Agent::unchecked(self.as_buffers())
    }
}

impl<F: FrameBuf, C: ChunkBuf, T: TxBuf, N: NestingBuf> Default for StaticBuffers<F, C, T, N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Which commands may run: upstream master's rules (docs/protocol.md §3.3).
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
    framer: Framer,
}

impl<'b> Agent<'b> {
    /// An agent working in `bufs`, or which buffer is below its minimum
    /// ([`Buffers::check`]).
    pub fn new(bufs: Buffers<'b>) -> Result<Self, BufferError> {
        bufs.check()?;
        Ok(Self::unchecked(bufs))
    }

    /// An agent over buffers already known to be big enough.
    fn unchecked(bufs: Buffers<'b>) -> Self {
        Agent {
            bufs,
            policy: Policy::default(),
            framer: Framer::new(),
        }
    }

    /// The command filter.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The command filter, to change.
    pub fn policy_mut(&mut self) -> &mut Policy {
        &mut self.policy
    }

    /// Forget any partial request and the lexer state: call when a new client connects.
    pub fn reset(&mut self) {
        self.framer.reset();
    }

    /// Whether no request is partly received.
    pub fn idle(&self) -> bool {
        self.framer.idle()
    }

    /// The frame buffer, while no request is partly received: its contents are scratch between
    /// requests, so a hosted platform can give back the pages a large request touched (Linux
    /// `madvise(MADV_DONTNEED)`) instead of keeping them resident until the next one.
    pub fn idle_frame(&mut self) -> Option<&mut [u8]> {
        if self.idle() {
            Some(&mut *self.bufs.frame)
        } else {
            None
        }
    }

    /// Process received bytes: every request completed by them is answered through `tx`.
    ///
    /// Fails only if `tx` fails (see [`Transmit`] for the contract): the response being
    /// written is cut off, the rest of `input` is dropped, and so is any request partly
    /// received, as [`Agent::reset`] would. The next call starts on a clean parser: bytes
    /// that followed the lost ones are never spliced onto an older request.
    pub fn feed(
        &mut self,
        input: &[u8],
        platform: &mut dyn Platform,
        tx: &mut dyn Transmit,
    ) -> Result<(), TxError> {
        let Agent {
            bufs,
            policy,
            framer,
        } = self;
        let Buffers {
            frame,
            chunk,
            tx: txbuf,
            nesting,
        } = bufs;
        // One output stream for the whole input: the responses to pipelined requests leave in
        // as few writes as the transmit buffer allows. Before a backend runs, what is buffered
        // is sent (`Out::flush_completed`), so a command that powers the machine off or takes
        // long never holds back the answers to the requests before it.
        let mut out = Out::new(txbuf, tx);
        let mut rest = input;
        while !rest.is_empty() {
            let (used, ev) = framer.feed(rest, frame, nesting, chunk);
            rest = rest.get(used..).unwrap_or(&[]);
            if let Some(ev) = ev {
                out.mark();
                match ev {
                    Event::Error(e) => {
                        let mut r = Reply::new(&mut out, None, Command::GuestPing, nesting);
                        r.error(frame, "GenericError", |o| e.write_desc(frame, o));
                    }
                    Event::Value => {
                        let ctx = Dispatch { policy };
                        ctx.dispatch(frame, chunk, nesting, platform, &mut out);
                    }
                }
                if out.failed() {
                    framer.reset();
                    return Err(TxError);
                }
            }
        }
        out.flush();
        if out.failed() {
            framer.reset();
            Err(TxError)
        } else {
            Ok(())
        }
    }
}

/// A request's response: the envelope around a command's result or error.
pub(crate) struct Reply<'c, 'a> {
    pub(crate) out: &'c mut Out<'a>,
    id: Option<usize>,
    cmd: Command,
    nest: &'c mut [NestSlot],
    /// Prefix the success response with 0xFF (`guest-sync-delimited`).
    pub(crate) delimit: bool,
}

/// The tape of `{}`: the arguments of a request without `arguments`.
static EMPTY_OBJECT: [u8; 2] = [tape::OBJ, tape::END_OBJ];

/// The arguments object at `pos` on `tape`, or `{}`.
pub(crate) fn args_value(tape: &[u8], pos: Option<usize>) -> Value<'_> {
    match pos {
        Some(p) => Value::at(tape, p),
        None => Value::at(&EMPTY_OBJECT, 0),
    }
}

/// Read a command's validated arguments.
pub(crate) fn decode<'t, A: Args<'t>>(tape: &'t [u8], pos: Option<usize>) -> Option<A> {
    A::decode(args_value(tape, pos))
}

impl<'c, 'a> Reply<'c, 'a> {
    pub(crate) fn new(
        out: &'c mut Out<'a>,
        id: Option<usize>,
        cmd: Command,
        nest: &'c mut [NestSlot],
    ) -> Self {
        Reply {
            out,
            id,
            cmd,
            nest,
            delimit: false,
        }
    }

    fn write_id(&mut self, tape: &[u8]) {
        if let Some(p) = self.id {
            self.out.raw(b", \"id\": ");
            write_value(self.out, tape, p, self.nest);
        }
    }

    /// A success response whose value `f` writes (nothing for `success-response: false`).
    pub(crate) fn ok(&mut self, tape: &[u8], f: impl FnOnce(&mut Out<'a>)) {
        if !self.cmd.success_response() {
            return;
        }
        if self.delimit {
            self.out.raw(&[0xFF]);
        }
        self.out.raw(b"{\"return\": ");
        f(self.out);
        self.write_id(tape);
        self.out.raw(b"}\n");
    }

    /// `{"return": {}}`.
    pub(crate) fn ok_empty(&mut self, tape: &[u8]) {
        self.ok(tape, |o| o.raw(b"{}"));
    }

    /// A success response holding one value.
    pub(crate) fn ok_value<T: ToJson + ?Sized>(&mut self, tape: &[u8], v: &T) {
        self.ok(tape, |o| o.value(v));
    }

    /// An error response; `desc` writes the escaped body of the description.
    pub(crate) fn error(&mut self, tape: &[u8], class: &str, desc: impl FnOnce(&mut Out<'a>)) {
        self.out.raw(b"{");
        if let Some(p) = self.id {
            self.out.raw(b"\"id\": ");
            write_value(self.out, tape, p, self.nest);
            self.out.raw(b", ");
        }
        self.out.raw(b"\"error\": {\"class\": \"");
        self.out.raw(class.as_bytes());
        self.out.raw(b"\", \"desc\": \"");
        desc(self.out);
        self.out.raw(b"\"}}\n");
    }

    /// A GenericError with a fixed text.
    pub(crate) fn generic(&mut self, tape: &[u8], text: &str) {
        self.error(tape, "GenericError", |o| o.string_body(text.as_bytes()));
    }

    /// A GenericError with a formatted text.
    pub(crate) fn generic_fmt(&mut self, tape: &[u8], args: fmt::Arguments<'_>) {
        self.error(tape, "GenericError", |o| {
            let mut w = EscapeWriter(o);
            let _ = fmt::Write::write_fmt(&mut w, args);
        });
    }

    /// A backend's error; an OS error gets `prefix` (upstream's `error_setg_errno` context)
    /// when `prefix` is not empty.
    pub(crate) fn fail(&mut self, tape: &[u8], e: &Error, prefix: &str) {
        match e {
            Error::Os(_, text) if !prefix.is_empty() => {
                self.generic_fmt(tape, format_args!("{prefix}: {text}"))
            }
            e => self.generic_fmt(tape, format_args!("{e}")),
        }
    }

    /// A command result of `Result<()>`.
    pub(crate) fn unit(&mut self, tape: &[u8], r: crate::error::Result<()>, prefix: &str) {
        match r {
            Ok(()) => self.ok_empty(tape),
            Err(e) => self.fail(tape, &e, prefix),
        }
    }

    /// A command result of one value.
    pub(crate) fn result<T: ToJson>(
        &mut self,
        tape: &[u8],
        r: crate::error::Result<T>,
        prefix: &str,
    ) {
        match r {
            Ok(v) => self.ok_value(tape, &v),
            Err(e) => self.fail(tape, &e, prefix),
        }
    }

    /// A streamed list result, optionally wrapped in `{"<wrap>": [...]}`. If the backend fails
    /// after part of the list was sent, the list is closed and the response ends as a success
    /// holding the elements sent so far (the bytes on the wire cannot be taken back).
    pub(crate) fn list<T: Element + ?Sized>(
        &mut self,
        tape: &[u8],
        wrap: Option<&str>,
        f: impl FnOnce(&mut Emitter<'_, T>) -> crate::error::Result<()>,
    ) {
        let mut res = Ok(());
        self.out.raw(b"{\"return\": ");
        if let Some(w) = wrap {
            self.out.raw(b"{");
            self.out.str(w);
            self.out.raw(b": ");
        }
        self.out.list(|l| {
            let mut em = Emitter::new(l);
            res = f(&mut em);
        });
        if wrap.is_some() {
            self.out.raw(b"}");
        }
        if let Err(e) = res
            && self.out.rollback()
        {
            self.fail(tape, &e, "");
            return;
        }
        self.write_id(tape);
        self.out.raw(b"}\n");
    }

    /// Finish a success response whose `{"return": ` and value the caller wrote itself.
    pub(crate) fn finish_ok(&mut self, tape: &[u8]) {
        self.write_id(tape);
        self.out.raw(b"}\n");
    }
}

/// Formats into a JSON string body.
struct EscapeWriter<'o, 'a>(&'o mut Out<'a>);

impl fmt::Write for EscapeWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.string_body(s.as_bytes());
        Ok(())
    }
}

/// Objects of at most this many members are echoed in upstream's QDict order; bigger ones in
/// request order (choosing the next member is a walk over the object).
const ORDERED_MEMBERS: u32 = 64;

const W_OBJ: u8 = 1;
const W_ORDERED: u8 = 2;
const W_STARTED: u8 = 4;

/// Write the value at `pos` as upstream's writer does, without recursion: `nest` is the stack.
/// Object members come in QDict order (ascending bucket, later key first within a bucket), as
/// upstream re-serialises a parsed object, for objects of up to 64 members.
pub(crate) fn write_value(out: &mut Out<'_>, tape: &[u8], pos: usize, nest: &mut [NestSlot]) {
    let mut depth = 0usize;
    // Write one value; push a frame for a container. Returns false on a damaged tape.
    let open = |out: &mut Out<'_>, p: usize, depth: &mut usize, nest: &mut [NestSlot]| -> bool {
        let v = Value::at(tape, p);
        match tape.get(p) {
            Some(&tape::OBJ) | Some(&tape::ARR) => {
                let obj = tape.get(p) == Some(&tape::OBJ);
                out.raw(if obj { b"{" } else { b"[" });
                let count = if obj { v.members().count() as u32 } else { 0 };
                let flags = if obj && count <= ORDERED_MEMBERS {
                    W_OBJ | W_ORDERED
                } else if obj {
                    W_OBJ
                } else {
                    0
                };
                match nest.get_mut(*depth) {
                    Some(slot) => {
                        *slot = NestSlot {
                            start: p + 1,
                            bloom: 0,
                            keys: count,
                            parent: 0,
                            flags,
                        };
                        *depth += 1;
                    }
                    None => {
                        // Deeper than the parser allows: cannot happen; close it empty.
                        out.raw(if obj { b"}" } else { b"]" });
                    }
                }
            }
            Some(&tape::STR) => out.string(v.str_bytes().unwrap_or(&[])),
            Some(&tape::NUM) => match v.as_number() {
                Some(Number::Int(i)) => out.int(i),
                Some(Number::Uint(u)) => out.uint(u),
                Some(Number::Float(f)) => out.number(f),
                None => out.raw(b"0"),
            },
            Some(&tape::TRUE) => out.raw(b"true"),
            Some(&tape::FALSE) => out.raw(b"false"),
            Some(&tape::NULL) => out.raw(b"null"),
            _ => return false,
        }
        true
    };
    if !open(out, pos, &mut depth, nest) {
        return;
    }
    while depth > 0 {
        let Some(top) = nest.get_mut(depth - 1) else {
            return;
        };
        let started = top.flags & W_STARTED != 0;
        // The next member or element: (key, value position).
        let next: Option<(Option<&[u8]>, usize)> = if top.flags & W_ORDERED != 0 {
            // The member of smallest QDict rank above the last one written.
            let obj = Value::at(tape, top.start - 1);
            let mut best: Option<(u64, &[u8], usize)> = None;
            for (i, (k, v)) in obj.members().enumerate() {
                let rank =
                    (u64::from(qdict_bucket(k.as_bytes())) << 32) | u64::from(u32::MAX - i as u32);
                if (!started || rank > top.bloom) && best.is_none_or(|b| rank < b.0) {
                    best = Some((rank, k.as_bytes(), v.pos()));
                }
            }
            best.map(|(rank, k, v)| {
                top.bloom = rank;
                (Some(k), v)
            })
        } else {
            match tape.get(top.start) {
                Some(&tape::END_OBJ) | Some(&tape::END_ARR) | None => None,
                Some(_) if top.flags & W_OBJ != 0 => {
                    let k = Value::at(tape, top.start);
                    let Some(vpos) = k.end() else { return };
                    top.start = Value::at(tape, vpos).end().unwrap_or(usize::MAX);
                    Some((k.str_bytes(), vpos))
                }
                Some(_) => {
                    let p = top.start;
                    top.start = Value::at(tape, p).end().unwrap_or(usize::MAX);
                    Some((None, p))
                }
            }
        };
        let obj = top.flags & W_OBJ != 0;
        top.flags |= W_STARTED;
        match next {
            None => {
                out.raw(if obj { b"}" } else { b"]" });
                depth -= 1;
            }
            Some((key, vpos)) => {
                if started {
                    out.raw(b", ");
                }
                if let Some(k) = key {
                    out.string(k);
                    out.raw(b": ");
                }
                if !open(out, vpos, &mut depth, nest) {
                    return;
                }
            }
        }
    }
}

/// upstream's `tdb_hash` (qobject/qdict.c), over the key as upstream stores it (a NUL from
/// `\u0000` is the two bytes C0 80 there).
pub(crate) fn tdb_hash(key: &[u8]) -> u32 {
    let len: u32 = key.iter().map(|&b| if b == 0 { 2u32 } else { 1 }).sum();
    let mut value = 0x238F_13AFu32.wrapping_mul(len);
    let mut i = 0u32;
    let mut add = |b: u8| {
        value = value.wrapping_add((b as u32) << (i * 5 % 24));
        i += 1;
    };
    for &b in key {
        if b == 0 {
            add(0xC0);
            add(0x80);
        } else {
            add(b);
        }
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
}

/// The QDict bucket of a key: members are iterated in ascending bucket order.
pub(crate) fn qdict_bucket(key: &[u8]) -> u32 {
    tdb_hash(key) % 512
}

/// What one request needs besides its buffers.
struct Dispatch<'p> {
    policy: &'p Policy,
}

enum EnvelopeError<'t> {
    ExecuteNotString,
    ArgumentsNotObject,
    Unexpected(&'t [u8]),
}

impl Dispatch<'_> {
    fn dispatch(
        self,
        frame: &mut [u8],
        chunk: &mut [u8],
        nest: &mut [NestSlot],
        platform: &mut dyn Platform,
        out: &mut Out<'_>,
    ) {
        let tape: &[u8] = frame;
        let req = Value::at(tape, 0);
        if req.kind() != Kind::Object {
            let mut r = Reply::new(out, None, Command::GuestPing, nest);
            r.generic(tape, "QMP input must be a JSON object");
            return;
        }
        // qmp_dispatch_check_obj visits members in QDict order: the first failure in that
        // order is the one reported.
        let mut id = None;
        let mut execute = None;
        let mut arguments = None;
        let mut worst: Option<(u32, usize, EnvelopeError<'_>)> = None;
        for (i, (k, v)) in req.members().enumerate() {
            let failure = match k {
                "execute" => match v.str_bytes() {
                    Some(s) => {
                        execute = Some(s);
                        None
                    }
                    None => Some(EnvelopeError::ExecuteNotString),
                },
                "arguments" => {
                    if v.kind() == Kind::Object {
                        arguments = Some(v.pos());
                        None
                    } else {
                        Some(EnvelopeError::ArgumentsNotObject)
                    }
                }
                "id" => {
                    id = Some(v.pos());
                    None
                }
                _ => Some(EnvelopeError::Unexpected(k.as_bytes())),
            };
            if let Some(f) = failure {
                let b = qdict_bucket(k.as_bytes());
                let first = match &worst {
                    None => true,
                    Some((wb, wi, _)) => b < *wb || (b == *wb && i > *wi),
                };
                if first {
                    worst = Some((b, i, f));
                }
            }
        }
        let mut r = Reply::new(out, id, Command::GuestPing, nest);
        if let Some((_, _, f)) = worst {
            match f {
                EnvelopeError::ExecuteNotString => {
                    r.generic(tape, "QMP input member 'execute' must be a string")
                }
                EnvelopeError::ArgumentsNotObject => {
                    r.generic(tape, "QMP input member 'arguments' must be an object")
                }
                EnvelopeError::Unexpected(k) => r.error(tape, "GenericError", |o| {
                    o.string_body(b"QMP input member '");
                    o.string_body(k);
                    o.string_body(b"' is unexpected");
                }),
            }
            return;
        }
        let Some(name) = execute else {
            r.generic(tape, "QMP input lacks member 'execute'");
            return;
        };
        let Some(cmd) = core::str::from_utf8(name).ok().and_then(Command::from_name) else {
            r.error(tape, "CommandNotFound", |o| {
                o.string_body(b"The command ");
                o.string_body(name);
                o.string_body(b" has not been found");
            });
            return;
        };
        r.cmd = cmd;
        let frozen = platform
            .filesystems()
            .is_some_and(|f| f.status() == crate::commands::fs::FsfreezeStatus::Frozen);
        if !self.policy.enabled(cmd, frozen) {
            r.error(tape, "CommandNotFound", |o| {
                o.string_body(b"Command ");
                o.string_body(cmd.name().as_bytes());
                o.string_body(b" has been disabled: the command is not allowed");
            });
            return;
        }
        if let Err(e) = args::validate(commands::members(cmd), args_value(tape, arguments)) {
            r.error(tape, "GenericError", |o| {
                e.write_text(&mut |b| o.string_body(b))
            });
            return;
        }
        if !commands::supported(platform, cmd) {
            r.generic(tape, crate::error::UNSUPPORTED);
            return;
        }
        let policy = self.policy;
        commands::run(
            cmd, &mut r, frame, arguments, chunk, platform, policy, frozen,
        );
    }
}

/// Serve one connection with blocking I/O until the reader reports end of input or an error.
/// Returns `Ok` at end of input. The connection starts with a clean parser ([`Agent::reset`]).
pub fn run<R: embedded_io::Read, W: embedded_io::Write>(
    agent: &mut Agent<'_>,
    platform: &mut dyn Platform,
    reader: &mut R,
    writer: W,
) -> Result<(), TxError> {
    agent.reset();
    let mut tx = crate::out::IoTransmit(writer);
    let mut buf = [0u8; 512];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => agent.feed(buf.get(..n).unwrap_or(&[]), platform, &mut tx)?,
        }
    }
}
