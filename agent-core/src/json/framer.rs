//! Streamer and parser in one pass: tokens from the lexer are counted as
//! upstream's `json-streamer.c` counts them, to find where a request ends, and checked against
//! the grammar as upstream's `json-parser.c` would check them once the request is complete, while
//! the value is written to the frame buffer as a [`tape`].
//!
//! Upstream queues every token of a request and parses them when the braces balance; the first
//! parse error in token order is reported. Parsing as tokens arrive gives the same first error
//! (upstream's parser is a left-to-right recursive descent that stops at its first error), so
//! the checker remembers that error and reports it when the streamer says the request is
//! complete. A lexical error, a limit error and an oversized request end the request at once,
//! dropping what was queued ("flush"), as upstream does.
//!
//! Storage: the tape grows from the start of the frame; the raw bytes of the token being lexed
//! are kept just past the tape's end (at `tape_end + R`, leaving room for a tape header), so
//! that a lexical error can quote the partial token as upstream does, and a string is then
//! decoded in place into the tape. Container state lives in the caller's nesting slice, one
//! [`NestSlot`] per open `{` or `[`: there is no recursion.
//!
//! Duplicate keys are found without a table of keys: each object has a 64-bit Bloom filter
//! for its first 64 keys, then shares one Bloom filter laid over the caller's scratch buffer
//! (the file I/O chunk, idle while a request arrives); a hit is confirmed by walking the
//! object's earlier keys on the tape. A 60 KB object of 7000 keys costs about 75 ms with the
//! default 4 KiB chunk (walks after false positives), against 0.76 s with per-object filters
//! alone; ordinary requests never walk.

use super::lexer::{Lex, Step, Tok, step};
use super::nest::NestSlot;
use super::tape;
use crate::out::{Out, mod_utf8_codepoint};

/// upstream's `MAX_TOKEN_COUNT`.
pub const MAX_TOKEN_COUNT: usize = 2 << 20;

/// A request that could not be parsed, with what upstream says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A lexical error: the partial token plus the offending byte lie at `start..start+len` in
    /// the frame buffer.
    Stray {
        /// Position in the frame buffer.
        start: usize,
        /// Length.
        len: usize,
    },
    /// `expecting value`
    ExpectingValue,
    /// `missing : in object pair`
    MissingColon,
    /// `expected separator in dict`
    SeparatorDict,
    /// `expected separator in list`
    SeparatorList,
    /// `key is not a string in object`
    KeyNotString,
    /// `duplicate key`
    DuplicateKey,
    /// `invalid escape sequence in string`
    InvalidEscape,
    /// `invalid UTF-8 sequence in string`
    InvalidUtf8,
    /// `\uXXXX is not a valid Unicode character`, quoting up to 6 bytes of the escape.
    BadUnicode {
        /// The escape as written.
        text: [u8; 6],
        /// How many bytes of `text` are used.
        len: u8,
    },
    /// `invalid keyword 'x'`: the keyword lies at `start..start+len` in the frame buffer.
    InvalidKeyword {
        /// Position in the frame buffer.
        start: usize,
        /// Length.
        len: usize,
    },
    /// `premature EOI` (not reachable from a byte stream; kept for completeness).
    PrematureEoi,
    /// `JSON nesting depth limit exceeded`
    Nesting,
    /// `JSON token size limit exceeded`: the request does not fit the frame buffer.
    TokenSize,
    /// `JSON token count limit exceeded`
    TokenCount,
}

impl ParseError {
    /// Write the error's `desc`, without quotes, as upstream words it.
    pub fn write_desc(&self, frame: &[u8], out: &mut Out<'_>) {
        let body = |out: &mut Out<'_>, s: &str| out.string_body(s.as_bytes());
        match *self {
            ParseError::Stray { start, len } => {
                let tok = frame.get(start..start.saturating_add(len)).unwrap_or(&[]);
                // Upstream formats the token with "%s": it ends at a NUL byte.
                let tok = tok.split(|&b| b == 0).next().unwrap_or(&[]);
                body(out, "JSON parse error, stray '");
                out.string_body(tok);
                body(out, "'");
            }
            ParseError::Nesting => body(out, "JSON nesting depth limit exceeded"),
            ParseError::TokenSize => body(out, "JSON token size limit exceeded"),
            ParseError::TokenCount => body(out, "JSON token count limit exceeded"),
            ParseError::InvalidKeyword { start, len } => {
                // Upstream formats parser messages into a 1024-byte buffer.
                body(out, "JSON parse error, ");
                let kw = frame.get(start..start.saturating_add(len)).unwrap_or(&[]);
                const PREFIX: &[u8] = b"invalid keyword '";
                let room = 1023 - PREFIX.len();
                out.string_body(PREFIX);
                out.string_body(kw.get(..room.min(kw.len())).unwrap_or(&[]));
                if kw.len() < room {
                    out.string_body(b"'");
                }
            }
            ParseError::BadUnicode { text, len } => {
                body(out, "JSON parse error, ");
                out.string_body(text.get(..len as usize).unwrap_or(&[]));
                body(out, " is not a valid Unicode character");
            }
            other => {
                body(out, "JSON parse error, ");
                body(out, other.parser_text());
            }
        }
    }

