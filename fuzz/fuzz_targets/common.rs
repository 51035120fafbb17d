//! A platform with every family, over memory, for the fuzz targets.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;

use agent_core::commands::cpus::*;
use agent_core::commands::disks::*;
use agent_core::commands::exec::*;
use agent_core::commands::files::*;
use agent_core::commands::filesystems::*;
use agent_core::commands::memory::*;
use agent_core::commands::network::*;
use agent_core::commands::power::*;
use agent_core::commands::ssh_keys::*;
use agent_core::commands::system::*;
use agent_core::commands::clock::*;
use agent_core::commands::users::*;
use agent_core::commands::{Emitter, List, Platform, StrList};
use agent_core::{Result};
use agent_core::commands::args::{self, Args, Member};
use agent_core::engine::NestSlot;
use agent_core::json::tape::Kind;
use agent_core::json::{Event, Framer, Value};
use agent_core::schema::{Command, Family};
use agent_core::{Agent, Buffers, Error, Transmit, TxError};

/// Collects responses. Its vector is reused from one execution to the next ([`Collect::take`],
/// [`Collect::put_back`]), so a run does not allocate and grow it afresh each time.
#[derive(Default)]
pub struct Collect(pub Vec<u8>);

impl Transmit for Collect {
    fn send(&mut self, bytes: &[u8]) -> core::result::Result<(), TxError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

thread_local! {
    static SPARE: std::cell::Cell<Vec<Vec<u8>>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Collect {
    /// An empty collector, with the capacity of an earlier one.
    pub fn take() -> Self {
        let mut v = SPARE.with(|s| {
            let mut all = s.take();
            let v = all.pop();
            s.set(all);
            v
        })
        .unwrap_or_default();
        v.clear();
        Collect(v)
    }

    /// Give the vector back for the next execution.
    pub fn put_back(self) {
        SPARE.with(|s| {
            let mut all = s.take();
            all.push(self.0);
            s.set(all);
        });
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const M7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// Bit 7 of each byte of the result is set exactly where `w` holds the byte `b`.
fn eq_mask(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * u64::from(b));
    !(((x & M7) + M7) | x | M7)
}

/// Every response is one line of ASCII that starts with `{"`, optionally after one 0xFF.
/// Returns the number of responses.
///
/// The output is often many times longer than the input (every stray byte gets an error that
/// quotes it), and this code is instrumented like the engine, so a byte-by-byte walk cost more
/// than the engine itself: the bytes are examined eight at a time, and only newlines and
/// non-ASCII bytes are looked at one by one.
pub fn check_responses(out: &[u8]) -> usize {
    let Some(&last) = out.last() else { return 0 };
    assert_eq!(last, b'\n', "unterminated response");
    check_line_start(out, 0);
    let mut lines = 0;
    let mut visit = |i: usize| match out[i] {
        b'\n' => {
            lines += 1;
            if i + 1 < out.len() {
                check_line_start(out, i + 1);
            }
        }
        0xFF => assert!(
            i == 0 || out[i - 1] == b'\n',
            "0xFF inside a response: {:?}",
            String::from_utf8_lossy(out)
        ),
        b => panic!("non-ASCII byte {b:#x} in a response: {:?}", String::from_utf8_lossy(out)),
    };
    let mut words = out.chunks_exact(8);
    let mut base = 0;
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().unwrap());
        let mut special = eq_mask(w, b'\n') | (w & HI);
        while special != 0 {
            visit(base + (special.trailing_zeros() / 8) as usize);
            special &= special - 1;
        }
        base += 8;
    }
    for (j, &b) in words.remainder().iter().enumerate() {
        if b == b'\n' || b >= 0x80 {
            visit(base + j);
        }
    }
    lines
}

/// A response starts at `at`: `{"`, or 0xFF then `{"`.
fn check_line_start(out: &[u8], at: usize) {
    let body = &out[at..];
    let body = body.strip_prefix(&[0xFF]).unwrap_or(body);
    assert!(
        body.starts_with(b"{\""),
        "not an object: {:?}",
        String::from_utf8_lossy(&out[at..])
    );
}

/// Parses every response line of `out` (which passed [`check_responses`]) with serde_json and
/// checks its shape: an object with exactly one of `return` and `error`, and an `id` at most; an
/// `error` is `{"class": <GenericError|CommandNotFound>, "desc": <string>}`; a line after the
/// 0xFF sentinel answers `guest-sync-delimited`, so it is a `return` of an integer. Returns
/// each reply with whether it carried the 0xFF.
pub fn parse_replies(out: &[u8]) -> Vec<(bool, serde_json::Value)> {
    let show = || String::from_utf8_lossy(out).into_owned();
    let mut replies = Vec::new();
    for line in out.split_inclusive(|&b| b == b'\n') {
        let (delimited, body) = match line.strip_prefix(&[0xFF]) {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let body = non_finite_as_null(body);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("a response is not JSON ({e}): {:?} in {}", String::from_utf8_lossy(&body), show())
        });
        let o = v.as_object().unwrap_or_else(|| panic!("a response is not an object: {v}"));
        assert!(
            o.keys().all(|k| k == "return" || k == "error" || k == "id")
                && (o.contains_key("return") != o.contains_key("error")),
            "a response must have `return` or `error` (and `id` at most): {v}"
        );
        if let Some(e) = o.get("error") {
            let e = e.as_object().unwrap_or_else(|| panic!("`error` is not an object: {v}"));
            assert!(
                e.len() == 2
                    && matches!(e.get("class").and_then(|c| c.as_str()), Some("GenericError" | "CommandNotFound"))
                    && e.get("desc").is_some_and(|d| d.is_string()),
                "`error` must be {{class, desc}}: {v}"
            );
        }
        if delimited {
            assert!(
                o.get("return").is_some_and(|r| r.is_i64()),
                "0xFF before something other than guest-sync-delimited's answer: {v}"
            );
        }
        replies.push((delimited, v));
    }
    replies
}

