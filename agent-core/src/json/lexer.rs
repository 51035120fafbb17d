//! The byte-level lexer, a transcription of upstream's `json-lexer.c` state table.
//!
//! Upstream drives a 256-column table; the same transitions are written here as a `match`, so
//! that each of upstream's quirks is visible: single-quoted strings, any `[a-z]+` as a keyword,
//! number and keyword states that end their token on any other byte (which is then lexed again,
//! so `tru\xC3` is the keyword `tru` followed by a stray `\xC3`, as qemu-ga 7.2 answers live), and
//! the recovery state that skips everything up to a structural or control byte and then re-lexes
//! that byte from the start state.

/// Lexer states (upstream's `IN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lex {
    /// Between tokens.
    Start,
    /// After a lexical error, until a structural or control byte.
    Recovery,
    /// In a `"` string.
    Dq,
    /// After a `\` in a `"` string.
    DqEscape,
    /// In a `'` string.
    Sq,
    /// After a `\` in a `'` string.
    SqEscape,
    /// After a leading `0` (or `-0`).
    Zero,
    /// In the digits of an exponent.
    ExpDigits,
    /// After an exponent's sign.
    ExpSign,
    /// After `e` or `E`.
    ExpE,
    /// In the digits after `.`.
    MantissaDigits,
    /// After `.`.
    Mantissa,
    /// In the digits of an integer.
    Digits,
    /// After `-`.
    Sign,
    /// In `[a-z]+`.
    Keyword,
}

/// Token types handed to the streamer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

/// What one byte does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The byte is part of the current token; continue in this state.
    Go(Lex),
    /// Whitespace between tokens: consumed and dropped.
    Skip,
    /// The byte is a one-byte token.
    Punct(Tok),
    /// The byte is a closing quote: the string token is complete (byte included).
    StringEnd,
    /// The current token ends before this byte, which is lexed again from the start state.
    Emit(Tok),
    /// Lexical error; the byte is appended to the token that is reported.
    Error,
    /// In recovery: the byte is dropped.
    RecoverSkip,
    /// Recovery ends before this byte, which is lexed again from the start state.
    RecoverEnd,
}

/// One transition of upstream's table.
#[inline]
pub(crate) fn step(state: Lex, b: u8) -> Step {
    use Lex::*;
    // upstream's `TERMINAL(x)`: every byte without a transition ends the token (lookahead).
    let terminal = Step::Emit;
    match state {
        Start => match b {
            b'"' => Step::Go(Dq),
            b'\'' => Step::Go(Sq),
            b'0' => Step::Go(Zero),
            b'1'..=b'9' => Step::Go(Digits),
            b'-' => Step::Go(Sign),
            b'{' => Step::Punct(Tok::LCurly),
            b'}' => Step::Punct(Tok::RCurly),
            b'[' => Step::Punct(Tok::LSquare),
            b']' => Step::Punct(Tok::RSquare),
            b',' => Step::Punct(Tok::Comma),
            b':' => Step::Punct(Tok::Colon),
            b'a'..=b'z' => Step::Go(Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Step::Skip,
            _ => Step::Error,
        },
        Recovery => match b {
            b'\t' => Step::RecoverSkip,
            0..=0x1F | 0xFE | 0xFF | b'[' | b']' | b'{' | b'}' | b':' | b',' => Step::RecoverEnd,
            _ => Step::RecoverSkip,
        },
        Dq => match b {
            b'\\' => Step::Go(DqEscape),
            b'"' => Step::StringEnd,
            0x20..=0xFD => Step::Go(Dq),
            _ => Step::Error,
        },
        Sq => match b {
            b'\\' => Step::Go(SqEscape),
            b'\'' => Step::StringEnd,
            0x20..=0xFD => Step::Go(Sq),
            _ => Step::Error,
        },
        DqEscape => match b {
            0x20..=0xFD => Step::Go(Dq),
            _ => Step::Error,
        },
        SqEscape => match b {
            0x20..=0xFD => Step::Go(Sq),
            _ => Step::Error,
        },
        Zero => match b {
            b'0'..=b'9' => Step::Error,
            b'.' => Step::Go(Mantissa),
            _ => terminal(Tok::Integer),
        },
        ExpDigits => match b {
            b'0'..=b'9' => Step::Go(ExpDigits),
            _ => terminal(Tok::Float),
        },
        ExpSign => match b {
            b'0'..=b'9' => Step::Go(ExpDigits),
            _ => Step::Error,
        },
        ExpE => match b {
            b'-' | b'+' => Step::Go(ExpSign),
            b'0'..=b'9' => Step::Go(ExpDigits),
            _ => Step::Error,
        },
        MantissaDigits => match b {
            b'0'..=b'9' => Step::Go(MantissaDigits),
            b'e' | b'E' => Step::Go(ExpE),
            _ => terminal(Tok::Float),
        },
        Mantissa => match b {
            b'0'..=b'9' => Step::Go(MantissaDigits),
            _ => Step::Error,
        },
        Digits => match b {
            b'0'..=b'9' => Step::Go(Digits),
            b'e' | b'E' => Step::Go(ExpE),
            b'.' => Step::Go(Mantissa),
            _ => terminal(Tok::Integer),
        },
        Sign => match b {
            b'0' => Step::Go(Zero),
            b'1'..=b'9' => Step::Go(Digits),
            _ => Step::Error,
        },
        Keyword => match b {
            b'a'..=b'z' => Step::Go(Keyword),
            _ => terminal(Tok::Keyword),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_quirks() {
        assert_eq!(
            step(Lex::Digits, 0x80),
            Step::Emit(Tok::Integer),
            "TERMINAL covers every byte"
        );
        assert_eq!(step(Lex::Keyword, 0xC3), Step::Emit(Tok::Keyword));
        assert_eq!(step(Lex::Digits, b'x'), Step::Emit(Tok::Integer));
        assert_eq!(step(Lex::Zero, b'1'), Step::Error);
        assert_eq!(step(Lex::Start, b'A'), Step::Error);
        assert_eq!(step(Lex::Recovery, b'\n'), Step::RecoverEnd);
        assert_eq!(step(Lex::Recovery, b'\t'), Step::RecoverSkip);
        assert_eq!(step(Lex::Recovery, 0xFF), Step::RecoverEnd);
        assert_eq!(step(Lex::Dq, 0xFE), Step::Error);
        assert_eq!(step(Lex::Dq, 0xFD), Step::Go(Lex::Dq));
        assert_eq!(step(Lex::SqEscape, b'\''), Step::Go(Lex::Sq));
    }
}
