//! Streamed writes against whole ones: a `guest-file-write` built from the input (its text
//! mostly base64 digits, sometimes any byte; `count` before or after the text or absent; an
//! unexpected member; `execute` after `arguments`) is fed to an agent that writes it while it
//! arrives (`Agent::stream_writes` with a window of 1-64 bytes, the input cut in two at any
//! point) and to one that holds it whole. The answers must be the same and the files too, or
//! differ only as documented: an error answered after data reached the file carries
//! ` (N bytes were already written to the file)`, a `count` after the text that differs from
//! its length is an error, and a stray byte's error quotes only the part of the string still
//! held. Both outputs also pass the response oracle (`common::check_stream`).
#![no_main]

use agent_core::{Agent, Chunk, Frame, Nesting, StaticBuffers, Tx};
use libfuzzer_sys::fuzz_target;

mod common;
#[path = "../../agent-core/src/tests/stream_diff.rs"]
mod stream_diff;
use common::{Collect, Full, Limits, check_stream};

type Bufs = StaticBuffers<Frame<4096>, Chunk<64>, Tx<512>, Nesting<64>>;

fn request(data: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (shape, count, text) = (data[0], data[1], &data[2..]);
    let text: Vec<u8> = text
        .iter()
        .map(|&b| match b {
            0..=0xBF => DIGITS[b as usize % 64],
            0xC0..=0xC7 => b'\n',
            0xC8..=0xCF => b'=',
            b => b & 0x7F,
        })
        .collect();
    let count = format!("\"count\":{}", count as i32 - 16);
    let mut args = String::from("\"handle\":1000");
    if shape & 3 == 1 {
        args += ",";
        args += &count;
    }
    let mut req = Vec::new();
    let exe = "\"execute\":\"guest-file-write\"";
    if shape & 8 == 0 {
        req.extend_from_slice(format!("{{{exe},\"arguments\":{{{args},\"buf-b64\":\"").as_bytes());
    } else {
        req.extend_from_slice(format!("{{\"id\":1,\"arguments\":{{{args},\"buf-b64\":\"").as_bytes());
    }
    req.extend_from_slice(&text);
    req.push(b'"');
    if shape & 3 == 2 {
        req.extend_from_slice(format!(",{count}").as_bytes());
    }
    if shape & 4 != 0 {
        req.extend_from_slice(b",\"x\":1");
    }
    req.push(b'}');
    if shape & 8 != 0 {
        req.extend_from_slice(format!(",{exe}").as_bytes());
    }
    req.extend_from_slice(b"}{\"execute\":\"guest-ping\",\"id\":\"next\"}");
    req
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let window = 1 + data[0] as usize % 64;
    let input = request(&data[2..]);
    let cut = (data[1] as usize * input.len()) / 255;
    let run = |stream: bool, pieces: &[&[u8]]| {
        let mut bufs: Box<Bufs> = Box::default();
        let mut agent: Agent<'_> = bufs.agent();
        if stream {
            agent.stream_writes(window);
        }
        let mut platform = Full::with_file();
        let mut out = Collect::take();
        for p in pieces {
            agent.feed(p, &mut platform, &mut out).unwrap();
        }
        let text = String::from_utf8_lossy(&out.0).into_owned();
        check_stream(
            &input,
            &out.0,
            Limits {
                frame: 4096,
                nesting: 64,
            },
        );
        out.put_back();
        (text, platform.0.contents())
    };
    let (w_out, w_files) = run(false, &[&input]);
    let (s_out, s_files) = run(true, &[&input[..cut], &input[cut..]]);
    if w_out == s_out {
        assert!(
            w_files == s_files,
            "same answers, different files:\n{w_out}"
        );
    } else {
        assert!(
            stream_diff::note_added(&w_out, &s_out).is_some(),
            "whole:\n{w_out}\nstreamed:\n{s_out}"
        );
    }
});