/// The response with the number tokens `nan`, `-nan`, `inf` and `-inf` replaced by `null`.
/// They are the one place where the wire is not JSON, on purpose: upstream writes doubles with
/// `%.17g`, which prints them for non-finite values (qobject/qjson.c says so in a FIXME), and
/// the engine matches it byte for byte. The fuzz platform's load average has a NaN to reach
/// that path.
fn non_finite_as_null(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !body.windows(3).any(|w| w == b"nan" || w == b"inf") {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let (mut in_str, mut esc) = (false, false);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
        } else if b == b'"' {
            in_str = true;
        } else if let Some(t) = [&b"-nan"[..], b"nan", b"-inf", b"inf"].iter().find(|t| body[i..].starts_with(t)) {
            out.extend_from_slice(b"null");
            i += t.len();
            continue;
        }
        out.push(b);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// The buffers an agent was given, as far as they decide how a stream is cut into requests.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Frame buffer bytes.
    pub frame: usize,
    /// Nesting slots: the deepest request that parses.
    pub nesting: usize,
}

/// How many responses a byte stream must get, from a model of the protocol's framing that does
/// not share code with the engine (serde_json finds the values).
#[derive(Debug, Default, Clone, Copy)]
pub struct Expected {
    /// At least this many.
    pub min: usize,
    /// At most this many, when every part of the stream could be modelled.
    pub max: Option<usize>,
    /// At most this many with the 0xFF sentinel (`guest-sync-delimited` requests), when known.
    pub delimited_max: Option<usize>,
}

