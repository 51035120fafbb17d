//! The argument decoders of `guest-get-users` and `guest-set-user-password`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::users::SetUserPasswordArgs;

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestSetUserPassword => decoded::<SetUserPasswordArgs<'_>>(v, |a| {
            j.str("username", a.username) && j.str("password", a.password) && j.bool("crypted", a.crypted)
        }),
        _ => no_args(),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Users, data, typed));
