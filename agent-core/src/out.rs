//! Responses, written the way upstream's JSON writer writes them.
//!
//! Clients parse responses, but some compare bytes (`\n` termination, the 0xFF sentinel), and
//! upstream's output is pure 7-bit ASCII: every character from 0x7F up is a `\uXXXX` escape
//! (uppercase hex, surrogate pairs above the BMP), invalid UTF-8 becomes `\uFFFD`, and members
//! are separated by `", "` with `": "` after a key. [`Out`] does the same, streaming into a
//! caller-owned transmit buffer that is handed to the platform's [`Transmit`] whenever it fills,
//! so a response of any length costs the buffer's size and no more. Lists are written element
//! by element through [`ListWriter`], and byte payloads through [`Base64Writer`], which is how
//! `guest-file-read` answers a 48 MiB `count` from a few KiB.

use core::fmt;
use core::marker::PhantomData;

/// The sink failed: the peer is gone. What the engine does then is the [`Transmit`] contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxError;

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the transport refused a response")
    }
}

impl core::error::Error for TxError {}

/// Where response bytes go. A platform writes them whole (retrying partial writes), or fails.
///
/// The contract after a failure:
/// - `send` returns [`TxError`] only when the bytes cannot be delivered at all (the peer is
///   gone). A slow peer is waited for; partial writes are retried inside `send`.
/// - Within the failing [`crate::Agent::feed`], the engine calls `send` no more: the response
///   being written is cut off, the rest of that call's input is dropped, and `feed` returns
///   `Err(TxError)`.
/// - The engine then forgets any partly received request, as [`crate::Agent::reset`] does, so
///   the next `feed` starts on a clean parser and writes normally: bytes that arrive after the
///   lost ones are never spliced onto an older request.
/// - The platform should treat the connection as broken (close it, or wait for the host side
///   to come back) and call [`crate::Agent::reset`] when a new client connects, as it always
///   does; if it keeps feeding the same stream instead, the client must resynchronise with
///   `guest-sync-delimited`, since some of its requests went unanswered.
pub trait Transmit {
    /// Send all of `bytes`.
    fn send(&mut self, bytes: &[u8]) -> Result<(), TxError>;
}

/// A [`Transmit`] over any `embedded_io::Write`.
pub struct IoTransmit<W>(pub W);

impl<W: embedded_io::Write> Transmit for IoTransmit<W> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
        self.0.write_all(bytes).map_err(|_| TxError)?;
        self.0.flush().map_err(|_| TxError)
    }
}

/// A growable in-memory sink for tests and for hosts that collect responses.
#[cfg(test)]
impl Transmit for std::vec::Vec<u8> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), TxError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// The response stream: a buffer that is sent when full.
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    tx: &'a mut dyn Transmit,
    /// Bytes handed to `tx` since the last [`Out::mark`].
    sent_since_mark: bool,
    mark: usize,
    failed: bool,
}

impl<'a> Out<'a> {
    /// A stream over `buf` (must not be empty) that sends to `tx`.
    pub fn new(buf: &'a mut [u8], tx: &'a mut dyn Transmit) -> Self {
        Out {
            buf,
            len: 0,
            tx,
            sent_since_mark: false,
            mark: 0,
            failed: false,
        }
    }

    /// Whether the sink has failed.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Note the start of a response, so that it can be taken back while it is still buffered.
    pub fn mark(&mut self) {
        self.mark = self.len;
        self.sent_since_mark = false;
    }

    /// Take back everything written since [`Out::mark`], if none of it was sent yet.
    pub fn rollback(&mut self) -> bool {
        if self.sent_since_mark {
            return false;
        }
        self.len = self.mark;
        true
    }

    /// Send the responses completed before [`Out::mark`], if the current one has not started
    /// writing: called before a backend runs, so earlier answers do not wait for it.
    pub fn flush_completed(&mut self) {
        if self.len == self.mark && !self.failed {
            self.flush();
            self.sent_since_mark = false;
        }
    }