/// A byte that resets the parser wherever it comes (reference §2.3): 0xFE, 0xFF and the control
/// characters other than `\t`, `\r` and `\n`. Each gets exactly one error response (`stray
/// '…'`, quoting whatever partial token it ended), and what was queued is dropped.
fn is_resync(b: u8) -> bool {
    b >= 0xFE || (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n'))
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// What a segment between resync bytes gets: `(must, may)` responses, and how many of them may
/// carry the 0xFF; `None` when the segment holds something the model does not cover (lexical
/// errors, the lexer's extensions such as single quotes, values deeper than the limit, a
/// partial value long enough to overflow the frame): then only the lower bound is kept.
fn segment(seg: &[u8], fresh: bool, last: bool, limits: Limits) -> Option<(usize, usize, usize)> {
    let start = seg.iter().position(|&b| !is_ws(b));
    let Some(start) = start else { return Some((0, 0, 0)) };
    // After a resync byte the lexer is in recovery, which skips everything but structural
    // characters: a value that does not start with `{` or `[` would be skipped.
    if !fresh && !matches!(seg[start], b'{' | b'[') {
        return None;
    }
    // The lexer reads `0e5` as the integer 0 and the keyword `e5` (upstream's json-lexer has no
    // exponent after a leading zero); serde_json reads one number. Outside the model.
    let (mut in_str, mut esc) = (false, false);
    for (i, &b) in seg.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
        } else if b == b'"' {
            in_str = true;
        } else if b == b'0'
            && matches!(seg.get(i + 1), Some(b'e' | b'E'))
            && !(i > 0 && (seg[i - 1].is_ascii_digit() || seg[i - 1] == b'.'))
        {
            return None;
        }
    }
    let (mut must, mut may, mut delimited) = (0, 0, 0);
    let mut values = serde_json::Deserializer::from_slice(seg).into_iter::<serde_json::Value>();
    loop {
        let before = values.byte_offset();
        match values.next() {
            None => break,
            Some(Ok(v)) => {
                let end = values.byte_offset();
                if depth(&v) > limits.nesting {
                    return None;
                }
                let scalar = matches!(
                    v,
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null
                );
                if scalar && end == seg.len() {
                    // A number or keyword is complete only when the next byte arrives: at the
                    // end of the stream it waits; before a resync byte, the model stops.
                    if last {
                        break;
                    }
                    return None;
                }
                let cmd = v.get("execute").and_then(|c| c.as_str());
                if cmd == Some("guest-sync-delimited") {
                    delimited += 1;
                }
                // A successful `success-response: false` command answers nothing.
                let silent = cmd.is_some_and(|name| {
                    Command::ALL.iter().any(|c| c.name() == name && !c.success_response())
                });
                if silent { may += 1 } else { must += 1 }
            }
            Some(Err(e)) if e.is_eof() => {
                // A partial value: it waits for more bytes (or is flushed by the resync byte
                // after it, whose error is counted there). Unless it is already big or deep
                // enough to have been refused.
                let tail = &seg[before..];
                // A partial number or keyword at the top level is ended by the resync byte
                // (the lexer's lookahead) and answered before it: the model stops there.
                let first = tail.iter().copied().find(|&b| !is_ws(b));
                if !last && !matches!(first, Some(b'{' | b'[' | b'"')) {
                    return None;
                }
                // The lexer ends a string at the quote after any escape (`"\u"` is a whole
                // string token, refused later by the parser); serde_json would wait for hex
                // digits. Outside the model.
                if tail.contains(&b'\\') {
                    return None;
                }
                let mut open = 0usize;
                let mut deepest = 0usize;
                let mut in_str = false;
                let mut esc = false;
                for &b in tail {
                    if in_str {
                        match (esc, b) {
                            (true, _) => esc = false,
                            (false, b'\\') => esc = true,
                            (false, b'"') => in_str = false,
                            _ => {}
                        }
                    } else {
                        match b {
                            b'"' => in_str = true,
                            b'{' | b'[' => {
                                open += 1;
                                deepest = deepest.max(open);
                            }
                            b'}' | b']' => open = open.saturating_sub(1),
                            _ => {}
                        }
                    }
                }
                if deepest > limits.nesting || tail.len() * 8 >= limits.frame {
                    return None;
                }
                break;
            }
            Some(Err(_)) => return None,
        }
    }
    Some((must, may, delimited))
}

/// The responses `input`, fed to a fresh agent with these limits, must get.
pub fn expected(input: &[u8], limits: Limits) -> Expected {
    let mut e = Expected { min: 0, max: Some(0), delimited_max: Some(0) };
    let segments: Vec<&[u8]> = input.split(|&b| is_resync(b)).collect();
    let resyncs = segments.len() - 1;
    e.min += resyncs;
    e.max = e.max.map(|m| m + resyncs);
    for (i, seg) in segments.iter().enumerate() {
        match segment(seg, i == 0, i + 1 == segments.len(), limits) {
            Some((must, may, delimited)) => {
                e.min += must;
                e.max = e.max.map(|m| m + must + may);
                e.delimited_max = e.delimited_max.map(|d| d + delimited);
            }
            None => {
                e.max = None;
                e.delimited_max = None;
            }
        }
    }
    e
}

