//! The garbage generator: a reproducible stream of hostile bytes (random, 0xFF runs, deep
//! nesting, huge strings, bad escapes and UTF-8, wrong requests, the two size limits) with the
//! resynchronisation bytes and the valid requests that are woven into it, so that every valid
//! request has exactly one right answer.

use std::time::Duration;

use serde_json::{Value, json};

/// A small deterministic generator (splitmix64): the stream is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// Log-uniform in `lo..=hi`: as many small sizes as large ones per factor of two.
    pub fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(lo.max(1)) as f64).ln());
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((l + (h - l) * u).exp() as usize).clamp(lo, hi)
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Bytes that end any partial token or request (docs/protocol.md §2.3): 0xFF, 0xFE and the control
/// characters other than `\t`, `\r` and `\n`.
pub fn resync_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0u8..0x20)
        .filter(|b| !matches!(b, b'\t' | b'\r' | b'\n'))
        .collect();
    v.extend_from_slice(&[0xFE, 0xFF]);
    v
}

/// The kinds of garbage, for the figures.
pub const GARBAGE_KINDS: &[&str] = &[
    "random bytes",
    "0xFF runs",
    "control bytes",
    "deep nesting",
    "huge unterminated strings",
    "truncated escapes",
    "bad UTF-8",
    "stray quotes",
    "bad numbers and keywords",
    "wrong requests",
    "JSON-ish token soup",
    "oversized request (> 64 MiB)",
    "token count over 2 Mi",
];

/// Appends one chunk of garbage of `kind` (an index into [`GARBAGE_KINDS`]).
pub(super) fn garbage_chunk(rng: &mut Rng, kind: usize, max_string: usize, out: &mut Vec<u8>) {
    match kind {
        0 => {
            let n = rng.range(1, 256);
            out.extend((0..n).map(|_| rng.next_u64() as u8));
        }
        1 => {
            let n = rng.range(1, 16);
            out.extend(std::iter::repeat_n(0xFF, n));
        }
        2 => {
            let n = rng.range(1, 16);
            out.extend((0..n).map(|_| rng.below(0x20) as u8));
        }
        3 => {
            let depth = rng.log_size(16, 4096);
            let open = *rng.pick(&[b"[".as_slice(), b"{\"a\":", b"[{\"x\":["]);
            for _ in 0..depth {
                out.extend_from_slice(open);
            }
            if open == b"[" && rng.below(4) == 0 {
                // Balanced: at most 1024 is a valid (non-object) value, beyond is the nesting
                // error followed by one error per closer.
                let close = depth.min(1100);
                out.extend(std::iter::repeat_n(b']', close));
            }
        }
        4 => {
            let len = rng.log_size(1024, max_string);
            out.extend_from_slice(b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"");
            let fill = *rng.pick(&[b'a', b' ', b'~', 0xC3]);
            if fill == 0xC3 {
                // Valid two-byte UTF-8 (é) repeated.
                for _ in 0..len / 2 {
                    out.extend_from_slice(&[0xC3, 0xA9]);
                }
            } else {
                out.extend(std::iter::repeat_n(fill, len));
            }
        }
        5 => {
            let s = *rng.pick(&[
                b"{\"execute\":\"guest-ping\\u12".as_slice(),
                b"{\"execute\":\"guest-ping\\",
                b"{\"execute\":\"guest-ping\\x41\"}",
                b"{\"execute\":\"guest-ping\\ud800\"}",
                b"{\"execute\":\"guest-ping\\udc00\\ud800\"}",
                b"\"\\u",
                b"'\\'",
                b"{\"execute\":\"guest-\\u00",
            ]);
            out.extend_from_slice(s);
        }
        6 => {
            let s = *rng.pick(&[
                b"{\"execute\":\"guest-p\xc3(ing\"}".as_slice(),
                b"{\"execute\":\"guest-ping\xed\xa0\x80\"}",
                b"{\"execute\":\"\xc0\x80\"}",
                b"{\"execute\":\"\xf5\x80\x80\x80\"}",
                b"{\"\xe2\x82\":1}",
                b"\"\xf0\x9f\x98",
                b"{\"execute\":\"\xfd\xfd\xfd\"}",
            ]);
            out.extend_from_slice(s);
        }
        7 => {
            let n = rng.range(1, 64);
            out.extend((0..n).map(|_| *rng.pick(b"\"'\"'\\ :")));
        }
        8 => {
            let s = *rng.pick(&[
                b"-".as_slice(),
                b"1e",
                b"01",
                b"--1",
                b"1e99999 ",
                b"-0.e1 ",
                b"TRUE",
                b"nul ",
                b"truefalse ",
                b"Infinity",
                b"NaN",
                b"0x10",
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1e999999}}",
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":18446744073709551616}}",
            ]);
            out.extend_from_slice(s);
            if rng.below(8) == 0 {
                let n = rng.log_size(10, 100_000);
                out.extend((0..n).map(|_| b'0' + rng.below(10) as u8));
            }
        }
        9 => {
            let s = *rng.pick(&[
                b"{\"execute\":1}".as_slice(),
                b"{\"execute\":\"guest-nosuch\",\"id\":\"g-1\"}",
                b"{\"foo\":1}",
                b"[]",
                b"1 ",
                b"\"str\"",
                b"{}",
                b"{\"execute\":\"guest-ping\",\"arguments\":[]}",
                b"{\"execute\":\"guest-ping\",\"exec-oob\":\"x\"}",
                b"{\"a\":1,\"a\":2}",
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":\"x\"},\"id\":\"g-2\"}",
                b"{\"execute\":\"guest-exec\",\"id\":\"g-3\"}",
                b"{\"execute\":\"guest-file-read\",\"arguments\":{\"handle\":-1},\"id\":\"g-4\"}",
                b"{\"execute\":\"guest-shutdown\",\"arguments\":{\"mode\":7}}",
                b"{\"execute\":\"guest-ping\",\"id\":{\"a\":[1,{\"b\":null}]}}",
                b"{\"execute\":\"GUEST-PING\"}",
                b"}}}]]]",
                b"{\"execute\"::}",
                b"{,}",
                b"[1,]",
            ]);
            out.extend_from_slice(s);
        }
        10 => {
            let n = rng.range(1, 512);
            out.extend((0..n).map(|_| *rng.pick(b"{}[]:,\"'\\ 0123456789-+.eEabcdefnrtux \t\r\n")));
        }
        11 => {
            out.extend_from_slice(b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"");
            out.extend(std::iter::repeat_n(b'b', (64 << 20) + 4096));
            out.extend_from_slice(b"\"}}");
        }
        _ => {
            out.push(b'[');
            for _ in 0..(2 << 20) + 16 {
                out.extend_from_slice(b"1,");
            }
            out.extend_from_slice(b"1]");
        }
    }
}

