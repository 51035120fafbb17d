//! Framing: arbitrary bytes, fed whole and in arbitrary pieces, with a small frame buffer and
//! a shallow nesting limit. No panic; every response is one ASCII line; any split of the
//! stream gives the same responses as the whole stream.
#![no_main]

use agent_core::engine::NestSlot;
use agent_core::{Agent, Buffers};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Bare, Collect, check_responses};

fn run(pieces: &[&[u8]]) -> Vec<u8> {
    let mut frame = [0u8; 256];
    let mut chunk = [0u8; 16];
    let mut tx = [0u8; 7];
    let mut nest = [NestSlot::EMPTY; 8];
    let mut agent = Agent::new(Buffers { frame: &mut frame, chunk: &mut chunk, tx: &mut tx, nesting: &mut nest });
    let mut out = Collect::default();
    for p in pieces {
        agent.feed(p, &mut Bare, &mut out).unwrap();
    }
    out.0
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let whole = run(&[data]);
    check_responses(&whole);
    let step = (split as usize % 13) + 1;
    let pieces: Vec<&[u8]> = data.chunks(step).collect();
    assert_eq!(whole, run(&pieces), "split into pieces of {step}");
});
