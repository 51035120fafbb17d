//! `guest-file-open|close|read|write|seek|flush`.
//!
//! The engine owns upstream's argument rules and texts (the 48 MiB `count` limit, base64
//! checks, `count` against the decoded length, whence codes, the prefixes of I/O errors); a
//! backend only moves bytes. `guest-file-read` is streamed: the engine asks for chunks no
//! larger than its I/O buffer and base64-encodes each into the response.

use super::args::{Arg, Member, OPTIONAL, REQUIRED, Ty, args_value, take};
use crate::error::Error;
use crate::error::Result;
use crate::json::Value;
use crate::reply::Reply;
use crate::schema::Command;

/// `QGA_READ_COUNT_DEFAULT`: the `count` of a `guest-file-read` without one.
pub const READ_COUNT_DEFAULT: i64 = 4096;
/// `GUEST_FILE_READ_COUNT_MAX`: the largest `count` upstream accepts (48 MiB).
pub const READ_COUNT_MAX: i64 = 48 * 1024 * 1024;

crate::json_enum! {
    /// `QGASeek`.
    pub enum Seek { Set = "set", Cur = "cur", End = "end" }
}

crate::json_struct! {
    /// `GuestFileSeek`.
    pub struct GuestFileSeek {
        pub position: i64 = "position",
        pub eof: bool = "eof",
    }
}

crate::json_struct! {
    /// `GuestFileWrite`.
    pub struct GuestFileWrite {
        pub count: i64 = "count",
        pub eof: bool = "eof",
    }
}

/// The alternate `GuestFileWhence`: an int, or a `QGASeek` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    /// `value`: upstream accepts 0, 1 and 2 (SEEK_SET, SEEK_CUR, SEEK_END).
    Value(i64),
    /// `name`
    Name(Seek),
}

impl<'t> Arg<'t> for Whence {
    fn from_value(v: Value<'t>) -> Option<Self> {
        match v.as_str() {
            Some(s) => Seek::from_name(s).map(Whence::Name),
            None => v.as_i64().map(Whence::Value),
        }
    }
}

impl Whence {
    /// upstream's `ga_parse_whence`: the names map to 0, 1, 2 and those three values to the
    /// seek modes; anything else is `invalid whence code <n>`.
    pub fn to_seek(self) -> core::result::Result<Seek, i64> {
        let v = match self {
            Whence::Name(s) => return Ok(s),
            Whence::Value(v) => v,
        };
        match v {
            0 => Ok(Seek::Set),
            1 => Ok(Seek::Cur),
            2 => Ok(Seek::End),
            v => Err(v),
        }
    }
}

crate::args! {
    /// The arguments of `guest-file-open`.
    pub struct FileOpenArgs<'t> {
        path: &'t str = ("path", Ty::Str, REQUIRED),
        mode: Option<&'t str> = ("mode", Ty::Str, OPTIONAL),
    }
}

crate::args! {
    /// The arguments of `guest-file-close` and `guest-file-flush`.
    pub struct FileHandleArgs<'t> {
        handle: i64 = ("handle", Ty::Int, REQUIRED),
    }
}

crate::args! {
    /// The arguments of `guest-file-read`.
    pub struct FileReadArgs<'t> {
        handle: i64 = ("handle", Ty::Int, REQUIRED),
        count: Option<i64> = ("count", Ty::Int, OPTIONAL),
    }
}

crate::args! {
    /// The arguments of `guest-file-write`.
    pub struct FileWriteArgs<'t> {
        handle: i64 = ("handle", Ty::Int, REQUIRED),
        buf_b64: &'t str = ("buf-b64", Ty::Str, REQUIRED),
        count: Option<i64> = ("count", Ty::Int, OPTIONAL),
    }
}

crate::args! {
    /// The arguments of `guest-file-seek`.
    pub struct FileSeekArgs<'t> {
        handle: i64 = ("handle", Ty::Int, REQUIRED),
        offset: i64 = ("offset", Ty::Int, REQUIRED),
        whence: Whence = ("whence", Ty::Whence(Seek::NAMES), REQUIRED),
    }
}

/// The fopen modes upstream's `find_open_flag` accepts.
pub const OPEN_MODES: &[&str] = &[
    "r", "rb", "w", "wb", "a", "ab", "r+", "rb+", "r+b", "w+", "wb+", "w+b", "a+", "ab+", "a+b",
];

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestFileOpen => FileOpenArgs::MEMBERS,
        Command::GuestFileRead => FileReadArgs::MEMBERS,
        Command::GuestFileWrite => FileWriteArgs::MEMBERS,
        Command::GuestFileSeek => FileSeekArgs::MEMBERS,
        _ => FileHandleArgs::MEMBERS,
    }
}

