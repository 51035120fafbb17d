//! In-process cost of a request: parsed, dispatched and its response written, for a few
//! typical requests. `cargo run --release -p agent-core --example bench_core`
//!
//! The sink counts bytes and drops them, and the file backend keeps one 64 KiB file in
//! memory, so what is measured is the engine: framing, parsing, argument decoding, base64 and
//! response writing.

use std::hint::black_box;
use std::time::Instant;

use agent_core::Result;
use agent_core::commands::Platform;
use agent_core::commands::files::{Files, GuestFileSeek, GuestFileWrite, Seek};
use agent_core::{Frame, StaticBuffers, Transmit, TxError};

struct Count(usize);

impl Transmit for Count {
    fn send(&mut self, bytes: &[u8]) -> core::result::Result<(), TxError> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// One open file (handle 1000) in memory; every write lands at offset 0.
struct MemFile(Vec<u8>);

impl Files for MemFile {
    fn has_handle(&self, handle: i64) -> bool {
        handle == 1000
    }
    fn open(&mut self, _path: &str, _mode: &str) -> Result<i64> {
        Ok(1000)
    }
    fn close(&mut self, _handle: i64) -> Result<()> {
        Ok(())
    }
    fn read(&mut self, _handle: i64, buf: &mut [u8]) -> Result<usize> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        Ok(n)
    }
    fn write(&mut self, _handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        self.0.clear();
        self.0.extend_from_slice(data);
        Ok(GuestFileWrite {
            count: data.len() as i64,
            eof: false,
        })
    }
    fn seek(&mut self, _handle: i64, offset: i64, _whence: Seek) -> Result<GuestFileSeek> {
        Ok(GuestFileSeek {
            position: offset,
            eof: false,
        })
    }
    fn flush(&mut self, _handle: i64) -> Result<()> {
        Ok(())
    }
}

struct Bench(MemFile);

impl Platform for Bench {
    fn files(&mut self) -> Option<&mut dyn Files> {
        Some(&mut self.0)
    }
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    let mut enc = vec![0u8; data.len().div_ceil(3) * 4];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut enc)
        .unwrap();
    enc.truncate(n);
    String::from_utf8(enc).unwrap()
}

fn main() {
    // Room for a 64 KiB write (about 87 KiB of base64).
    let mut bufs: Box<StaticBuffers<Frame<{ 128 * 1024 }>>> = Box::default();
    let mut agent = bufs.agent();
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut platform = Bench(MemFile(data.clone()));
    let mut sink = Count(0);

    let write = format!(
        r#"{{"execute":"guest-file-write","arguments":{{"handle":1000,"buf-b64":"{}"}},"id":1}}"#,
        b64(&data)
    );
    let cases: [(&str, Vec<u8>, u32); 5] = [
        (
            "guest-ping",
            br#"{"execute":"guest-ping","id":1}"#.to_vec(),
            200_000,
        ),
        (
            "guest-sync",
            br#"{"execute":"guest-sync","arguments":{"id":123456789}}"#.to_vec(),
            200_000,
        ),
        (
            "guest-info",
            br#"{"execute":"guest-info"}"#.to_vec(),
            20_000,
        ),
        (
            "guest-file-read 4 KiB",
            br#"{"execute":"guest-file-read","arguments":{"handle":1000}}"#.to_vec(),
            20_000,
        ),
        ("guest-file-write 64 KiB", write.into_bytes(), 500),
    ];

    // An argument selects the cases whose name contains it (for profiling one of them).
    let only = std::env::args().nth(1).unwrap_or_default();
    println!(
        "{:<26} {:>12} {:>12} {:>14}",
        "request", "request B", "response B", "ns/request"
    );
    for (name, req, n) in cases.iter().filter(|c| c.0.contains(only.as_str())) {
        // Warm up and measure the response size.
        sink.0 = 0;
        agent.feed(req, &mut platform, &mut sink).unwrap();
        let resp = sink.0;
        let start = Instant::now();
        for _ in 0..*n {
            agent
                .feed(black_box(req), &mut platform, &mut sink)
                .unwrap();
        }
        let ns = start.elapsed().as_nanos() as f64 / *n as f64;
        println!("{:<26} {:>12} {:>12} {:>14.0}", name, req.len(), resp, ns);
    }
    if only.is_empty() || "guest-file-write".contains(only.as_str()) {
        assert_eq!(platform.0.0, data, "the write landed");
    }
}
