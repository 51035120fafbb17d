//! The wire rules the client relies on, as plain functions: a harness that reads responses
//! itself (from a log, a second stream or a raw `send`) checks them the same way the client does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::error::{ClientError, Result};

/// The outcome of a finished `guest-exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// `exitcode`, when the child exited normally.
    pub exitcode: Option<i64>,
    /// `signal`, when the child was killed by a signal.
    pub signal: Option<i64>,
    /// Decoded `out-data` (empty when not captured).
    pub stdout: Vec<u8>,
    /// Decoded `err-data` (empty when not captured).
    pub stderr: Vec<u8>,
    /// `out-truncated`.
    pub stdout_truncated: bool,
    /// `err-truncated`.
    pub stderr_truncated: bool,
}

/// A chunk read by `guest-file-read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    /// The decoded bytes.
    pub data: Vec<u8>,
    /// The `eof` flag.
    pub eof: bool,
}

/// Parses one response line (without its `\n`), stripping a leading 0xFF sentinel.
pub fn parse_line(line: &[u8]) -> Result<Value> {
    let body = line.strip_prefix(&[0xFF]).unwrap_or(line);
    if let Some(b) = body.iter().find(|&&b| b >= 0x80) {
        return Err(ClientError::Protocol(format!(
            "non-ASCII byte {b:#04x} in response {}",
            String::from_utf8_lossy(line)
        )));
    }
    // Responses may echo a deeply nested `id` (up to upstream's nesting limit of 1024).
    let mut de = serde_json::Deserializer::from_slice(body);
    de.disable_recursion_limit();
    let v: Value = serde::Deserialize::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            ClientError::Protocol(format!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            ))
        })?;
    if !v.is_object() {
        return Err(ClientError::Protocol(format!(
            "response is not an object: {v}"
        )));
    }
    Ok(v)
}

/// Turns a response object into its `return` value or a [`ClientError::Agent`].
pub fn into_return(rsp: Value) -> Result<Value> {
    if let Some(err) = rsp.get("error") {
        let s = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Err(ClientError::Agent {
            class: s("class"),
            desc: s("desc"),
        });
    }
    match rsp {
        Value::Object(mut m) => m
            .remove("return")
            .ok_or_else(|| ClientError::Protocol(format!("response without return: {m:?}"))),
        other => Err(ClientError::Protocol(format!(
            "response is not an object: {other}"
        ))),
    }
}

/// Decodes a `guest-exec-status` value of an exited child.
pub fn decode_exec_status(st: &Value) -> Result<ExecOutput> {
    let data = |k: &str| -> Result<Vec<u8>> {
        match st.get(k).and_then(Value::as_str) {
            None => Ok(Vec::new()),
            Some(s) => B64
                .decode(s)
                .map_err(|e| ClientError::Protocol(format!("{k}: bad base64: {e}"))),
        }
    };
    let flag = |k: &str| st.get(k).and_then(Value::as_bool).unwrap_or(false);
    Ok(ExecOutput {
        exitcode: st.get("exitcode").and_then(Value::as_i64),
        signal: st.get("signal").and_then(Value::as_i64),
        stdout: data("out-data")?,
        stderr: data("err-data")?,
        stdout_truncated: flag("out-truncated"),
        stderr_truncated: flag("err-truncated"),
    })
}

/// Base64 as the agent speaks it (standard alphabet, padded).
pub fn b64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

/// Decodes the agent's base64.
pub fn b64_decode(text: &str) -> Result<Vec<u8>> {
    B64.decode(text)
        .map_err(|e| ClientError::Protocol(format!("bad base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_line_strips_the_sentinel_and_rejects_non_ascii() {
        let v = parse_line(b"\xff{\"return\": 5}").unwrap();
        assert_eq!(v, json!({"return": 5}));
        assert!(parse_line(b"{\"return\": \"\xc3\xa9\"}").is_err());
        assert!(parse_line(b"[1]").is_err());
        assert!(parse_line(b"{\"return\"").is_err());
    }

    #[test]
    fn into_return_maps_errors() {
        let e = into_return(json!({"error": {"class": "CommandNotFound", "desc": "x"}, "id": 1}))
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Agent { ref class, ref desc } if class == "CommandNotFound" && desc == "x")
        );
        assert_eq!(into_return(json!({"return": {}})).unwrap(), json!({}));
        assert!(into_return(json!({"id": 1})).is_err());
    }

    #[test]
    fn exec_status_is_decoded() {
        let st = json!({"exited": true, "exitcode": 3, "out-data": "aGk=", "err-truncated": true});
        let out = decode_exec_status(&st).unwrap();
        assert_eq!(out.exitcode, Some(3));
        assert_eq!(out.signal, None);
        assert_eq!(out.stdout, b"hi");
        assert!(out.stderr.is_empty());
        assert!(!out.stdout_truncated && out.stderr_truncated);
        assert!(decode_exec_status(&json!({"exited": true, "out-data": "!!"})).is_err());
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(b64_encode(b"\x00\xffab"), "AP9hYg==");
        assert_eq!(b64_decode("AP9hYg==").unwrap(), b"\x00\xffab");
        assert!(b64_decode("AP9").is_err());
    }
}
