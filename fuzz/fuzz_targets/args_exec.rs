//! The argument decoders of `guest-exec` and `guest-exec-status`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::exec::{ExecRequest, ExecStatusArgs};
use agent_core::json::tape::Kind;

mod common;
#[allow(unused_imports)]
use common::{Decoded, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>) -> Decoded {
    match cmd {
        Command::GuestExec => decoded::<ExecRequest<'_>>(v, |a| {
            a.arg.as_ref().is_none_or(|l| l.iter().count() == l.len())
                && a.env.as_ref().is_none_or(|l| l.iter().count() == l.len())
                && a.input_data.is_none_or(|d| d.0.kind() == Kind::String)
        }),
        _ => decoded::<ExecStatusArgs<'_>>(v, |_| true),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Exec, data, typed));
