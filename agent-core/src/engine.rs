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

use crate::commands::args::{self, args_value};
use crate::commands::files::WriteStream;
use crate::commands::platform::Platform;
use crate::commands::{
    self, clock, cpus, disks, exec, files, filesystems, memory, network, power, ssh_keys, system,
    users,
};
use crate::json::framer::StringSink;
use crate::json::tape::Kind;
use crate::json::{Event, Framer, Value};
use crate::out::{Out, Transmit, TxError};
use crate::qdict::qdict_bucket;
use crate::reply::Reply;
use crate::schema::{Command, Family};

pub use crate::json::NestSlot;
pub use crate::policy::Policy;

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

/// Buffers of fixed sizes in one value, for a `static` on bare metal or a `Box` on a host.
///
/// Each buffer is named by its type, so the sizes cannot be given in the wrong order:
/// `StaticBuffers<Frame<{ 64 * 1024 }>, Chunk<4096>, Tx<4096>, Nesting<1024>>` (any suffix may
/// be left out for its default; `StaticBuffers<Tx<4096>>` does not compile). A size below the
/// engine's minimum fails to compile, so [`StaticBuffers::agent`] cannot fail.
///
/// A firmware keeps them in a `static` (behind whatever lock it has); a small configuration
/// for requests of up to 4 KiB:
///
/// ```
/// use agent_core::{Chunk, Frame, Nesting, StaticBuffers, Tx};
///
/// type Small = StaticBuffers<Frame<4096>, Chunk<512>, Tx<256>, Nesting<32>>;
/// assert_eq!(size_of::<Small>(), 4096 + 512 + 256 + 32 * 24);
///
/// let mut bufs: Small = StaticBuffers::new();
/// let agent = bufs.agent(); // cannot fail: the sizes were checked at compile time
/// assert!(agent.idle());
/// ```
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

/// The protocol engine.
pub struct Agent<'b> {
    bufs: Buffers<'b>,
    policy: Policy,
    framer: Framer,
    /// The `guest-file-write` being written while it arrives, if any.
    stream: Option<WriteStream>,
    /// Set by [`Agent::stream_writes`]: only then is the streaming code linked in.
    streaming: Option<Streaming>,
}

/// [`stream_begin`]'s signature.
type StreamBegin = fn(&Policy, &mut dyn Platform, &[u8], usize, usize) -> Option<WriteStream>;