    /// Send whatever is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 && !self.failed {
            let r = match self.buf.get(..self.len) {
                Some(b) => self.tx.send(b),
                None => Err(TxError),
            };
            if r.is_err() {
                self.failed = true;
            }
            self.sent_since_mark = true;
        }
        self.len = 0;
        self.mark = 0;
    }

    /// Raw bytes, unescaped.
    pub fn raw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let room = self.buf.len() - self.len;
            let n = room.min(bytes.len());
            let (head, tail) = bytes.split_at(n);
            if let Some(dst) = self.buf.get_mut(self.len..self.len + n) {
                dst.copy_from_slice(head);
            }
            self.len += n;
            bytes = tail;
            if self.buf.is_empty() {
                // A zero-sized buffer: send straight through.
                if !self.failed && self.tx.send(head).is_err() {
                    self.failed = true;
                }
                self.sent_since_mark = true;
            }
        }
    }

    /// Bytes free at the end of the buffer.
    fn spare_len(&self) -> usize {
        self.buf.len().saturating_sub(self.len)
    }

    /// The buffer's size.
    fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Let `f` write into the free end of the buffer; it returns how many bytes it wrote.
    fn fill_spare(&mut self, f: impl FnOnce(&mut [u8]) -> usize) {
        if let Some(dst) = self.buf.get_mut(self.len..) {
            let n = f(dst);
            self.len += n.min(dst.len());
        }
    }

    fn byte(&mut self, b: u8) {
        self.raw(&[b]);
    }

    /// A JSON string from UTF-8 text.
    pub fn str(&mut self, s: &str) {
        self.string(s.as_bytes());
    }

    /// A JSON string from bytes that should be UTF-8; invalid sequences become `\uFFFD`, as
    /// upstream's writer does.
    pub fn string(&mut self, s: &[u8]) {
        self.byte(b'"');
        self.string_body(s);
        self.byte(b'"');
    }

    /// The escaped body of a JSON string, without the quotes.
    pub fn string_body(&mut self, s: &[u8]) {
        let mut rest = s;
        while !rest.is_empty() {
            // Copy the longest run that needs no escaping in one go.
            let plain = rest
                .iter()
                .position(|&b| !(0x20..0x7F).contains(&b) || b == b'"' || b == b'\\')
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(plain);
            self.raw(run);
            rest = tail;
            let Some(&b) = rest.first() else { break };
            let (cp, used) = match b {
                b'"' | b'\\' => (b as i32, 1),
                _ if b < 0x80 => (b as i32, 1),
                _ => mod_utf8_codepoint(rest),
            };
            rest = rest.get(used..).unwrap_or(&[]);
            self.escaped_codepoint(cp);
        }
    }

    fn escaped_codepoint(&mut self, cp: i32) {
        match cp {
            0x22 => self.raw(b"\\\""),
            0x5C => self.raw(b"\\\\"),
            0x08 => self.raw(b"\\b"),
            0x0C => self.raw(b"\\f"),
            0x0A => self.raw(b"\\n"),
            0x0D => self.raw(b"\\r"),
            0x09 => self.raw(b"\\t"),
            _ => {
                let cp = if cp < 0 { 0xFFFD } else { cp as u32 };
                if cp > 0xFFFF {
                    let v = cp - 0x10000;
                    self.u_escape(0xD800 + (v >> 10));
                    self.u_escape(0xDC00 + (v & 0x3FF));
                } else if !(0x20..0x7F).contains(&cp) {
                    self.u_escape(cp);
                } else {
                    self.byte(cp as u8);
                }
            }
        }
    }

    fn u_escape(&mut self, v: u32) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let d = |shift: u32| {
            HEX.get(((v >> shift) & 0xF) as usize)
                .copied()
                .unwrap_or(b'0')
        };
        self.raw(&[b'\\', b'u', d(12), d(8), d(4), d(0)]);
    }

    /// A signed integer (QAPI `int`).
    pub fn int(&mut self, v: i64) {
        if v < 0 {
            self.byte(b'-');
        }
        self.uint(v.unsigned_abs());
    }

    /// An unsigned integer (QAPI `uint64`).
    pub fn uint(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            if let Some(slot) = tmp.get_mut(i) {
                *slot = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.raw(tmp.get(i..).unwrap_or(&[]));
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) {
        self.raw(if v { b"true" } else { b"false" });
    }

    /// A QAPI `number`, printed as `printf("%.17g")` does (1.0 → `1`, 0.08 →
    /// `0.080000000000000002`).
    pub fn number(&mut self, v: f64) {
        let mut s = [0u8; 32];
        let n = crate::decimal::format_g17(v, &mut s);
        self.raw(s.get(..n).unwrap_or(&[]));
    }

    /// A JSON object written by `f`.
    pub fn object(&mut self, f: impl FnOnce(&mut ObjectWriter<'_, 'a>)) {
        self.byte(b'{');
        let mut w = ObjectWriter {
            out: self,
            first: true,
        };
        f(&mut w);
        self.byte(b'}');
    }

    /// A JSON array written by `f`.
    pub fn list(&mut self, f: impl FnOnce(&mut ListWriter<'_, 'a>)) {
        self.byte(b'[');
        let mut w = ListWriter {
            out: self,
            first: true,
        };
        f(&mut w);
        self.byte(b']');
    }

    /// A JSON string holding the standard, padded base64 of the bytes pushed through the
    /// [`Base64Writer`] given to `f`.
    pub fn base64(&mut self, f: impl FnOnce(&mut Base64Writer<'_, 'a>)) {
        self.byte(b'"');
        let mut w = Base64Writer {
            out: self,
            carry: [0; 2],
            carried: 0,
        };
        f(&mut w);
        w.finish();
        self.byte(b'"');
    }

    /// A value of any [`ToJson`] type.
    pub fn value<T: ToJson + ?Sized>(&mut self, v: &T) {
        v.write_json(self);
    }
}

