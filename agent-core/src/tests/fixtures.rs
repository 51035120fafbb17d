//! Input bytes → exact response bytes, for every rule and error text of docs/protocol.md §2
//! (the `// §` headings below are its section numbers).

use super::*;

#[track_caller]
fn check(input: &str, want: &str) {
    assert_eq!(exchange(input.as_bytes()), want, "input: {input}");
}

#[track_caller]
fn check_bytes(input: &[u8], want: &str) {
    assert_eq!(
        exchange(input),
        want,
        "input: {:?}",
        String::from_utf8_lossy(input)
    );
}

fn err(desc: &str) -> String {
    format!("{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"{desc}\"}}}}\n")
}

fn err_id(id: &str, desc: &str) -> String {
    format!("{{\"id\": {id}, \"error\": {{\"class\": \"GenericError\", \"desc\": \"{desc}\"}}}}\n")
}

const PING_OK: &str = "{\"return\": {}}\n";

// §2.7
#[test]
fn live_excerpts() {
    check(
        r#"{"execute":"guest-sync","arguments":{"id":42}}"#,
        "{\"return\": 42}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":1}"#,
        "{\"return\": {}, \"id\": 1}\n",
    );
    check(
        r#"{"id":7,"execute":"guest-nosuch"}"#,
        "{\"id\": 7, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command guest-nosuch has not been found\"}}\n",
    );
    check(
        "{'execute':'guest-ping','id':'single-quoted'}",
        "{\"return\": {}, \"id\": \"single-quoted\"}\n",
    );
    check(
        r#"{"execute": "guest-fsfreeze-status"}"#,
        "{\"return\": \"thawed\"}\n",
    );
    check(
        r#"{"execute": "guest-get-timezone"}"#,
        "{\"return\": {\"zone\": \"UTC\", \"offset\": 0}}\n",
    );
    check(
        r#"{"execute": "guest-get-time"}"#,
        "{\"return\": 1795438762351795000}\n",
    );
}

// §2.2
#[test]
fn framing() {
    check(
        r#"{"execute":"guest-ping"}{"execute":"guest-ping","id":2}"#,
        "{\"return\": {}}\n{\"return\": {}, \"id\": 2}\n",
    );
    // No newline needed; whitespace between tokens ignored.
    check(" \t\r\n{ \"execute\" :\n\"guest-ping\" }  ", PING_OK);
    // Braces inside strings are not counted.
    check(
        r#"{"execute":"guest-sync","arguments":{"id":1},"id":"{[}]"}"#,
        "{\"return\": 1, \"id\": \"{[}]\"}\n",
    );
    // One request over many chunks.
    let req = br#"{"execute":"guest-sync","arguments":{"id":99},"id":"x"}"#;
    let pieces: Vec<&[u8]> = req.chunks(1).collect();
    let out = run_pieces(&mut MemPlatform::full(), &Cfg::default(), &pieces);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"return\": 99, \"id\": \"x\"}\n"
    );
    // Top-level scalars need a terminator (lookahead); strings end at their quote.
    let msg = err("QMP input must be a JSON object");
    check("1 ", &msg);
    check("1", "");
    check("\"str\"", &msg);
    check("[]", &msg);
    check("true ", &msg);
    check(
        "{\"execute\":\"guest-ping\"}1{\"execute\":\"guest-ping\"}",
        &format!("{PING_OK}{msg}{PING_OK}"),
    );
}

// §2.3
#[test]
fn lexical_errors_and_0xff() {
    check_bytes(
        b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":1234}}",
        &format!(
            "{}\u{FFFD}{{\"return\": 1234}}\n",
            err("JSON parse error, stray '\\uFFFD'")
        ),
    );
    // 0xFF inside a string: two errors.
    check_bytes(
        b"{\"execute\":\"guest-ping\xff\"}",
        &format!(
            "{}{}",
            err("JSON parse error, stray '\\\"guest-ping\\uFFFD'"),
            err("JSON parse error, expecting value")
        ),
    );
    // A control byte flushes the partial request.
    check_bytes(
        b"{\"execute\":\"guest-ping\"\x01{\"execute\":\"guest-ping\"}",
        &format!("{}{PING_OK}", err("JSON parse error, stray '\\u0001'")),
    );
    // NUL: upstream formats the token with %s, which stops at the NUL.
    check_bytes(
        b"\x00{\"execute\":\"guest-ping\"}",
        &format!("{}{PING_OK}", err("JSON parse error, stray ''")),
    );
    // Recovery skips to the next structural byte, which is lexed again.
    check_bytes(
        b"{\"execute\": True}",
        &format!(
            "{}{}",
            err("JSON parse error, stray 'T'"),
            err("JSON parse error, expecting value")
        ),
    );
    check_bytes(
        b"{\"id\": 01}",
        &format!(
            "{}{}",
            err("JSON parse error, stray '01'"),
            err("JSON parse error, expecting value")
        ),
    );
    // A byte >= 0x80 right after a number or keyword ends it and is then a stray byte of its
    // own (live 7.2: the queued keyword is flushed with the error).
    check_bytes(
        b"{\"a\": tru\xc3\xa9}",
        &format!(
            "{}{}",
            err("JSON parse error, stray '\\uFFFD'"),
            err("JSON parse error, expecting value")
        ),
    );
    // Recovery: `\n` ends it; the next request is served.
    check_bytes(
        b"@@@ junk\n{\"execute\":\"guest-ping\"}",
        &format!("{}{PING_OK}", err("JSON parse error, stray '@'")),
    );
    // Recovery: 0xFF ends it and is lexed again: a second error.
    check_bytes(
        b"@x\xff{\"execute\":\"guest-ping\"}",
        &format!(
            "{}{}{PING_OK}",
            err("JSON parse error, stray '@'"),
            err("JSON parse error, stray '\\uFFFD'")
        ),
    );
    // The partial token is quoted with the offending byte; valid UTF-8 is shown escaped.
    check_bytes(
        b"{\"k\":\"caf\xc3\xa9\x02",
        &err("JSON parse error, stray '\\\"caf\\u00E9\\u0002'"),
    );
    check_bytes(b"-x", &err("JSON parse error, stray '-x'"));
    check_bytes(b"1.e", &err("JSON parse error, stray '1.e'"));
    check_bytes(
        b"1e+}",
        &format!("{}{}", err("JSON parse error, stray '1e+}'"), ""),
    );
}

