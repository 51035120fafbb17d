//! Any split of a byte stream gives the same responses as the whole stream.

use super::*;
use proptest::prelude::*;

const REQUESTS: &[&[u8]] = &[
    br#"{"execute":"guest-ping"}"#,
    br#"{"execute":"guest-sync","arguments":{"id":42}}"#,
    br#"{'execute':'guest-sync-delimited','arguments':{'id':7},'id':"x\u00e9"}"#,
    br#"{"execute":"guest-info","id":[1,{"a":null}]}"#,
    br#"{"execute":"guest-file-open","arguments":{"path":"/f","mode":"w+"}}"#,
    br#"{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"SGVsbG8="}}"#,
    br#"{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":"set"}}"#,
    br#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":3}}"#,
    br#"{"execute":"guest-get-vcpus"}"#,
    br#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":1,"online":false}]}}"#,
    br#"{"execute":"guest-nosuch","id":1.5e3}"#,
    br#"{"execute":"guest-sync","arguments":{"id":"x"}}"#,
    b"   \n\t",
    b"\xff",
    b"\x01",
    b"{\"execute\":\"guest-ping\"",
    b"}}]]",
    b"tru",
    b"e ",
    b"-",
    b"01",
    b"[1,",
    b"'\\'",
    b"\"\\u12",
    b"\"",
    b"123 ",
    b"nul ",
    br#"{"a":1,"a":2}"#,
];

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(REQUESTS), 1..12).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_split_gives_the_same_responses(s in stream(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let cfg = Cfg::default();
        let whole = run_pieces(&mut MemPlatform::full(), &cfg, &[&s]);
        let pieces = cut(&s, &cuts);
        let split = run_pieces(&mut MemPlatform::full(), &cfg, &pieces);
        prop_assert_eq!(String::from_utf8_lossy(&whole), String::from_utf8_lossy(&split));
    }

    #[test]
    fn byte_at_a_time_gives_the_same_responses(s in stream()) {
        let cfg = Cfg::default();
        let whole = run_pieces(&mut MemPlatform::full(), &cfg, &[&s]);
        let pieces: Vec<&[u8]> = s.chunks(1).collect();
        let split = run_pieces(&mut MemPlatform::full(), &cfg, &pieces);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn garbage_never_panics_and_the_next_request_is_answered(g in prop::collection::vec(any::<u8>(), 0..200)) {
        let cfg = Cfg { frame: 256, ..Cfg::default() };
        // 0x01 ends any partial request and any recovery, like a client's resync.
        let mut s = g.clone();
        s.extend_from_slice(b"\x01{\"execute\":\"guest-ping\",\"id\":\"end\"}");
        let out = run_pieces(&mut MemPlatform::full(), &cfg, &[&s]);
        let text = String::from_utf8_lossy(&out);
        prop_assert!(text.ends_with("{\"return\": {}, \"id\": \"end\"}\n"), "{}", text);
    }
}