/// Members of an object being written.
pub struct ObjectWriter<'o, 'a> {
    out: &'o mut Out<'a>,
    first: bool,
}

impl<'a> ObjectWriter<'_, 'a> {
    /// Write a member name and return the stream for its value.
    pub fn key(&mut self, name: &str) -> &mut Out<'a> {
        if !self.first {
            self.out.raw(b", ");
        }
        self.first = false;
        self.out.str(name);
        self.out.raw(b": ");
        self.out
    }

    /// A member.
    pub fn member<T: ToJson + ?Sized>(&mut self, name: &str, v: &T) -> &mut Self {
        self.key(name).value(v);
        self
    }

    /// A member that QAPI declares optional: omitted when `None`.
    pub fn optional<T: ToJson>(&mut self, name: &str, v: &Option<T>) -> &mut Self {
        if let Some(v) = v {
            self.member(name, v);
        }
        self
    }
}

/// Elements of an array being written.
pub struct ListWriter<'o, 'a> {
    out: &'o mut Out<'a>,
    first: bool,
}

impl<'a> ListWriter<'_, 'a> {
    /// Start the next element and return the stream for it.
    #[allow(clippy::should_implement_trait)] // not an iterator: it writes a separator
    pub fn next(&mut self) -> &mut Out<'a> {
        if !self.first {
            self.out.raw(b", ");
        }
        self.first = false;
        self.out
    }

    /// An element.
    pub fn item<T: ToJson + ?Sized>(&mut self, v: &T) -> &mut Self {
        self.next().value(v);
        self
    }
}

/// Bytes being base64-encoded into a JSON string.
pub struct Base64Writer<'o, 'a> {
    out: &'o mut Out<'a>,
    carry: [u8; 2],
    carried: usize,
}

impl Base64Writer<'_, '_> {
    /// Encode `data` (any length; groups of three are carried across calls).
    pub fn push(&mut self, mut data: &[u8]) {
        let mut group = [0u8; 3];
        while self.carried > 0 && self.carried < 3 {
            let Some((&b, rest)) = data.split_first() else {
                return;
            };
            if let Some(slot) = self.carry.get_mut(self.carried) {
                *slot = b;
                self.carried += 1;
            } else {
                group[0] = self.carry[0];
                group[1] = self.carry[1];
                group[2] = b;
                self.encode_whole(&group);
                self.carried = 0;
            }
            data = rest;
        }
        let whole = data.len() / 3 * 3;
        let (mut body, tail) = data.split_at(whole);
        while !body.is_empty() {
            // Straight into the transmit buffer: no copy, and as many groups as fit at once.
            let piece_len = self.out.spare_len() / 4 * 3;
            if piece_len == 0 {
                if self.out.capacity() < 4 {
                    // A buffer too small for one group: through the stack.
                    for piece in body.chunks(3 * 256) {
                        self.encode_whole(piece);
                    }
                    break;
                }
                self.out.flush();
                continue;
            }
            let (piece, rest) = body.split_at(piece_len.min(body.len()));
            self.out.fill_spare(|dst| encode_into(piece, dst));
            body = rest;
        }
        for (i, &b) in tail.iter().enumerate() {
            if let Some(slot) = self.carry.get_mut(i) {
                *slot = b;
            }
        }
        self.carried = tail.len();
    }

