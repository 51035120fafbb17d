//! The argument decoders of `guest-get-memory-blocks`, `guest-set-memory-blocks` and `guest-get-memory-block-info`: the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;
use agent_core::commands::memory::SetMemoryBlocksArgs;

mod common;
#[allow(unused_imports)]
use common::{Decoded, Input, decoded, no_args, same_elems};

fn typed(cmd: Command, v: Value<'_>, j: Input<'_>) -> Decoded {
    match cmd {
        Command::GuestSetMemoryBlocks => decoded::<SetMemoryBlocksArgs<'_>>(v, |a| {
            a.mem_blks.iter().count() == a.mem_blks.len()
                && same_elems(j, "mem-blks", a.mem_blks.iter(), |e, b| {
                    e.uint("phys-index", b.phys_index)
                        && e.bool("online", b.online)
                        && e.opt_bool("can-offline", b.can_offline)
                })
        }),
        _ => no_args(),
    }
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Memory, data, typed));
