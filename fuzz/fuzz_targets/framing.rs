//! Framing: arbitrary bytes, fed whole and in arbitrary pieces, with a small frame buffer and
//! a shallow nesting limit. No panic; every response is one ASCII line of JSON of the right
//! shape, as many as the stream holds requests (`common::check_stream`); any split of the
//! stream gives the same responses as the whole stream.
#![no_main]

use agent_core::engine::NestSlot;
use agent_core::{Agent, Buffers};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Bare, Collect, Limits, check_stream};

/// Feeds `pieces` to a fresh agent (a few hundred bytes of stack: nothing to reuse) with a
/// 7-byte transmit buffer, so that responses leave in many small pieces.
fn run<'d>(pieces: impl Iterator<Item = &'d [u8]>) -> Collect {
    let mut frame = [0u8; 256];
    let mut chunk = [0u8; 16];
    let mut tx = [0u8; 7];
    let mut nest = [NestSlot::EMPTY; 8];
    let mut agent = Agent::new(Buffers { frame: &mut frame, chunk: &mut chunk, tx: &mut tx, nesting: &mut nest }).expect("buffers above the minimums");
    let mut out = Collect::take();
    for p in pieces {
        agent.feed(p, &mut Bare, &mut out).unwrap();
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let whole = run(std::iter::once(data));
    check_stream(data, &whole.0, Limits { frame: 256, nesting: 8 });
    let step = (split as usize % 13) + 1;
    let pieces = run(data.chunks(step));
    assert!(whole.0 == pieces.0, "split into pieces of {step}: {:?} != {:?}", String::from_utf8_lossy(&whole.0), String::from_utf8_lossy(&pieces.0));
    whole.put_back();
    pieces.put_back();
});