    fn parser_text(&self) -> &'static str {
        match self {
            ParseError::ExpectingValue => "expecting value",
            ParseError::MissingColon => "missing : in object pair",
            ParseError::SeparatorDict => "expected separator in dict",
            ParseError::SeparatorList => "expected separator in list",
            ParseError::KeyNotString => "key is not a string in object",
            ParseError::DuplicateKey => "duplicate key",
            ParseError::InvalidEscape => "invalid escape sequence in string",
            ParseError::InvalidUtf8 => "invalid UTF-8 sequence in string",
            ParseError::PrematureEoi => "premature EOI",
            _ => "",
        }
    }
}

/// What the framer found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete value is on the tape at position 0 of the frame buffer.
    Value,
    /// A request failed; answer with this error.
    Error(ParseError),
}

/// What the parser expects next in the innermost container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Want {
    TopValue = 0,
    TopDone,
    ObjKeyOrEnd,
    ObjKey,
    ObjColon,
    ObjValue,
    ObjCommaOrEnd,
    ArrValueOrEnd,
    ArrValue,
    ArrCommaOrEnd,
}

impl Want {
    fn from_u8(v: u8) -> Want {
        match v {
            1 => Want::TopDone,
            2 => Want::ObjKeyOrEnd,
            3 => Want::ObjKey,
            4 => Want::ObjColon,
            5 => Want::ObjValue,
            6 => Want::ObjCommaOrEnd,
            7 => Want::ArrValueOrEnd,
            8 => Want::ArrValue,
            9 => Want::ArrCommaOrEnd,
            _ => Want::TopValue,
        }
    }
}

/// Where a long string value goes instead of the frame buffer, one part at a time (see
/// [`Framer::set_window`]). The framer knows no command: the sink decides from the request so
/// far whether it takes the string, and what the parts mean.
pub trait StringSink {
    /// A string value at depth 2 has grown past the window. `tape` is the request so far (the
    /// top-level object, open; its member whose value is the object at `object`, open; that
    /// object's complete members; the key at `key`, whose value the string is). Return `true`
    /// to take the string in parts: the tape then keeps an empty string in its place.
    fn begin(&mut self, tape: &[u8], object: usize, key: usize) -> bool;
    /// The next part of a string taken by [`StringSink::begin`]: `buf[at..]`, unescaped and
    /// UTF-8-checked as the parser checks strings. The sink may overwrite all of `buf`,
    /// including the [`PART_HEADROOM`] bytes before the text (`at`). The parts, in order, are
    /// the string; the last one comes when the closing quote arrives.
    fn part(&mut self, buf: &mut [u8], at: usize);
}

/// Scratch bytes before each part handed to [`StringSink::part`].
pub const PART_HEADROOM: usize = 2;

/// A sink that takes nothing: every string stays in the frame buffer.
impl StringSink for () {
    fn begin(&mut self, _tape: &[u8], _object: usize, _key: usize) -> bool {
        false
    }
    fn part(&mut self, _buf: &mut [u8], _at: usize) {}
}

/// What happens to the string being lexed (see [`StringSink`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// Kept in the frame buffer (not yet asked, or not long enough).
    Off,
    /// The sink declined it, or it is not a candidate: kept in the frame buffer.
    Refused,
    /// Handed to the sink in parts.
    On,
    /// Was handed over, then its text was found malformed: the rest is dropped as it arrives.
    Failed,
}

const SLOT_DUP: u8 = 1;
const SLOT_BIG: u8 = 2;