// §2.6, parser texts
#[test]
fn parse_errors() {
    check(
        r#"{"execute":"guest-ping","id":nul}"#,
        &err("JSON parse error, invalid keyword 'nul'"),
    );
    check("}", &err("JSON parse error, expecting value"));
    check("]", &err("JSON parse error, expecting value"));
    check(",", &err("JSON parse error, expecting value"));
    check(":", &err("JSON parse error, expecting value"));
    check(r#"{"a":1,}"#, &err("JSON parse error, expecting value"));
    check(r#"[1,]"#, &err("JSON parse error, expecting value"));
    check(r#"{"a":}"#, &err("JSON parse error, expecting value"));
    check(
        r#"{"execute" "guest-ping"}"#,
        &err("JSON parse error, missing : in object pair"),
    );
    check(
        r#"{"a"}"#,
        &err("JSON parse error, missing : in object pair"),
    );
    check(
        r#"{"execute":"guest-ping" "id":1}"#,
        &err("JSON parse error, expected separator in dict"),
    );
    check(
        r#"{"a":1]"#,
        &err("JSON parse error, expected separator in dict"),
    );
    check(
        "[1 2]",
        &err("JSON parse error, expected separator in list"),
    );
    check("[1}", &err("JSON parse error, expected separator in list"));
    check(
        "{1:2}",
        &err("JSON parse error, key is not a string in object"),
    );
    check(
        "{[1]:2}",
        &err("JSON parse error, key is not a string in object"),
    );
    check(
        "{null:2}",
        &err("JSON parse error, key is not a string in object"),
    );
    // The first error in token order wins: the bad keyword inside the key comes first.
    check("{[nul]:2}", &err("JSON parse error, invalid keyword 'nul'"));
    check(
        r#"{"execute":"guest-ping","execute":"guest-ping"}"#,
        &err("JSON parse error, duplicate key"),
    );
    // upstream checks for a duplicate after parsing the value: errors in the value come first.
    check(
        r#"{"a":1,"a":[nul]}"#,
        &err("JSON parse error, invalid keyword 'nul'"),
    );
    check(
        r#"{"a":1,"a":2 3}"#,
        &err("JSON parse error, duplicate key"),
    );
    // Keys repeat only within one object.
    check(
        r#"{"a":{"b":1},"b":1,"c":{"b":2}}"#,
        &err("QMP input member 'a' is unexpected"),
    );
    check(
        r#"{"execute":"guest-\x"}"#,
        &err("JSON parse error, invalid escape sequence in string"),
    );
    check_bytes(
        b"{\"execute\":\"\xc3\x28\"}",
        &err("JSON parse error, invalid UTF-8 sequence in string"),
    );
    check_bytes(
        b"{\"execute\":\"\xed\xa0\x80\"}",
        &err("JSON parse error, invalid UTF-8 sequence in string"),
    );
    check_bytes(
        b"{\"execute\":\"\xef\xbf\xbf\"}",
        &err("JSON parse error, invalid UTF-8 sequence in string"),
    );
    check(
        r#"{"execute":"\uD800"}"#,
        &err("JSON parse error, \\\\uD800 is not a valid Unicode character"),
    );
    check(
        r#"{"execute":"\uDC00x"}"#,
        &err("JSON parse error, \\\\uDC00 is not a valid Unicode character"),
    );
    check(
        r#"{"execute":"\uD800\u0041"}"#,
        &err("JSON parse error, \\\\uD800 is not a valid Unicode character"),
    );
    check(
        r#"{"execute":"\uFFFF"}"#,
        &err("JSON parse error, \\\\uFFFF is not a valid Unicode character"),
    );
    check(
        r#"{"execute":"\u12"}"#,
        &err("JSON parse error, \\\\u12\\\" is not a valid Unicode character"),
    );
    check(
        r#"{"execute":"\u12G4"}"#,
        &err("JSON parse error, \\\\u12G4 is not a valid Unicode character"),
    );
    // The first parse error is reported once the request is complete, then the next request.
    check(
        r#"{"a":x, "b":[1 2]}{"execute":"guest-ping"}"#,
        &format!("{}{PING_OK}", err("JSON parse error, invalid keyword 'x'")),
    );
}

#[test]
fn long_keyword_is_cut_like_upstream() {
    let kw = "a".repeat(2000);
    let out = exchange(format!("[{kw}]").as_bytes());
    let want_kw = "a".repeat(1023 - "invalid keyword '".len());
    assert_eq!(
        out,
        err(&format!("JSON parse error, invalid keyword '{want_kw}"))
    );
}

#[test]
fn escapes_and_unicode() {
    check(r#"{"execute":"guest-p\u0069ng"}"#, PING_OK);
    check(
        r#"{"execute":"guest-ping","id":"\ud83d\ude00 \u00e9 \/ \b\f\n\r\t \" \\ \'"}"#,
        "{\"return\": {}, \"id\": \"\\uD83D\\uDE00 \\u00E9 / \\b\\f\\n\\r\\t \\\" \\\\ '\"}\n",
    );
    check(
        "{'execute':'guest-ping','id':'it\\'s \"x\"'}",
        "{\"return\": {}, \"id\": \"it's \\\"x\\\"\"}\n",
    );
    check_bytes(
        "{\"execute\":\"guest-ping\",\"id\":\"é😀\"}".as_bytes(),
        "{\"return\": {}, \"id\": \"\\u00E9\\uD83D\\uDE00\"}\n",
    );
    // \u0000 and the modified-UTF-8 NUL.
    check(
        r#"{"execute":"guest-ping","id":"a\u0000b"}"#,
        "{\"return\": {}, \"id\": \"a\\u0000b\"}\n",
    );
    check_bytes(
        b"{\"execute\":\"guest-ping\",\"id\":\"a\xc0\x80b\"}",
        "{\"return\": {}, \"id\": \"a\\u0000b\"}\n",
    );
    check_bytes(
        b"{\"execute\":\"guest-nosuch\\u0000\"}",
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command guest-nosuch\\u0000 has not been found\"}}\n",
    );
}

#[test]
fn nesting_limit() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(
        exchange(deep(1024).as_bytes()),
        err("QMP input must be a JSON object")
    );
    let out = exchange(deep(1025).as_bytes());
    let want = format!(
        "{}{}",
        err("JSON nesting depth limit exceeded"),
        err("JSON parse error, expecting value").repeat(1025)
    );
    assert_eq!(out, want);
    // The nesting slice sets the limit.
    let cfg = Cfg {
        nest: 4,
        ..Cfg::default()
    };
    let out = run_pieces(
        &mut MemPlatform::full(),
        &cfg,
        &[b"{\"execute\":\"guest-ping\",\"id\":[[[1]]]}"],
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"return\": {}, \"id\": [[[1]]]}\n"
    );
    let out = run_pieces(
        &mut MemPlatform::full(),
        &cfg,
        &[b"{\"id\":[[[[1]]]]}{\"execute\":\"guest-ping\"}"],
    );
    let e = err("JSON parse error, expecting value");
    // As upstream: the flush drops the open brackets, `1` is then a request of its own, and
    // every closer left is one more.
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}{}{e}{e}{e}{e}{e}{PING_OK}",
            err("JSON nesting depth limit exceeded"),
            err("QMP input must be a JSON object")
        )
    );
    // A deep `id` is echoed without recursion.
    let id = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
    let out = exchange(format!("{{\"execute\":\"guest-ping\",\"id\":{id}}}").as_bytes());
    assert_eq!(
        out,
        format!(
            "{{\"return\": {{}}, \"id\": {}1{}}}\n",
            "[".repeat(1000),
            "]".repeat(1000)
        )
    );
}

