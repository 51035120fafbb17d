//! Byte fixtures for the protocol rules of the reference, over an in-memory platform.

mod fixtures;
mod platform;
mod sizes;
mod split;
mod stream;
mod stream_diff;

use crate::engine::{Agent, Buffers, NestSlot};
use crate::schema::Command;
pub(crate) use platform::MemPlatform;

/// Buffer sizes and policy for a test agent.
#[derive(Clone)]
pub(crate) struct Cfg {
    pub frame: usize,
    pub chunk: usize,
    pub tx: usize,
    pub nest: usize,
    pub block: Vec<Command>,
    pub allow: Vec<Command>,
    /// `Agent::stream_writes` (0: off).
    pub window: usize,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            frame: 64 * 1024,
            chunk: 4096,
            tx: 4096,
            nest: 1024,
            block: vec![],
            allow: vec![],
            window: 0,
        }
    }
}

/// Owned storage for [`Buffers`].
pub(crate) struct Store {
    frame: Vec<u8>,
    chunk: Vec<u8>,
    tx: Vec<u8>,
    nest: Vec<NestSlot>,
}

impl Store {
    pub fn new(cfg: &Cfg) -> Self {
        Store {
            frame: vec![0; cfg.frame],
            chunk: vec![0; cfg.chunk],
            tx: vec![0; cfg.tx],
            nest: vec![NestSlot::EMPTY; cfg.nest],
        }
    }

    pub fn agent(&mut self, cfg: &Cfg) -> Agent<'_> {
        let mut a = Agent::new(Buffers {
            frame: &mut self.frame,
            chunk: &mut self.chunk,
            tx: &mut self.tx,
            nesting: &mut self.nest,
        })
        .expect("test buffers at least the minimums");
        for &c in &cfg.block {
            a.policy_mut().block(c);
        }
        for &c in &cfg.allow {
            a.policy_mut().allow(c);
        }
        a.stream_writes(cfg.window);
        a
    }
}

/// Feed `pieces` one after another to a fresh agent configured by `cfg` over `p`.
pub(crate) fn run_pieces(p: &mut MemPlatform, cfg: &Cfg, pieces: &[&[u8]]) -> Vec<u8> {
    let mut store = Store::new(cfg);
    let mut agent = store.agent(cfg);
    let mut out = Vec::new();
    for piece in pieces {
        agent.feed(piece, p, &mut out).unwrap();
    }
    out
}

/// Feed `input` in one piece to a fresh agent over `p`; return the response bytes.
pub(crate) fn exchange_with(p: &mut MemPlatform, input: &[u8]) -> Vec<u8> {
    run_pieces(p, &Cfg::default(), &[input])
}

/// Feed `input` to a fresh agent over a full in-memory platform; the responses as text (0xFF
/// shown as U+FFFD).
pub(crate) fn exchange(input: &[u8]) -> String {
    let mut p = MemPlatform::full();
    String::from_utf8_lossy(&exchange_with(&mut p, input)).into_owned()
}

/// `data` in standard base64 (the base64 crate's encoder: independent of the engine's decoder).
pub(crate) fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    let mut enc = vec![0u8; data.len().div_ceil(3) * 4];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut enc)
        .unwrap();
    enc.truncate(n);
    String::from_utf8(enc).unwrap()
}

/// `input` cut at the places `cuts` pick (any number, in any order, empty pieces allowed).
pub(crate) fn cut<'a>(input: &'a [u8], cuts: &[proptest::sample::Index]) -> Vec<&'a [u8]> {
    let mut idx: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
    idx.sort_unstable();
    let mut pieces = Vec::with_capacity(idx.len() + 1);
    let mut last = 0;
    for i in idx {
        pieces.push(&input[last..i]);
        last = i;
    }
    pieces.push(&input[last..]);
    pieces
}
