//! The argument decoders of `guest-shutdown` and `guest-suspend-*`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::power::ShutdownArgs;

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestShutdown => decoded::<ShutdownArgs<'_>>(v, |a| j.opt_str("mode", a.mode)),
        _ => no_args(),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Power, data, typed));