/// The framing and parsing state between calls; all storage is the caller's.
#[derive(Debug)]
pub struct Framer {
    lex: Lex,
    /// Raw bytes of the current token stored so far (at `tape_end + reserve`).
    tok_len: usize,
    braces: i64,
    brackets: i64,
    tokens: usize,
    tape_end: usize,
    depth: usize,
    want: Want,
    error: Option<ParseError>,
    oversized: bool,
    /// The previous request ended: start the next one afresh.
    fresh: bool,
    /// The scratch Bloom filter was cleared for this request.
    big_filter: bool,
    /// A string value longer than this is offered to the sink (0: never).
    window: usize,
    /// The current string token's fate.
    stream: Stream,
    /// Bytes the request would occupy in the frame buffer beyond what it does: the raw bytes
    /// of a streamed string already handed over, then the string's place on the tape. The
    /// size limit counts them, so a streamed request is "too large" exactly when it would be
    /// if it were kept whole.
    shift: usize,
    /// `shift` when the streamed string began.
    shift_base: usize,
    /// Unescaped bytes of the streamed string handed over so far.
    streamed: usize,
    /// Tape position of the last key written.
    key_pos: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

fn vlen(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

impl Framer {
    /// A framer in its initial state.
    pub const fn new() -> Self {
        Framer {
            lex: Lex::Start,
            tok_len: 0,
            braces: 0,
            brackets: 0,
            tokens: 0,
            tape_end: 0,
            depth: 0,
            want: Want::TopValue,
            error: None,
            oversized: false,
            fresh: false,
            big_filter: false,
            window: 0,
            stream: Stream::Off,
            shift: 0,
            shift_base: 0,
            streamed: 0,
            key_pos: 0,
        }
    }

    /// Offer string values at depth 2 whose raw text grows past `window` bytes to the sink of
    /// [`Framer::feed_with`], which may take them in parts of about `window` bytes (0, the
    /// default: never). Requests keep their size limit: the frame buffer's length.
    pub fn set_window(&mut self, window: usize) {
        self.window = window;
    }

    /// Forget everything: a partial request and the lexer state.
    pub fn reset(&mut self) {
        *self = Framer {
            window: self.window,
            ..Framer::new()
        };
    }

    /// Whether a request is partly received (or the lexer is inside a token or recovering).
    pub fn idle(&self) -> bool {
        (self.fresh || (self.tokens == 0 && self.tok_len == 0)) && self.lex == Lex::Start
    }

    fn begin_message(&mut self) {
        self.braces = 0;
        self.brackets = 0;
        self.tokens = 0;
        self.tape_end = 0;
        self.depth = 0;
        self.want = Want::TopValue;
        self.error = None;
        self.oversized = false;
        self.fresh = false;
        self.big_filter = false;
        self.stream = Stream::Off;
        self.shift = 0;
        self.shift_base = 0;
        self.streamed = 0;
        self.key_pos = 0;
    }

    /// Room kept before a token's raw bytes for the tape header written over them.
    fn reserve(frame: &[u8]) -> usize {
        1 + vlen(frame.len())
    }

    fn store(&mut self, bytes: &[u8], frame: &mut [u8]) {
        if self.oversized {
            return;
        }
        let at = self.tape_end + Self::reserve(frame) + self.tok_len;
        let end = at.saturating_add(bytes.len());
        if end.saturating_add(self.shift) > frame.len() {
            self.oversized = true;
            return;
        }
        match frame.get_mut(at..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.tok_len += bytes.len();
            }
            None => self.oversized = true,
        }
    }

    /// Lex `input` until it is used up or an event occurs. Returns how many bytes were used
    /// and the event. The frame buffer holds the request (and an error's quoted text) until the
    /// next call.
    pub fn feed(
        &mut self,
        input: &[u8],
        frame: &mut [u8],
        nest: &mut [NestSlot],
        scratch: &mut [u8],
    ) -> (usize, Option<Event>) {
        self.feed_with(input, frame, nest, scratch, &mut ())
    }

    /// [`Framer::feed`], offering long string values to `sink` (see [`Framer::set_window`]).
    pub fn feed_with(
        &mut self,
        input: &[u8],
        frame: &mut [u8],
        nest: &mut [NestSlot],
        scratch: &mut [u8],
        sink: &mut dyn StringSink,
    ) -> (usize, Option<Event>) {
        if self.fresh {
            self.begin_message();
        }
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            // Fast path: a run of ordinary string bytes.
            if matches!(self.lex, Lex::Dq | Lex::Sq) {
                let quote = if self.lex == Lex::Dq { b'"' } else { b'\'' };
                let rest = input.get(i..).unwrap_or(&[]);
                let mut run = string_run(rest, quote);
                if self.window != 0 && self.stream != Stream::Refused {
                    // A window at a time, however much arrived at once.
                    run = run.min((self.window + 1).saturating_sub(self.tok_len).max(1));
                }
                if run > 0 {
                    self.store(rest.get(..run).unwrap_or(&[]), frame);
                    i += run;
                    if self.window != 0 && self.tok_len > self.window {
                        self.stream_window(frame, nest, sink);
                    }
                    continue;
                }
            }
            match step(self.lex, b) {
                Step::Go(s) => {
                    self.store(&[b], frame);
                    self.lex = s;
                    i += 1;
                }
                Step::Skip | Step::RecoverSkip => i += 1,
                Step::RecoverEnd => self.lex = Lex::Start,
                Step::Punct(t) => {
                    i += 1;
                    if let Some(ev) = self.token(t, frame, nest, scratch) {
                        return (i, Some(ev));
                    }
                }
                Step::StringEnd => {
                    self.store(&[b], frame);
                    i += 1;
                    self.lex = Lex::Start;
                    if self.stream == Stream::On && !self.oversized && self.error.is_none() {
                        self.stream_end(frame, sink);
                    }
                    if let Some(ev) = self.token(Tok::String, frame, nest, scratch) {
                        return (i, Some(ev));
                    }
                }
                Step::Emit(t) => {
                    self.lex = Lex::Start;
                    if let Some(ev) = self.token(t, frame, nest, scratch) {
                        return (i, Some(ev));
                    }
                }
                Step::Error => {
                    self.store(&[b], frame);
                    i += 1;
                    self.lex = Lex::Recovery;
                    let e = ParseError::Stray {
                        start: self.tape_end + Self::reserve(frame),
                        len: self.tok_len,
                    };
                    return (i, Some(self.flush(e)));
                }
            }
        }
        (i, None)
    }

