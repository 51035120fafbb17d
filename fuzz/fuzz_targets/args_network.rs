//! The argument decoders of `guest-network-get-interfaces` and `guest-network-get-route` (no arguments: any member is unexpected): the first byte picks a command of the family, the
//! rest is its `arguments` value (see `common::fuzz_args`).
#![no_main]

use agent_core::json::Value;
use agent_core::schema::{Command, Family};
use libfuzzer_sys::fuzz_target;

mod common;
#[allow(unused_imports)]
use common::{Decoded, decoded, no_args};

fn typed(_cmd: Command, _v: Value<'_>) -> Decoded {
    no_args()
}

fuzz_target!(|data: &[u8]| common::fuzz_args(Family::Network, data, typed));
