//! The argument decoders of `guest-file-*`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::files::*;

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestFileOpen => {
            decoded::<FileOpenArgs<'_>>(v, |a| j.str("path", a.path) && j.opt_str("mode", a.mode))
        }
        Command::GuestFileRead => {
            decoded::<FileReadArgs<'_>>(v, |a| j.int("handle", a.handle) && j.opt_int("count", a.count))
        }
        Command::GuestFileWrite => decoded::<FileWriteArgs<'_>>(v, |a| {
            j.int("handle", a.handle) && j.str("buf-b64", a.buf_b64) && j.opt_int("count", a.count)
        }),
        // A whence that decoded is the input's name or number, and maps to a seek mode or to
        // the "invalid whence code" error.
        Command::GuestFileSeek => decoded::<FileSeekArgs<'_>>(v, |a| {
            j.int("handle", a.handle)
                && j.int("offset", a.offset)
                && match a.whence {
                    Whence::Name(s) => a.whence.to_seek().is_ok() && j.str("whence", s.as_str()),
                    Whence::Value(n) => {
                        a.whence.to_seek().is_ok() == (0..=2).contains(&n) && j.int("whence", n)
                    }
                }
        }),
        _ => decoded::<FileHandleArgs<'_>>(v, |a| j.int("handle", a.handle)),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Files, data, typed));