/// Every response is JSON of the right shape, and their number (and the number with 0xFF) is
/// what [`expected`] says `input` must get.
pub fn check_stream(input: &[u8], out: &[u8], limits: Limits) {
    check_responses(out);
    let replies = parse_replies(out);
    let e = expected(input, limits);
    let n = replies.len();
    let show = || format!("input {:?}\noutput {}", String::from_utf8_lossy(input), String::from_utf8_lossy(out));
    assert!(n >= e.min, "{n} responses, expected at least {}: {}", e.min, show());
    if let Some(max) = e.max {
        assert!(n <= max, "{n} responses, expected at most {max}: {}", show());
    }
    if let Some(d) = e.delimited_max {
        let got = replies.iter().filter(|(delimited, _)| *delimited).count();
        assert!(got <= d, "{got} responses with 0xFF for {d} guest-sync-delimited requests: {}", show());
    }
}

#[derive(Default)]
pub struct Mem {
    files: BTreeMap<i64, (Vec<u8>, usize)>,
    next: i64,
    frozen: bool,
}

impl Mem {
    /// The contents of every open file, by handle.
    pub fn contents(&self) -> Vec<(i64, Vec<u8>)> {
        self.files.iter().map(|(h, (d, _))| (*h, d.clone())).collect()
    }
}

impl Files for Mem {
    fn has_handle(&self, handle: i64) -> bool {
        self.files.contains_key(&handle)
    }
    fn open(&mut self, path: &str, _mode: &str) -> Result<i64> {
        if path.is_empty() {
            return Err(Error::os(2, "No such file or directory"));
        }
        let h = 1000 + self.next;
        self.next += 1;
        self.files.insert(h, (path.as_bytes().repeat(3), 0));
        Ok(h)
    }
    fn close(&mut self, handle: i64) -> Result<()> {
        self.files.remove(&handle);
        Ok(())
    }
    fn read(&mut self, handle: i64, buf: &mut [u8]) -> Result<usize> {
        let (data, pos) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        let n = buf.len().min(data.len() - *pos);
        buf[..n].copy_from_slice(&data[*pos..*pos + n]);
        *pos += n;
        Ok(n)
    }
    fn writes_in_parts(&self) -> bool {
        true // appends: pieces land as one write of all of them would
    }
    fn write(&mut self, handle: i64, data: &[u8]) -> Result<GuestFileWrite> {
        let (file, _) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        file.extend_from_slice(data);
        Ok(GuestFileWrite { count: data.len() as i64, eof: false })
    }
    fn seek(&mut self, handle: i64, offset: i64, _whence: Seek) -> Result<GuestFileSeek> {
        let (data, pos) = self.files.get_mut(&handle).ok_or(Error::NoHandle(handle))?;
        if offset < 0 || offset as usize > data.len() {
            return Err(Error::os(22, "Invalid argument"));
        }
        *pos = offset as usize;
        Ok(GuestFileSeek { position: offset, eof: false })
    }
    fn flush(&mut self, _handle: i64) -> Result<()> {
        Ok(())
    }
}

impl Clock for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn get_time(&mut self) -> Result<i64> {
        Ok(1)
    }
    fn set_time(&mut self, _time: Option<i64>) -> Result<()> {
        Ok(())
    }
}

impl Power for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn shutdown(&mut self, _mode: ShutdownMode) -> Result<()> {
        Ok(())
    }
    fn suspend(&mut self, _mode: SuspendMode) -> Result<()> {
        Err(Error::msg(format_args!("the requested suspend mode is not supported by the guest")))
    }
}

impl Filesystems for Mem {
    fn status(&mut self) -> FsfreezeStatus {
        if self.frozen { FsfreezeStatus::Frozen } else { FsfreezeStatus::Thawed }
    }
    fn freeze(&mut self, m: Option<StrList<'_>>) -> Result<i64> {
        let n = m.map_or(1, |l| l.len() as i64);
        self.frozen = n > 0;
        Ok(n)
    }
    fn thaw(&mut self) -> Result<i64> {
        self.frozen = false;
        Ok(1)
    }
    fn fstrim(&mut self, minimum: Option<i64>, out: &mut Emitter<'_, GuestFilesystemTrimResult<'static>>) -> Result<()> {
        out.emit(&GuestFilesystemTrimResult { path: "/", trimmed: Some(1), minimum, error: None });
        Ok(())
    }
}

