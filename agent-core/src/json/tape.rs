//! The parsed form of one request, as it lies in the frame buffer.
//!
//! A tape is a sequence of tags; containers are delimited, not length-prefixed, because the
//! parser writes them as tokens arrive and cannot know their length up front. It is never
//! larger than the request text plus a few bytes per long string (the length is a varint, the
//! quotes are gone, escapes are decoded), so the frame buffer's size is the request size limit.
//!
//! | tag | meaning | followed by |
//! |---|---|---|
//! | `OBJ` | `{` | members: a `STR` key then a value, repeated |
//! | `END_OBJ` | `}` | |
//! | `ARR` | `[` | values |
//! | `END_ARR` | `]` | |
//! | `STR` | string | LEB128 length, then that many bytes of UTF-8 (a `\u0000` is a NUL byte) |
//! | `NUM` | number | LEB128 length, then the number's text as it was received |
//! | `TRUE`, `FALSE`, `NULL` | literals | |

/// Tag: object start.
pub const OBJ: u8 = 1;
/// Tag: object end.
pub const END_OBJ: u8 = 2;
/// Tag: array start.
pub const ARR: u8 = 3;
/// Tag: array end.
pub const END_ARR: u8 = 4;
/// Tag: string.
pub const STR: u8 = 5;
/// Tag: number.
pub const NUM: u8 = 6;
/// Tag: `true`.
pub const TRUE: u8 = 7;
/// Tag: `false`.
pub const FALSE: u8 = 8;
/// Tag: `null`.
pub const NULL: u8 = 9;

/// Read a LEB128 length at `pos`: (value, bytes used).
pub fn read_len(tape: &[u8], pos: usize) -> Option<(usize, usize)> {
    let mut v: usize = 0;
    let mut shift = 0u32;
    let mut i = pos;
    loop {
        let b = *tape.get(i)?;
        i += 1;
        v |= ((b & 0x7F) as usize).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some((v, i - pos));
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
}

/// Append a LEB128 length to `out` at `pos`; returns the bytes written, or `None` if it does
/// not fit.
pub fn write_len(out: &mut [u8], pos: usize, mut v: usize) -> Option<usize> {
    let mut i = pos;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v != 0 {
            b |= 0x80;
        }
        *out.get_mut(i)? = b;
        i += 1;
        if v == 0 {
            return Some(i - pos);
        }
    }
}

/// The kind of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An object.
    Object,
    /// An array.
    Array,
    /// A string.
    String,
    /// A number (integer or not).
    Number,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
}

/// A number as upstream's parser classifies it: int64, else uint64 if non-negative, else a
/// double.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// Fits in int64.
    Int(i64),
    /// Above int64's range.
    Uint(u64),
    /// Has a fraction or exponent, or is out of both integer ranges.
    Float(f64),
}

/// One value on a tape.
#[derive(Clone, Copy)]
pub struct Value<'t> {
    tape: &'t [u8],
    pos: usize,
}

impl core::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Value({:?} at {})", self.kind(), self.pos)
    }
}

impl<'t> Value<'t> {
    /// The value that starts at `pos` on `tape`.
    pub fn at(tape: &'t [u8], pos: usize) -> Self {
        Value { tape, pos }
    }

    /// Its kind (`Null` for a damaged tape).
    pub fn kind(&self) -> Kind {
        match self.tape.get(self.pos) {
            Some(&OBJ) => Kind::Object,
            Some(&ARR) => Kind::Array,
            Some(&STR) => Kind::String,
            Some(&NUM) => Kind::Number,
            Some(&TRUE) | Some(&FALSE) => Kind::Bool,
            _ => Kind::Null,
        }
    }

