//! `cargo xtask bench`: our `qga` against Debian's `qemu-ga`, side by side in one run.
//!
//! A timing means little across runs on a noisy shared 2-core machine, so the two agents are
//! measured in the same run, alternating round by round, and the report is the ratio of their
//! medians. Both run as host agents in `unix-listen` mode (ours as the static release build that
//! ships), with the same safety block list as the tests, and are driven by the same Rust client,
//! which is cheap next to either agent. Every payload moved through guest-file-* is checked with
//! SHA-256, so a fast wrong answer never counts. A command or chunk size that an agent rejects is
//! reported as such instead of a figure; nothing here asserts, it only reports.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

mod baremetal;
mod vsock;

pub use baremetal::run as run_baremetal;
pub use vsock::run as run_vsock;

use crate::procfs::{cpu_seconds, cpu_seconds_of_task, status_kb};

use ::tests::host_agent::{
    AgentKind, HostAgent, QGA_BIN_ENV, our_static_release_binary, upstream_binary, upstream_missing,
};
use qga_client::{Client, ClientError};

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Alternating rounds per measurement (the median is reported).
    pub rounds: usize,
}

/// One measured value, or why there is none.
#[derive(Debug, Clone)]
enum Figure {
    Value(f64),
    NotAvailable(String),
}

/// A metric with one figure list per agent (index 0: ours, 1: upstream).
struct Metric {
    name: String,
    unit: &'static str,
    /// Whether a larger value is better (throughput) or worse (latency, memory, size).
    higher_is_better: bool,
    samples: [Vec<Figure>; 2],
}

impl Metric {
    fn new(name: &str, unit: &'static str, higher_is_better: bool) -> Self {
        Self {
            name: name.to_string(),
            unit,
            higher_is_better,
            samples: [Vec::new(), Vec::new()],
        }
    }

    /// The median of the values, or the first reason there is none.
    fn summary(&self, i: usize) -> Figure {
        let mut vals: Vec<f64> = self.samples[i]
            .iter()
            .filter_map(|f| match f {
                Figure::Value(v) => Some(*v),
                Figure::NotAvailable(_) => None,
            })
            .collect();
        if vals.is_empty() {
            return self.samples[i]
                .iter()
                .find_map(|f| match f {
                    Figure::NotAvailable(why) => Some(Figure::NotAvailable(why.clone())),
                    Figure::Value(_) => None,
                })
                .unwrap_or(Figure::NotAvailable("not measured".into()));
        }
        vals.sort_by(f64::total_cmp);
        Figure::Value(vals[vals.len() / 2])
    }
}

fn fmt_figure(f: &Figure) -> String {
    match f {
        Figure::Value(v) if *v >= 100.0 => format!("{v:.0}"),
        Figure::Value(v) if *v >= 10.0 => format!("{v:.1}"),
        Figure::Value(v) => format!("{v:.2}"),
        Figure::NotAvailable(why) => format!("n/a ({why})"),
    }
}