/// The code that writes a `guest-file-write` while it arrives, reached through pointers that
/// only [`Agent::stream_writes`] sets, so an image that never streams does not link it (the
/// base64 decoder alone is 2.5 KB on bare metal).
#[derive(Clone, Copy)]
struct Streaming {
    begin: StreamBegin,
    part: fn(&mut WriteStream, &mut [u8], usize, Option<&mut dyn files::Files>),
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
            stream: None,
            streaming: None,
        }
    }

    /// Write a large `guest-file-write` to the file while it arrives: once its `buf-b64` text
    /// passes `window` bytes, it is decoded and written a window at a time, so the request
    /// touches about `window` bytes of the frame buffer however large it is (0, the default:
    /// every request is held whole). The frame buffer's length stays the request size limit.
    ///
    /// Only when it cannot change a successful answer: the request's `execute` is
    /// `guest-file-write` (enabled), its `handle` (open, in a [`files::Files`] family that
    /// [`writes_in_parts`](files::Files::writes_in_parts)) came before `buf-b64` in
    /// `arguments`, every member so far is valid and no error is pending. Anything else is
    /// held whole, as before. A streamed request that succeeds gets the answer the whole
    /// request would get. One that turns out to be an error after data reached the file
    /// (an invalid character or a malformed JSON string further into `buf-b64`, a `count`
    /// after `buf-b64` that differs from the data's length, an error in the rest of the
    /// request, a request over the size limit, a failed write) gets upstream's error
    /// followed by ` (N bytes were already written to the file)`.
    pub fn stream_writes(&mut self, window: usize) {
        self.framer.set_window(window);
        self.streaming = (window != 0).then_some(Streaming {
            begin: stream_begin,
            part: WriteStream::part,
        });
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
        self.stream = None;
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
    ///
    /// Bytes may come in pieces of any size: a request split over two calls is answered by the
    /// second, and several requests in one call are all answered, in order.
    ///
    /// ```
    /// use agent_core::{Platform, StaticBuffers, Transmit, TxError};
    ///
    /// struct CoreOnly; // no families: the core commands only
    /// impl Platform for CoreOnly {}
    ///
    /// struct Collect(Vec<u8>);
    /// impl Transmit for Collect {
    ///     fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
    ///         self.0.extend_from_slice(bytes);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let mut bufs: Box<StaticBuffers> = Box::default();
    /// let mut agent = bufs.agent();
    /// let mut out = Collect(Vec::new());
    /// agent.feed(br#"{"execute":"guest-pi"#, &mut CoreOnly, &mut out)?;
    /// assert!(out.0.is_empty(), "half a request: nothing to answer yet");
    /// agent.feed(br#"ng","id":1}{"execute":"guest-sync","arguments":{"id":2}}"#, &mut CoreOnly, &mut out)?;
    /// assert_eq!(out.0, b"{\"return\": {}, \"id\": 1}\n{\"return\": 2}\n");
    /// # Ok::<(), TxError>(())
    /// ```
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
            stream,
            streaming,
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
            let (used, ev) = match streaming {
                Some(code) => {
                    let mut sink = WriteSink {
                        policy,
                        platform: &mut *platform,
                        stream: &mut *stream,
                        code: *code,
                    };
                    framer.feed_with(rest, frame, nesting, chunk, &mut sink)
                }
                None => framer.feed(rest, frame, nesting, chunk),
            };
            rest = rest.get(used..).unwrap_or(&[]);
            if let Some(ev) = ev {
                out.mark();
                let streamed = stream.take();
                match ev {
                    Event::Error(e) => {
                        let mut r = Reply::new(&mut out, None, Command::GuestPing, nesting);
                        r.written = streamed.as_ref().map_or(0, WriteStream::written);
                        r.error(frame, "GenericError", |o| e.write_desc(frame, o));
                    }
                    Event::Value => {
                        let ctx = Dispatch {
                            policy,
                            stream: streamed.as_ref(),
                        };
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
            *stream = None;
            Err(TxError)
        } else {
            Ok(())
        }
    }
}

// The framer leaves the base64 decoder the room it needs before each part.
const _: () = assert!(crate::json::framer::PART_HEADROOM >= crate::b64::HEADROOM);

/// Where the framer offers a long string: a `guest-file-write`'s `buf-b64`, when the request
/// so far allows writing it as it arrives (see [`Agent::stream_writes`]).
struct WriteSink<'s> {
    policy: &'s Policy,
    platform: &'s mut dyn Platform,
    stream: &'s mut Option<WriteStream>,
    code: Streaming,
}

impl StringSink for WriteSink<'_> {
    fn begin(&mut self, tape: &[u8], object: usize, key: usize) -> bool {
        // One text per request is written: a later long string in the same request (a
        // `count` given as a string, say) is held whole and must not drop the stream's record
        // of what already reached the file.
        if self.stream.is_some() {
            return false;
        }
        *self.stream = (self.code.begin)(self.policy, &mut *self.platform, tape, object, key);
        self.stream.is_some()
    }

    fn part(&mut self, buf: &mut [u8], at: usize) {
        if let Some(s) = self.stream.as_mut() {
            (self.code.part)(s, buf, at, self.platform.files());
        }
    }
}

