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

use crate::client::{Client, ClientError};
use crate::host_agent::{
    AgentKind, HostAgent, QGA_BIN_ENV, UPSTREAM_BINARY, our_static_release_binary, upstream_binary,
};

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

/// Reads one field (in kB) of /proc/PID/status.
fn proc_status_kb(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (1-based) of stat; `rest` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) / hz)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The agents under comparison.
struct Agents {
    bins: [PathBuf; 2],
    running: [HostAgent; 2],
}

const KINDS: [AgentKind; 2] = [AgentKind::Ours, AgentKind::Upstream];

/// Sequential guest-ping: (mean latency µs, agent CPU µs per request).
fn ping_sequential(c: &mut Client, pid: u32, n: usize) -> Result<(f64, Option<f64>), ClientError> {
    let req = br#"{"execute":"guest-ping"}"#;
    let cpu0 = cpu_seconds(pid);
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
    let dt = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds(pid)) {
        (Some(a), Some(b)) => Some((b - a) * 1e6 / n as f64),
        _ => None,
    };
    Ok((dt * 1e6 / n as f64, cpu))
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
fn file_read(
    c: &mut Client,
    path: &Path,
    chunk: usize,
    expect: &[u8; 32],
) -> Result<f64, ClientError> {
    let t0 = Instant::now();
    let data = c.pull(path.to_str().unwrap_or_default(), chunk)?;
    let dt = t0.elapsed().as_secs_f64();
    if &sha256(&data) != expect {
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

/// `ldd` and sizes: (total bytes of the binary and its shared libraries, description).
fn size_report(bin: &Path) -> (u64, String) {
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
    (total, text)
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
    let upstream = upstream_binary()
        .ok_or_else(|| format!("{UPSTREAM_BINARY} is missing (cargo xtask setup)"))?;
    let version = std::process::Command::new(&upstream)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("qga:     {}", ours.display());
    println!("qemu-ga: {} ({version})", upstream.display());

    let agents = Agents {
        bins: [ours.clone(), upstream.clone()],
        running: [
            HostAgent::start_with(AgentKind::Ours, &ours, &[])?,
            HostAgent::start_with(AgentKind::Upstream, &upstream, &[])?,
        ],
    };
    let mut clients: Vec<Option<Client>> = Vec::new();
    for a in &agents.running {
        clients.push(Some(reconnect(a)?));
    }
    let mut m_idle = Metric::new("idle RSS (VmRSS after start)", "KiB", false);
    for (i, a) in agents.running.iter().enumerate() {
        m_idle.samples[i].push(
            proc_status_kb(a.pid(), "VmRSS")
                .map(Figure::Value)
                .unwrap_or(Figure::NotAvailable("no /proc".into())),
        );
    }

    let mut m_lat = Metric::new("guest-ping round trip, sequential", "µs", false);
    let mut m_cpu = Metric::new("agent CPU per guest-ping", "µs", false);
    let mut m_pipe = Metric::new("guest-ping pipelined (2000 in flight)", "req/s", true);
    let mut m_info = Metric::new("guest-info round trip", "µs", false);
    let mut m_start = Metric::new("start-up to first answer", "ms", false);
    const SIZES: [(usize, &str); 2] = [(1 << 20, "1 MiB"), (48 << 20, "48 MiB")];
    let total_file = 96usize << 20;
    let payload: Vec<u8> = {
        // Incompressible-looking, deterministic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..total_file)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let digest = sha256(&payload);
    let mut m_read: Vec<Metric> = SIZES
        .iter()
        .map(|(_, n)| Metric::new(&format!("file read, {n} chunks"), "MiB/s", true))
        .collect();
    let mut m_write: Vec<Metric> = SIZES
        .iter()
        .map(|(_, n)| Metric::new(&format!("file write, {n} chunks"), "MiB/s", true))
        .collect();
    let src: Vec<PathBuf> = agents
        .running
        .iter()
        .map(|a| a.work_dir().join("bench-src.bin"))
        .collect();
    for p in &src {
        std::fs::write(p, &payload).map_err(|e| format!("write {}: {e}", p.display()))?;
    }

    for round in 0..rounds {
        println!("round {}/{rounds}…", round + 1);
        // Alternate which agent goes first.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &i in &order {
            let pid = agents.running[i].pid();
            let fig = |r: Result<f64, ClientError>| match r {
                Ok(v) => Figure::Value(v),
                Err(e) => Figure::NotAvailable(short(&e)),
            };
            let agent = &agents.running[i];
            // A failed measurement may leave the connection mid-response: start a new one
            // (the old one is closed first, as the agent serves one client at a time).
            let mut step = |f: &mut dyn FnMut(&mut Client) -> Result<f64, ClientError>| -> Result<Figure, String> {
                let c = match clients[i].as_mut() {
                    Some(c) => c,
                    None => clients[i].insert(reconnect(agent)?),
                };
                let r = f(c);
                if r.is_err() {
                    clients[i] = None;
                }
                Ok(fig(r))
            };
            let mut cpu_fig = Figure::NotAvailable("not measured".into());
            let lat = step(&mut |c| {
                let (lat, cpu) = ping_sequential(c, pid, 5000)?;
                cpu_fig = cpu
                    .map(Figure::Value)
                    .unwrap_or(Figure::NotAvailable("no /proc".into()));
                Ok(lat)
            })?;
            if let Figure::NotAvailable(why) = &lat {
                cpu_fig = Figure::NotAvailable(why.clone());
            }
            m_lat.samples[i].push(lat);
            m_cpu.samples[i].push(cpu_fig);
            m_pipe.samples[i].push(step(&mut |c| ping_pipelined(c, 2000))?);
            m_info.samples[i].push(step(&mut |c| info_sequential(c, 500))?);
            let dst = agent.work_dir().join("bench-dst.bin");
            for (k, (chunk, _)) in SIZES.iter().enumerate() {
                m_read[k].samples[i].push(step(&mut |c| file_read(c, &src[i], *chunk, &digest))?);
                m_write[k].samples[i].push(step(&mut |c| file_write(c, &dst, *chunk, &payload))?);
            }
        }
        for &i in &order {
            m_start.samples[i].push(match startup_ms(KINDS[i], &agents.bins[i]) {
                Ok(v) => Figure::Value(v),
                Err(e) => Figure::NotAvailable(e.lines().next().unwrap_or("").to_string()),
            });
        }
    }
    let mut m_end = Metric::new("RSS after the runs (VmRSS)", "KiB", false);
    let mut m_peak = Metric::new("peak RSS (VmHWM after the runs)", "KiB", false);
    let mut agents = agents;
    for a in agents.running.iter_mut() {
        if let Some(st) = a.guard_mut().try_status() {
            println!(
                "note: {} exited during the runs ({st}); its log:\n{}",
                a.kind().label(),
                a.log()
            );
        }
    }
    for (i, a) in agents.running.iter().enumerate() {
        m_end.samples[i].push(
            proc_status_kb(a.pid(), "VmRSS")
                .map(Figure::Value)
                .unwrap_or(Figure::NotAvailable("no /proc".into())),
        );
        m_peak.samples[i].push(
            proc_status_kb(a.pid(), "VmHWM")
                .map(Figure::Value)
                .unwrap_or(Figure::NotAvailable("no /proc".into())),
        );
    }
    let mut m_size = Metric::new("binary + shared libraries", "bytes", false);
    let mut size_text = Vec::new();
    for (i, b) in agents.bins.iter().enumerate() {
        let (total, text) = size_report(b);
        m_size.samples[i].push(Figure::Value(total as f64));
        size_text.push(text);
    }
    drop(clients);
    drop(agents);

    let mut metrics = vec![m_lat, m_cpu, m_pipe, m_info];
    metrics.extend(m_read);
    metrics.extend(m_write);
    metrics.extend([m_start, m_idle, m_end, m_peak, m_size]);
    println!();
    println!(
        "{:<42} {:>6} {:>12} {:>12} {:>7}  better",
        "metric (median of rounds)", "unit", "qga", "qemu-ga", "ratio"
    );
    for m in &metrics {
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
    println!(
        "ratio = qga / qemu-ga: below 1 is better for times, memory and size; above 1 is better for req/s and MiB/s"
    );
    println!("sizes:");
    for t in size_text {
        println!("  {t}");
    }
    Ok(())
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