impl Cpus for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn vcpus(&mut self, out: &mut Emitter<'_, GuestLogicalProcessor>) -> Result<()> {
        out.emit(&GuestLogicalProcessor { logical_id: 0, online: true, can_offline: None });
        Ok(())
    }
    fn set_vcpus(&mut self, vcpus: List<'_, GuestLogicalProcessor>) -> Result<i64> {
        Ok(vcpus.iter().count() as i64)
    }
    fn cpustats(&mut self, _out: &mut Emitter<'_, GuestLinuxCpuStats>) -> Result<()> {
        Err(Error::os(2, "No such file or directory"))
    }
    fn load(&mut self) -> Result<GuestLoadAverage> {
        Ok(GuestLoadAverage { load1m: 0.1, load5m: 0.2, load15m: f64::NAN })
    }
}

impl Memory for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn blocks(&mut self, _out: &mut Emitter<'_, GuestMemoryBlock>) -> Result<()> {
        Ok(())
    }
    fn set_blocks(&mut self, blocks: List<'_, GuestMemoryBlock>, out: &mut Emitter<'_, GuestMemoryBlockResponse>) -> Result<()> {
        for b in blocks.iter() {
            out.emit(&GuestMemoryBlockResponse { phys_index: b.phys_index, response: GuestMemoryBlockResponseType::Success, error_code: None });
        }
        Ok(())
    }
    fn block_info(&mut self) -> Result<GuestMemoryBlockInfo> {
        Ok(GuestMemoryBlockInfo { size: 1 })
    }
}

impl Users for Mem {
    fn supports(&self, _cmd: Command) -> bool {
        true // every optional method is implemented
    }

    fn users(&mut self, _out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()> {
        Ok(())
    }
    fn set_password(&mut self, _u: &str, _p: &[u8], _c: bool) -> Result<()> {
        Ok(())
    }
}

impl SshKeys for Mem {
    fn get(&mut self, username: &str, out: &mut Emitter<'_, &'static str>) -> Result<()> {
        out.emit(&username);
        Ok(())
    }
    fn add(&mut self, _u: &str, keys: StrList<'_>, _reset: bool) -> Result<()> {
        keys.iter().for_each(drop);
        Ok(())
    }
    fn remove(&mut self, _u: &str, _keys: StrList<'_>) -> Result<()> {
        Ok(())
    }
}

impl Exec for Mem {
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64> {
        Ok(args.path.len() as i64 + args.input_data.map_or(0, |d| d.len() as i64))
    }
    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>> {
        Err(Error::msg(format_args!("PID {pid} does not exist")))
    }
}

impl System for Mem {
    fn host_name(&mut self) -> Result<&str> {
        Ok("fuzz")
    }
    fn timezone(&mut self) -> Result<GuestTimezone<'_>> {
        Ok(GuestTimezone { zone: None, offset: 0 })
    }
    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>> {
        Ok(GuestOsInfo::default())
    }
}

impl Disks for Mem {
    fn fsinfo(&mut self, _out: &mut Emitter<'_, GuestFilesystemInfo<'static>>) -> Result<()> {
        Ok(())
    }
    fn disks(&mut self, _out: &mut Emitter<'_, GuestDiskInfo<'static>>) -> Result<()> {
        Ok(())
    }
    fn diskstats(&mut self, _out: &mut Emitter<'_, GuestDiskStatsInfo<'static>>) -> Result<()> {
        Ok(())
    }
}

impl Network for Mem {
    fn interfaces(&mut self, _out: &mut Emitter<'_, GuestNetworkInterface<'static>>) -> Result<()> {
        Ok(())
    }
    fn routes(&mut self, _out: &mut Emitter<'_, GuestNetworkRoute<'static>>) -> Result<()> {
        Ok(())
    }
}

/// `Mem` for every family.
#[derive(Default)]
pub struct Full(pub Mem);

impl Platform for Full {
    fn clock(&mut self) -> Option<&mut dyn Clock> { Some(&mut self.0) }
    fn power(&mut self) -> Option<&mut dyn Power> { Some(&mut self.0) }
    fn files(&mut self) -> Option<&mut dyn Files> { Some(&mut self.0) }
    fn filesystems(&mut self) -> Option<&mut dyn Filesystems> { Some(&mut self.0) }
    fn disks(&mut self) -> Option<&mut dyn Disks> { Some(&mut self.0) }
    fn network(&mut self) -> Option<&mut dyn Network> { Some(&mut self.0) }
    fn cpus(&mut self) -> Option<&mut dyn Cpus> { Some(&mut self.0) }
    fn memory(&mut self) -> Option<&mut dyn Memory> { Some(&mut self.0) }
    fn users(&mut self) -> Option<&mut dyn Users> { Some(&mut self.0) }
    fn ssh_keys(&mut self) -> Option<&mut dyn SshKeys> { Some(&mut self.0) }
    fn exec(&mut self) -> Option<&mut dyn Exec> { Some(&mut self.0) }
    fn system(&mut self) -> Option<&mut dyn System> { Some(&mut self.0) }
}