    /// End the request with an error (upstream's flush).
    fn flush(&mut self, e: ParseError) -> Event {
        let e = if self.oversized {
            ParseError::TokenSize
        } else {
            e
        };
        self.tok_len = 0;
        self.fresh = true;
        Event::Error(e)
    }

    /// The streamer: count, check limits, parse, and decide whether the request is complete.
    fn token(
        &mut self,
        t: Tok,
        frame: &mut [u8],
        nest: &mut [NestSlot],
        scratch: &mut [u8],
    ) -> Option<Event> {
        match t {
            Tok::LCurly => self.braces += 1,
            Tok::RCurly => self.braces -= 1,
            Tok::LSquare => self.brackets += 1,
            Tok::RSquare => self.brackets -= 1,
            _ => {}
        }
        self.tokens += 1;
        if self.tokens > MAX_TOKEN_COUNT {
            return Some(self.flush(ParseError::TokenCount));
        }
        if self.braces + self.brackets > nest.len() as i64 {
            return Some(self.flush(ParseError::Nesting));
        }
        if !self.oversized && self.error.is_none() {
            self.parse(t, frame, nest, scratch);
        }
        match self.stream {
            Stream::Refused => self.stream = Stream::Off,
            // A streamed string that turned out bad ended: kept whole, it would be dropped
            // here rather than put on the tape, so the size limit stops counting it.
            Stream::Failed => {
                self.shift = self.shift_base;
                self.stream = Stream::Off;
            }
            Stream::Off | Stream::On => {}
        }
        self.tok_len = 0;
        if (self.braces > 0 || self.brackets > 0) && self.braces >= 0 && self.brackets >= 0 {
            return None;
        }
        let ev = if self.oversized {
            Event::Error(ParseError::TokenSize)
        } else if let Some(e) = self.error {
            Event::Error(e)
        } else if self.want == Want::TopDone {
            Event::Value
        } else {
            Event::Error(ParseError::PrematureEoi)
        };
        self.fresh = true;
        Some(ev)
    }

    /// The string being lexed has grown past the window: decide whether it streams, and if
    /// it does, hand the sink what can be decoded of it and keep only the undecoded tail.
    fn stream_window(&mut self, frame: &mut [u8], nest: &[NestSlot], sink: &mut dyn StringSink) {
        if self.oversized {
            return;
        }
        match self.stream {
            Stream::Refused => return,
            Stream::Off => {
                let dup = nest.get(1).is_some_and(|s| s.flags & SLOT_DUP != 0);
                let candidate =
                    self.error.is_none() && self.depth == 2 && self.want == Want::ObjValue && !dup;
                let object = nest.get(1).map_or(0, |s| s.start);
                let tape = frame.get(..self.tape_end).unwrap_or(&[]);
                if !candidate || !sink.begin(tape, object, self.key_pos) {
                    self.stream = Stream::Refused;
                    return;
                }
                self.stream = Stream::On;
                self.shift_base = self.shift;
                self.streamed = 0;
            }
            Stream::On | Stream::Failed => {}
        }
        // The raw token is the opening quote, then the text so far.
        let content = self.tape_end + Self::reserve(frame) + 1;
        let avail = self.tok_len.saturating_sub(1);
        if self.stream == Stream::Failed {
            self.shift += avail;
            self.tok_len = 1;
            return;
        }
        let stop = content + avail.saturating_sub(LONGEST_UNIT);
        match decode_units(frame, content, content + avail, stop, content) {
            Ok((used, n)) => {
                hand_over(frame, content, n, sink);
                self.streamed += n;
                frame.copy_within(content + used..content + avail, content);
                self.tok_len = 1 + avail - used;
                self.shift += used;
            }
            Err(e) => {
                // The parser's first error, as it would be at the closing quote; what arrives
                // of the string from now on is dropped.
                self.fail(e);
                self.stream = Stream::Failed;
                self.shift += avail;
                self.tok_len = 1;
            }
        }
    }

    /// The streamed string's closing quote arrived: hand over the rest of its text.
    fn stream_end(&mut self, frame: &mut [u8], sink: &mut dyn StringSink) {
        let content = self.tape_end + Self::reserve(frame) + 1;
        let avail = self.tok_len.saturating_sub(2);
        let end = content + avail;
        match decode_units(frame, content, end, end, content) {
            Ok((_, n)) => {
                hand_over(frame, content, n, sink);
                self.streamed += n;
            }
            Err(e) => {
                self.fail(e);
                self.stream = Stream::Failed;
            }
        }
    }

