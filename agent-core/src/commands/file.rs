//! `guest-file-open|close|read|write|seek|flush`.
//!
//! The engine owns upstream's argument rules and texts (the 48 MiB `count` limit, base64
//! checks, `count` against the decoded length, whence codes, the prefixes of I/O errors); a
//! backend only moves bytes. `guest-file-read` is streamed: the engine asks for chunks no
//! larger than its I/O buffer and base64-encodes each into the response.

use super::Result;
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

/// Open files, by handle.
pub trait Files {
    /// Whether `cmd` (one of this family's) works here.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// Whether `handle` is open. The engine checks this first, as upstream does, and answers
    /// "handle '<n>' has not been found".
    fn has_handle(&self, handle: i64) -> bool;

    /// `guest-file-open`: open `path` with an fopen `mode` (already validated by the engine:
    /// r, rb, w, wb, a, ab, r+, rb+, r+b, w+, wb+, w+b, a+, ab+, a+b) and return a new handle.
    /// An [`super::Error::Os`] becomes "failed to open file '<path>' (mode: '<mode>'): <text>".
    fn open(&mut self, path: &str, mode: &str) -> Result<i64>;

    /// `guest-file-close`. An OS error becomes "failed to close handle: <text>".
    fn close(&mut self, handle: i64) -> Result<()>;

    /// Read up to `buf.len()` bytes at the current position; `Ok(0)` at end of file. The engine
    /// calls this repeatedly for one `guest-file-read`. An OS error becomes "failed to read
    /// file: <text>".
    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize>;

    /// Write `data` at the current position (or the end, in append mode) and return how much
    /// was written and whether the file is at end-of-file. An OS error becomes "failed to
    /// write to file: <text>".
    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite>;

    /// `guest-file-seek`. An OS error becomes "failed to seek file: <text>".
    fn seek(&mut self, handle: i64, offset: i64, whence: Seek) -> Result<GuestFileSeek>;

    /// `guest-file-flush`. An OS error becomes "failed to flush file: <text>".
    fn flush(&mut self, handle: i64) -> Result<()>;
}
