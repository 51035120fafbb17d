//! Buffer sizes, the transmit contract and the truth of `guest-info`: the traps an embedder
//! met before the engine checked its buffers.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

use super::{Cfg, MemPlatform, Store, run_pieces};
use crate::commands::Platform;
use crate::commands::clock::Clock;
use crate::engine::{
    Agent, BufferError, Buffers, MIN_CHUNK, MIN_FRAME, MIN_NESTING, MIN_TX, NestSlot,
};
use crate::error::Result;
use crate::out::{Transmit, TxError};

fn sized(frame: usize, chunk: usize, tx: usize, nest: usize) -> Cfg {
    Cfg {
        frame,
        chunk,
        tx,
        nest,
        ..Cfg::default()
    }
}

/// `Agent::new` over fresh buffers of these sizes.
fn build(
    frame: usize,
    chunk: usize,
    tx: usize,
    nest: usize,
) -> std::result::Result<(), BufferError> {
    let (mut f, mut c, mut t) = (vec![0u8; frame], vec![0u8; chunk], vec![0u8; tx]);
    let mut n = vec![NestSlot::EMPTY; nest];
    Agent::new(Buffers {
        frame: &mut f,
        chunk: &mut c,
        tx: &mut t,
        nesting: &mut n,
    })
    .map(|_| ())
}

#[test]
fn a_zero_length_tx_is_refused_instead_of_hanging() {
    // Before: `feed` looped forever trying to make room in an empty transmit buffer.
    assert_eq!(
        build(1024, 64, 0, 8),
        Err(BufferError {
            buffer: "tx",
            len: 0,
            min: MIN_TX
        })
    );
    let e = build(1024, 64, 0, 8).unwrap_err().to_string();
    assert_eq!(e, "the `tx` buffer holds 0 but the engine needs at least 1");
}

#[test]
fn each_buffer_below_its_minimum_is_named() {
    let ok = (MIN_FRAME, MIN_CHUNK, MIN_TX, MIN_NESTING);
    assert_eq!(build(ok.0, ok.1, ok.2, ok.3), Ok(()));
    assert_eq!(
        build(ok.0 - 1, ok.1, ok.2, ok.3).unwrap_err().buffer,
        "frame"
    );
    assert_eq!(
        build(ok.0, ok.1 - 1, ok.2, ok.3).unwrap_err().buffer,
        "chunk"
    );
    assert_eq!(build(ok.0, ok.1, ok.2 - 1, ok.3).unwrap_err().buffer, "tx");
    assert_eq!(
        build(ok.0, ok.1, ok.2, ok.3 - 1).unwrap_err().buffer,
        "nesting"
    );
}