    fn encode_whole(&mut self, piece: &[u8]) {
        let mut enc = [0u8; 4 * 256];
        let n = encode_into(
            piece,
            enc.get_mut(..piece.len().div_ceil(3) * 4)
                .unwrap_or(&mut []),
        );
        self.out.raw(enc.get(..n).unwrap_or(&[]));
    }

    fn finish(&mut self) {
        if self.carried > 0 {
            let tail = [self.carry[0], self.carry[1]];
            let n = self.carried.min(2);
            self.carried = 0;
            self.encode_whole(tail.get(..n).unwrap_or(&[]));
        }
    }
}

/// Standard padded base64 of `src` into `dst`, which holds at least
/// `src.len().div_ceil(3) * 4` bytes; returns the bytes written (0 if `dst` is too short).
///
/// With the `simd` feature (std platforms) this is `base64-simd`, which picks SSSE3, AVX2 or
/// NEON at run time and encodes several times faster than the scalar `base64` engine: file
/// reads spend most of the agent's own CPU here. Without it (the bare-metal image, where
/// size rules) it is the `base64` crate.
fn encode_into(src: &[u8], dst: &mut [u8]) -> usize {
    if dst.len() < src.len().div_ceil(3) * 4 {
        return 0;
    }
    #[cfg(feature = "simd")]
    {
        base64_simd::STANDARD
            .encode(src, base64_simd::Out::from_slice(dst))
            .len()
    }
    #[cfg(not(feature = "simd"))]
    {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode_slice(src, dst)
            .unwrap_or(0)
    }
}

/// A value with a JSON form.
pub trait ToJson {
    /// Write `self` as JSON.
    fn write_json(&self, out: &mut Out<'_>);
}

impl ToJson for i64 {
    fn write_json(&self, out: &mut Out<'_>) {
        out.int(*self);
    }
}
impl ToJson for u64 {
    fn write_json(&self, out: &mut Out<'_>) {
        out.uint(*self);
    }
}
impl ToJson for bool {
    fn write_json(&self, out: &mut Out<'_>) {
        out.bool(*self);
    }
}
impl ToJson for f64 {
    fn write_json(&self, out: &mut Out<'_>) {
        out.number(*self);
    }
}
impl ToJson for str {
    fn write_json(&self, out: &mut Out<'_>) {
        out.str(self);
    }
}
impl<T: ToJson + ?Sized> ToJson for &T {
    fn write_json(&self, out: &mut Out<'_>) {
        (**self).write_json(out);
    }
}
impl<T: ToJson> ToJson for [T] {
    fn write_json(&self, out: &mut Out<'_>) {
        out.list(|l| {
            for v in self {
                l.item(v);
            }
        });
    }
}

/// One code point decoded as QEMU's `mod_utf8_codepoint` does: -1 for an invalid sequence,
/// with the number of bytes it consumed. `\xC0\x80` is U+0000.
pub fn mod_utf8_codepoint(s: &[u8]) -> (i32, usize) {
    const MIN_CP: [i32; 5] = [0x80, 0x800, 0x10000, 0x20_0000, 0x400_0000];
    let Some(&first) = s.first() else {
        return (-1, 0);
    };
    let byte = first as u32;
    if byte < 0x80 {
        return (byte as i32, 1);
    }
    if byte >= 0xFE || byte & 0x40 == 0 {
        return (-1, 1);
    }
    let mut len = 0usize;
    let mut mask = 0x80u32;
    while byte & mask != 0 {
        len += 1;
        mask >>= 1;
    }
    let mut cp = (byte & (mask - 1)) as i32;
    let mut used = 1;
    for i in 1..len {
        let b = s.get(i).copied().unwrap_or(0) as i32;
        if b & 0xC0 != 0x80 {
            return (-1, used);
        }
        used += 1;
        cp = (cp << 6) | (b & 0x3F);
    }
    let overlong =
        MIN_CP.get(len.wrapping_sub(2)).is_some_and(|&m| cp < m) && !(len == 2 && cp == 0);
    if cp > 0x10FFFF
        || (0xFDD0..=0xFDEF).contains(&cp)
        || cp & 0xFFFE == 0xFFFE
        || (0xD800..=0xDFFF).contains(&cp)
        || overlong
    {
        return (-1, used);
    }
    (cp, used)
}

/// A list element type, named by its `'static` form: `Emitter<'_, GuestUser<'static>>` takes
/// `GuestUser<'x>` for any `'x`, so a backend can emit elements that borrow its local data.
pub trait Element {
    /// The element type with borrowed data of lifetime `'x`.
    type Of<'x>: ToJson;
}

impl Element for &'static str {
    type Of<'x> = &'x str;
}