fn short(e: &ClientError) -> String {
    let s = e.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// A `kB` field of `/proc/<pid>/status`, as the figures' float.
fn status_kb_f64(pid: u32, field: &str) -> Option<f64> {
    status_kb(pid, field).map(|v| v as f64)
}

/// `len` incompressible-looking, deterministic bytes (xorshift from `seed`), so a transfer
/// cannot be shortened by compression and a wrong byte is found by its digest.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

const KINDS: [AgentKind; 2] = [AgentKind::Ours, AgentKind::Upstream];

/// Sequential guest-ping: mean latency µs.
fn ping_sequential(c: &mut Client, n: usize) -> Result<f64, ClientError> {
    let req = br#"{"execute":"guest-ping"}"#;
    let t0 = Instant::now();
    for _ in 0..n {
        c.send_raw(req)?;
        let line = c.read_line()?;
        if !line.starts_with(br#"{"return": {}"#) {
            return Err(ClientError::Protocol(
                String::from_utf8_lossy(&line).into_owned(),
            ));
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// Pipelined guest-ping: requests per second with `n` requests in flight at once.
fn ping_pipelined(c: &mut Client, n: usize) -> Result<f64, ClientError> {
    let mut batch = Vec::with_capacity(n * 40);
    for i in 0..n {
        write!(batch, r#"{{"execute":"guest-ping","id":{i}}}"#).map_err(ClientError::Io)?;
    }
    let mut writer: UnixStream = c.stream().try_clone()?;
    let t0 = Instant::now();
    let w = std::thread::spawn(move || writer.write_all(&batch));
    for i in 0..n {
        let line = c.read_line()?;
        let expect = format!(r#"{{"return": {{}}, "id": {i}}}"#);
        if line != expect.as_bytes() {
            return Err(ClientError::Protocol(format!(
                "answer {i}: {}",
                String::from_utf8_lossy(&line)
            )));
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    match w.join() {
        Ok(Ok(())) => Ok(n as f64 / dt),
        Ok(Err(e)) => Err(ClientError::Io(e)),
        Err(_) => Err(ClientError::Protocol("writer thread panicked".into())),
    }
}

/// Sequential guest-info: mean latency µs.
fn info_sequential(c: &mut Client, n: usize) -> Result<f64, ClientError> {
    let req = br#"{"execute":"guest-info"}"#;
    let t0 = Instant::now();
    for _ in 0..n {
        c.send_raw(req)?;
        let line = c.read_line()?;
        if !line.starts_with(br#"{"return": {"#) {
            return Err(ClientError::Protocol(format!(
                "guest-info: {}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            )));
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// Reads `path` in `chunk`-byte requests, checks the SHA-256, returns MiB/s.
/// `data` is the client's buffer, kept across steps so the timing does not include faulting
/// in 96 MiB of fresh memory on the client's side.
fn file_read(
    c: &mut Client,
    path: &Path,
    chunk: usize,
    expect: &[u8; 32],
    data: &mut Vec<u8>,
) -> Result<f64, ClientError> {
    let t0 = Instant::now();
    c.pull_into(path.to_str().unwrap_or_default(), chunk, data)?;
    let dt = t0.elapsed().as_secs_f64();
    if &sha256(data) != expect {
        return Err(ClientError::Protocol(format!(
            "SHA-256 mismatch after reading {} bytes",
            data.len()
        )));
    }
    Ok(data.len() as f64 / (1024.0 * 1024.0) / dt)
}

/// Writes `data` to `path` in `chunk`-byte requests, checks the file's SHA-256, returns MiB/s.
fn file_write(c: &mut Client, path: &Path, chunk: usize, data: &[u8]) -> Result<f64, ClientError> {
    let t0 = Instant::now();
    c.push(data, path.to_str().unwrap_or_default(), chunk)?;
    let dt = t0.elapsed().as_secs_f64();
    let on_disk = std::fs::read(path)?;
    let _ = std::fs::remove_file(path);
    if sha256(&on_disk) != sha256(data) {
        return Err(ClientError::Protocol(format!(
            "SHA-256 mismatch: {} bytes on disk",
            on_disk.len()
        )));
    }
    Ok(data.len() as f64 / (1024.0 * 1024.0) / dt)
}

/// Start-up to the first answer: spawn, connect as soon as the socket accepts, guest-sync.
fn startup_ms(kind: AgentKind, bin: &Path) -> Result<f64, String> {
    let t0 = Instant::now();
    let agent = HostAgent::spawn_with(kind, bin, &[])?;
    let deadline = t0 + Duration::from_secs(20);
    let stream = loop {
        match UnixStream::connect(agent.socket()) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => {
                return Err(format!(
                    "{}: no socket: {e}; log:\n{}",
                    kind.label(),
                    agent.log()
                ));
            }
        }
    };
    let mut c = Client::from_stream(stream);
    c.set_timeout(Duration::from_secs(20));
    c.send_raw(br#"{"execute":"guest-sync","arguments":{"id":1}}"#)
        .map_err(|e| e.to_string())?;
    let v = c.read_value().map_err(|e| e.to_string())?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if v.get("return") != Some(&json!(1)) {
        return Err(format!("{}: first answer {v}", kind.label()));
    }
    drop(c);
    agent.stop();
    Ok(ms)
}

/// `ldd` and sizes: (bytes of the executable alone, total bytes of the executable and its
/// shared libraries, description).
fn size_report(bin: &Path) -> (u64, u64, String) {
    let own = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    let mut total = own;
    let mut text = format!("{} {} bytes", bin.display(), own);
    let out = std::process::Command::new("ldd").arg(bin).output();
    match out {
        Ok(o) if o.status.success() => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                // "libx.so => /path (0x...)" or "/lib64/ld-linux... (0x...)"
                let path = line
                    .split("=>")
                    .nth(1)
                    .unwrap_or(line)
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                if !path.starts_with('/') {
                    continue;
                }
                let real = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
                let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
                total += size;
                let _ = write!(text, "\n      + {path} {size} bytes");
            }
        }
        _ => text.push_str(" (statically linked: no shared libraries)"),
    }
    (own, total, text)
}

/// Sequential pings per round and agent (also for the kernel floor).
const PINGS: usize = 5000;
/// Pipelined pings in flight at once.
const IN_FLIGHT: usize = 2000;

/// One measurement step's memory figure: the agent's peak RSS during that step alone.
struct StepPeak {
    step: String,
    round: usize,
    ok: bool,
    kib: f64,
}

/// The running pair and what the steps share.
struct Bench {
    bins: [PathBuf; 2],
    running: [HostAgent; 2],
    clients: [Option<Client>; 2],
    /// The file each agent reads (in its own work directory).
    src: [PathBuf; 2],
    payload: Vec<u8>,
    digest: [u8; 32],
    /// How often each agent had to be started again after it died.
    restarts: [usize; 2],
    peaks: [Vec<StepPeak>; 2],
}

impl Bench {
    /// Starts agent `i` again if it died (qemu-ga 7.2 sometimes does after refusing the 48 MiB
    /// write), so one agent's crash does not end the comparison; the restart is reported.
    fn ensure_running(&mut self, i: usize) -> Result<bool, String> {
        let Some(st) = self.running[i].guard_mut().try_status() else {
            return Ok(false);
        };
        let log = self.running[i].log();
        let last = log.lines().last().unwrap_or("(empty log)").to_string();
        println!(
            "  note: {} exited ({st}); starting it again. Last log line: {last}",
            KINDS[i].label()
        );
        self.restarts[i] += 1;
        self.clients[i] = None;
        self.running[i] = HostAgent::start_with(KINDS[i], &self.bins[i], &[])?;
        self.src[i] = self.running[i].work_dir().join("bench-src.bin");
        std::fs::write(&self.src[i], &self.payload)
            .map_err(|e| format!("write {}: {e}", self.src[i].display()))?;
        Ok(true)
    }

    /// Runs one measurement against agent `i` on a connected client, with the agent's peak RSS
    /// reset before and read after, so each step's memory figure is its own.
    fn step(
        &mut self,
        i: usize,
        round: usize,
        name: &str,
        f: &mut dyn FnMut(&mut Client, &StepEnv<'_>) -> Result<f64, ClientError>,
    ) -> Result<Figure, String> {
        self.ensure_running(i)?;
        let mut client = match self.clients[i].take() {
            Some(c) => c,
            None => reconnect(&self.running[i])?,
        };
        let pid = self.running[i].pid();
        reset_peak(pid);
        let dst = self.running[i].work_dir().join("bench-dst.bin");
        let env = StepEnv {
            pid,
            src: &self.src[i],
            dst: &dst,
            payload: &self.payload,
            digest: &self.digest,
        };
        let r = f(&mut client, &env);
        // A failed measurement may leave the connection mid-response: the next step starts a
        // new one (the old one is closed first, as the agent serves one client at a time).
        if r.is_ok() {
            self.clients[i] = Some(client);
        }
        if let Some(kib) = status_kb_f64(pid, "VmHWM") {
            self.peaks[i].push(StepPeak {
                step: name.to_string(),
                round,
                ok: r.is_ok(),
                kib,
            });
        }
        Ok(match r {
            Ok(v) => Figure::Value(v),
            Err(e) => Figure::NotAvailable(short(&e)),
        })
    }

    /// [`Bench::step`], also returning the agent CPU the step took, in seconds times `scale`
    /// (not available when the step failed).
    fn step_with_cpu(
        &mut self,
        i: usize,
        round: usize,
        name: &str,
        scale: f64,
        f: &mut dyn FnMut(&mut Client, &StepEnv<'_>) -> Result<f64, ClientError>,
    ) -> Result<(Figure, Figure), String> {
        let mut cpu = Figure::NotAvailable("not measured".into());
        let fig = self.step(i, round, name, &mut |c, env| {
            let c0 = cpu_seconds(env.pid);
            let v = f(c, env)?;
            cpu = match (c0, cpu_seconds(env.pid)) {
                (Some(a), Some(b)) => Figure::Value((b - a) * scale),
                _ => Figure::NotAvailable("no /proc".into()),
            };
            Ok(v)
        })?;
        if let Figure::NotAvailable(why) = &fig {
            cpu = Figure::NotAvailable(why.clone());
        }
        Ok((fig, cpu))
    }

    /// Agent `i`'s peak RSS over the steps; with `common`, only over the steps that both agents
    /// completed in the same round (the same transfers).
    fn peak(&self, i: usize, common: bool) -> Figure {
        let both_ok = |p: &StepPeak| {
            self.peaks[1 - i]
                .iter()
                .any(|q| q.step == p.step && q.round == p.round && q.ok)
        };
        self.peaks[i]
            .iter()
            .filter(|p| !common || (p.ok && both_ok(p)))
            .map(|p| p.kib)
            .reduce(f64::max)
            .map(Figure::Value)
            .unwrap_or(Figure::NotAvailable("no step measured".into()))
    }

    /// The step behind agent `i`'s overall peak, for the report.
    fn peak_step(&self, i: usize) -> Option<&StepPeak> {
        self.peaks[i].iter().max_by(|a, b| a.kib.total_cmp(&b.kib))
    }
}

/// What a measurement step may use.
struct StepEnv<'a> {
    pid: u32,
    src: &'a Path,
    dst: &'a Path,
    payload: &'a [u8],
    digest: &'a [u8; 32],
}

/// Resets the kernel's peak-RSS mark (VmHWM) of `pid` to its current RSS (Linux >= 4.0).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// CPU per request of the smallest possible server: one thread doing blocking `read(2)` and
/// `write(2)` of a fixed answer on a unix socket, driven exactly like the agents. It is the
/// kernel's share of a sequential ping on this machine (socket calls, wake-ups, context
/// switches), the floor under any agent's figure.
fn floor_cpu_per_ping(n: usize) -> Result<f64, String> {
    use std::io::Read as _;
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("floor.sock");
    let listener = UnixListener::bind(&path).map_err(|e| e.to_string())?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let _ = tid_tx.send(rustix::thread::gettid().as_raw_nonzero().get());
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(()),
                _ => conn.write_all(b"{\"return\": {}}\n")?,
            }
        }
    });
    let tid = tid_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut c = Client::connect_retry(&path, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    c.set_timeout(Duration::from_secs(10));
    let me = std::process::id();
    let task = PathBuf::from(format!("/proc/{me}/task/{tid}"));
    let cpu = || cpu_seconds_of_task(&task);
    // Warm up, then measure.
    ping_sequential(&mut c, 200).map_err(|e| e.to_string())?;
    let c0 = cpu();
    ping_sequential(&mut c, n).map_err(|e| e.to_string())?;
    let c1 = cpu();
    drop(c);
    let _ = server.join();
    match (c0, c1) {
        (Some(a), Some(b)) => Ok((b - a) * 1e6 / n as f64),
        _ => Err("no /proc figures for the server thread".into()),
    }
}

/// `cargo xtask bench`.
pub fn run(opts: &BenchOptions) -> Result<(), String> {
    let rounds = opts.rounds.max(1);
    let ours = match std::env::var_os(QGA_BIN_ENV) {
        Some(p) => {
            println!("using ${QGA_BIN_ENV} as our qga");
            PathBuf::from(p)
        }
        None => {
            println!("building our static release qga…");
            our_static_release_binary()?
        }
    };
    let upstream =
        upstream_binary().ok_or_else(|| format!("{} (cargo xtask setup)", upstream_missing()))?;
    let version = std::process::Command::new(&upstream)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("qga:     {}", ours.display());
    println!("qemu-ga: {} ({version})", upstream.display());

    const SIZES: [(usize, &str); 2] = [(1 << 20, "1 MiB"), (48 << 20, "48 MiB")];
    let total_file = 96usize << 20;
    let payload = payload(total_file, 0x9E37_79B9_7F4A_7C15);
    let digest = sha256(&payload);
    // The client's read buffer, written once so its pages are resident before any timing
    // (the same buffer serves both agents).
    let mut read_buf = vec![1u8; total_file + (1 << 20)];
    read_buf.clear();
    let running = [
        HostAgent::start_with(AgentKind::Ours, &ours, &[])?,
        HostAgent::start_with(AgentKind::Upstream, &upstream, &[])?,
    ];
    let src = [
        running[0].work_dir().join("bench-src.bin"),
        running[1].work_dir().join("bench-src.bin"),
    ];
    for p in &src {
        std::fs::write(p, &payload).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    let mut b = Bench {
        bins: [ours.clone(), upstream.clone()],
        running,
        clients: [None, None],
        src,
        payload,
        digest,
        restarts: [0, 0],
        peaks: [Vec::new(), Vec::new()],
    };
    for i in 0..2 {
        b.clients[i] = Some(reconnect(&b.running[i])?);
    }
    // Right after start, with this one client connected (issue 17's figure).
    let mut m_idle = Metric::new("idle RSS (VmRSS after start, 1 client)", "KiB", false);
    let mut m_idle_anon = Metric::new("idle RssAnon (after start, 1 client)", "KiB", false);
    for (i, a) in b.running.iter().enumerate() {
        for (m, field) in [(&mut m_idle, "VmRSS"), (&mut m_idle_anon, "RssAnon")] {
            m.samples[i].push(
                status_kb_f64(a.pid(), field)
                    .map(Figure::Value)
                    .unwrap_or(Figure::NotAvailable("no /proc".into())),
            );
        }
    }

    let mut m_lat = Metric::new("guest-ping round trip, sequential", "µs", false);
    let mut m_cpu = Metric::new("agent CPU per guest-ping, sequential", "µs", false);
    let mut m_pipe = Metric::new(
        &format!("guest-ping pipelined ({IN_FLIGHT} in flight)"),
        "req/s",
        true,
    );
    let mut m_pipe_cpu = Metric::new("agent CPU per guest-ping, pipelined", "µs", false);
    let mut m_info = Metric::new("guest-info round trip", "µs", false);
    let mut m_start = Metric::new("start-up to first answer", "ms", false);
    let mut m_read: Vec<Metric> = SIZES
        .iter()
        .map(|(_, n)| Metric::new(&format!("file read, {n} chunks"), "MiB/s", true))
        .collect();
    let mut m_write: Vec<Metric> = SIZES
        .iter()
        .map(|(_, n)| Metric::new(&format!("file write, {n} chunks"), "MiB/s", true))
        .collect();
    let cpu_metrics = |what: &str| -> Vec<Metric> {
        SIZES
            .iter()
            .map(|(_, n)| {
                Metric::new(
                    &format!("agent CPU per MiB, {what} {n} chunks"),
                    "ms",
                    false,
                )
            })
            .collect()
    };
    // Issue 17: the peak during each write step alone (goal: 16 MiB for the 48 MiB write, 8 MiB
    // for 1 MiB chunks).
    let mut m_write_peak: Vec<Metric> = SIZES
        .iter()
        .map(|(_, n)| Metric::new(&format!("peak RSS during write, {n} chunks"), "KiB", false))
        .collect();
    let mut m_read_cpu = cpu_metrics("read");
    let mut m_write_cpu = cpu_metrics("write");
    let mut floors = Vec::new();

    for round in 0..rounds {
        println!("round {}/{rounds}…", round + 1);
        // Alternate which agent goes first.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &i in &order {
            let (lat, cpu) =
                b.step_with_cpu(i, round, "ping", 1e6 / PINGS as f64, &mut |c, _| {
                    ping_sequential(c, PINGS)
                })?;
            m_lat.samples[i].push(lat);
            m_cpu.samples[i].push(cpu);
            let (rate, cpu) = b.step_with_cpu(
                i,
                round,
                "pipelined",
                1e6 / IN_FLIGHT as f64,
                &mut |c, _| ping_pipelined(c, IN_FLIGHT),
            )?;
            m_pipe.samples[i].push(rate);
            m_pipe_cpu.samples[i].push(cpu);
            m_info.samples[i].push(b.step(i, round, "info", &mut |c, _| info_sequential(c, 500))?);
            // Agent CPU in ms per MiB moved: 96 MiB per step.
            let per_mib = 1e3 / 96.0;
            for (k, (chunk, label)) in SIZES.iter().enumerate() {
                let (speed, cpu) = b.step_with_cpu(
                    i,
                    round,
                    &format!("read {label}"),
                    per_mib,
                    &mut |c, env| file_read(c, env.src, *chunk, env.digest, &mut read_buf),
                )?;
                m_read[k].samples[i].push(speed);
                m_read_cpu[k].samples[i].push(cpu);
                let (speed, cpu) = b.step_with_cpu(
                    i,
                    round,
                    &format!("write {label}"),
                    per_mib,
                    &mut |c, env| file_write(c, env.dst, *chunk, env.payload),
                )?;
                let peak = match (b.peaks[i].last(), &speed) {
                    (Some(p), Figure::Value(_)) => Figure::Value(p.kib),
                    (Some(p), Figure::NotAvailable(why)) => Figure::NotAvailable(format!(
                        "{why}; its peak while refusing: {:.0} KiB",
                        p.kib
                    )),
                    (None, _) => Figure::NotAvailable("no /proc".into()),
                };
                m_write_peak[k].samples[i].push(peak);
                m_write[k].samples[i].push(speed);
                m_write_cpu[k].samples[i].push(cpu);
            }
        }
        for &i in &order {
            m_start.samples[i].push(match startup_ms(KINDS[i], &b.bins[i]) {
                Ok(v) => Figure::Value(v),
                Err(e) => Figure::NotAvailable(e.lines().next().unwrap_or("").to_string()),
            });
        }
        match floor_cpu_per_ping(PINGS) {
            Ok(v) => floors.push(v),
            Err(e) => println!("  note: the kernel floor could not be measured: {e}"),
        }
    }
    let mut m_end = Metric::new("RSS after the runs (VmRSS)", "KiB", false);
    for i in 0..2 {
        let fig = if b.ensure_running(i)? {
            Figure::NotAvailable("it died after its last step (restarted)".into())
        } else {
            status_kb_f64(b.running[i].pid(), "VmRSS")
                .map(Figure::Value)
                .unwrap_or(Figure::NotAvailable("no /proc".into()))
        };
        m_end.samples[i].push(fig);
    }
    let mut m_peak_common = Metric::new("peak RSS, transfers both completed", "KiB", false);
    let mut m_peak_all = Metric::new("peak RSS, every step", "KiB", false);
    for i in 0..2 {
        m_peak_common.samples[i].push(b.peak(i, true));
        m_peak_all.samples[i].push(b.peak(i, false));
    }
    let mut m_exe = Metric::new("executable (as shipped)", "bytes", false);
    let mut m_size = Metric::new("executable + shared libraries", "bytes", false);
    let mut size_text = Vec::new();
    for (i, bin) in b.bins.iter().enumerate() {
        let (own, total, text) = size_report(bin);
        m_exe.samples[i].push(Figure::Value(own as f64));
        m_size.samples[i].push(Figure::Value(total as f64));
        size_text.push(text);
    }
    let peak_steps: Vec<String> = (0..2)
        .map(|i| {
            b.peak_step(i)
                .map(|p| {
                    format!(
                        "{}: {:.0} KiB in \"{}\" (round {}{})",
                        KINDS[i].label(),
                        p.kib,
                        p.step,
                        p.round + 1,
                        if p.ok { "" } else { ", refused or failed" }
                    )
                })
                .unwrap_or_default()
        })
        .collect();
    let restarts = b.restarts;
    drop(b);

    let mut metrics = vec![m_lat, m_cpu, m_pipe, m_pipe_cpu, m_info];
    metrics.extend(m_read);
    metrics.extend(m_read_cpu);
    metrics.extend(m_write);
    metrics.extend(m_write_cpu);
    // Issue 17's goals for qga's peak during a write.
    let goals: Vec<String> = m_write_peak
        .iter()
        .zip([8 * 1024, 16 * 1024])
        .map(|(m, goal)| match m.summary(0) {
            Figure::Value(v) => format!(
                "{} {v:.0} KiB (goal <= {goal} KiB: {})",
                m.name,
                if v <= goal as f64 { "met" } else { "NOT met" }
            ),
            Figure::NotAvailable(why) => format!("{}: n/a ({why})", m.name),
        })
        .collect();
    metrics.extend(m_write_peak);
    metrics.extend([
        m_start,
        m_idle,
        m_idle_anon,
        m_end,
        m_peak_common,
        m_peak_all,
        m_exe,
        m_size,
    ]);
    println!();
    print_table(&metrics);
    println!(
        "ratio = qga / qemu-ga: below 1 is better for times, memory and size; above 1 is better for req/s and MiB/s"
    );
    if !floors.is_empty() {
        floors.sort_by(f64::total_cmp);
        println!(
            "kernel floor: a blocking read()/write() loop on the same socket costs {:.2} µs of CPU per sequential ping (median of {}); no agent can go below it",
            floors[floors.len() / 2],
            floors.len()
        );
    }
    println!("peak RSS came from: {}", peak_steps.join("; "));
    println!("qga, issue 17: {}", goals.join("; "));
    for (i, n) in restarts.iter().enumerate() {
        if *n > 0 {
            println!(
                "{} died {n} time(s) during the runs and was started again",
                KINDS[i].label()
            );
        }
    }
    println!("sizes:");
    for t in size_text {
        println!("  {t}");
    }
    println!();
    vsock::run(rounds, &ours)?;
    baremetal::run(rounds)
}

/// The side-by-side table: median per agent, ratio, which is better.
fn print_table(metrics: &[Metric]) {
    println!(
        "{:<42} {:>6} {:>12} {:>12} {:>7}  better",
        "metric (median of rounds)", "unit", "qga", "qemu-ga", "ratio"
    );
    for m in metrics {
        let a = m.summary(0);
        let b = m.summary(1);
        let (ratio, better) = match (&a, &b) {
            (Figure::Value(x), Figure::Value(y)) if *y != 0.0 => {
                let ours_better = if m.higher_is_better { x > y } else { x < y };
                (
                    format!("{:.2}", x / y),
                    if x == y {
                        "same"
                    } else if ours_better {
                        "qga"
                    } else {
                        "qemu-ga"
                    },
                )
            }
            _ => ("n/a".into(), ""),
        };
        let cell = |f: &Figure| match f {
            Figure::Value(_) => fmt_figure(f),
            Figure::NotAvailable(_) => "n/a".to_string(),
        };
        println!(
            "{:<42} {:>6} {:>12} {:>12} {:>7}  {better}",
            m.name,
            m.unit,
            cell(&a),
            cell(&b),
            ratio
        );
        for (i, f) in [&a, &b].iter().enumerate() {
            if let Figure::NotAvailable(why) = f {
                println!("    {}: {why}", KINDS[i].label());
            }
        }
    }
}

fn reconnect(agent: &HostAgent) -> Result<Client, String> {
    // After a refused request (qemu-ga and the 48 MiB write) an agent may still be chewing
    // through the rest of it before it listens again: be patient.
    let mut c = Client::connect_retry(agent.socket(), Duration::from_secs(300))
        .map_err(|e| format!("{}: {e}", agent.kind().label()))?;
    c.set_timeout(Duration::from_secs(300));
    c.sync_delimited()
        .map_err(|e| format!("{}: sync failed: {e}", agent.kind().label()))?;
    Ok(c)
}