#[test]
fn oversized_request_gets_one_error_and_the_next_is_served() {
    let cfg = Cfg {
        frame: 128,
        ..Cfg::default()
    };
    let big = format!(
        r#"{{"execute":"guest-sync","arguments":{{"id":1}},"id":"{}"}}"#,
        "x".repeat(500)
    );
    let input = format!("{big}{{\"execute\":\"guest-ping\",\"id\":2}}");
    let out = run_pieces(&mut MemPlatform::full(), &cfg, &[input.as_bytes()]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}{{\"return\": {{}}, \"id\": 2}}\n",
            err("JSON token size limit exceeded")
        )
    );
    // Many small tokens that add up.
    let many = format!("{{\"id\":[{}]}}", vec!["1"; 200].join(","));
    let input = format!("{many}{{\"execute\":\"guest-ping\",\"id\":3}}");
    let pieces: Vec<&[u8]> = input.as_bytes().chunks(7).collect();
    let out = run_pieces(&mut MemPlatform::full(), &cfg, &pieces);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}{{\"return\": {{}}, \"id\": 3}}\n",
            err("JSON token size limit exceeded")
        )
    );
    // An oversized request cut by a control byte: still one error.
    let input = format!(
        "{{\"id\":\"{}\x01{{\"execute\":\"guest-ping\"}}",
        "y".repeat(300)
    );
    let out = run_pieces(&mut MemPlatform::full(), &cfg, &[input.as_bytes()]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}{PING_OK}", err("JSON token size limit exceeded"))
    );
}

#[test]
fn reset_drops_a_partial_request() {
    let cfg = Cfg::default();
    let mut store = Store::new(&cfg);
    let mut agent = store.agent(&cfg);
    let mut p = MemPlatform::full();
    let mut out = Vec::new();
    agent
        .feed(b"{\"execute\":\"guest-ping\",", &mut p, &mut out)
        .unwrap();
    assert!(!agent.idle());
    agent.reset();
    assert!(agent.idle());
    agent
        .feed(b"\"id\":\"after-reconnect\"}", &mut p, &mut out)
        .unwrap();
    agent
        .feed(b"{\"execute\":\"guest-ping\"}", &mut p, &mut out)
        .unwrap();
    // Without the reset upstream answers {"return": {}, "id": "after-reconnect"}; here the
    // rest is a fresh stream: a string, a colon, a string and a brace.
    let obj = err("QMP input must be a JSON object");
    let ev = err("JSON parse error, expecting value");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{obj}{ev}{obj}{ev}{PING_OK}")
    );
    // A reset also ends lexer recovery and a half-read string.
    let mut out = Vec::new();
    agent.feed(b"\"abc", &mut p, &mut out).unwrap();
    agent.reset();
    agent
        .feed(b"{\"execute\":\"guest-ping\"}", &mut p, &mut out)
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), PING_OK);
}

// §2.4
#[test]
fn envelope_checks() {
    check(
        r#"{"execute":"guest-ping","id":{"a":[1,2]}}"#,
        "{\"return\": {}, \"id\": {\"a\": [1, 2]}}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":null}"#,
        "{\"return\": {}, \"id\": null}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":true}"#,
        "{\"return\": {}, \"id\": true}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":1.0}"#,
        "{\"return\": {}, \"id\": 1}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":0.08}"#,
        "{\"return\": {}, \"id\": 0.080000000000000002}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":-0}"#,
        "{\"return\": {}, \"id\": 0}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":18446744073709551615}"#,
        "{\"return\": {}, \"id\": 18446744073709551615}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":-9223372036854775809}"#,
        "{\"return\": {}, \"id\": -9.2233720368547758e+18}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":1e400}"#,
        "{\"return\": {}, \"id\": inf}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":{}}"#,
        "{\"return\": {}, \"id\": {}}\n",
    );
    check(
        r#"{"execute":1}"#,
        &err("QMP input member 'execute' must be a string"),
    );
    check(
        r#"{"execute":"guest-ping","arguments":[]}"#,
        &err("QMP input member 'arguments' must be an object"),
    );
    check(
        r#"{"execute":"guest-ping","foo":1}"#,
        &err("QMP input member 'foo' is unexpected"),
    );
    check(
        r#"{"exec-oob":"guest-ping"}"#,
        &err("QMP input member 'exec-oob' is unexpected"),
    );
    check(
        r#"{"id":1}"#,
        &err_id("1", "QMP input lacks member 'execute'"),
    );
    check(r#"{}"#, &err("QMP input lacks member 'execute'"));
    check(
        r#"{"id":"x","execute":"guest-ping","foo":1}"#,
        &err_id("\"x\"", "QMP input member 'foo' is unexpected"),
    );
    // Several failures: the first in QDict order (bucket of tdb_hash) is reported:
    // "x" is in bucket 134, "execute" in 299, "zzz" in 358, "arguments" and "c" in 447,
    // "foo" in 490; in one bucket the member inserted last comes first.
    check(
        r#"{"arguments":2,"execute":1}"#,
        &err("QMP input member 'execute' must be a string"),
    );
    check(
        r#"{"arguments":2,"zzz":1,"execute":1}"#,
        &err("QMP input member 'execute' must be a string"),
    );
    check(
        r#"{"arguments":2,"execute":1,"x":1}"#,
        &err("QMP input member 'x' is unexpected"),
    );
    check(
        r#"{"foo":1,"arguments":2}"#,
        &err("QMP input member 'arguments' must be an object"),
    );
    check(
        r#"{"arguments":1,"c":1,"execute":"guest-ping"}"#,
        &err("QMP input member 'c' is unexpected"),
    );
    check(
        r#"{"c":1,"arguments":1,"execute":"guest-ping"}"#,
        &err("QMP input member 'arguments' must be an object"),
    );
    // Exact, case-sensitive lookup.
    check(
        r#"{"execute":"Guest-ping"}"#,
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command Guest-ping has not been found\"}}\n",
    );
}

#[test]
fn qdict_buckets_match_upstream() {
    use crate::qdict::qdict_bucket;
    assert_eq!(qdict_bucket(b"execute"), 299);
    assert_eq!(qdict_bucket(b"arguments"), 447);
    assert_eq!(qdict_bucket(b"c"), 447);
    assert_eq!(qdict_bucket(b"zzz"), 358);
    assert_eq!(qdict_bucket(b"class"), 211);
    assert_eq!(qdict_bucket(b"desc"), 377);
    assert_eq!(qdict_bucket(b"return"), 401);
    assert_eq!(qdict_bucket(b"id"), 486);
    assert_eq!(qdict_bucket(b"load1m"), 505);
    assert_eq!(qdict_bucket(b"load5m"), 505);
}

