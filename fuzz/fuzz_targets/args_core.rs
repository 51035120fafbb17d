//! The argument decoders of the core commands (`guest-sync`, `guest-sync-delimited`, `guest-ping`, `guest-info`): the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::core::SyncArgs;

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestSync | Command::GuestSyncDelimited => decoded::<SyncArgs<'_>>(v, |a| j.int("id", a.id)),
        _ => no_args(),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Core, data, typed));