fn invalid_count(r: &mut Reply<'_, '_>, tape: &[u8], count: i64) {
    r.generic_fmt(
        tape,
        format_args!("value '{count}' is invalid for argument count"),
    );
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    chunk: &mut [u8],
    b: &mut dyn Files,
    stream: Option<&WriteStream>,
) {
    match cmd {
        Command::GuestFileOpen => {
            let tape: &[u8] = frame;
            let Some(a) = take::<FileOpenArgs<'_>>(r, tape, args) else {
                return;
            };
            let mode = a.mode.unwrap_or("r");
            if !OPEN_MODES.contains(&mode) {
                return r.generic_fmt(tape, format_args!("invalid file open mode '{mode}'"));
            }
            match b.open(a.path, mode) {
                Ok(h) => r.ok_value(tape, &h),
                Err(Error::Os(_, text)) => r.generic_fmt(
                    tape,
                    format_args!("failed to open file '{}' (mode: '{mode}'): {text}", a.path),
                ),
                Err(e) => r.fail(tape, &e, ""),
            }
        }
        Command::GuestFileClose | Command::GuestFileFlush => {
            let tape: &[u8] = frame;
            let Some(a) = take::<FileHandleArgs<'_>>(r, tape, args) else {
                return;
            };
            if !b.has_handle(a.handle) {
                return r.fail(tape, &Error::NoHandle(a.handle), "");
            }
            if cmd == Command::GuestFileClose {
                let res = b.close(a.handle);
                r.unit(tape, res, "failed to close handle");
            } else {
                let res = b.flush(a.handle);
                r.unit(tape, res, "failed to flush file");
            }
        }
        Command::GuestFileSeek => {
            let tape: &[u8] = frame;
            let Some(a) = take::<FileSeekArgs<'_>>(r, tape, args) else {
                return;
            };
            if !b.has_handle(a.handle) {
                return r.fail(tape, &Error::NoHandle(a.handle), "");
            }
            match a.whence.to_seek() {
                Ok(whence) => {
                    let res = b.seek(a.handle, a.offset, whence);
                    r.result(tape, res, "failed to seek file");
                }
                Err(v) => r.generic_fmt(tape, format_args!("invalid whence code {v}")),
            }
        }
        Command::GuestFileRead => read(r, frame, args, chunk, b),
        _ => write(r, frame, args, b, stream),
    }
}