#[test]
fn disabled_and_frozen() {
    let not_allowed = |c: &str| {
        format!(
            "{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"Command {c} has been disabled: the command is not allowed\"}}}}\n"
        )
    };
    let cfg = Cfg {
        block: vec![Command::GuestPing],
        ..Cfg::default()
    };
    let out = run_pieces(
        &mut MemPlatform::full(),
        &cfg,
        &[br#"{"execute":"guest-ping"}"#],
    );
    assert_eq!(String::from_utf8(out).unwrap(), not_allowed("guest-ping"));
    // Disabled comes before argument checks.
    let cfg = Cfg {
        allow: vec![Command::GuestPing],
        ..Cfg::default()
    };
    let out = run_pieces(
        &mut MemPlatform::full(),
        &cfg,
        &[br#"{"execute":"guest-sync","arguments":{}}{"execute":"guest-ping"}"#],
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}{PING_OK}", not_allowed("guest-sync"))
    );
    // Frozen: only the freeze allow list, even if blocked.
    let mut p = MemPlatform::full();
    p.fs.as_mut().unwrap().frozen = true;
    let cfg = Cfg {
        block: vec![Command::GuestPing],
        ..Cfg::default()
    };
    let out = run_pieces(&mut p, &cfg, &[br#"{"execute":"guest-get-time"}{"execute":"guest-ping"}{"execute":"guest-fsfreeze-thaw"}{"execute":"guest-get-time"}"#]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}{PING_OK}{{\"return\": 2}}\n{{\"return\": 1795438762351795000}}\n",
            not_allowed("guest-get-time")
        )
    );
}

// §1.1
#[test]
fn argument_errors() {
    check(
        r#"{"execute":"guest-sync"}"#,
        &err("Parameter 'id' is missing"),
    );
    check(
        r#"{"execute":"guest-sync","arguments":{"id":1.5}}"#,
        &err("Invalid parameter type for 'id', expected: integer"),
    );
    check(
        r#"{"execute":"guest-sync","arguments":{"id":18446744073709551615}}"#,
        &err("Invalid parameter type for 'id', expected: integer"),
    );
    check(
        r#"{"execute":"guest-sync","arguments":{"id":"1"}}"#,
        &err("Invalid parameter type for 'id', expected: integer"),
    );
    check(
        r#"{"execute":"guest-sync","arguments":{"id":null}}"#,
        &err("Invalid parameter type for 'id', expected: integer"),
    );
    check(
        r#"{"execute":"guest-sync","arguments":{"id":-9223372036854775808}}"#,
        "{\"return\": -9223372036854775808}\n",
    );
    check(
        r#"{"execute":"guest-ping","arguments":{"foo":1}}"#,
        &err("Parameter 'foo' is unexpected"),
    );
    // Members are checked first (schema order), unknown keys after.
    check(
        r#"{"execute":"guest-sync","arguments":{"foo":1}}"#,
        &err("Parameter 'id' is missing"),
    );
    check(
        r#"{"execute":"guest-sync","arguments":{"foo":1,"id":1}}"#,
        &err("Parameter 'foo' is unexpected"),
    );
    check(
        r#"{"execute":"guest-file-seek","arguments":{"whence":"x","offset":"y"}}"#,
        &err("Parameter 'handle' is missing"),
    );
    check(
        r#"{"execute":"guest-file-seek","arguments":{"handle":1,"whence":"x","offset":"y"}}"#,
        &err("Invalid parameter type for 'offset', expected: integer"),
    );
    check(
        r#"{"execute":"guest-file-seek","arguments":{"handle":1,"offset":0,"whence":"middle"}}"#,
        &err("Parameter 'whence' does not accept value 'middle'"),
    );
    check(
        r#"{"execute":"guest-file-seek","arguments":{"handle":1,"offset":0,"whence":true}}"#,
        &err("Invalid parameter type for 'whence', expected: GuestFileWhence"),
    );
    check(
        r#"{"execute":"guest-file-seek","arguments":{"handle":1,"offset":0,"whence":1.5}}"#,
        &err("Invalid parameter type for 'whence', expected: integer"),
    );
    check(
        r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":0}]}}"#,
        &err("Parameter 'vcpus[0].online' is missing"),
    );
    check(
        r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":0,"online":true},{"logical-id":1,"online":1}]}}"#,
        &err("Invalid parameter type for 'vcpus[1].online', expected: boolean"),
    );
    check(
        r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":0,"online":true,"x":1}]}}"#,
        &err("Parameter 'vcpus[0].x' is unexpected"),
    );
    check(
        r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[1]}}"#,
        &err("Invalid parameter type for 'vcpus[0]', expected: object"),
    );
    check(
        r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":{}}}"#,
        &err("Invalid parameter type for 'vcpus', expected: array"),
    );
    check(
        r#"{"execute":"guest-set-memory-blocks","arguments":{"mem-blks":[{"phys-index":1.5,"online":true}]}}"#,
        &err("Parameter 'mem-blks[0].phys-index' expects uint64"),
    );
    check(
        r#"{"execute":"guest-set-memory-blocks","arguments":{"mem-blks":[{"phys-index":-1,"online":true}]}}"#,
        "{\"return\": [{\"phys-index\": 18446744073709551615, \"response\": \"not-found\"}]}\n",
    );
    check(
        r#"{"execute":"guest-ssh-add-authorized-keys","arguments":{"username":"root","keys":["a",2]}}"#,
        &err("Invalid parameter type for 'keys[1]', expected: string"),
    );
    check(
        r#"{"execute":"guest-exec","arguments":{"path":"x","capture-output":1}}"#,
        &err("Invalid parameter type for 'capture-output', expected: GuestExecCaptureOutput"),
    );
    check(
        r#"{"execute":"guest-exec","arguments":{"path":"x","capture-output":"all"}}"#,
        &err("Parameter 'capture-output' does not accept value 'all'"),
    );
    check(
        r#"{"execute":"guest-set-user-password","arguments":{"username":"u","password":"","crypted":"no"}}"#,
        &err("Invalid parameter type for 'crypted', expected: boolean"),
    );
    check(
        r#"{"execute":"guest-file-open","arguments":{"path":1}}"#,
        &err("Invalid parameter type for 'path', expected: string"),
    );
}