/// Hands the elements of a list result to the response as they are produced.
pub struct Emitter<'e, T: ?Sized> {
    sink: &'e mut dyn ItemSink,
    count: usize,
    _t: PhantomData<fn(&T)>,
}

/// Where an [`Emitter`] puts elements; hides the writer's lifetimes. Implemented by
/// [`ListWriter`], so a platform's tests can render what a backend emits.
pub trait ItemSink {
    /// Write one element.
    fn item(&mut self, v: &dyn ToJson);
}

impl ItemSink for ListWriter<'_, '_> {
    fn item(&mut self, v: &dyn ToJson) {
        self.next().value(v);
    }
}

impl<'e, T: Element + ?Sized> Emitter<'e, T> {
    /// An emitter writing into `sink`.
    pub fn new(sink: &'e mut dyn ItemSink) -> Self {
        Emitter {
            sink,
            count: 0,
            _t: PhantomData,
        }
    }

    /// Write one element.
    pub fn emit(&mut self, item: &T::Of<'_>) {
        self.sink.item(&item);
        self.count += 1;
    }

    /// How many elements were written.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// Writes one object member, omitting an absent optional one. Used by [`json_struct!`](crate::json_struct).
pub trait Member {
    /// Write `self` as the member `name`, unless it is an absent option.
    fn write_member(&self, w: &mut ObjectWriter<'_, '_>, name: &str);
}

impl<T: ToJson> Member for T {
    fn write_member(&self, w: &mut ObjectWriter<'_, '_>, name: &str) {
        w.member(name, self);
    }
}

impl<T: ToJson> Member for Option<T> {
    fn write_member(&self, w: &mut ObjectWriter<'_, '_>, name: &str) {
        w.optional(name, self);
    }
}

/// A return struct: Rust fields with their QAPI member names, written in declaration order.
/// `Option` fields are QAPI optional members and are omitted when `None`.
#[macro_export]
macro_rules! json_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(<$lt:lifetime>)? {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $json:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name $(<$lt>)? {
            $( $(#[$fmeta])* #[doc = concat!("`", $json, "`")] pub $field: $ty, )*
        }

        impl $(<$lt>)? $crate::out::ToJson for $name $(<$lt>)? {
            fn write_json(&self, out: &mut $crate::out::Out<'_>) {
                out.object(|_w| {
                    $( $crate::out::Member::write_member(&self.$field, _w, $json); )*
                });
            }
        }

        $crate::json_struct!(@element $name $(<$lt>)?);
    };
    (@element $name:ident <$lt:lifetime>) => {
        impl $crate::out::Element for $name<'static> {
            type Of<'x> = $name<'x>;
        }
    };
    (@element $name:ident) => {
        impl $crate::out::Element for $name {
            type Of<'x> = $name;
        }
    };
}

/// A QAPI enum: Rust variants with their wire names, written as strings.
#[macro_export]
macro_rules! json_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $json:literal ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* #[doc = concat!("`", $json, "`")] $variant, )*
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// Every wire name, in schema order (argument checks take them from here).
            pub const NAMES: &'static [&'static str] = &[$($json),*];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $json,)* }
            }

            /// The value with this wire name.
            pub fn from_name(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl $crate::out::ToJson for $name {
            fn write_json(&self, out: &mut $crate::out::Out<'_>) {
                out.str(self.as_str());
            }
        }
    };
}

