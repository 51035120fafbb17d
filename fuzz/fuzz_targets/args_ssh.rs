//! The argument decoders of `guest-ssh-*-authorized-keys`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::ssh_keys::{SshAddArgs, SshGetArgs, SshRemoveArgs};

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestSshGetAuthorizedKeys => decoded::<SshGetArgs<'_>>(v, |a| j.str("username", a.username)),
        Command::GuestSshAddAuthorizedKeys => decoded::<SshAddArgs<'_>>(v, |a| {
            a.keys.iter().count() == a.keys.len()
                && j.str("username", a.username)
                && j.opt_strs("keys", Some(a.keys.iter()))
                && j.opt_bool("reset", a.reset)
        }),
        _ => decoded::<SshRemoveArgs<'_>>(v, |a| {
            a.keys.iter().count() == a.keys.len()
                && j.str("username", a.username)
                && j.opt_strs("keys", Some(a.keys.iter()))
        }),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::SshKeys, data, typed));
