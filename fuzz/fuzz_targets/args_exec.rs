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
use common::{Decoded, Input, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestExec => decoded::<ExecRequest<'_>>(v, |a| {
            a.arg.as_ref().is_none_or(|l| l.iter().count() == l.len())
                && a.env.as_ref().is_none_or(|l| l.iter().count() == l.len())
                && a.input_data.is_none_or(|d| d.0.kind() == Kind::String)
                && j.str("path", a.path)
                && j.opt_strs("arg", a.arg.as_ref().map(|l| l.iter()))
                && j.opt_strs("env", a.env.as_ref().map(|l| l.iter()))
                && j.opt_str("input-data", a.input_data.map(|d| d.0.as_str().unwrap_or("<not UTF-8>")))
                // `true` is `separated` and `false` is `none`; a string is the mode's name.
                && j.check_capture(a.capture_output.map(|c| c.0.as_str()))
        }),
        _ => decoded::<ExecStatusArgs<'_>>(v, |a| j.int("pid", a.pid)),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Exec, data, typed));