    fn fail(&mut self, e: ParseError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn put(&mut self, frame: &mut [u8], tag: u8) -> bool {
        if self.tape_end.saturating_add(self.shift) >= frame.len() {
            self.oversized = true;
            return false;
        }
        match frame.get_mut(self.tape_end) {
            Some(slot) => {
                *slot = tag;
                self.tape_end += 1;
                true
            }
            None => {
                self.oversized = true;
                false
            }
        }
    }

    fn parse(&mut self, t: Tok, frame: &mut [u8], nest: &mut [NestSlot], scratch: &mut [u8]) {
        match t {
            Tok::LCurly | Tok::LSquare => self.open(t == Tok::LCurly, frame, nest),
            Tok::RCurly | Tok::RSquare => self.close(t == Tok::RCurly, frame, nest),
            Tok::Colon => match self.want {
                Want::ObjColon => self.want = Want::ObjValue,
                Want::TopDone => {}
                w => self.fail(Self::not_a_value(w)),
            },
            Tok::Comma => match self.want {
                Want::ObjCommaOrEnd => self.want = Want::ObjKey,
                Want::ArrCommaOrEnd => self.want = Want::ArrValue,
                Want::TopDone => {}
                w => self.fail(Self::not_a_value(w)),
            },
            Tok::String | Tok::Integer | Tok::Float | Tok::Keyword => {
                self.scalar(t, frame, nest, scratch)
            }
        }
    }

    /// The error for a token that cannot come next in state `w`, when it is neither a value
    /// (where one is allowed) nor the token `w` waits for.
    fn not_a_value(w: Want) -> ParseError {
        match w {
            Want::ObjColon => ParseError::MissingColon,
            Want::ObjCommaOrEnd => ParseError::SeparatorDict,
            Want::ArrCommaOrEnd => ParseError::SeparatorList,
            _ => ParseError::ExpectingValue,
        }
    }

    /// Whether a value may start here (in key position too: upstream parses any value as a
    /// key and then rejects it if it is not a string).
    fn value_allowed(&mut self) -> bool {
        match self.want {
            Want::ObjColon | Want::ObjCommaOrEnd | Want::ArrCommaOrEnd => {
                let e = Self::not_a_value(self.want);
                self.fail(e);
                false
            }
            Want::TopDone => false,
            _ => true,
        }
    }

    fn open(&mut self, obj: bool, frame: &mut [u8], nest: &mut [NestSlot]) {
        if !self.value_allowed() {
            return;
        }
        let start = self.tape_end;
        if !self.put(frame, if obj { tape::OBJ } else { tape::ARR }) {
            return;
        }
        let Some(slot) = nest.get_mut(self.depth) else {
            self.fail(ParseError::Nesting);
            return;
        };
        *slot = NestSlot {
            start,
            bloom: 0,
            keys: 0,
            parent: self.want as u8,
            flags: 0,
        };
        self.depth += 1;
        self.want = if obj {
            Want::ObjKeyOrEnd
        } else {
            Want::ArrValueOrEnd
        };
    }

    fn close(&mut self, obj: bool, frame: &mut [u8], nest: &mut [NestSlot]) {
        let ok = match self.want {
            Want::ObjKeyOrEnd | Want::ObjCommaOrEnd => obj,
            Want::ArrValueOrEnd | Want::ArrCommaOrEnd => !obj,
            _ => false,
        };
        if !ok {
            let e = match (self.want, obj) {
                (Want::ObjColon, _) => ParseError::MissingColon,
                (Want::ObjCommaOrEnd, false) => ParseError::SeparatorDict,
                (Want::ArrCommaOrEnd, true) => ParseError::SeparatorList,
                (Want::TopDone, _) => return,
                _ => ParseError::ExpectingValue,
            };
            self.fail(e);
            return;
        }
        if !self.put(frame, if obj { tape::END_OBJ } else { tape::END_ARR }) {
            return;
        }
        self.depth = self.depth.saturating_sub(1);
        let parent = nest.get(self.depth).map(|s| s.parent).unwrap_or(0);
        self.want = Want::from_u8(parent);
        self.value_done(nest);
    }

    /// A value just ended in the current context.
    fn value_done(&mut self, nest: &mut [NestSlot]) {
        match self.want {
            Want::TopValue => self.want = Want::TopDone,
            Want::ObjValue => {
                let dup = self
                    .depth
                    .checked_sub(1)
                    .and_then(|d| nest.get(d))
                    .is_some_and(|s| s.flags & SLOT_DUP != 0);
                if dup {
                    self.fail(ParseError::DuplicateKey);
                } else {
                    self.want = Want::ObjCommaOrEnd;
                }
            }
            Want::ArrValueOrEnd | Want::ArrValue => self.want = Want::ArrCommaOrEnd,
            Want::ObjKeyOrEnd | Want::ObjKey => self.fail(ParseError::KeyNotString),
            _ => {}
        }
    }

    fn scalar(&mut self, t: Tok, frame: &mut [u8], nest: &mut [NestSlot], scratch: &mut [u8]) {
        if !self.value_allowed() {
            return;
        }
        let raw = self.tape_end + Self::reserve(frame);
        let len = self.tok_len;
        match t {
            Tok::String if self.stream == Stream::On => {
                // The text went to the sink (`stream_end`); an empty string keeps its place,
                // and the size limit counts the bytes the whole string would have taken.
                let n = self.streamed;
                let pos = self.tape_end;
                if !self.put(frame, tape::STR) || !self.put(frame, 0) {
                    return;
                }
                self.shift =
                    self.shift_base + (1 + vlen(n) + n).saturating_sub(self.tape_end - pos);
                self.stream = Stream::Off;
            }
            Tok::String => {
                let content = len.saturating_sub(2);
                let hmax = 1 + vlen(content);
                let dst = self.tape_end + hmax;
                let n = match decode_string(frame, raw + 1, content, dst) {
                    Ok(n) => n,
                    Err(e) => {
                        self.fail(e);
                        return;
                    }
                };
                let h = 1 + vlen(n);
                if h < hmax {
                    frame.copy_within(dst..dst + n, self.tape_end + h);
                }
                let pos = self.tape_end;
                if let Some(tag) = frame.get_mut(pos) {
                    *tag = tape::STR;
                }
                let _ = tape::write_len(frame, pos + 1, n);
                self.tape_end = pos + h + n;
                if matches!(self.want, Want::ObjKeyOrEnd | Want::ObjKey) {
                    self.key_pos = pos;
                    self.key(pos, pos + h, n, frame, nest, scratch);
                    self.want = Want::ObjColon;
                    return;
                }
            }
            Tok::Integer | Tok::Float => {
                let h = 1 + vlen(len);
                let pos = self.tape_end;
                frame.copy_within(raw..raw + len, pos + h);
                if let Some(tag) = frame.get_mut(pos) {
                    *tag = tape::NUM;
                }
                let _ = tape::write_len(frame, pos + 1, len);
                self.tape_end = pos + h + len;
            }
            _ => {
                let word = frame.get(raw..raw + len).unwrap_or(&[]);
                let tag = match word {
                    b"true" => tape::TRUE,
                    b"false" => tape::FALSE,
                    b"null" => tape::NULL,
                    _ => {
                        self.fail(ParseError::InvalidKeyword { start: raw, len });
                        // Keep the keyword: later tokens are stored past it.
                        self.tape_end = raw + len;
                        return;
                    }
                };
                self.put(frame, tag);
            }
        }
        self.value_done(nest);
    }

    /// A key was written at `pos` (payload at `text..text+n`): note whether it repeats one of
    /// the current object's earlier keys.
    ///
    /// The first [`SMALL_OBJECT`] keys of an object go through the object's own 64-bit Bloom
    /// filter; after that, if the caller gave scratch space, through one filter over the whole
    /// scratch (keyed by object and key), which keeps walks rare for objects of thousands of
    /// keys. A filter hit is confirmed by walking the object's earlier keys on the tape.
    fn key(
        &mut self,
        pos: usize,
        text: usize,
        n: usize,
        frame: &[u8],
        nest: &mut [NestSlot],
        scratch: &mut [u8],
    ) {
        let Some(slot) = self.depth.checked_sub(1).and_then(|d| nest.get_mut(d)) else {
            return;
        };
        let tape_so_far = frame.get(..pos).unwrap_or(&[]);
        let key = frame.get(text..text + n).unwrap_or(&[]);
        let h = fnv1a(key);
        slot.keys = slot.keys.saturating_add(1);
        let big_ok = scratch.len() >= 64;
        if slot.keys as usize == SMALL_OBJECT + 1 && big_ok {
            if !self.big_filter {
                scratch.fill(0);
                self.big_filter = true;
            }
            let start = slot.start;
            walk_keys(tape_so_far, start + 1, pos, |k| {
                big_filter(scratch, start, fnv1a(k), true);
                false
            });
            slot.flags |= SLOT_BIG;
        }
        let maybe = if slot.flags & SLOT_BIG != 0 {
            big_filter(scratch, slot.start, h, true)
        } else {
            let bits = (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63));
            let hit = slot.bloom & bits == bits;
            slot.bloom |= bits;
            hit
        };
        let dup = maybe && walk_keys(tape_so_far, slot.start + 1, pos, |k| k == key);
        if dup {
            slot.flags |= SLOT_DUP;
        } else {
            slot.flags &= !SLOT_DUP;
        }
    }
}

