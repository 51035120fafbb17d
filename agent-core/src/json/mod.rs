//! Framing and parsing the request stream exactly as upstream's `json-lexer.c`,
//! `json-streamer.c` and `json-parser.c` do, in one pass, into a caller-owned buffer.
//!
//! Requests are a stream of JSON values with no delimiter, so framing is parsing: the lexer
//! tokenises byte by byte, the streamer counts `{}`/`[]` to find the end of a value, and the
//! parser checks the grammar as tokens arrive. A complete value is left in the frame buffer as
//! a [`tape`]: strings already unescaped and UTF-8-checked, so dispatch borrows `&str` from it
//! with no scratch space and no copying.

pub mod framer;
mod lexer;
mod nest;
pub mod tape;

pub use framer::{Event, Framer, ParseError};
pub use nest::NestSlot;
pub use tape::{Array, Value};
