//! Dispatch and argument decoding: arbitrary request streams against a platform with every
//! family over memory. No panic; every response is one ASCII line.
#![no_main]

use agent_core::StaticBuffers;
use agent_core::Agent;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Collect, Full, check_responses};

fuzz_target!(|data: &[u8]| {
    let mut bufs: Box<StaticBuffers<4096, 64, 512, 64>> = Box::default();
    let mut agent = Agent::new(bufs.as_buffers());
    let mut platform = Full::default();
    let mut out = Collect::default();
    agent.feed(data, &mut platform, &mut out).unwrap();
    check_responses(&out.0);
});