/// `guest-file-read`, streamed: the first chunk is read before anything is written, so that a
/// failure gives a clean error response; later chunks are base64-encoded into the response as
/// they are read. If a later read fails once part of the response was sent, the response ends
/// as a success with the bytes read so far (`eof` false), since sent bytes cannot be taken back.
fn read(
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    chunk: &mut [u8],
    b: &mut dyn Files,
) {
    let tape: &[u8] = frame;
    let Some(a) = take::<FileReadArgs<'_>>(r, tape, args) else {
        return;
    };
    if !b.has_handle(a.handle) {
        return r.fail(tape, &Error::NoHandle(a.handle), "");
    }
    let count = match a.count {
        None => READ_COUNT_DEFAULT,
        Some(c) if !(0..=READ_COUNT_MAX).contains(&c) => return invalid_count(r, tape, c),
        Some(c) => c,
    };
    if chunk.is_empty() {
        return r.generic(tape, crate::error::UNSUPPORTED);
    }
    let want = count as usize;
    let h = a.handle;
    let mut total = 0usize;
    let mut eof = false;
    let mut first = 0usize;
    if want > 0 {
        let n = want.min(chunk.len());
        match b.read(h, chunk.get_mut(..n).unwrap_or(&mut [])) {
            Ok(0) => eof = true,
            Ok(got) => first = got.min(n),
            Err(e) => return r.fail(tape, &e, "failed to read file"),
        }
    }
    total += first;
    let mut failed: Option<Error> = None;
    r.out.raw(b"{\"return\": {\"buf-b64\": ");
    r.out.base64(|w| {
        w.push(chunk.get(..first).unwrap_or(&[]));
        while !eof && total < want {
            let n = (want - total).min(chunk.len());
            let buf = chunk.get_mut(..n).unwrap_or(&mut []);
            match b.read(h, buf) {
                Ok(0) => eof = true,
                Ok(got) => {
                    let got = got.min(n);
                    w.push(buf.get(..got).unwrap_or(&[]));
                    total += got;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    });
    if let Some(e) = failed
        && r.out.rollback()
    {
        return r.fail(tape, &e, "failed to read file");
    }
    r.out.raw(b", \"count\": ");
    r.out.uint(total as u64);
    r.out.raw(b", \"eof\": ");
    r.out.bool(eof);
    r.out.raw(b"}");
    r.finish_ok(tape);
}

/// `guest-file-write`: `buf-b64` is decoded in place in the frame buffer, or was written to
/// the file as it arrived (`stream`): then the same checks run in the same order on what the
/// stream recorded, and the reply says how many bytes reached the file if it is an error.
fn write(
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Files,
    stream: Option<&WriteStream>,
) {
    let (handle, count, range) = {
        let tape: &[u8] = frame;
        let Some(a) = take::<FileWriteArgs<'_>>(r, tape, args) else {
            return;
        };
        let range = args_value(tape, args)
            .member("buf-b64")
            .and_then(|v| v.str_range());
        (a.handle, a.count, range)
    };
    if !b.has_handle(handle) {
        return r.fail(frame, &Error::NoHandle(handle), "");
    }
    if let Some(s) = stream {
        return s.finish(r, frame, count, b);
    }
    let (start, len) = range.unwrap_or((0, 0));
    let Some(n) = crate::b64::decode_in_place(frame, start, len) else {
        return r.generic(frame, "Base64 data contains invalid characters");
    };
    let count = match count {
        None => n,
        Some(c) if c < 0 || c as u64 > n as u64 => return invalid_count(r, frame, c),
        Some(c) => c as usize,
    };
    let res = b.write(handle, frame.get(start..start + count).unwrap_or(&[]));
    r.result(frame, res, "failed to write to file");
}

/// A `guest-file-write` whose `buf-b64` is written to the file while it arrives (see
/// [`crate::Agent::stream_writes`]): what reached the file, and what the checks that upstream
/// runs on the whole string will need once the request is complete.
#[derive(Debug)]
pub(crate) struct WriteStream {
    handle: i64,
    /// A `count` that came before `buf-b64`: no more is written.
    cap: Option<usize>,
    b64: crate::b64::Decoder,
    /// Bytes decoded so far (written or not).
    decoded: usize,
    /// Bytes handed to the backend so far.
    sent: usize,
    /// What the backend reported writing, and its last `eof`.
    written: u64,
    eof: bool,
    /// The backend was called at least once.
    called: bool,
    /// Nothing more is written: the base64 text is bad, a write failed or came up short.
    stopped: bool,
    bad_base64: bool,
    error: Option<Error>,
}

impl WriteStream {
    /// Bytes that reached the file.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// The handle written to.
    pub(crate) fn handle(&self) -> i64 {
        self.handle
    }

    /// Decode the next part of the text (`buf[at..]`, with headroom before it) in place and
    /// write what it gives.
    pub(crate) fn part(&mut self, buf: &mut [u8], at: usize, b: Option<&mut dyn Files>) {
        if self.bad_base64 {
            return;
        }
        let len = buf.len().saturating_sub(at);
        let Some(range) = self.b64.decode_in_place(buf, at, len) else {
            self.bad_base64 = true;
            self.stopped = true;
            return;
        };
        let text = buf.get(range).unwrap_or(&[]);
        let n = text.len();
        self.decoded += n;
        let room = match self.cap {
            Some(c) => c.saturating_sub(self.sent).min(n),
            None => n,
        };
        if self.stopped || room == 0 {
            return;
        }
        let Some(b) = b else {
            self.stopped = true;
            self.error = Some(Error::Unsupported);
            return;
        };
        self.sent += room;
        self.called = true;
        match b.write(self.handle, text.get(..room).unwrap_or(&[])) {
            Ok(w) => {
                self.written += w.count.max(0) as u64;
                self.eof = w.eof;
                if (w.count.max(0) as u64) < room as u64 {
                    self.stopped = true;
                }
            }
            Err(e) => {
                self.error = Some(e);
                self.stopped = true;
            }
        }
    }

    /// Answer the request as [`write`] answers a buffered one, after the argument checks.
    fn finish(&self, r: &mut Reply<'_, '_>, tape: &[u8], count: Option<i64>, b: &mut dyn Files) {
        if self.bad_base64 {
            return r.generic(tape, "Base64 data contains invalid characters");
        }
        let n = self.decoded;
        let want = match count {
            None => n,
            Some(c) if c < 0 || c as u64 > n as u64 => return invalid_count(r, tape, c),
            Some(c) => c as usize,
        };
        // What was written already: all of it, or up to a `count` seen before the text.
        let wrote = self.cap.map_or(n, |c| c.min(n));
        if wrote != want {
            // A `count` after `buf-b64`, smaller than the text: too late to write less.
            return invalid_count(r, tape, count.unwrap_or(0));
        }
        if let Some(e) = &self.error {
            return r.fail(tape, e, "failed to write to file");
        }
        if !self.called {
            let res = b.write(self.handle, &[]);
            return r.result(tape, res, "failed to write to file");
        }
        r.ok_value(
            tape,
            &GuestFileWrite {
                count: self.written as i64,
                eof: self.eof,
            },
        );
    }
}

/// Whether the `guest-file-write` arguments so far (the members of the object at `object`
/// before the key at `key`) allow streaming the `buf-b64` whose key is at `key`: the handle
/// is known, every member so far is valid, so what is checked at the end can only fail on
/// what comes after the text. A new [`WriteStream`] if so.
pub(crate) fn stream_args(tape: &[u8], object: usize, key: usize) -> Option<WriteStream> {
    let mut handle = None;
    let mut cap = None;
    let mut text = false;
    for (k, v) in Value::at(tape, object).members() {
        if v.pos() >= tape.len() {
            text = k == "buf-b64" && v.pos() > key;
            break;
        }
        match k {
            "handle" => handle = Some(v.as_i64()?),
            "count" => cap = Some(usize::try_from(v.as_i64()?).ok()?),
            _ => return None,
        }
    }
    if !text {
        return None;
    }
    Some(WriteStream {
        handle: handle?,
        cap,
        b64: crate::b64::Decoder::default(),
        decoded: 0,
        sent: 0,
        written: 0,
        eof: false,
        called: false,
        stopped: false,
        bad_base64: false,
        error: None,
    })
}

/// Open files, by handle.
pub trait Files {
    /// Whether `cmd` (one of this family's) works here. Every method of this family is
    /// required ([the rule](super#guest-info-tells-the-truth)), so the default is all of them;
    /// override it only to refuse a command at run time.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// Whether `handle` is open. The engine checks this first, as upstream does, and answers
    /// `handle '<n>' has not been found`.
    fn has_handle(&self, handle: i64) -> bool;

    /// `guest-file-open`: open `path` with an fopen `mode` (already validated by the engine:
    /// r, rb, w, wb, a, ab, r+, rb+, r+b, w+, wb+, w+b, a+, ab+, a+b) and return a new handle.
    /// An [`crate::Error::Os`] becomes `failed to open file '<path>' (mode: '<mode>'): <text>`.
    fn open(&mut self, path: &str, mode: &str) -> Result<i64>;

    /// `guest-file-close`. An OS error becomes `failed to close handle: <text>`.
    fn close(&mut self, handle: i64) -> Result<()>;

    /// Read up to `buf.len()` bytes at the current position; `Ok(0)` at end of file. The engine
    /// calls this repeatedly for one `guest-file-read`. An OS error becomes
    /// `failed to read file: <text>`.
    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize>;

    /// Write `data` at the current position (or the end, in append mode) and return how much
    /// was written and whether the file is at end-of-file. An OS error becomes
    /// `failed to write to file: <text>`.
    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite>;

    /// Whether a `guest-file-write` may reach [`Files::write`] in parts: consecutive calls
    /// with consecutive pieces of the data must have the effect of one call with all of it
    /// (an OS file's `write(2)` at the current position does), and a piece may be written
    /// before the request is known to be well-formed. When it is `true` and the engine streams
    /// writes ([`crate::Agent::stream_writes`]), a large `buf-b64` is decoded and written a
    /// window at a time instead of being held whole in the frame buffer. The default, `false`,
    /// keeps every write whole.
    fn writes_in_parts(&self) -> bool {
        false
    }

    /// `guest-file-seek`. An OS error becomes `failed to seek file: <text>`.
    fn seek(&mut self, handle: i64, offset: i64, whence: Seek) -> Result<GuestFileSeek>;

    /// `guest-file-flush`. An OS error becomes `failed to flush file: <text>`.
    fn flush(&mut self, handle: i64) -> Result<()>;
}