    /// The bytes of a string or number payload.
    fn payload(&self) -> Option<&'t [u8]> {
        let (len, used) = read_len(self.tape, self.pos + 1)?;
        let start = self.pos + 1 + used;
        self.tape.get(start..start.checked_add(len)?)
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&'t str> {
        if self.tape.get(self.pos) != Some(&STR) {
            return None;
        }
        core::str::from_utf8(self.payload()?).ok()
    }

    /// The raw bytes of a string (UTF-8, possibly with NUL bytes), if this is one.
    pub fn str_bytes(&self) -> Option<&'t [u8]> {
        if self.tape.get(self.pos) != Some(&STR) {
            return None;
        }
        self.payload()
    }

    /// Where a string's bytes lie on the tape: `(start, len)`.
    pub fn str_range(&self) -> Option<(usize, usize)> {
        if self.tape.get(self.pos) != Some(&STR) {
            return None;
        }
        let (len, used) = read_len(self.tape, self.pos + 1)?;
        Some((self.pos + 1 + used, len))
    }

    /// The position of this value on its tape.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The number's text, if this is one.
    pub fn number_text(&self) -> Option<&'t str> {
        if self.tape.get(self.pos) != Some(&NUM) {
            return None;
        }
        core::str::from_utf8(self.payload()?).ok()
    }

    /// The number, classified as upstream's parser does.
    pub fn as_number(&self) -> Option<Number> {
        let text = self.number_text()?;
        let is_int = !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
        if is_int {
            if let Ok(v) = text.parse::<i64>() {
                return Some(Number::Int(v));
            }
            if !text.starts_with('-')
                && let Ok(v) = text.parse::<u64>()
            {
                return Some(Number::Uint(v));
            }
        }
        crate::decimal::parse(text.as_bytes()).map(Number::Float)
    }

    /// An int64 (QAPI `int`): only integers that fit.
    pub fn as_i64(&self) -> Option<i64> {
        match self.as_number()? {
            Number::Int(v) => Some(v),
            _ => None,
        }
    }

    /// A uint64 (QAPI `uint64`): non-negative integers, and negative int64 values wrapped, as
    /// upstream accepts them.
    pub fn as_u64(&self) -> Option<u64> {
        match self.as_number()? {
            Number::Int(v) => Some(v as u64),
            Number::Uint(v) => Some(v),
            Number::Float(_) => None,
        }
    }

    /// A QAPI `number`: any number, as a double.
    pub fn as_f64(&self) -> Option<f64> {
        match self.as_number()? {
            Number::Int(v) => Some(v as f64),
            Number::Uint(v) => Some(v as f64),
            Number::Float(v) => Some(v),
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.tape.get(self.pos) {
            Some(&TRUE) => Some(true),
            Some(&FALSE) => Some(false),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        self.tape.get(self.pos) == Some(&NULL)
    }

    /// The position just past this value.
    pub fn end(&self) -> Option<usize> {
        let mut depth = 0usize;
        let mut pos = self.pos;
        loop {
            let tag = *self.tape.get(pos)?;
            pos = match tag {
                OBJ | ARR => {
                    depth += 1;
                    pos + 1
                }
                END_OBJ | END_ARR => {
                    depth = depth.checked_sub(1)?;
                    pos + 1
                }
                STR | NUM => {
                    let (len, used) = read_len(self.tape, pos + 1)?;
                    pos + 1 + used + len
                }
                TRUE | FALSE | NULL => pos + 1,
                _ => return None,
            };
            if depth == 0 {
                return Some(pos);
            }
        }
    }

    /// The members of an object, in request order.
    pub fn members(&self) -> Members<'t> {
        let ok = self.tape.get(self.pos) == Some(&OBJ);
        Members {
            tape: self.tape,
            pos: if ok { Some(self.pos + 1) } else { None },
        }
    }

    /// The member `name` of an object (the first, if a damaged tape repeats it).
    pub fn member(&self, name: &str) -> Option<Value<'t>> {
        self.members().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// This value as an array.
    pub fn as_array(&self) -> Option<Array<'t>> {
        (self.tape.get(self.pos) == Some(&ARR)).then_some(Array { value: *self })
    }
}

/// Iterator over an object's members.
pub struct Members<'t> {
    tape: &'t [u8],
    pos: Option<usize>,
}

impl<'t> Iterator for Members<'t> {
    type Item = (&'t str, Value<'t>);

    fn next(&mut self) -> Option<Self::Item> {
        let pos = self.pos?;
        let key = Value::at(self.tape, pos);
        let (k, vpos) = match key.as_str().zip(key.end()) {
            Some(kv) => kv,
            None => {
                self.pos = None;
                return None;
            }
        };
        let value = Value::at(self.tape, vpos);
        self.pos = value.end();
        Some((k, value))
    }
}

/// An array on a tape.
#[derive(Clone, Copy, Debug)]
pub struct Array<'t> {
    value: Value<'t>,
}

impl<'t> Array<'t> {
    /// The elements.
    pub fn iter(&self) -> Elements<'t> {
        Elements {
            tape: self.value.tape,
            pos: Some(self.value.pos + 1),
        }
    }

    /// The number of elements (counted by walking the tape).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// Iterator over an array's elements.
pub struct Elements<'t> {
    tape: &'t [u8],
    pos: Option<usize>,
}

impl<'t> Iterator for Elements<'t> {
    type Item = Value<'t>;

    fn next(&mut self) -> Option<Self::Item> {
        let pos = self.pos?;
        if matches!(self.tape.get(pos), Some(&END_ARR) | None) {
            self.pos = None;
            return None;
        }
        let v = Value::at(self.tape, pos);
        self.pos = v.end();
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_a_hand_written_tape() {
        // {"a": [1, "xy"], "b": true}
        let t = [
            OBJ, STR, 1, b'a', ARR, NUM, 1, b'1', STR, 2, b'x', b'y', END_ARR, STR, 1, b'b', TRUE,
            END_OBJ,
        ];
        let v = Value::at(&t, 0);
        assert_eq!(v.end(), Some(t.len()));
        let a = v.member("a").unwrap().as_array().unwrap();
        assert_eq!(a.len(), 2);
        let items: Vec<_> = a.iter().collect();
        assert_eq!(items[0].as_i64(), Some(1));
        assert_eq!(items[1].as_str(), Some("xy"));
        assert_eq!(v.member("b").unwrap().as_bool(), Some(true));
        assert!(v.member("c").is_none());
    }

    #[test]
    fn numbers_classify_like_upstream() {
        let num = |s: &str| {
            let mut t = vec![NUM, s.len() as u8];
            t.extend_from_slice(s.as_bytes());
            Value::at(&t, 0).as_number()
        };
        assert_eq!(num("-5"), Some(Number::Int(-5)));
        assert_eq!(num("18446744073709551615"), Some(Number::Uint(u64::MAX)));
        assert_eq!(num("1.5"), Some(Number::Float(1.5)));
        assert_eq!(
            num("-9223372036854775809"),
            Some(Number::Float(-9223372036854775809.0))
        );
    }

    #[test]
    fn lengths_round_trip() {
        for v in [0usize, 1, 127, 128, 300, 1 << 20, 64 << 20] {
            let mut b = [0u8; 10];
            let n = write_len(&mut b, 0, v).unwrap();
            assert_eq!(read_len(&b, 0), Some((v, n)));
        }
    }
}