/// Picks the kind of the next regular chunk (the two limit kinds only come in the warm-up).
pub(super) fn pick_kind(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=149 => 0,
        150..=199 => 1,
        200..=299 => 2,
        300..=339 => 3,
        340..=349 => 4,
        350..=449 => 5,
        450..=549 => 6,
        550..=649 => 7,
        650..=749 => 8,
        750..=899 => 9,
        _ => 10,
    }
}

/// The valid request with index `k` and the answer it must get.
pub(super) fn valid_request(k: u64) -> (Vec<u8>, Value) {
    let id = format!("v{k}");
    if k.is_multiple_of(2) {
        let n = k.wrapping_mul(2_654_435_761) % 1_000_000_007;
        (
            format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{n}}},\"id\":\"{id}\"}}")
                .into_bytes(),
            json!({"return": n, "id": id}),
        )
    } else {
        (
            format!("{{\"execute\":\"guest-ping\",\"id\":\"{id}\"}}").into_bytes(),
            json!({"return": {}, "id": id}),
        )
    }
}

/// How a garbage run is shaped.
#[derive(Debug, Clone)]
pub struct GarbagePlan {
    /// Total bytes to send (garbage, resync bytes and valid requests).
    pub total: u64,
    /// Largest unterminated string.
    pub max_string: usize,
    /// Send one oversized request and one token-count overflow first.
    pub limits_first: bool,
    /// Take the baseline figures this many bytes after the warm-up (one chunk of every kind,
    /// each at its largest).
    pub baseline_after: u64,
    /// The seed.
    pub seed: u64,
    /// How long any single wait (a write, an answer) may take.
    pub stall: Duration,
    /// How long the whole run may take.
    pub budget: Duration,
    /// The answers trickle in (a UART moves tens of KB/s): after a short read, wait a
    /// millisecond before the next, instead of spinning on reads of one or two bytes and taking
    /// the CPU that the emulated machine needs.
    pub slow_link: bool,
}

/// What a garbage run measured.
#[derive(Debug, Clone, Default)]
pub struct GarbageFigures {
    /// Bytes sent.
    pub bytes: u64,
    /// Garbage chunks sent, per kind.
    pub chunks: Vec<u64>,
    /// Resync bytes sent.
    pub resyncs: u64,
    /// Valid requests sent.
    pub valid: u64,
    /// Valid requests answered with exactly their right answer.
    pub right: u64,
    /// Valid requests never answered (skipped ids).
    pub missing: u64,
    /// Valid requests answered wrongly (error, wrong value, duplicate, out of order).
    pub wrong: u64,
    /// Other response lines (errors for the garbage, answers to garbage requests).
    pub other_lines: u64,
    /// Response bytes received.
    pub response_bytes: u64,
    /// Lines that broke the wire rules (not JSON, stray 0xFF sentinel).
    pub bad_lines: u64,
    /// A wait ran out.
    pub stalled: Option<String>,
    /// The run hit its time budget before sending everything.
    pub out_of_time: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// First examples of wrong answers.
    pub examples: Vec<String>,
}

/// Bytes as MiB, for the figures.
pub(super) fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_bytes_exclude_whitespace() {
        let r = resync_bytes();
        assert!(r.contains(&0xFF) && r.contains(&0x01) && r.contains(&0x00));
        assert!(!r.contains(&b'\n') && !r.contains(&b'\t') && !r.contains(&b'\r'));
        assert_eq!(r.len(), 31);
    }

    #[test]
    fn valid_requests_are_json_with_their_id() {
        for k in 0..4 {
            let (req, want) = valid_request(k);
            let v: Value = serde_json::from_slice(&req).unwrap();
            assert_eq!(v["id"], want["id"]);
        }
    }
}