#[test]
fn unsupported_after_argument_decoding_and_guest_info() {
    let mut p = MemPlatform::full();
    p.files = None;
    let out = exchange_with(
        &mut p,
        br#"{"execute":"guest-file-open","arguments":{}}{"execute":"guest-file-open","arguments":{"path":"/x"},"id":5}"#,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{}{}",
            err("Parameter 'path' is missing"),
            err_id("5", crate::error::UNSUPPORTED)
        )
    );
    let out = String::from_utf8(exchange_with(&mut p, br#"{"execute":"guest-info"}"#)).unwrap();
    assert!(out.starts_with("{\"return\": {\"version\": \"10.2.50\", \"supported_commands\": [{\"enabled\": true, \"name\": \"guest-network-get-route\", \"success-response\": true}, "), "{out}");
    assert!(out.ends_with("{\"enabled\": true, \"name\": \"guest-sync-delimited\", \"success-response\": true}]}}\n"), "{out}");
    assert!(out.contains(
        "{\"enabled\": false, \"name\": \"guest-file-open\", \"success-response\": true}"
    ));
    assert!(out.contains(
        "{\"enabled\": false, \"name\": \"guest-get-devices\", \"success-response\": true}"
    ));
    assert!(out.contains(
        "{\"enabled\": true, \"name\": \"guest-shutdown\", \"success-response\": false}"
    ));
    assert_eq!(out.matches("\"name\"").count(), 44);
    // A blocked command shows enabled: false too.
    let cfg = Cfg {
        block: vec![Command::GuestGetTime],
        ..Cfg::default()
    };
    let out = String::from_utf8(run_pieces(
        &mut MemPlatform::full(),
        &cfg,
        &[br#"{"execute":"guest-info"}"#],
    ))
    .unwrap();
    assert!(out.contains("{\"enabled\": false, \"name\": \"guest-get-time\""));
    // A platform with nothing: only the core's four are enabled.
    let out = String::from_utf8(exchange_with(
        &mut MemPlatform::default(),
        br#"{"execute":"guest-info"}"#,
    ))
    .unwrap();
    assert_eq!(out.matches("\"enabled\": true").count(), 4);
}

#[test]
fn sync_delimited() {
    check_bytes(
        b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":1}}",
        "\u{FFFD}{\"return\": 1}\n",
    );
    // No 0xFF when its arguments fail, nor before the next response.
    check_bytes(
        b"{\"execute\":\"guest-sync-delimited\"}{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":2},\"id\":3}{\"execute\":\"guest-ping\"}",
        &format!("{}\u{FFFD}{{\"return\": 2, \"id\": 3}}\n{PING_OK}", err("Parameter 'id' is missing")),
    );
}

#[test]
fn no_response_on_success_for_success_response_false() {
    let mut p = MemPlatform::full();
    let out = exchange_with(&mut p, br#"{"execute":"guest-shutdown","id":1}{"execute":"guest-shutdown","arguments":{"mode":"reboot"}}"#);
    assert_eq!(out, b"");
    assert_eq!(
        p.power.as_ref().unwrap().calls,
        ["shutdown powerdown", "shutdown reboot"]
    );
    check(
        r#"{"execute":"guest-shutdown","arguments":{"mode":"off"},"id":1}"#,
        &err_id(
            "1",
            "mode is invalid (valid values are: halt|powerdown|reboot",
        ),
    );
    check(
        r#"{"execute":"guest-suspend-ram"}"#,
        &err("the requested suspend mode is not supported by the guest"),
    );
    let mut p = MemPlatform::full();
    p.power.as_mut().unwrap().fail = true;
    let out = exchange_with(&mut p, br#"{"execute":"guest-shutdown"}"#);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        err("child process has failed to shutdown: exit status 1")
    );
}

fn file_session(p: &mut MemPlatform, input: &str) -> String {
    String::from_utf8(exchange_with(p, input.as_bytes())).unwrap()
}

#[test]
fn files() {
    let mut p = MemPlatform::full();
    p.files
        .as_mut()
        .unwrap()
        .files
        .insert("/hello".into(), b"Hello world".to_vec());
    let out = file_session(
        &mut p,
        concat!(
            r#"{"execute":"guest-file-open","arguments":{"path":"/hello"}}"#,
            r#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":5}}"#,
            r#"{"execute":"guest-file-read","arguments":{"handle":1000}}"#,
            r#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":0}}"#,
            r#"{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":-5,"whence":2}}"#,
            r#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":5}}"#,
            r#"{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":"set"}}"#,
            r#"{"execute":"guest-file-flush","arguments":{"handle":1000}}"#,
            r#"{"execute":"guest-file-close","arguments":{"handle":1000}}"#,
            r#"{"execute":"guest-file-close","arguments":{"handle":1000}}"#,
        ),
    );
    let want = [
        "{\"return\": 1000}\n",
        "{\"return\": {\"buf-b64\": \"SGVsbG8=\", \"count\": 5, \"eof\": false}}\n",
        "{\"return\": {\"buf-b64\": \"IHdvcmxk\", \"count\": 6, \"eof\": true}}\n",
        "{\"return\": {\"buf-b64\": \"\", \"count\": 0, \"eof\": false}}\n",
        "{\"return\": {\"position\": 6, \"eof\": false}}\n",
        "{\"return\": {\"buf-b64\": \"d29ybGQ=\", \"count\": 5, \"eof\": false}}\n",
        "{\"return\": {\"position\": 0, \"eof\": false}}\n",
        "{\"return\": {}}\n",
        "{\"return\": {}}\n",
    ]
    .concat();
    assert_eq!(
        out,
        format!("{want}{}", err("handle '1000' has not been found"))
    );

    let out = file_session(
        &mut p,
        concat!(
            r#"{"execute":"guest-file-open","arguments":{"path":"/new","mode":"rw"}}"#,
            r#"{"execute":"guest-file-open","arguments":{"path":"/missing"}}"#,
            r#"{"execute":"guest-file-open","arguments":{"path":"/new","mode":"w+"}}"#,
            r#"{"execute":"guest-file-write","arguments":{"handle":1001,"buf-b64":"SGVsbG8=\n"}}"#,
            r#"{"execute":"guest-file-write","arguments":{"handle":1001,"buf-b64":"SGVsbG8=","count":4}}"#,
            r#"{"execute":"guest-file-write","arguments":{"handle":1001,"buf-b64":"SGVsbG8=","count":6}}"#,
            r#"{"execute":"guest-file-write","arguments":{"handle":1001,"buf-b64":"SGVs*G8="}}"#,
            r#"{"execute":"guest-file-write","arguments":{"handle":9,"buf-b64":"SGVs*G8="}}"#,
            r#"{"execute":"guest-file-read","arguments":{"handle":1001,"count":50331649}}"#,
            r#"{"execute":"guest-file-read","arguments":{"handle":1001,"count":-1}}"#,
            r#"{"execute":"guest-file-read","arguments":{"handle":7,"count":-1}}"#,
            r#"{"execute":"guest-file-seek","arguments":{"handle":1001,"offset":0,"whence":7}}"#,
            r#"{"execute":"guest-file-seek","arguments":{"handle":1001,"offset":-100,"whence":"cur"}}"#,
        ),
    );
    let want = [
        err("invalid file open mode 'rw'"),
        err("failed to open file '/missing' (mode: 'r'): No such file or directory"),
        "{\"return\": 1001}\n".into(),
        "{\"return\": {\"count\": 5, \"eof\": false}}\n".into(),
        "{\"return\": {\"count\": 4, \"eof\": false}}\n".into(),
        err("value '6' is invalid for argument count"),
        err("Base64 data contains invalid characters"),
        err("handle '9' has not been found"),
        err("value '50331649' is invalid for argument count"),
        err("value '-1' is invalid for argument count"),
        err("handle '7' has not been found"),
        err("invalid whence code 7"),
        err("failed to seek file: Invalid argument"),
    ]
    .concat();
    assert_eq!(out, want);
    assert_eq!(p.files.as_ref().unwrap().files["/new"], b"HelloHell");
}

#[test]
fn glib_base64_quirks() {
    let dec = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        let n = crate::b64::decode_in_place(&mut b, 0, s.len());
        n.map(|n| b[..n].to_vec())
    };
    assert_eq!(dec("SGVsbG8="), Some(b"Hello".to_vec()));
    assert_eq!(dec("SGVs\nbG8="), Some(b"Hello".to_vec()));
    assert_eq!(dec("QQ"), Some(vec![]), "an incomplete group is dropped");
    assert_eq!(dec("QQ==QQ=="), Some(b"AA".to_vec()));
    assert_eq!(dec("QUJD"), Some(b"ABC".to_vec()));
    assert_eq!(dec("A=AA"), Some(vec![0, 0, 0]));
    assert_eq!(dec(""), Some(vec![]));
    assert_eq!(dec("QUJD "), None);
    assert_eq!(dec("QUJD\0"), None);
}

/// The decoder's fast paths (256-character blocks, and with `simd` whole SIMD blocks) against
/// a one-character-at-a-time model of GLib's decoder, on inputs where newlines, `=` and
/// invalid characters fall anywhere, also inside and at the edges of the blocks.
#[test]
fn base64_fast_paths_match_the_glib_model() {
    fn model(s: &[u8]) -> Option<Vec<u8>> {
        let rank = |c: u8| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            b'=' => Some(0),
            _ => None,
        };
        let (mut out, mut v, mut i, mut last) = (Vec::new(), 0u32, 0, [0u8; 2]);
        for &c in s {
            if c == b'\n' {
                continue;
            }
            v = (v << 6) | rank(c)? as u32;
            last = [c, last[0]];
            i += 1;
            if i == 4 {
                out.push((v >> 16) as u8);
                if last[1] != b'=' {
                    out.push((v >> 8) as u8);
                }
                if last[0] != b'=' {
                    out.push(v as u8);
                }
                i = 0;
            }
        }
        Some(out)
    }
    const PLAIN: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for case in 0..3000 {
        let len = (next() % 1500) as usize;
        // Mostly plain digits; some cases sprinkle newlines, `=` or a bad byte.
        let odd_every = [0u64, 3, 50, 200, 1000][case % 5];
        let s: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if odd_every > 0 && r % odd_every == 0 {
                    [b'\n', b'=', b' ', 0xC3, b'\n'][(r >> 8) as usize % 5]
                } else {
                    PLAIN[(r >> 16) as usize % 64]
                }
            })
            .collect();
        let mut b = s.clone();
        let got = crate::b64::decode_in_place(&mut b, 0, s.len()).map(|n| b[..n].to_vec());
        assert_eq!(
            got,
            model(&s),
            "case {case}: {:?}",
            String::from_utf8_lossy(&s)
        );
        // Also at an offset inside a larger frame, as the engine calls it.
        let mut framed = b"{\"buf-b64\": \"".to_vec();
        framed.extend_from_slice(&s);
        framed.extend_from_slice(b"\"}");
        let got = crate::b64::decode_in_place(&mut framed, 13, s.len())
            .map(|n| framed[13..13 + n].to_vec());
        assert_eq!(got, model(&s), "case {case} in a frame");
    }
}

