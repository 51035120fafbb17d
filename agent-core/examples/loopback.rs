//! A whole embedding in one file: the core commands plus `guest-get-time` over an in-memory
//! pipe. `cargo run -p agent-core --example loopback` prints the exchange; agent-core's README
//! walks through it. `platform` is what a port to a new kernel writes (no `std`, no
//! allocation); `main` plays the host.

mod platform {
    use agent_core::Result;
    use agent_core::commands::clock::Clock;
    use agent_core::{Platform, Transmit, TxError};

    /// The host end of the channel: responses collect in `.0[..len]` until the host reads them.
    pub struct Pipe(pub [u8; 8192], pub usize);

    impl Transmit for Pipe {
        fn send(&mut self, bytes: &[u8]) -> core::result::Result<(), TxError> {
            let (buf, len) = (&mut self.0, &mut self.1);
            let room = buf.get_mut(*len..*len + bytes.len()).ok_or(TxError)?;
            room.copy_from_slice(bytes);
            *len += bytes.len();
            Ok(())
        }
    }

    /// A clock that only counts; a real port reads its RTC or timer here. It has no
    /// `set_time`, so guest-set-time is "not supported" and guest-info says it is disabled.
    pub struct Ticks(pub i64);

    impl Clock for Ticks {
        fn get_time(&mut self) -> Result<i64> {
            self.0 += 1_000_000;
            Ok(self.0)
        }
    }

    /// One family; every other `Platform` method defaults to `None` (not supported).
    pub struct Board(pub Ticks);

    impl Platform for Board {
        fn clock(&mut self) -> Option<&mut dyn Clock> {
            Some(&mut self.0)
        }
    }
}

/// What the host sends, one read at a time; `None` is a new client connecting.
const READS: [Option<&[u8]>; 5] = [
    Some(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":7}}"),
    Some(br#"{"execute":"guest-get-time"}{"execute":"guest-info"}"#),
    Some(br#"{"execute":"guest-set-time","id":"a"}{"execute":"guest-pi"#),
    None, // the client went away in the middle of a request
    Some(br#"{"execute":"guest-ping","id":2}"#),
];

fn main() {
    let mut bufs: Box<agent_core::StaticBuffers> = Box::default(); // firmware: a `static`
    let mut agent = bufs.agent();
    let mut board = platform::Board(platform::Ticks(1 << 60));
    let mut wire = platform::Pipe([0; 8192], 0);
    let show = |b: &[u8]| String::from_utf8_lossy(b).replace('\u{fffd}', "\\xff");
    let mut answers = Vec::new();
    for read in READS {
        let Some(bytes) = read else {
            println!("(new client)");
            agent.reset();
            continue;
        };
        println!("-> {}", show(bytes));
        let sent = agent.feed(bytes, &mut board, &mut wire);
        assert_eq!(sent, Ok(()), "the pipe has room for every answer");
        let len = std::mem::take(&mut wire.1);
        for line in wire.0[..len].split_inclusive(|&b| b == b'\n') {
            println!("<- {:.150}", show(line).trim_end());
            answers.push(String::from_utf8_lossy(line).into_owned());
        }
    }
    let want = [
        r#"{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}"#,
        "\u{fffd}{\"return\": 7}\n",
        "{\"return\": 1152921504607846976}\n",
        r#"{"return": {"version": "#,
        r#"{"id": "a", "error": {"class": "GenericError", "desc": "this feature or command is not "#,
        "{\"return\": {}, \"id\": 2}\n",
    ];
    assert_eq!(answers.len(), want.len(), "{answers:?}");
    for (got, want) in answers.iter().zip(want) {
        assert!(got.starts_with(want), "{got:?} is not {want:?}");
    }
    let info = &answers[3]; // guest-info tells the truth about the one family:
    assert!(info.contains(r#"{"enabled": true, "name": "guest-get-time""#));
    assert!(info.contains(r#"{"enabled": false, "name": "guest-set-time""#));
}

#[test]
fn loopback_runs() {
    main();
}
