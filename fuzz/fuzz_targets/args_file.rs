//! The argument decoders of `guest-file-*`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::file::*;

mod common;
#[allow(unused_imports)]
use common::{Decoded, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>) -> Decoded {
    match cmd {
        Command::GuestFileOpen => decoded::<FileOpenArgs<'_>>(v, |_| true),
        Command::GuestFileRead => decoded::<FileReadArgs<'_>>(v, |_| true),
        Command::GuestFileWrite => decoded::<FileWriteArgs<'_>>(v, |_| true),
        // A whence that decoded maps to a seek mode or to the "invalid whence code" error.
        Command::GuestFileSeek => decoded::<FileSeekArgs<'_>>(v, |a| match a.whence {
            Whence::Name(_) => a.whence.to_seek().is_ok(),
            Whence::Value(n) => a.whence.to_seek().is_ok() == (0..=2).contains(&n),
        }),
        _ => decoded::<FileHandleArgs<'_>>(v, |_| true),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Files, data, typed));
