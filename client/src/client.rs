//! The connection: how bytes get to the agent and answers come back.
//!
//! The stream has no framing of its own and may hold stale bytes from an earlier client
//! (upstream keeps its parser across reconnects) or a half-written request, so a client
//! re-synchronises before it trusts an answer: with `guest-sync` (skip responses until the one
//! echoing our id) or with the 0xFF handshake of `guest-sync-delimited` (skip raw bytes up to the
//! 0xFF the agent puts in front of that answer, tolerating the parse error that our 0xFF
//! provokes). Every read is bounded by a deadline, so a silent agent fails a harness instead of
//! hanging it; and a connect to a busy agent (one client at a time, backlog of 1) times out
//! instead of blocking forever.
//!
//! Hybrid vsock (Firecracker, cloud-hypervisor, `vhost-device-vsock`) puts a one-line handshake
//! in front of the stream, and while the guest boots the monitor resets the connection or
//! closes it without `OK`: so a connect there is the handshake too, retried until it succeeds
//! or the connect time runs out. Every kind ends up as a blocking stream socket in a
//! [`UnixStream`]: an AF_VSOCK socket is carried in one too, since the client only reads,
//! writes, sets time-outs and shuts down, which are the same calls for both families.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::address::Address;
use crate::error::{ClientError, Result};
use crate::wire::{ExecOutput, FileChunk, decode_exec_status, into_return, parse_line};

/// The default time a request may take before the client gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest chunk `guest-file-read` accepts upstream (48 MiB).
pub const FILE_READ_MAX: usize = 48 * 1024 * 1024;

static NEXT_SYNC_ID: AtomicI64 = AtomicI64::new(0);

/// A sync id unlikely to collide with a stale answer from another client or process.
fn fresh_sync_id() -> i64 {
    let n = NEXT_SYNC_ID.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let pid = std::process::id();
    let v = (u64::from(pid) << 32) ^ u64::from(nanos) ^ (n as u64).rotate_left(48);
    (v & 0x3fff_ffff_ffff_ffff) as i64
}

/// A connection to one agent.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    /// Bytes received but not yet consumed.
    pending: Vec<u8>,
    timeout: Duration,
    /// How much the next read asks for (grows while reads come back full).
    read_size: usize,
}

/// The first read of a client asks for this much.
const MIN_READ: usize = 64 * 1024;
/// Reads never ask for more than this.
const MAX_READ: usize = 4 * 1024 * 1024;