#[test]
fn file_read_streams_in_chunks() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut p = MemPlatform::full();
    p.files
        .as_mut()
        .unwrap()
        .files
        .insert("/big".into(), data.clone());
    let cfg = Cfg {
        chunk: 1000,
        tx: 64,
        ..Cfg::default()
    };
    let out = run_pieces(
        &mut p,
        &cfg,
        &[br#"{"execute":"guest-file-open","arguments":{"path":"/big"}}{"execute":"guest-file-read","arguments":{"handle":1000,"count":200000},"id":1}"#],
    );
    let b64 = super::b64(&data);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{{\"return\": 1000}}\n{{\"return\": {{\"buf-b64\": \"{b64}\", \"count\": 100000, \"eof\": true}}, \"id\": 1}}\n"
        )
    );
}

#[test]
fn file_read_errors() {
    let mut p = MemPlatform::full();
    p.files
        .as_mut()
        .unwrap()
        .files
        .insert("/f".into(), vec![b'x'; 10_000]);
    // The first read fails: a clean error.
    p.files.as_mut().unwrap().fail_read_at = Some(1);
    let cfg = Cfg {
        chunk: 1000,
        tx: 64,
        ..Cfg::default()
    };
    let open = br#"{"execute":"guest-file-open","arguments":{"path":"/f"}}"#;
    let read = br#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":5000}}"#;
    let out = run_pieces(&mut p, &cfg, &[open, read]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{{\"return\": 1000}}\n{}",
            err("failed to read file: Input/output error")
        )
    );
    // A later read fails while everything is still buffered: a clean error too.
    let mut p = MemPlatform::full();
    p.files
        .as_mut()
        .unwrap()
        .files
        .insert("/f".into(), vec![b'x'; 10_000]);
    p.files.as_mut().unwrap().fail_read_at = Some(2);
    let cfg = Cfg {
        chunk: 10,
        tx: 4096,
        ..Cfg::default()
    };
    let out = run_pieces(&mut p, &cfg, &[open, read]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{{\"return\": 1000}}\n{}",
            err("failed to read file: Input/output error")
        )
    );
    // A later read fails after part was sent: the response ends as valid JSON with what was
    // read.
    let mut p = MemPlatform::full();
    p.files
        .as_mut()
        .unwrap()
        .files
        .insert("/f".into(), vec![b'x'; 10_000]);
    p.files.as_mut().unwrap().fail_read_at = Some(3);
    let cfg = Cfg {
        chunk: 300,
        tx: 64,
        ..Cfg::default()
    };
    let out = run_pieces(&mut p, &cfg, &[open, read]);
    let b64 = "eHh4".repeat(200);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{{\"return\": 1000}}\n{{\"return\": {{\"buf-b64\": \"{b64}\", \"count\": 600, \"eof\": false}}}}\n"
        )
    );
}

#[test]
fn lists_and_wrapped_lists() {
    check(
        r#"{"execute":"guest-get-vcpus"}"#,
        "{\"return\": [{\"logical-id\": 0, \"online\": true, \"can-offline\": false}, {\"logical-id\": 1, \"online\": true, \"can-offline\": true}]}\n",
    );
    check(
        r#"{"execute":"guest-fstrim","arguments":{"minimum":4}}"#,
        "{\"return\": {\"paths\": [{\"path\": \"/b\", \"trimmed\": 4096, \"minimum\": 4}, {\"path\": \"/a\", \"error\": \"trim not supported\"}]}}\n",
    );
    check(
        r#"{"execute":"guest-get-users"}"#,
        "{\"return\": [{\"user\": \"root\", \"login-time\": 1700000000.25}]}\n",
    );
    check(
        r#"{"execute":"guest-get-load"}"#,
        "{\"return\": {\"load1m\": 0.080000000000000002, \"load5m\": 1, \"load15m\": 0.5}}\n",
    );
    check(
        r#"{"execute":"guest-get-host-name"}"#,
        "{\"return\": {\"host-name\": \"guest\"}}\n",
    );
    check(
        r#"{"execute":"guest-get-memory-block-info"}"#,
        "{\"return\": {\"size\": 134217728}}\n",
    );
    check(r#"{"execute":"guest-get-diskstats"}"#, "{\"return\": []}\n");
    check(
        r#"{"execute":"guest-get-disks","id":1}"#,
        &err_id("1", crate::error::UNSUPPORTED),
    );
    check(
        r#"{"execute":"guest-get-devices"}"#,
        &err(crate::error::UNSUPPORTED),
    );
    check(
        r#"{"execute":"guest-get-osinfo"}"#,
        "{\"return\": {\"id\": \"debian\"}}\n",
    );
    check(
        r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[]}}"#,
        "{\"return\": 0}\n",
    );
    check(
        r#"{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["/a"]}}"#,
        "{\"return\": 1}\n",
    );
    // A backend failing part-way: with the list still buffered, a clean error.
    let mut p = MemPlatform::full();
    p.cpus.as_mut().unwrap().fail_after = Some(1);
    let out = exchange_with(&mut p, br#"{"execute":"guest-get-vcpus","id":1}"#);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        err_id("1", "No such file or directory")
    );
    // ... and once part of it was sent, a valid, shorter list.
    let cfg = Cfg {
        tx: 8,
        ..Cfg::default()
    };
    let out = run_pieces(&mut p, &cfg, &[br#"{"execute":"guest-get-vcpus","id":1}"#]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"return\": [{\"logical-id\": 0, \"online\": true, \"can-offline\": false}], \"id\": 1}\n"
    );
}

#[test]
fn command_checks() {
    check(
        r#"{"execute":"guest-set-time","arguments":{"time":-1000000000}}"#,
        &err("Invalid time"),
    );
    check(
        r#"{"execute":"guest-set-time","arguments":{"time":3155760000000000000}}"#,
        &err("Invalid time"),
    );
    let mut p = MemPlatform::full();
    let out = exchange_with(&mut p, br#"{"execute":"guest-set-time","arguments":{"time":1700000000000000000}}{"execute":"guest-set-time"}"#);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{PING_OK}{PING_OK}")
    );
    assert_eq!(
        p.clock.as_ref().unwrap().set,
        [Some(1_700_000_000_000_000_000), None]
    );

    let pw = |u: &str, p: &str| {
        format!(
            r#"{{"execute":"guest-set-user-password","arguments":{{"username":"{u}","password":"{p}","crypted":false}}}}"#
        )
    };
    check(&pw("root", "c2VjcmV0"), PING_OK);
    check(
        &pw("root", "c2Vj*mV0"),
        &err("Base64 data contains invalid characters"),
    );
    check(
        &pw("root", "YQpi"),
        &err("forbidden characters in raw password"),
    );
    check(
        &pw("ro:ot", "YQ=="),
        &err("forbidden characters in username"),
    );
    check(
        &pw("ro\\not", "YQ=="),
        &err("forbidden characters in username"),
    );
    // The decoded password is a C string upstream: a newline after a NUL is not seen.
    let mut p = MemPlatform::full();
    let out = exchange_with(&mut p, pw("root", "YQBi").as_bytes());
    assert_eq!(String::from_utf8(out).unwrap(), PING_OK);
    assert_eq!(
        p.users.as_ref().unwrap().passwords,
        [("root".to_string(), b"a".to_vec(), false)]
    );

    check(
        r##"{"execute":"guest-ssh-add-authorized-keys","arguments":{"username":"root","keys":["ssh-rsa AAA","# comment"]}}"##,
        &err("invalid OpenSSH public key: '# comment'"),
    );
    check(
        r#"{"execute":"guest-ssh-remove-authorized-keys","arguments":{"username":"root","keys":["a\nb"]}}"#,
        &err("invalid OpenSSH public key: 'a\\nb'"),
    );
    let mut p = MemPlatform::full();
    let out = exchange_with(
        &mut p,
        concat!(
            r#"{"execute":"guest-ssh-add-authorized-keys","arguments":{"username":"root","keys":["k1","k2"]}}"#,
            r#"{"execute":"guest-ssh-get-authorized-keys","arguments":{"username":"root"}}"#,
            r#"{"execute":"guest-ssh-get-authorized-keys","arguments":{"username":"nobody"}}"#,
        )
        .as_bytes(),
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "{PING_OK}{{\"return\": {{\"keys\": [\"k2\", \"k1\"]}}}}\n{}",
            err("failed to lookup user 'nobody': Success")
        )
    );

    let mut p = MemPlatform::full();
    let out = exchange_with(
        &mut p,
        concat!(
            r#"{"execute":"guest-exec","arguments":{"path":"echo","arg":["-n","\" test_str \""],"capture-output":true}}"#,
            r#"{"execute":"guest-exec","arguments":{"path":"cat","input-data":"aGk=","env":["A=1"],"capture-output":"merged"}}"#,
            r#"{"execute":"guest-exec","arguments":{"path":"cat","input-data":"a*k="}}"#,
            r#"{"execute":"guest-exec","arguments":{"path":"/bin/invalid-cmd42"}}"#,
            r#"{"execute":"guest-exec-status","arguments":{"pid":4401}}"#,
            r#"{"execute":"guest-exec-status","arguments":{"pid":1}}"#,
        )
        .as_bytes(),
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        [
            "{\"return\": {\"pid\": 4401}}\n".to_string(),
            "{\"return\": {\"pid\": 4402}}\n".into(),
            err("Base64 data contains invalid characters"),
            err("Failed to execute child process \\u201C/bin/invalid-cmd42\\u201D (No such file or directory)"),
            "{\"return\": {\"exited\": true, \"exitcode\": 0, \"out-data\": \"IiB0ZXN0X3N0ciAi\", \"out-truncated\": false}}\n".into(),
            err("PID 1 does not exist"),
        ]
        .concat()
    );
    let started = &p.exec.as_ref().unwrap().started;
    use crate::commands::exec::CaptureMode;
    assert_eq!(
        started[0],
        (
            "echo".into(),
            vec!["-n".into(), "\" test_str \"".into()],
            None,
            None,
            CaptureMode::Separated
        )
    );
    assert_eq!(
        started[1],
        (
            "cat".into(),
            vec![],
            Some(vec!["A=1".into()]),
            Some(b"hi".to_vec()),
            CaptureMode::Merged
        )
    );
}

#[test]
fn many_keys_cost() {
    // An object with as many distinct keys as a 64 KiB frame holds; and the same with a
    // duplicate at the end.
    let mut s = String::from("{\"execute\":\"guest-ping\",\"id\":{");
    let mut i = 0;
    while s.len() < 60_000 {
        s.push_str(&format!("\"{i:x}\":0,"));
        i += 1;
    }
    let dup = format!("{s}\"0\":1}}}}");
    s.push_str("\"z\":0}}");
    let t = std::time::Instant::now();
    let out = exchange(s.as_bytes());
    let unique = t.elapsed();
    assert!(
        out.starts_with("{\"return\": {}, \"id\": {\"0\": 0"),
        "{}",
        &out[..80]
    );
    let t = std::time::Instant::now();
    assert_eq!(
        exchange(dup.as_bytes()),
        err("JSON parse error, duplicate key")
    );
    eprintln!(
        "{i} keys: {unique:?} unique, {:?} with a duplicate",
        t.elapsed()
    );
}

#[test]
fn blocking_run_loop() {
    let cfg = Cfg::default();
    let mut store = Store::new(&cfg);
    let mut agent = store.agent(&cfg);
    let mut p = MemPlatform::full();
    // A half request left by a previous connection is dropped.
    agent
        .feed(b"{\"execute\":", &mut p, &mut Vec::new())
        .unwrap();
    let input: &[u8] = b"{\"execute\":\"guest-ping\",\"id\":1}{\"execute\":\"guest-sync\",\"arguments\":{\"id\":2}}";
    let mut reader = input;
    let mut out = [0u8; 256];
    crate::engine::run(&mut agent, &mut p, &mut reader, &mut out[..]).unwrap();
    let want = b"{\"return\": {}, \"id\": 1}\n{\"return\": 2}\n";
    assert_eq!(&out[..want.len()], want);
    assert!(out[want.len()..].iter().all(|&b| b == 0));
}

/// Every malformed input of docs/protocol.md §2.6 gives upstream's number of errors, and the request
/// after it is answered.
#[test]
fn each_malformed_input_then_a_good_request() {
    let cases: &[(&[u8], usize)] = &[
        (b"\xff", 1),
        (b"\x01", 1),
        (b"@", 1),
        (b"{\"execute\":\"guest-ping\xff\"}", 2),
        (b"{\"a\":nul}", 1),
        (b"}", 1),
        (b"{\"a\":1,}", 1),
        (b"{\"a\" 1}", 1),
        (b"{\"a\":1 \"b\":2}", 1),
        (b"[1 2]", 1),
        (b"{1:2}", 1),
        (b"{\"a\":1,\"a\":1}", 1),
        (b"{\"a\":\"\\x\"}", 1),
        (b"{\"a\":\"\xc3\x28\"}", 1),
        (b"{\"a\":\"\\uDC00\"}", 1),
        (b"1 ", 1),
        (b"\"s\"", 1),
        (b"{\"execute\":1}", 1),
        (b"{\"execute\":\"guest-ping\",\"arguments\":1}", 1),
        (b"{\"execute\":\"guest-ping\",\"exec-oob\":1}", 1),
        (b"{\"id\":1}", 1),
        (b"{\"execute\":\"guest-nosuch\"}", 1),
        (b"{\"execute\":\"guest-sync\"}", 1),
        (b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":true}}", 1),
        (b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":1}}", 1),
        (b"{\"execute\":\"guest-set-vcpus\",\"arguments\":{\"vcpus\":[{}]}}", 1),
        (b"{\"execute\":\"guest-file-seek\",\"arguments\":{\"handle\":1,\"offset\":1,\"whence\":\"x\"}}", 1),
    ];
    let next = b"{\"execute\":\"guest-ping\",\"id\":\"next\"}";
    for &(bad, errors) in cases {
        let input = [bad, next].concat();
        let out = exchange(&input);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.len(),
            errors + 1,
            "{:?}: {out}",
            String::from_utf8_lossy(bad)
        );
        assert!(
            lines[..errors].iter().all(|l| l.contains("\"error\"")),
            "{out}"
        );
        assert_eq!(lines[errors], "{\"return\": {}, \"id\": \"next\"}");
    }
    // 1025 nested brackets: the nesting error, then one error per closer left.
    let deep = [b"[".repeat(1025), b"]".repeat(1025), next.to_vec()].concat();
    assert_eq!(exchange(&deep).lines().count(), 1 + 1025 + 1);
}