/// No family at all: only the core's commands.
pub struct Bare;

impl Platform for Bare {}

impl Full {
    /// Every family, with one file open (handle 1000, 30 bytes), so that the file commands'
    /// arguments reach the code behind the handle check.
    pub fn with_file() -> Self {
        let mut p = Full::default();
        let _ = Files::open(&mut p.0, "/fuzz/file", "r");
        p
    }
}

/// The arguments object as serde_json reads it, to compare what a typed decoder made of it
/// with: an oracle that shares no code with the engine. Each check holds trivially when
/// serde_json could not read the value (`None`: the lexer's extensions, such as single quotes,
/// or more than one value).
#[derive(Clone, Copy)]
pub struct Input<'j>(pub Option<&'j serde_json::Map<String, serde_json::Value>>);

/// An integer as QAPI `int` reads it (serde_json reads `-0` as a float).
fn json_int(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| (v.as_f64() == Some(0.0) && v.to_string() == "-0.0").then_some(0))
}

impl<'j> Input<'j> {
    fn check(&self, f: impl FnOnce(&serde_json::Map<String, serde_json::Value>) -> bool) -> bool {
        self.0.is_none_or(f)
    }

    /// Required `int` member `name` decoded as `got`.
    pub fn int(&self, name: &str, got: i64) -> bool {
        self.check(|m| m.get(name).and_then(json_int) == Some(got))
    }

    /// Optional `int` member: absent exactly when `got` is `None`.
    pub fn opt_int(&self, name: &str, got: Option<i64>) -> bool {
        self.check(|m| m.get(name).map(json_int) == got.map(Some))
    }

    /// Required `str` member.
    pub fn str(&self, name: &str, got: &str) -> bool {
        self.check(|m| m.get(name).and_then(|v| v.as_str()) == Some(got))
    }

    /// Optional `str` member.
    pub fn opt_str(&self, name: &str, got: Option<&str>) -> bool {
        self.check(|m| m.get(name).map(|v| v.as_str()) == got.map(Some))
    }

    /// Required `bool` member.
    pub fn bool(&self, name: &str, got: bool) -> bool {
        self.check(|m| m.get(name).and_then(|v| v.as_bool()) == Some(got))
    }

    /// Optional `bool` member.
    pub fn opt_bool(&self, name: &str, got: Option<bool>) -> bool {
        self.check(|m| m.get(name).map(|v| v.as_bool()) == got.map(Some))
    }

    /// Optional `['str']` member: the same strings in the same order.
    pub fn opt_strs<'a>(&self, name: &str, got: Option<impl Iterator<Item = &'a str>>) -> bool {
        self.check(|m| match (m.get(name), got) {
            (None, None) => true,
            (Some(v), Some(got)) => v.as_array().is_some_and(|l| {
                let got: Vec<&str> = got.collect();
                l.len() == got.len() && l.iter().zip(&got).all(|(a, b)| a.as_str() == Some(*b))
            }),
            _ => false,
        })
    }

    /// The elements of list member `name`, each as an `Input`, to compare struct elements.
    pub fn elems(&self, name: &str) -> Option<Vec<Input<'j>>> {
        let m = self.0?;
        let l = m.get(name)?.as_array()?;
        Some(l.iter().map(|e| Input(e.as_object())).collect())
    }

    /// Required `uint64` member (negative int64 values wrap, as upstream accepts them).
    pub fn uint(&self, name: &str, got: u64) -> bool {
        self.check(|m| {
            m.get(name).and_then(|v| v.as_u64().or_else(|| json_int(v).map(|i| i as u64)))
                == Some(got)
        })
    }

    /// `capture-output` (bool or mode name) resolved to the mode `got`: `true` is
    /// `separated`, `false` is `none`.
    pub fn check_capture(&self, got: Option<&str>) -> bool {
        self.check(|m| {
            let want = m.get("capture-output").map(|v| match v {
                serde_json::Value::Bool(true) => Some("separated"),
                serde_json::Value::Bool(false) => Some("none"),
                v => v.as_str(),
            });
            want == got.map(Some)
        })
    }

    /// Whether serde_json read the value (the checks above then mean something).
    pub fn known(&self) -> bool {
        self.0.is_some()
    }
}

