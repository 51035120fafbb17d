//! Byte fixtures for the protocol rules of the reference, over an in-memory platform.

mod fixtures;
mod platform;

use crate::engine::{Agent, StaticBuffers};
pub(crate) use platform::MemPlatform;

/// Feed `input` in one piece to a fresh agent over `p`; return the response bytes.
pub(crate) fn exchange_with(p: &mut MemPlatform, input: &[u8]) -> Vec<u8> {
    let mut bufs: Box<StaticBuffers> = Box::default();
    let mut agent = Agent::new(bufs.as_buffers());
    let mut out = Vec::new();
    agent.feed(input, p, &mut out).unwrap();
    out
}

pub(crate) fn exchange(input: &[u8]) -> String {
    let mut p = MemPlatform::full();
    String::from_utf8_lossy(&exchange_with(&mut p, input)).into_owned()
}