/// Objects echoed in `id` come out in upstream's QDict order (byte-compared with qemu-ga 7.2).
#[test]
fn id_objects_in_qdict_order() {
    check(
        r#"{"execute":"guest-ping","id":{"b":1,"a":2,"c":[{"z":1,"y":2}]}}"#,
        "{\"return\": {}, \"id\": {\"a\": 2, \"b\": 1, \"c\": [{\"y\": 2, \"z\": 1}]}}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":{"execute":1,"arguments":2,"c":3,"x":{},"zzz":[]}}"#,
        "{\"return\": {}, \"id\": {\"x\": {}, \"execute\": 1, \"zzz\": [], \"c\": 3, \"arguments\": 2}}\n",
    );
    check(
        r#"{"execute":"guest-nosuch","id":{"q":{"w":{"e":1,"r":2},"t":3},"y":4}}"#,
        "{\"id\": {\"y\": 4, \"q\": {\"w\": {\"r\": 2, \"e\": 1}, \"t\": 3}}, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command guest-nosuch has not been found\"}}\n",
    );
    check(
        r#"{"execute":"guest-ping","id":[{"\u0000":1,"\u00e9":2,"a\u0000b":[{},[],{"":null}]}]}"#,
        "{\"return\": {}, \"id\": [{\"\\u00E9\": 2, \"\\u0000\": 1, \"a\\u0000b\": [{}, [], {\"\": null}]}]}\n",
    );
    // Bigger objects keep request order.
    let keys: Vec<String> = (0..65).map(|i| format!("\"k{i}\": {i}")).collect();
    let id = format!("{{{}}}", keys.join(", "));
    check(
        &format!(r#"{{"execute":"guest-ping","id":{id}}}"#),
        &format!("{{\"return\": {{}}, \"id\": {id}}}\n"),
    );
}