/// Compares a decoded list of structs with the input's elements, pairwise: same length, and
/// `same(input element, decoded element)` for each.
pub fn same_elems<'j, T>(
    input: Input<'j>,
    name: &str,
    got: impl Iterator<Item = T>,
    same: impl Fn(Input<'j>, &T) -> bool,
) -> bool {
    if !input.known() {
        return true;
    }
    let Some(want) = input.elems(name) else { return false };
    let got: Vec<T> = got.collect();
    want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| same(*w, g))
}

/// What a family's typed decoder made of an arguments object.
pub struct Decoded {
    /// The member table the decoder is declared with.
    pub members: &'static [Member],
    /// Whether it decoded, and what it decoded is consistent (lists keep every element).
    pub ok: bool,
}

/// Decode `v` as `A`; `deep` checks the decoded value.
pub fn decoded<'t, A: Args<'t>>(v: Value<'t>, deep: impl FnOnce(&A) -> bool) -> Decoded {
    Decoded { members: A::MEMBERS, ok: A::decode(v).is_ok_and(|a| deep(&a)) }
}

/// A command without arguments: its member table is empty.
pub fn no_args() -> Decoded {
    Decoded { members: &[], ok: true }
}

/// A family's decoders by command; the decoded values are compared with the [`Input`].
pub type Typed = for<'t, 'j> fn(Command, Value<'t>, Input<'j>) -> Decoded;

/// Largest arguments value, as bytes of JSON (libFuzzer's `-max_len` for these targets).
pub const ARGS_MAX: usize = 1024;
const ARGS_FRAME: usize = 4096;
const ARGS_NEST: usize = 63;

struct ArgsRig {
    frame: Box<[u8]>,
    nest: Box<[NestSlot]>,
    scratch: Box<[u8]>,
    agent: Agent<'static>,
    request: Vec<u8>,
    text: Vec<u8>,
}

thread_local! {
    /// Buffers allocated once per run; the agent is reset before each input, as for a new
    /// client. The arguments are parsed with one nesting level less than the agent has, and a
    /// frame a little smaller, so that arguments that parse alone also parse in the request.
    static ARGS_RIG: RefCell<ArgsRig> = RefCell::new(ArgsRig {
        frame: vec![0; ARGS_FRAME].into_boxed_slice(),
        nest: vec![NestSlot::EMPTY; ARGS_NEST].into_boxed_slice(),
        scratch: vec![0; 64].into_boxed_slice(),
        agent: Agent::new(Buffers {
            frame: Box::leak(vec![0; ARGS_FRAME + 256].into_boxed_slice()),
            chunk: Box::leak(vec![0; 64].into_boxed_slice()),
            tx: Box::leak(vec![0; 512].into_boxed_slice()),
            nesting: Box::leak(vec![NestSlot::EMPTY; ARGS_NEST + 1].into_boxed_slice()),
        })
        .expect("buffers above the minimums"),
        request: Vec::with_capacity(ARGS_MAX + 64),
        text: Vec::new(),
    });
}

const ERROR_PREFIX: &[u8] = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"";

