//! The argument decoders of `guest-fsfreeze-*` and `guest-fstrim`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::filesystems::{FreezeListArgs, FstrimArgs};

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestFsfreezeFreezeList => decoded::<FreezeListArgs<'_>>(v, |a| {
            a.mountpoints.as_ref().is_none_or(|l| l.iter().count() == l.len())
                && j.opt_strs("mountpoints", a.mountpoints.as_ref().map(|l| l.iter()))
        }),
        Command::GuestFstrim => decoded::<FstrimArgs<'_>>(v, |a| j.opt_int("minimum", a.minimum)),
        _ => no_args(),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Filesystems, data, typed));