#[test]
fn default_frame_holds_a_47_kib_write() {
    let enc = |n: usize| super::b64(&vec![0x5Au8; n]);
    let req = |n: usize| {
        format!(
            r#"{{"execute":"guest-file-open","arguments":{{"path":"/w","mode":"w"}}}}{{"execute":"guest-file-write","arguments":{{"handle":1000,"buf-b64":"{}"}}}}"#,
            enc(n)
        )
    };
    assert_eq!(
        exchange(req(47 * 1024).as_bytes()),
        "{\"return\": 1000}\n{\"return\": {\"count\": 48128, \"eof\": false}}\n"
    );
    assert_eq!(
        exchange(req(48 * 1024).as_bytes()),
        format!(
            "{{\"return\": 1000}}\n{}",
            err("JSON token size limit exceeded")
        )
    );
}

/// A transport that records each `send`.
struct Sends(std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>);

impl crate::out::Transmit for Sends {
    fn send(&mut self, bytes: &[u8]) -> Result<(), crate::out::TxError> {
        self.0.borrow_mut().push(bytes.to_vec());
        Ok(())
    }
}

#[test]
fn pipelined_answers_leave_together_but_before_a_backend_runs() {
    let sent = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut p = MemPlatform::full();
    if let Some(power) = p.power.as_mut() {
        power.sent = Some(sent.clone());
    }
    let cfg = Cfg::default();
    let mut store = Store::new(&cfg);
    let mut agent = store.agent(&cfg);
    let mut tx = Sends(sent.clone());
    let pings = r#"{"execute":"guest-ping","id":1}{"execute":"guest-ping","id":2}"#;
    agent.feed(pings.as_bytes(), &mut p, &mut tx).unwrap();
    // Two answers, one write.
    assert_eq!(sent.borrow().len(), 1);
    assert_eq!(
        sent.borrow()[0],
        b"{\"return\": {}, \"id\": 1}\n{\"return\": {}, \"id\": 2}\n".to_vec()
    );
    let input = r#"{"execute":"guest-ping","id":3}{"execute":"guest-shutdown"}"#;
    agent.feed(input.as_bytes(), &mut p, &mut tx).unwrap();
    // The ping's answer was handed over before the shutdown backend ran.
    let calls = &p.power.as_ref().unwrap().calls;
    assert_eq!(calls, &["shutdown powerdown", "sends before: 2"]);
    assert_eq!(sent.borrow()[1], b"{\"return\": {}, \"id\": 3}\n".to_vec());
    assert_eq!(
        sent.borrow().len(),
        2,
        "guest-shutdown answers nothing on success"
    );
}