/// Hand `frame[content..content + n]` to the sink with the headroom before it: the reserve
/// (unused while a token is lexed) and the opening quote, put back afterwards.
fn hand_over(frame: &mut [u8], content: usize, n: usize, sink: &mut dyn StringSink) {
    let Some(from) = content.checked_sub(PART_HEADROOM) else {
        return;
    };
    let quote = frame.get(content - 1).copied().unwrap_or(b'"');
    if let Some(buf) = frame.get_mut(from..content + n) {
        sink.part(buf, PART_HEADROOM);
    }
    if let Some(q) = frame.get_mut(content - 1) {
        *q = quote;
    }
}

/// Keys an object checks with its own Bloom filter before it moves to the scratch filter.
const SMALL_OBJECT: usize = 64;

/// Test and set the two bits of (object, key hash) in the scratch Bloom filter; whether both
/// were set already.
fn big_filter(scratch: &mut [u8], object: usize, h: u64, set: bool) -> bool {
    let m = (scratch.len() as u64) * 8;
    if m == 0 {
        return true;
    }
    let x = (h ^ (object as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    let mut all = true;
    for bit in [x % m, (x >> 32 ^ x.rotate_left(17)) % m] {
        if let Some(b) = scratch.get_mut((bit / 8) as usize) {
            let mask = 1u8 << (bit % 8);
            all &= *b & mask != 0;
            if set {
                *b |= mask;
            }
        }
    }
    all
}

/// Call `f` with each key of the object whose members start at `at`, up to `end`; stop and
/// return `true` when `f` does.
fn walk_keys(tape: &[u8], mut at: usize, end: usize, mut f: impl FnMut(&[u8]) -> bool) -> bool {
    while at < end {
        if tape.get(at) != Some(&tape::STR) {
            return false;
        }
        let Some((len, used)) = tape::read_len(tape, at + 1) else {
            return false;
        };
        let k = at + 1 + used;
        if f(tape.get(k..k + len).unwrap_or(&[])) {
            return true;
        }
        let v = k + len;
        at = match tape.get(v) {
            Some(&tape::STR) | Some(&tape::NUM) => match tape::read_len(tape, v + 1) {
                Some((l, u)) => v + 1 + u + l,
                None => return false,
            },
            Some(&tape::OBJ) | Some(&tape::ARR) => match tape::Value::at(tape, v).end() {
                Some(e) => e,
                None => return false,
            },
            Some(_) => v + 1,
            None => return false,
        };
    }
    false
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether some byte of `x` is below `n` (`n` <= 128), eight at a time.
fn has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(LO * n as u64) & !x & HI != 0
}

fn has_byte(x: u64, b: u8) -> bool {
    has_less(x ^ (LO * b as u64), 1)
}

/// Length of the run of ordinary string bytes at the start of `s`: up to the first quote,
/// backslash, control byte or 0xFE/0xFF.
fn string_run(s: &[u8], quote: u8) -> usize {
    let special = |c: u8| c == quote || c == b'\\' || !(0x20..=0xFD).contains(&c);
    let mut n = 0;
    for w in s.chunks_exact(8) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        if has_less(x, 0x20) || has_byte(x, quote) || has_byte(x, b'\\') || has_less(!x, 2) {
            break;
        }
        n += 8;
    }
    let rest = s.get(n..).unwrap_or(&[]);
    n + rest.iter().position(|&c| special(c)).unwrap_or(rest.len())
}

/// Length of the run of ASCII bytes without a backslash at the start of `s`.
fn plain_run(s: &[u8]) -> usize {
    let mut n = 0;
    for w in s.chunks_exact(8) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        if x & HI != 0 || has_byte(x, b'\\') {
            break;
        }
        n += 8;
    }
    let rest = s.get(n..).unwrap_or(&[]);
    n + rest
        .iter()
        .position(|&c| c == b'\\' || c >= 0x80)
        .unwrap_or(rest.len())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn is_valid_codepoint(cp: i32) -> bool {
    (0..=0x10FFFF).contains(&cp)
        && !(0xFDD0..=0xFDEF).contains(&cp)
        && cp & 0xFFFE != 0xFFFE
        && !(0xD800..=0xDFFF).contains(&cp)
}

fn hex4(f: &[u8], at: usize, end: usize) -> i32 {
    let mut cp = 0i32;
    for k in 0..4 {
        let b = if at + k < end {
            f.get(at + k).copied().unwrap_or(0)
        } else {
            0
        };
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return -1,
        };
        cp = (cp << 4) | d as i32;
    }
    cp
}