#[test]
fn the_minimums_serve_requests_with_arguments() {
    // Before: a nesting slice of one level rejected every request with `arguments`, and
    // answered each with a stream of errors.
    let cfg = sized(MIN_FRAME, MIN_CHUNK, MIN_TX, MIN_NESTING);
    let mut p = MemPlatform::full();
    let out = run_pieces(
        &mut p,
        &cfg,
        &[
            br#"{"execute":"guest-sync","arguments":{"id":1}}"#,
            br#"{"execute": "guest-sync-delimited", "arguments": {"id": -9223372036854775808}}"#,
            br#"{"execute":"guest-file-open","arguments":{"path":"/f","mode":"w+"}}"#,
            br#"{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"aGVsbG8="}}"#,
            br#"{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":"set"}}"#,
            br#"{"execute":"guest-file-read","arguments":{"handle":1000}}"#,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "{\"return\": 1}\n\u{FFFD}{\"return\": -9223372036854775808}\n{\"return\": 1000}\n\
         {\"return\": {\"count\": 5, \"eof\": false}}\n{\"return\": {\"position\": 0, \"eof\": false}}\n\
         {\"return\": {\"buf-b64\": \"aGVsbG8=\", \"count\": 5, \"eof\": true}}\n"
    );
}

/// Requests of every shape: complete values, so that the stream is at a request boundary
/// after each.
const REQUESTS: &[&[u8]] = &[
    br#"{"execute":"guest-ping","id":[1,{"b":2,"a":"x"}]}"#,
    br#"{"execute":"guest-info"}"#,
    br#"{"execute":"guest-sync","arguments":{"id":5}}"#,
    br#"{"execute":"guest-get-vcpus"}"#,
    br#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":1,"online":false}]}}"#,
    br#"{"execute":"guest-file-open","arguments":{"path":"/f","mode":"w+"}}"#,
    br#"{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"aGVsbG8gd29ybGQ="}}"#,
    br#"{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":0}}"#,
    br#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":7}}"#,
    br#"{"execute":"guest-get-users"}"#,
    br#"{"execute":1}"#,
    br#"{"execute":"guest-sync","arguments":{"id":"x"}}"#,
    br#"{"a":1,"a":2}"#,
    br#"[[[[[[[[[[1]]]]]]]]]]"#,
    br#"{"execute":"guest-ping","id":{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7}}"#,
    br#"{"execute":"guest-ping","id":"a long identifier that does not fit a small frame buffer at all, not even close, it goes on and on and on and on and on"}"#,
    br#"{"execute":"nope"}"#,
    b"{\"execute\":\"guest-ping\",\"id\":\"\\u00e9\\ud83d\\ude00\"}",
];

/// Run `f` on a thread; fail if it does not finish in time (a hang is a failure, not a stuck
/// test run).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the engine did not return (hang or panic)")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any sizes: either `Agent::new` names the first buffer below its minimum, or every
    /// request is answered without a hang or a panic and the stream still resynchronises.
    #[test]
    fn no_buffer_sizes_hang_or_panic(
        frame in prop_oneof![0usize..300, 300usize..4096],
        chunk in prop_oneof![0usize..8, 8usize..200],
        tx in prop_oneof![0usize..8, 8usize..200],
        nest in 0usize..12,
        picks in proptest::collection::vec(0usize..REQUESTS.len(), 0..12),
        cut in 1usize..64,
    ) {
        let built = build(frame, chunk, tx, nest);
        let first_small = [
            ("frame", frame < MIN_FRAME),
            ("chunk", chunk < MIN_CHUNK),
            ("tx", tx < MIN_TX),
            ("nesting", nest < MIN_NESTING),
        ]
        .into_iter()
        .find(|b| b.1)
        .map(|b| b.0);
        prop_assert_eq!(built.err().map(|e| e.buffer), first_small);
        if first_small.is_none() {
            let out = bounded(move || {
                let mut input: Vec<u8> = picks.iter().flat_map(|&i| REQUESTS[i].to_vec()).collect();
                input.extend_from_slice(br#"{"execute":"guest-sync-delimited","arguments":{"id":77}}"#);
                let pieces: Vec<&[u8]> = input.chunks(cut).collect();
                let mut p = MemPlatform::full();
                run_pieces(&mut p, &sized(frame, chunk, tx, nest), &pieces)
            });
            prop_assert!(
                out.ends_with(b"\xff{\"return\": 77}\n"),
                "no resync answer: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}

/// A transport that fails its first `fail` sends and records the rest.
struct Flaky {
    fail: usize,
    calls: usize,
    sent: Vec<u8>,
}

impl Transmit for Flaky {
    fn send(&mut self, bytes: &[u8]) -> std::result::Result<(), TxError> {
        self.calls += 1;
        if self.calls <= self.fail {
            return Err(TxError);
        }
        self.sent.extend_from_slice(bytes);
        Ok(())
    }
}

#[test]
fn a_failed_send_stops_the_feed_and_drops_the_partial_request() {
    // With an 8-byte buffer the send fails in the middle of the input; with 4 KiB, only at the
    // end, after the half request was read (before: it was kept, and completed by the bytes
    // of the next feed).
    for tx_len in [8, 4096] {
        let cfg = sized(1024, 64, tx_len, 8);
        let mut store = Store::new(&cfg);
        let mut agent = store.agent(&cfg);
        let mut p = MemPlatform::full();
        let mut tx = Flaky {
            fail: 1,
            calls: 0,
            sent: vec![],
        };
        let input = br#"{"execute":"guest-ping"}{"execute":"guest-ping"}{"execute":"guest-sync","#;
        assert_eq!(agent.feed(input, &mut p, &mut tx), Err(TxError));
        assert_eq!(tx.calls, 1, "no send after the failed one");
        assert!(agent.idle(), "the partial request was dropped");
        // The next feed writes normally and never completes the old half request.
        agent
            .feed(br#""arguments":{"id":7}}"#, &mut p, &mut tx)
            .unwrap();
        agent
            .feed(
                br#"{"execute":"guest-sync","arguments":{"id":8}}"#,
                &mut p,
                &mut tx,
            )
            .unwrap();
        let text = String::from_utf8_lossy(&tx.sent).into_owned();
        assert!(
            !text.contains("\"return\": 7"),
            "spliced request answered: {text}"
        );
        assert!(text.ends_with("{\"return\": 8}\n"), "{text}");
    }
}

/// A clock written the obvious way on a platform that cannot set the time: only `get_time`.
struct ReadOnlyClock;

impl Clock for ReadOnlyClock {
    fn get_time(&mut self) -> Result<i64> {
        Ok(5)
    }
}

struct ClockOnly(ReadOnlyClock);

impl Platform for ClockOnly {
    fn clock(&mut self) -> Option<&mut dyn Clock> {
        Some(&mut self.0)
    }
}

#[test]
fn guest_info_is_truthful_for_the_obvious_code() {
    let cfg = Cfg::default();
    let mut store = Store::new(&cfg);
    let mut agent = store.agent(&cfg);
    let sent = Rc::new(RefCell::new(Vec::new()));
    struct Into(Rc<RefCell<Vec<u8>>>);
    impl Transmit for Into {
        fn send(&mut self, bytes: &[u8]) -> std::result::Result<(), TxError> {
            self.0.borrow_mut().extend_from_slice(bytes);
            Ok(())
        }
    }
    let mut tx = Into(sent.clone());
    let mut p = ClockOnly(ReadOnlyClock);
    agent
        .feed(
            br#"{"execute":"guest-info"}{"execute":"guest-set-time"}{"execute":"guest-get-time"}"#,
            &mut p,
            &mut tx,
        )
        .unwrap();
    let text = String::from_utf8_lossy(&sent.borrow()).into_owned();
    assert!(
        text.contains(r#"{"enabled": false, "name": "guest-set-time", "success-response": true}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"enabled": true, "name": "guest-get-time", "success-response": true}"#),
        "{text}"
    );
    assert!(
        text.ends_with(
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"this feature or command is not currently supported\"}}\n{\"return\": 5}\n"
        ),
        "{text}"
    );
}
