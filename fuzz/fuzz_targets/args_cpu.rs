//! The argument decoders of `guest-get-vcpus`, `guest-set-vcpus`, `guest-get-cpustats` and `guest-get-load`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::cpus::SetVcpusArgs;

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args, same_elems};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestSetVcpus => decoded::<SetVcpusArgs<'_>>(v, |a| {
            a.vcpus.iter().count() == a.vcpus.len()
                && same_elems(j, "vcpus", a.vcpus.iter(), |e, p| {
                    e.int("logical-id", p.logical_id)
                        && e.bool("online", p.online)
                        && e.opt_bool("can-offline", p.can_offline)
                })
        }),
        _ => no_args(),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Cpus, data, typed));