impl Client {
    /// Connects to a unix socket (a host agent's `unix-listen` path or a QEMU chardev server),
    /// waiting at most [`DEFAULT_TIMEOUT`] for a place in its listen queue.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_retry(path, DEFAULT_TIMEOUT)
    }

    /// Connects to `address`, waiting at most [`DEFAULT_TIMEOUT`] as [`Client::connect`] does.
    pub fn connect_to(address: &Address) -> Result<Self> {
        Self::connect_to_within(address, DEFAULT_TIMEOUT)
    }

    /// Connects to `address`, retrying for at most `within` as [`Client::connect_retry`] does.
    pub fn connect_to_within(address: &Address, within: Duration) -> Result<Self> {
        match address {
            Address::Unix(path) => Self::connect_retry(path, within),
            Address::VsockUds { path, port } => Self::connect_hybrid_vsock(path, *port, within),
            Address::Vsock { cid, port } => Self::connect_vsock(*cid, *port, within),
        }
    }

    /// Connects through a hybrid-vsock unix socket to the guest's vsock `port`: writes
    /// `CONNECT <port>\n`, reads `OK <n>\n` (any `n`: Firecracker answers its host-side port),
    /// and retries for at most `within` while the socket is missing, the connection is reset,
    /// or closed without `OK` (a guest still booting, or whose agent is not listening yet).
    pub fn connect_hybrid_vsock(
        path: impl AsRef<Path>,
        port: u32,
        within: Duration,
    ) -> Result<Self> {
        let path = path.as_ref();
        let deadline = Instant::now() + within;
        // The last attempt that ended on its own: one cut short by `deadline` says less.
        let mut last = String::new();
        loop {
            let attempt = connect_nonblocking(path)
                .map_err(|e| (format!("connect: {e}"), false))
                .and_then(|s| hybrid_handshake(&s, port, deadline).map(|()| s));
            match attempt {
                Ok(s) => return Ok(Self::from_stream(s)),
                Err((e, cut)) => {
                    if !cut || last.is_empty() {
                        last = e;
                    }
                    if Instant::now() >= deadline {
                        return Err(ClientError::Timeout(format!(
                            "a hybrid-vsock connection through {} to guest port {port} (last \
                             attempt: {last}; is the guest up and its agent listening on that \
                             port?)",
                            path.display()
                        )));
                    }
                    std::thread::sleep(
                        HYBRID_RETRY.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
            }
        }
    }

    /// Connects over AF_VSOCK to `cid`:`port`, retrying for at most `within` while the guest
    /// refuses, resets or does not answer; a host without a vsock transport fails at once.
    pub fn connect_vsock(cid: u32, port: u32, within: Duration) -> Result<Self> {
        let deadline = Instant::now() + within;
        loop {
            match crate::sys::connect_vsock(cid, port) {
                Ok(fd) => return Ok(Self::from_stream(UnixStream::from(fd))),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENODEV | libc::EAFNOSUPPORT | libc::ENETUNREACH)
                    ) =>
                {
                    return Err(ClientError::Io(io::Error::new(
                        e.kind(),
                        format!(
                            "vsock:{cid}:{port}: this host has no vsock transport to guests \
                             ({e}); load vhost_vsock, or use the monitor's hybrid socket \
                             (vsock-uds:PATH:PORT)"
                        ),
                    )));
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(ClientError::Timeout(format!(
                        "a vsock connection to vsock:{cid}:{port} (last error: {e})"
                    )));
                }
                Err(_) => std::thread::sleep(
                    HYBRID_RETRY.min(deadline.saturating_duration_since(Instant::now())),
                ),
            }
        }
    }

    /// Connects, retrying while the socket does not exist yet, refuses, or has a full listen
    /// queue, for at most `within`.
    ///
    /// A plain blocking `connect(2)` to a unix socket whose listen queue is full waits forever,
    /// and that is the normal state of an agent or a QEMU chardev that already serves a client
    /// (they accept one at a time, with a backlog of 1). So the connect is non-blocking and
    /// retried, and a time-out says what is probably going on.
    pub fn connect_retry(path: impl AsRef<Path>, within: Duration) -> Result<Self> {
        let path = path.as_ref();
        let deadline = Instant::now() + within;
        loop {
            match connect_nonblocking(path) {
                Ok(s) => return Ok(Self::from_stream(s)),
                Err(e) if Instant::now() >= deadline => {
                    let hint = if e.raw_os_error() == Some(rustix::io::Errno::AGAIN.raw_os_error())
                    {
                        " (its listen queue is full: another client is probably connected, \
                         and the agent serves one at a time)"
                    } else {
                        ""
                    };
                    return Err(ClientError::Timeout(format!(
                        "a connection to {} (last error: {e}){hint}",
                        path.display()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: UnixStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            read_size: MIN_READ,
        }
    }

    /// Sets the time any single call may wait for the agent.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The time any single call may wait for the agent.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The underlying stream (e.g. to shut down its write half).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends bytes exactly as given: for malformed-input tests and pipelining.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Sends one request without waiting for its answer.
    pub fn send(&mut self, request: &Value) -> Result<()> {
        let text = serde_json::to_vec(request)
            .map_err(|e| ClientError::Protocol(format!("cannot encode request: {e}")))?;
        self.send_raw(&text)
    }

    /// Reads more bytes into `pending`, waiting at most until `deadline`.
    ///
    /// The read goes straight into `pending`'s spare room, and that room grows while reads keep
    /// filling it, so a 64 MiB response costs a few dozen large reads rather than a thousand
    /// small ones and a copy each (the benchmark's file reads depend on it).
    fn fill(&mut self, deadline: Instant, what: &str) -> Result<()> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::Timeout(what.to_string()));
        }
        let left = (deadline - now).max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(left))?;
        self.pending.reserve(self.read_size);
        match rustix::io::read(
            &self.stream,
            rustix::buffer::spare_capacity(&mut self.pending),
        ) {
            Ok(0) => Err(ClientError::Closed(what.to_string())),
            Ok(n) => {
                if n >= self.read_size && self.read_size < MAX_READ {
                    self.read_size *= 2;
                }
                Ok(())
            }
            Err(rustix::io::Errno::AGAIN) => Err(ClientError::Timeout(what.to_string())),
            Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(ClientError::Io(e.into())),
        }
    }

    /// Reads one raw line, including a leading 0xFF if the agent sent one and without the `\n`.
    pub fn read_line(&mut self) -> Result<Vec<u8>> {
        self.read_line_within(self.timeout)
    }

    /// Reads one raw line, waiting at most `within`.
    pub fn read_line_within(&mut self, within: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut scanned = 0;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.pending[scanned..]) {
                let end = scanned + pos;
                if end + 1 == self.pending.len() {
                    // The usual case: the line is all there is. Hand over the buffer itself.
                    let mut line = std::mem::take(&mut self.pending);
                    line.truncate(end);
                    return Ok(line);
                }
                let line = self.pending[..end].to_vec();
                self.pending.drain(..=end);
                return Ok(line);
            }
            scanned = self.pending.len();
            self.fill(deadline, "a response line")?;
        }
    }

    /// Reads one response and parses it; a leading 0xFF sentinel is stripped.
    pub fn read_value(&mut self) -> Result<Value> {
        let line = self.read_line()?;
        parse_line(&line)
    }

    /// Waits `quiet` and fails if any byte arrives meanwhile (for commands that must not answer).
    pub fn expect_silence(&mut self, quiet: Duration) -> Result<()> {
        if !self.pending.is_empty() {
            return Err(ClientError::Protocol(format!(
                "unexpected bytes: {}",
                String::from_utf8_lossy(&self.pending)
            )));
        }
        match self.fill(Instant::now() + quiet, "silence") {
            Err(ClientError::Timeout(_)) => Ok(()),
            Err(e) => Err(e),
            Ok(()) => Err(ClientError::Protocol(format!(
                "unexpected bytes: {}",
                String::from_utf8_lossy(&self.pending)
            ))),
        }
    }

    /// Re-synchronises with `guest-sync`: answers until the one echoing a fresh id are dropped.
    pub fn sync(&mut self) -> Result<()> {
        let id = fresh_sync_id();
        self.send(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.read_line_within(left)?;
            if let Ok(v) = parse_line(&line)
                && v.get("return") == Some(&json!(id))
            {
                return Ok(());
            }
        }
    }

    /// Re-synchronises with the 0xFF handshake: sends 0xFF (which flushes any partial request
    /// in the agent's parser) and `guest-sync-delimited`, then skips raw bytes up to the agent's
    /// 0xFF sentinel and checks that the answer after it echoes the id. The parse error the agent
    /// may send for our 0xFF is skipped with the other stale bytes.
    pub fn sync_delimited(&mut self) -> Result<()> {
        let id = fresh_sync_id();
        let mut req = vec![0xFF];
        req.extend_from_slice(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                .to_string()
                .as_bytes(),
        );
        self.send_raw(&req)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            // Skip to the sentinel.
            loop {
                if let Some(pos) = self.pending.iter().position(|&b| b == 0xFF) {
                    self.pending.drain(..=pos);
                    break;
                }
                self.pending.clear();
                self.fill(deadline, "the 0xFF sentinel of guest-sync-delimited")?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.read_line_within(left)?;
            if let Ok(v) = parse_line(&line)
                && v.get("return") == Some(&json!(id))
            {
                return Ok(());
            }
        }
    }

    /// Sends one request and returns the whole response object (success or error).
    pub fn request(&mut self, request: &Value) -> Result<Value> {
        self.send(request)?;
        self.read_value()
    }

    /// Runs a command and returns its `return` value, or the agent's error as [`ClientError::Agent`].
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut req = json!({"execute": command});
        if let Some(args) = arguments {
            req["arguments"] = args;
        }
        let rsp = self.request(&req)?;
        into_return(rsp)
    }

    /// `guest-ping`.
    pub fn ping(&mut self) -> Result<()> {
        self.execute("guest-ping", None).map(|_| ())
    }

    /// `guest-info`.
    pub fn info(&mut self) -> Result<Value> {
        self.execute("guest-info", None)
    }

    /// The names of the commands `guest-info` reports as enabled.
    pub fn enabled_commands(&mut self) -> Result<Vec<String>> {
        let info = self.info()?;
        let list = info
            .get("supported_commands")
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::Protocol("guest-info without supported_commands".into()))?;
        Ok(list
            .iter()
            .filter(|c| c.get("enabled") == Some(&Value::Bool(true)))
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// `guest-get-time`, in nanoseconds since the epoch.
    pub fn get_time(&mut self) -> Result<i64> {
        let v = self.execute("guest-get-time", None)?;
        v.as_i64()
            .ok_or_else(|| ClientError::Protocol(format!("guest-get-time returned {v}")))
    }

    /// `guest-fsfreeze-status`: `"thawed"` or `"frozen"`.
    pub fn fsfreeze_status(&mut self) -> Result<String> {
        let v = self.execute("guest-fsfreeze-status", None)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol(format!("guest-fsfreeze-status returned {v}")))
    }

    /// `guest-fsfreeze-freeze`; returns how many filesystems were frozen.
    pub fn fsfreeze_freeze(&mut self) -> Result<i64> {
        self.count_of("guest-fsfreeze-freeze")
    }

    /// `guest-fsfreeze-thaw`; returns how many filesystems were thawed.
    pub fn fsfreeze_thaw(&mut self) -> Result<i64> {
        self.count_of("guest-fsfreeze-thaw")
    }

    fn count_of(&mut self, command: &str) -> Result<i64> {
        let v = self.execute(command, None)?;
        v.as_i64()
            .ok_or_else(|| ClientError::Protocol(format!("{command} returned {v}")))
    }

    /// `guest-shutdown` with `mode` (`powerdown`, `halt` or `reboot`; `None`: the agent's
    /// default, powerdown).
    ///
    /// The command answers only when it fails, so success is the absence of an answer: this
    /// waits at most `within` for an error, and a connection closed by the going-down guest
    /// counts as success too.
    pub fn shutdown(&mut self, mode: Option<&str>, within: Duration) -> Result<()> {
        let mut req = json!({"execute": "guest-shutdown"});
        if let Some(mode) = mode {
            req["arguments"] = json!({"mode": mode});
        }
        self.send(&req)?;
        match self.read_line_within(within) {
            Ok(line) => into_return(parse_line(&line)?).and_then(|v| {
                Err(ClientError::Protocol(format!(
                    "guest-shutdown answered {v}, but it answers only when it fails"
                )))
            }),
            Err(ClientError::Timeout(_) | ClientError::Closed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `guest-exec`; returns the pid.
    pub fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        input: Option<&[u8]>,
        capture: bool,
    ) -> Result<i64> {
        let mut a = json!({"path": path, "arg": args, "capture-output": capture});
        if let Some(input) = input {
            a["input-data"] = json!(B64.encode(input));
        }
        let v = self.execute("guest-exec", Some(a))?;
        v.get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| ClientError::Protocol(format!("guest-exec returned {v}")))
    }

    /// `guest-exec-status`, raw.
    pub fn exec_status(&mut self, pid: i64) -> Result<Value> {
        self.execute("guest-exec-status", Some(json!({"pid": pid})))
    }

    /// Polls `guest-exec-status` until the child has exited, for at most `within`.
    pub fn exec_wait(&mut self, pid: i64, within: Duration) -> Result<ExecOutput> {
        let deadline = Instant::now() + within;
        let mut pause = Duration::from_millis(2);
        loop {
            let st = self.exec_status(pid)?;
            if st.get("exited") == Some(&Value::Bool(true)) {
                return decode_exec_status(&st);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(format!(
                    "guest-exec pid {pid} to exit"
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Runs a program to completion with output captured.
    pub fn run(&mut self, path: &str, args: &[&str], within: Duration) -> Result<ExecOutput> {
        let pid = self.exec(path, args, None, true)?;
        self.exec_wait(pid, within)
    }

    /// `guest-file-open`; returns the handle.
    pub fn file_open(&mut self, path: &str, mode: &str) -> Result<i64> {
        let v = self.execute("guest-file-open", Some(json!({"path": path, "mode": mode})))?;
        v.as_i64()
            .ok_or_else(|| ClientError::Protocol(format!("guest-file-open returned {v}")))
    }

    /// `guest-file-read` of at most `count` bytes.
    pub fn file_read(&mut self, handle: i64, count: usize) -> Result<FileChunk> {
        let mut data = Vec::new();
        let eof = self.file_read_into(handle, count, &mut data)?;
        Ok(FileChunk { data, eof })
    }

    /// `guest-file-read`, appending the decoded bytes to `out`; returns the `eof` flag.
    ///
    /// The base64 text is decoded as it arrives, while the agent is still sending the rest, and
    /// only the few bytes around it are parsed as JSON: a 48 MiB chunk is 64 MiB of answer, and
    /// a client that first collects it, then parses it into a `Value`, then decodes it would
    /// measure itself rather than the agent (the benchmark's file reads depend on this).
    /// Anything that is not a read answer (an error, say) goes through the general parser.
    pub fn file_read_into(&mut self, handle: i64, count: usize, out: &mut Vec<u8>) -> Result<bool> {
        #[derive(serde::Deserialize)]
        struct ReadReturn {
            #[serde(rename = "buf-b64")]
            buf: String,
            count: u64,
            eof: bool,
        }
        #[derive(serde::Deserialize)]
        struct Response {
            #[serde(rename = "return")]
            ret: ReadReturn,
        }
        const MARK: &[u8] = br#""buf-b64": ""#;
        self.send_raw(
            format!(
                r#"{{"execute":"guest-file-read","arguments":{{"handle":{handle},"count":{count}}}}}"#
            )
            .as_bytes(),
        )?;
        let deadline = Instant::now() + self.timeout;
        let what = "a guest-file-read answer";
        // 1. Up to the start of the base64 text, or a whole line that has none.
        let mut from = 0;
        let at = loop {
            let window = &self.pending[from..];
            let nl = memchr::memchr(b'\n', window);
            let mark = memchr::memmem::find(window, MARK);
            match (mark, nl) {
                (Some(m), nl) if nl.is_none_or(|n| m < n) => break from + m + MARK.len(),
                (_, Some(_)) => {
                    let v = into_return(self.read_value()?)?;
                    return Err(ClientError::Protocol(format!(
                        "guest-file-read returned {v}"
                    )));
                }
                _ => {
                    from = self.pending.len().saturating_sub(MARK.len());
                    self.fill(deadline, what)?;
                }
            }
        };
        let mut rest: Vec<u8> = self.pending.drain(..at).collect();
        // 2. The base64 text, decoded in whole groups of four as it comes.
        let before = out.len();
        // base64-simd: a client that decodes at the scalar engine's speed would be the
        // bottleneck of the read benchmark, not the agent.
        let bad = |e: base64_simd::Error| {
            ClientError::Protocol(format!("guest-file-read: bad base64: {e}"))
        };
        loop {
            if let Some(q) = memchr::memchr(b'"', &self.pending) {
                base64_simd::STANDARD
                    .decode_append(&self.pending[..q], out)
                    .map_err(bad)?;
                self.pending.drain(..q);
                break;
            }
            let whole = self.pending.len() / 4 * 4;
            if whole > 0 {
                base64_simd::STANDARD
                    .decode_append(&self.pending[..whole], out)
                    .map_err(bad)?;
                self.pending.drain(..whole);
            }
            self.fill(deadline, what)?;
        }
        // 3. The rest of the line, parsed with the text left out.
        rest.extend_from_slice(
            &self.read_line_within(deadline.saturating_duration_since(Instant::now()))?,
        );
        let body = rest.strip_prefix(&[0xFF]).unwrap_or(&rest);
        // The wire rule `parse_line` checks for every other answer (the base64 text itself was
        // checked byte by byte by the decoder).
        if !body.is_ascii() {
            return Err(ClientError::Protocol(format!(
                "non-ASCII byte in response {}",
                String::from_utf8_lossy(body)
            )));
        }
        let rsp: Response = serde_json::from_slice(body).map_err(|e| {
            ClientError::Protocol(format!(
                "guest-file-read answer is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            ))
        })?;
        let got = out.len() - before;
        if rsp.ret.count != got as u64 || !rsp.ret.buf.is_empty() {
            return Err(ClientError::Protocol(format!(
                "guest-file-read: count {} but {got} bytes decoded",
                rsp.ret.count
            )));
        }
        Ok(rsp.ret.eof)
    }

    /// `guest-file-write` of all of `data`; returns the count written.
    pub fn file_write(&mut self, handle: i64, data: &[u8]) -> Result<usize> {
        // Built as bytes: a `Value` holding 64 MiB of base64 would be copied twice more.
        let mut req = format!(
            r#"{{"execute":"guest-file-write","arguments":{{"handle":{handle},"buf-b64":""#
        );
        B64.encode_string(data, &mut req);
        req.push_str("\"}}");
        self.send_raw(req.as_bytes())?;
        drop(req);
        let v = into_return(self.read_value()?)?;
        v.get("count")
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| ClientError::Protocol(format!("guest-file-write returned {v}")))
    }

    /// `guest-file-seek`; returns the new position.
    pub fn file_seek(&mut self, handle: i64, offset: i64, whence: &str) -> Result<i64> {
        let v = self.execute(
            "guest-file-seek",
            Some(json!({"handle": handle, "offset": offset, "whence": whence})),
        )?;
        v.get("position")
            .and_then(Value::as_i64)
            .ok_or_else(|| ClientError::Protocol(format!("guest-file-seek returned {v}")))
    }

    /// `guest-file-flush`.
    pub fn file_flush(&mut self, handle: i64) -> Result<()> {
        self.execute("guest-file-flush", Some(json!({"handle": handle})))
            .map(|_| ())
    }

    /// `guest-file-close`.
    pub fn file_close(&mut self, handle: i64) -> Result<()> {
        self.execute("guest-file-close", Some(json!({"handle": handle})))
            .map(|_| ())
    }

    /// Writes `data` to `remote` (created or truncated) in chunks of `chunk` bytes.
    pub fn push(&mut self, data: &[u8], remote: &str, chunk: usize) -> Result<()> {
        let chunk = chunk.max(1);
        let h = self.file_open(remote, "w")?;
        let res = (|| {
            for part in data.chunks(chunk) {
                let n = self.file_write(h, part)?;
                if n != part.len() {
                    return Err(ClientError::Protocol(format!(
                        "guest-file-write wrote {n} of {} bytes",
                        part.len()
                    )));
                }
            }
            Ok(())
        })();
        let closed = self.file_close(h);
        res.and(closed)
    }

    /// Reads the whole of `remote` in chunks of `chunk` bytes.
    pub fn pull(&mut self, remote: &str, chunk: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.pull_into(remote, chunk, &mut out)?;
        Ok(out)
    }

    /// [`Client::pull`] into `out` (cleared first), which keeps its capacity: a caller that
    /// pulls repeatedly reuses memory already faulted in instead of growing a new vector.
    pub fn pull_into(&mut self, remote: &str, chunk: usize, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        let chunk = chunk.clamp(1, FILE_READ_MAX);
        let h = self.file_open(remote, "r")?;
        let res = (|| loop {
            let before = out.len();
            let eof = self.file_read_into(h, chunk, out)?;
            if eof || out.len() == before {
                return Ok(());
            }
        })();
        let closed = self.file_close(h);
        res.and(closed)
    }
}

/// The pause between two hybrid-vsock or AF_VSOCK connection attempts: short, because a
/// microVM's agent is up within about 100 ms of the monitor's start (the bare-metal image on
/// `microvm`), and an attempt against a local socket costs microseconds.
const HYBRID_RETRY: Duration = Duration::from_millis(10);
/// The longest one hybrid-vsock handshake may wait for its `OK` line: a monitor that holds a
/// connection while the guest is not ready is retried rather than waited on.
const HYBRID_ATTEMPT: Duration = Duration::from_secs(3);

/// Writes `CONNECT <port>\n` and reads the answer line one byte at a time (nothing after the
/// `\n` is the monitor's: it is the guest's first byte). Accepts `OK` with any rest. An error
/// says what happened, and whether the attempt was cut short by `deadline`.
fn hybrid_handshake(s: &UnixStream, port: u32, deadline: Instant) -> Result<(), (String, bool)> {
    use std::io::Read;
    let start = Instant::now();
    let attempt_end = deadline.min(start + HYBRID_ATTEMPT);
    (&*s)
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| (format!("writing CONNECT: {e}"), false))?;
    let mut line = Vec::with_capacity(16);
    let fail = |e: String| Err((e, false));
    loop {
        let now = Instant::now();
        if now >= attempt_end {
            return Err((
                format!(
                    "no answer to CONNECT {port} within {:?} (got {:?})",
                    now - start,
                    String::from_utf8_lossy(&line)
                ),
                attempt_end == deadline,
            ));
        }
        s.set_read_timeout(Some((attempt_end - now).max(Duration::from_millis(1))))
            .map_err(|e| (e.to_string(), false))?;
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Ok(0) => {
                return fail(format!(
                    "closed before OK (got {:?})",
                    String::from_utf8_lossy(&line)
                ));
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= 64 => {
                return fail(format!(
                    "answer to CONNECT is not an OK line: {:?}…",
                    String::from_utf8_lossy(&line)
                ));
            }
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return fail(format!("reading the answer to CONNECT: {e}")),
        }
    }
    if line == b"OK" || line.starts_with(b"OK ") {
        s.set_read_timeout(None)
            .map_err(|e| (e.to_string(), false))?;
        Ok(())
    } else {
        fail(format!(
            "answer to CONNECT {port} is not OK: {:?}",
            String::from_utf8_lossy(&line)
        ))
    }
}

/// One non-blocking `connect(2)` attempt; the stream is blocking once connected.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::connect(&fd, &addr)?;
    rustix::io::ioctl_fionbio(&fd, false)?;
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The client against a scripted peer on a real socket pair: stale bytes, the agent's error
    /// for our 0xFF, a stale sync answer, then the sentinel and our answer.
    #[test]
    fn sync_delimited_skips_stale_bytes_and_the_ff_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while got.len() < 2 || serde_json::from_slice::<Value>(&got[1..]).is_err() {
                let n = b.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got[0], 0xFF);
            let req: Value = serde_json::from_slice(&got[1..]).unwrap();
            let id = req["arguments"]["id"].clone();
            let mut out = Vec::new();
            out.extend_from_slice(b"{\"return\": {}}\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n");
            out.extend_from_slice(b"\xff{\"return\": 1}\n");
            out.push(0xFF);
            out.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
            out.extend_from_slice(b"{\"return\": {}, \"id\": 9}\n");
            b.write_all(&out).unwrap();
            b
        });
        let mut c = Client::from_stream(a);
        c.set_timeout(Duration::from_secs(5));
        c.sync_delimited().unwrap();
        // The byte after the synced answer is the next response, intact.
        assert_eq!(c.read_value().unwrap(), json!({"return": {}, "id": 9}));
        drop(peer.join().unwrap());
    }

    /// A listener that never accepts: the first connection fills the queue, the next ones
    /// must time out instead of blocking forever.
    #[test]
    fn connect_is_bounded_when_the_listen_queue_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let fd = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        rustix::net::bind(&fd, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
        rustix::net::listen(&fd, 0).unwrap();
        let mut held = Vec::new();
        let t0 = Instant::now();
        let err = loop {
            match Client::connect_retry(&path, Duration::from_millis(300)) {
                Ok(c) => held.push(c),
                Err(e) => break e,
            }
            assert!(held.len() < 10, "the listen queue never filled");
        };
        assert!(
            matches!(err, ClientError::Timeout(ref t) if t.contains("listen queue is full")),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn reads_time_out_and_report_closure() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut c = Client::from_stream(a);
        c.set_timeout(Duration::from_millis(50));
        assert!(matches!(c.read_line(), Err(ClientError::Timeout(_))));
        drop(b);
        assert!(matches!(c.read_line(), Err(ClientError::Closed(_))));
    }

    /// A hybrid-vsock monitor on a real unix socket, playing a guest that boots: the first
    /// connection is reset (closed with the CONNECT line unread), the second closed without an
    /// answer, the third answered `OK <n>` with the guest's first bytes right behind it.
    #[test]
    fn hybrid_vsock_retries_through_resets_and_reads_no_further_than_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let path2 = path.clone();
        let monitor = std::thread::spawn(move || {
            // The monitor appears only after the client started trying.
            std::thread::sleep(Duration::from_millis(150));
            let l = std::os::unix::net::UnixListener::bind(&path2).unwrap();
            let mut lines = Vec::new();
            for round in 0..3 {
                let (mut s, _) = l.accept().unwrap();
                if round == 0 {
                    // Let the CONNECT line arrive, then close unread: the client sees a reset.
                    std::thread::sleep(Duration::from_millis(50));
                    drop(s);
                    continue;
                }
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                lines.push(String::from_utf8(line).unwrap());
                if round == 2 {
                    s.write_all(b"OK 1073741824\n{\"return\": {}, \"id\": 1}\n")
                        .unwrap();
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).unwrap();
                    assert_eq!(rest, b"hello");
                }
            }
            lines
        });
        let address: Address = format!("vsock-uds:{}:52", path.display()).parse().unwrap();
        let mut c = Client::connect_to_within(&address, Duration::from_secs(20)).unwrap();
        c.set_timeout(Duration::from_secs(5));
        assert_eq!(c.read_value().unwrap(), json!({"return": {}, "id": 1}));
        c.send_raw(b"hello").unwrap();
        c.stream().shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(monitor.join().unwrap(), ["CONNECT 52", "CONNECT 52"]);
    }

    /// A monitor that never says OK: the connect gives up within its time and says why.
    #[test]
    fn hybrid_vsock_without_ok_times_out_with_the_last_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        l.set_nonblocking(true).unwrap();
        let monitor = std::thread::spawn(move || {
            let mut served = 0;
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut b = [0u8; 32];
                        let _ = s.read(&mut b);
                        let _ = s.write_all(b"FAILURE\n");
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            served
        });
        let t0 = Instant::now();
        let err = Client::connect_hybrid_vsock(&path, 7, Duration::from_millis(800)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        stop.store(true, Ordering::Relaxed);
        assert!(monitor.join().unwrap() >= 2, "retried");
        let e = err.to_string();
        assert!(
            matches!(err, ClientError::Timeout(_)) && e.contains("not OK: \"FAILURE\""),
            "{e}"
        );
    }

    /// AF_VSOCK: where the host has no vsock transport (this machine: no `vhost_vsock`) the
    /// error says so at once; where it has one, nobody listens on this port and the connect
    /// gives up within its time.
    #[test]
    fn af_vsock_fails_clearly_without_a_guest() {
        let t0 = Instant::now();
        let err = Client::connect_vsock(3, 0x7fff_fff3, Duration::from_millis(500)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        match err {
            ClientError::Io(e) => assert!(e.to_string().contains("no vsock transport"), "{e}"),
            ClientError::Timeout(t) => assert!(t.contains("vsock:3:2147483635"), "{t}"),
            other => panic!("{other}"),
        }
    }
}
