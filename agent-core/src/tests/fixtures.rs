use super::*;

#[track_caller]
fn check(input: &str, want: &str) {
    assert_eq!(exchange(input.as_bytes()), want, "input: {input}");
}

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