/// The argument decoders of one family. The first byte picks one of the family's commands;
/// the rest is the `arguments` value.
///
/// 1. The value is parsed alone and, if it is an object, checked with `args::validate`
///    against the command's member table, and decoded with the family's typed decoder (which
///    must not panic on any object, and must succeed, with every list element kept and the
///    values serde_json reads from the same bytes ([`Input`]), when validation passed).
/// 2. The value is sent as `{"execute":"<command>","arguments":<value>}` to an agent with
///    every family over memory. No panic; [`check_stream`] holds. If the value was
///    exactly one object, exactly one response comes back (none for a successful command
///    without success response): the validator's error with its text, or no argument error
///    and no "not currently supported" (what the engine answers when a decoder fails after
///    validation).
pub fn fuzz_args(family: Family, data: &[u8], typed: Typed) {
    let Some((&pick, value)) = data.split_first() else { return };
    let in_family = || Command::ALL.iter().copied().filter(|c| c.family() == family);
    let n = in_family().count();
    let cmd = in_family().nth(pick as usize % n).unwrap();
    // The same value as serde_json reads it, for the decoded values' comparison.
    let json: Option<serde_json::Value> = serde_json::from_slice(value).ok();
    let input = Input(json.as_ref().and_then(|v| v.as_object()));
    ARGS_RIG.with_borrow_mut(|rig| {
        // 1. The value alone.
        let mut framer = Framer::new();
        let mut rest = value;
        let mut events = 0;
        let mut verdict: Option<bool> = None;
        rig.text.clear();
        while !rest.is_empty() {
            let (used, ev) = framer.feed(rest, &mut rig.frame, &mut rig.nest, &mut rig.scratch);
            rest = &rest[used..];
            let Some(ev) = ev else { continue };
            events += 1;
            if ev != Event::Value {
                continue;
            }
            let v = Value::at(&rig.frame, 0);
            if v.kind() != Kind::Object {
                continue;
            }
            let d = typed(cmd, v, input);
            let table = agent_core::commands::members(cmd);
            assert!(
                d.members.len() == table.len()
                    && d.members.iter().zip(table).all(|(a, b)| a.name == b.name && a.optional == b.optional),
                "{}: the typed decoder's members differ from the engine's table",
                cmd.name()
            );
            match args::validate(table, v) {
                Ok(()) => {
                    assert!(
                        d.ok,
                        "{}: validated arguments did not decode, or decoded to other values than \
                         serde_json reads: {}",
                        cmd.name(),
                        String::from_utf8_lossy(value)
                    );
                    verdict = Some(true);
                }
                Err(e) => {
                    rig.text.clear();
                    e.write_text(&mut |b| rig.text.extend_from_slice(b));
                    verdict = Some(false);
                }
            }
        }
        let single = events == 1 && verdict.is_some() && framer.idle();

        // 2. The value as a request.
        rig.request.clear();
        rig.request.extend_from_slice(b"{\"execute\":\"");
        rig.request.extend_from_slice(cmd.name().as_bytes());
        rig.request.extend_from_slice(b"\",\"arguments\":");
        rig.request.extend_from_slice(value);
        rig.request.push(b'}');
        rig.agent.reset();
        let mut platform = Full::with_file();
        let mut out = Collect::take();
        rig.agent.feed(&rig.request, &mut platform, &mut out).unwrap();
        let lines = check_responses(&out.0);
        check_stream(&rig.request, &out.0, Limits { frame: ARGS_FRAME + 256, nesting: ARGS_NEST + 1 });
        if single {
            let o = &out.0;
            let show = || String::from_utf8_lossy(o).into_owned();
            let desc = o.strip_prefix(ERROR_PREFIX);
            let arg_error = desc.is_some_and(|d| {
                d.starts_with(b"Parameter '") || d.starts_with(b"Invalid parameter type for '")
            });
            if verdict == Some(false) {
                assert_eq!(lines, 1, "{}: {}", cmd.name(), show());
                assert!(arg_error, "{}: expected an argument error, got {}", cmd.name(), show());
                // A text that needs no escaping must come back verbatim.
                let t = &rig.text;
                if t.iter().all(|&b| (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\') {
                    let d = desc.unwrap();
                    assert!(
                        d.len() == t.len() + 4 && d.starts_with(t) && d.ends_with(b"\"}}\n"),
                        "{}: the engine's error {} is not the validator's {:?}",
                        cmd.name(),
                        show(),
                        String::from_utf8_lossy(t)
                    );
                }
            } else {
                assert!(lines <= 1, "{}: {} responses to one request: {}", cmd.name(), lines, show());
                assert!(lines == 1 || !cmd.success_response(), "{}: no response", cmd.name());
                assert!(!arg_error, "{}: valid arguments got {}", cmd.name(), show());
                let unsupported = desc.is_some_and(|d| d.starts_with(agent_core::error::UNSUPPORTED.as_bytes()));
                assert!(
                    !unsupported || cmd == Command::GuestGetDevices,
                    "{}: valid arguments got {}",
                    cmd.name(),
                    show()
                );
            }
        }
        out.put_back();
    });
}
