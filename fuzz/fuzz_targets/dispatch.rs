//! Dispatch and argument decoding: arbitrary request streams against a platform with every
//! family over memory. No panic; every response is one ASCII line of JSON of the right shape,
//! and as many come back as the stream holds requests (`common::check_stream`). The frame
//! buffer is 1 KiB, so inputs of up to 2 KiB (`-max_len`) also reach the oversized-request
//! path; large argument values are the `args_*` targets' business (4 KiB frame).
#![no_main]

use std::cell::RefCell;

use agent_core::{Agent, Chunk, Frame, Nesting, StaticBuffers, Tx};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Collect, Full, Limits, check_stream};

thread_local! {
    /// One agent for the whole run, as a real agent serves one connection after another: its
    /// buffers are allocated once and it is reset before each input, as for a new client.
    static AGENT: RefCell<Agent<'static>> = RefCell::new(
        Box::leak(Box::<StaticBuffers<Frame<1024>, Chunk<64>, Tx<512>, Nesting<64>>>::default()).agent(),
    );
}

fuzz_target!(|data: &[u8]| {
    AGENT.with_borrow_mut(|agent| {
        agent.reset();
        let mut platform = Full::default();
        let mut out = Collect::take();
        agent.feed(data, &mut platform, &mut out).unwrap();
        check_stream(data, &out.0, Limits { frame: 1024, nesting: 64 });
        out.put_back();
    });
});
