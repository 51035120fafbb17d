//! The argument decoders of `guest-ssh-*-authorized-keys`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::ssh::{SshAddArgs, SshGetArgs, SshRemoveArgs};

mod common;
#[allow(unused_imports)]
use common::{Decoded, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>) -> Decoded {
    match cmd {
        Command::GuestSshGetAuthorizedKeys => decoded::<SshGetArgs<'_>>(v, |_| true),
        Command::GuestSshAddAuthorizedKeys => decoded::<SshAddArgs<'_>>(v, |a| a.keys.iter().count() == a.keys.len()),
        _ => decoded::<SshRemoveArgs<'_>>(v, |a| a.keys.iter().count() == a.keys.len()),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::SshKeys, data, typed));
