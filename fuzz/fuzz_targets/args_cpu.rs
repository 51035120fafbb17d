//! The argument decoders of `guest-get-vcpus`, `guest-set-vcpus`, `guest-get-cpustats` and `guest-get-load`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::cpu::SetVcpusArgs;

mod common;
#[allow(unused_imports)]
use common::{Decoded, decoded, no_args};

fn typed(cmd: Command, v: Value<'_>) -> Decoded {
    match cmd {
        Command::GuestSetVcpus => decoded::<SetVcpusArgs<'_>>(v, |a| a.vcpus.iter().count() == a.vcpus.len()),
        _ => no_args(),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Cpus, data, typed));