/// Whether the request so far lets its `buf-b64` (the string after the key at `key` in the
/// object at `object`) be written as it arrives: the envelope so far is `execute`
/// guest-file-write, `arguments` (the open object) and perhaps `id`, the command is enabled,
/// and the arguments so far are valid ([`files::stream_args`]); so dispatch can only fail on
/// what comes after the text.
fn stream_begin(
    policy: &Policy,
    platform: &mut dyn Platform,
    tape: &[u8],
    object: usize,
    key: usize,
) -> Option<WriteStream> {
    let cmd = Command::GuestFileWrite;
    let mut execute = false;
    let mut arguments = false;
    for (k, v) in Value::at(tape, 0).members() {
        match k {
            "arguments" if v.pos() == object => arguments = true,
            "execute" if v.as_str() == Some(cmd.name()) => execute = true,
            "id" => {}
            _ => return None,
        }
    }
    if !(execute && arguments) {
        return None;
    }
    let ws = files::stream_args(tape, object, key)?;
    if !policy.enabled(cmd, frozen(platform)) {
        return None;
    }
    let b = platform.files()?;
    (b.supports(cmd) && b.writes_in_parts() && b.has_handle(ws.handle())).then_some(ws)
}

/// Whether the platform's filesystems are frozen (what the policy's frozen-state allow list
/// depends on); a platform without the family never is.
fn frozen(platform: &mut dyn Platform) -> bool {
    platform
        .filesystems()
        .is_some_and(|f| f.status() == crate::commands::filesystems::FsfreezeStatus::Frozen)
}

/// What one request needs besides its buffers.
struct Dispatch<'p> {
    policy: &'p Policy,
    /// The request's `buf-b64` was written while it arrived.
    stream: Option<&'p WriteStream>,
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
        r.written = self.stream.map_or(0, WriteStream::written);
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
        let frozen = frozen(platform);
        if !self.policy.enabled(cmd, frozen) {
            r.error(tape, "CommandNotFound", |o| {
                o.string_body(b"Command ");
                o.string_body(cmd.name().as_bytes());
                o.string_body(b" has been disabled: the command is not allowed");
            });
            return;
        }
        let policy = self.policy;
        run_command(
            cmd,
            &mut r,
            frame,
            arguments,
            chunk,
            platform,
            policy,
            frozen,
            self.stream,
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

/// Route `cmd` to its family if the platform provides the family and it supports `cmd`; the
/// family decodes the arguments (answering their errors) and runs the command. Otherwise the
/// arguments are only checked against the command's member table (their errors come first, as
/// upstream's), then upstream's unsupported error: a family that is absent costs no code.
#[allow(clippy::too_many_arguments)]
fn run_command(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    chunk: &mut [u8],
    platform: &mut dyn Platform,
    policy: &Policy,
    frozen: bool,
    stream: Option<&WriteStream>,
) {
    let refuse = |r: &mut Reply<'_, '_>, tape: &[u8]| {
        args::admit(
            r,
            tape,
            args_value(tape, args),
            commands::members(cmd),
            false,
        );
    };
    macro_rules! route {
        ($get:ident, $run:expr) => {
            match platform.$get().filter(|b| b.supports(cmd)) {
                Some(b) => $run(b),
                None => refuse(r, frame),
            }
        };
    }
    match cmd.family() {
        Family::Core => commands::core::run(cmd, r, frame, args, platform, policy, frozen),
        Family::Clock => route!(clock, |b| clock::run(cmd, r, frame, args, b)),
        Family::Power => route!(power, |b| power::run(cmd, r, frame, args, b)),
        Family::Files => route!(files, |b| files::run(cmd, r, frame, args, chunk, b, stream)),
        Family::Filesystems => route!(filesystems, |b| filesystems::run(cmd, r, frame, args, b)),
        Family::Disks => route!(disks, |b| disks::run(cmd, r, frame, args, b)),
        Family::Network => route!(network, |b| network::run(cmd, r, frame, args, b)),
        Family::Cpus => route!(cpus, |b| cpus::run(cmd, r, frame, args, b)),
        Family::Memory => route!(memory, |b| memory::run(cmd, r, frame, args, b)),
        Family::Users => route!(users, |b| users::run(cmd, r, frame, args, b)),
        Family::SshKeys => route!(ssh_keys, |b| ssh_keys::run(cmd, r, frame, args, b)),
        Family::Exec => route!(exec, |b| exec::run(cmd, r, frame, args, b)),
        Family::System => route!(system, |b| system::run(cmd, r, frame, args, b)),
    }
}