/// A value written by a closure: for results a backend prefers to stream itself.
pub struct WriteWith<F: Fn(&mut Out<'_>)>(pub F);

impl<F: Fn(&mut Out<'_>)> ToJson for WriteWith<F> {
    fn write_json(&self, out: &mut Out<'_>) {
        (self.0)(out);
    }
}

/// Bytes written as a base64 JSON string (standard alphabet, padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base64<'a>(pub &'a [u8]);

impl ToJson for Base64<'_> {
    fn write_json(&self, out: &mut Out<'_>) {
        out.base64(|b| b.push(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut Out<'_>)) -> String {
        let mut sink = Vec::new();
        let mut buf = [0u8; 7]; // tiny, to exercise flushing
        let mut out = Out::new(&mut buf, &mut sink);
        f(&mut out);
        out.flush();
        String::from_utf8(sink).unwrap()
    }

    #[test]
    fn g17_matches_printf() {
        for (v, s) in [
            (1.0, "1"),
            (0.08, "0.080000000000000002"),
            (0.5, "0.5"),
            (0.0, "0"),
            (-2.25, "-2.25"),
            (1e17, "1e+17"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789.125, "123456789.125"),
            (1700000000.25, "1700000000.25"),
        ] {
            assert_eq!(render(|o| o.number(v)), s, "{v}");
        }
    }

    #[test]
    fn strings_are_ascii_like_upstream() {
        assert_eq!(
            render(|o| o.str("a\"b\\c\n\u{1}/")),
            r#""a\"b\\c\n\u0001/""#
        );
        assert_eq!(
            render(|o| o.str("é😀\u{7f}")),
            r#""\u00E9\uD83D\uDE00\u007F""#
        );
        assert_eq!(render(|o| o.string(b"x\xffy")), r#""x\uFFFDy""#);
        assert_eq!(render(|o| o.string(b"\xc0\x80")), r#""\u0000""#);
    }

    #[test]
    fn objects_lists_and_base64() {
        let s = render(|o| {
            o.object(|w| {
                w.member("a", &1i64).member("b", &[true, false][..]);
                w.optional("c", &None::<u64>);
                w.key("d").base64(|b| {
                    b.push(b"Hel");
                    b.push(b"l");
                    b.push(b"o");
                });
            })
        });
        assert_eq!(s, r#"{"a": 1, "b": [true, false], "d": "SGVsbG8="}"#);
    }

    #[test]
    fn base64_matches_the_reference_engine_at_every_split() {
        use base64::Engine as _;
        let data: Vec<u8> = (0..700u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0usize, 1, 2, 3, 4, 5, 47, 48, 49, 191, 700] {
            let mut want = vec![0u8; len.div_ceil(3) * 4];
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(&data[..len], &mut want)
                .unwrap();
            assert_eq!(n, want.len());
            for cap in [1, 2, 3, 4, 5, 7, 64, 1024] {
                for step in [1, 2, 5, 64, 700] {
                    let mut sink = Vec::new();
                    let mut buf = vec![0u8; cap];
                    let mut out = Out::new(&mut buf, &mut sink);
                    out.base64(|b| {
                        for piece in data[..len].chunks(step) {
                            b.push(piece);
                        }
                    });
                    out.flush();
                    let got = &sink[1..sink.len() - 1];
                    assert_eq!(got, &want[..], "len {len} buffer {cap} pieces of {step}");
                }
            }
        }
    }

    #[test]
    fn integers() {
        assert_eq!(render(|o| o.int(i64::MIN)), "-9223372036854775808");
        assert_eq!(render(|o| o.uint(u64::MAX)), "18446744073709551615");
        assert_eq!(render(|o| o.int(0)), "0");
    }
}