fn put_at(f: &mut [u8], w: &mut usize, b: u8) {
    if let Some(slot) = f.get_mut(*w) {
        *slot = b;
    }
    *w += 1;
}

/// Decode a string token's content (`len` raw bytes at `src`, followed by the closing quote) to
/// UTF-8 at `dst <= src`, as upstream's `parse_string` does: escapes (including `\'` and
/// surrogate pairs) decoded, raw bytes checked with `mod_utf8_codepoint`. `\u0000` and the
/// two-byte `\xC0\x80` become a NUL byte. Returns the decoded length.
fn decode_string(f: &mut [u8], src: usize, len: usize, dst: usize) -> Result<usize, ParseError> {
    decode_units(f, src, src + len, src + len, dst).map(|(_, n)| n)
}

/// The longest unit [`decode_units`] reads at once: a surrogate pair, `\uD83D\uDE00`.
const LONGEST_UNIT: usize = 12;

/// [`decode_string`] over the raw bytes `src..end` of a string that may go on past `end`:
/// only units that start before `stop` are decoded (with `stop <= end - LONGEST_UNIT` every
/// such unit lies whole before `end`, so the result is what the whole string gives). Returns
/// (raw bytes consumed, bytes written at `dst`).
fn decode_units(
    f: &mut [u8],
    src: usize,
    end: usize,
    stop: usize,
    dst: usize,
) -> Result<(usize, usize), ParseError> {
    let mut r = src;
    let mut w = dst;
    while r < stop {
        let run = plain_run(f.get(r..end).unwrap_or(&[]));
        if run > 0 {
            f.copy_within(r..r + run, w);
            r += run;
            w += run;
            continue;
        }
        let c = f.get(r).copied().unwrap_or(0);
        if c == b'\\' {
            let beg = r;
            let e = if r + 1 < end {
                f.get(r + 1).copied().unwrap_or(0)
            } else {
                0
            };
            r += 2;
            let out = match e {
                b'"' => b'"',
                b'\'' => b'\'',
                b'\\' => b'\\',
                b'/' => b'/',
                b'b' => 0x08,
                b'f' => 0x0C,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'u' => {
                    let mut cp = hex4(f, r, end);
                    r += 4;
                    let at = |k: usize| if k < end { f.get(k).copied() } else { None };
                    if (0xD800..=0xDBFF).contains(&cp)
                        && at(r) == Some(b'\\')
                        && at(r + 1) == Some(b'u')
                    {
                        cp = 0x10000 + ((cp & 0x3FF) << 10);
                        let trailing = hex4(f, r + 2, end);
                        if (0xDC00..=0xDFFF).contains(&trailing) {
                            cp |= trailing & 0x3FF;
                            r += 6;
                        } else {
                            cp = -1;
                        }
                    }
                    if !is_valid_codepoint(cp) {
                        // "%.*s" of the escape, cut at the end of the token (its closing
                        // quote is part of the token).
                        let stop = r.min(end + 1);
                        let quoted = f.get(beg..stop).unwrap_or(&[]);
                        let mut text = [0u8; 6];
                        let n = quoted.len().min(6);
                        for (d, s) in text.iter_mut().zip(quoted) {
                            *d = *s;
                        }
                        return Err(ParseError::BadUnicode { text, len: n as u8 });
                    }
                    let cp = cp as u32;
                    if cp < 0x80 {
                        put_at(f, &mut w, cp as u8);
                    } else if cp < 0x800 {
                        put_at(f, &mut w, 0xC0 | (cp >> 6) as u8);
                        put_at(f, &mut w, 0x80 | (cp & 0x3F) as u8);
                    } else if cp < 0x10000 {
                        put_at(f, &mut w, 0xE0 | (cp >> 12) as u8);
                        put_at(f, &mut w, 0x80 | ((cp >> 6) & 0x3F) as u8);
                        put_at(f, &mut w, 0x80 | (cp & 0x3F) as u8);
                    } else {
                        put_at(f, &mut w, 0xF0 | (cp >> 18) as u8);
                        put_at(f, &mut w, 0x80 | ((cp >> 12) & 0x3F) as u8);
                        put_at(f, &mut w, 0x80 | ((cp >> 6) & 0x3F) as u8);
                        put_at(f, &mut w, 0x80 | (cp & 0x3F) as u8);
                    }
                    continue;
                }
                _ => return Err(ParseError::InvalidEscape),
            };
            put_at(f, &mut w, out);
        } else {
            let seq = f.get(r..end.min(r + 6)).unwrap_or(&[]);
            let (cp, used) = mod_utf8_codepoint(seq);
            if cp < 0 {
                return Err(ParseError::InvalidUtf8);
            }
            if cp == 0 {
                put_at(f, &mut w, 0);
            } else {
                f.copy_within(r..r + used, w);
                w += used;
            }
            r += used;
        }
    }
    Ok((r - src, w - dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_match_a_byte_scan() {
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let len = (x % 40) as usize;
            let mut s = Vec::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Mostly ordinary bytes, sometimes a special one.
                let b = if x.is_multiple_of(16) {
                    [b'"', b'\\', b'\'', 0x1F, 0xFE, 0xFF, 0x80, 0x20][(x >> 8) as usize % 8]
                } else {
                    b'a' + (x % 26) as u8
                };
                s.push(b);
            }
            for q in [b'"', b'\''] {
                let want = s
                    .iter()
                    .position(|&c| c == q || c == b'\\' || !(0x20..=0xFD).contains(&c))
                    .unwrap_or(s.len());
                assert_eq!(string_run(&s, q), want, "{s:?}");
            }
            let want = s
                .iter()
                .position(|&c| c == b'\\' || c >= 0x80)
                .unwrap_or(s.len());
            assert_eq!(plain_run(&s), want, "{s:?}");
        }
    }
}
