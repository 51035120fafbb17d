//! Soak and fault routines: long runs of hostile input and rough handling that a unit test cannot
//! afford, each bounded in time, each printing its figures and returning a [`Row`] that says
//! whether it passed.
//!
//! Why these routines and this shape:
//! - An agent lives for months behind a channel that anything in the host can write to. What
//!   breaks such a program is rarely one bad request: it is the millionth, the slow leak, the
//!   child nobody reaped, the signal that arrives while a write blocks. So every routine repeats
//!   one kind of abuse many times and then checks the agent's *process* (RSS and open fds from
//!   `/proc`, zombie children, exit status), not only its answers.
//! - Garbage never runs alone: valid requests with unique ids are woven into it, and each one is
//!   preceded by a resynchronisation byte (0xFF or a control character other than `\t\r\n`,
//!   docs/protocol.md §2.3), which ends whatever partial token or request the garbage left behind. So
//!   every valid request has exactly one right answer, and the reader can count lost ones
//!   exactly instead of guessing which requests the garbage swallowed.
//! - Host agents are started only through [`HostAgent`], i.e. with the block list of commands
//!   that change the system; freezing filesystems happens only inside the QEMU Linux guest.
//! - `--quick` sizes are what the normal test suite runs (`tests/tests/soak_*.rs`); the full
//!   sizes are what `cargo xtask soak` runs, and its [`table`] is the README's "Robustness" table.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::host_agent::{AgentKind, HostAgent};
use crate::linux_guest::{GuestImages, GuestOptions, LinuxGuest};
use qga_client::{Client, ClientError, parse_line};

/// The routines, in the order `all` runs them, with what each one does.
pub const ROUTINES: &[(&str, &str)] = &[
    (
        "garbage",
        "random and adversarial bytes with valid requests woven in, through unix-listen; RSS and fds",
    ),
    (
        "reconnect",
        "connect, half a request, disconnect; the next client is served correctly",
    ),
    (
        "restart",
        "start and SIGTERM (idle, mid-request, blocked writing): exit status 0, bounded stop",
    ),
    (
        "exec",
        "guest-exec runs: no zombies, 16 MiB output cap truncates and flags, unknown pid errors",
    ),
    (
        "files",
        "the open-handle limit gives a clear error and leaves fds for the rest; the handle counter survives restarts",
    ),
    (
        "guest-virtio",
        "Linux guest: the host disconnects mid-request over virtio-serial; every next connection served",
    ),
    (
        "guest-freeze",
        "Linux guest: freeze, SIGTERM the agent, status 0, filesystems thawed, restart",
    ),
    (
        "baremetal",
        "bare-metal image: garbage through COM1 and virtio, then valid requests; stack high-water mark",
    ),
];

/// Private memory (RssAnon) may differ by this much between the two measurements without
/// counting as a leak
/// (two pages: the kernel's RSS accounting and the allocator's bookkeeping move by a page now
/// and then).
pub const RSS_TOLERANCE_KB: u64 = 8;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The normal-suite sizes instead of the full soak.
    pub quick: bool,
}

/// One routine's outcome: a row of the robustness table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The routine's name.
    pub name: String,
    /// The command that reproduces this row.
    pub command: String,
    /// What was tried, with its figures.
    pub inputs: String,
    /// Faults injected, with their figures.
    pub faults: String,
    /// Valid requests without their right answer (or clients not served).
    pub lost: u64,
    /// Waits that ran out (a stop, an answer, a child).
    pub hangs: u64,
    /// Agent processes that died on their own, or exited with a non-zero status.
    pub crashes: u64,
    /// Resources that grew: RSS beyond [`RSS_TOLERANCE_KB`], open fds, zombies.
    pub leaks: u64,
    /// Everything else that went wrong, in words.
    pub failures: Vec<String>,
    /// Why the routine could not run at all.
    pub skipped: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Row {
    fn new(name: &str, opts: &Options) -> Row {
        Row {
            name: name.to_string(),
            command: format!(
                "cargo xtask soak {name}{}",
                if opts.quick { " --quick" } else { "" }
            ),
            ..Row::default()
        }
    }

    /// Whether the routine ran and found nothing wrong.
    pub fn passed(&self) -> bool {
        self.skipped.is_none()
            && self.failures.is_empty()
            && self.lost == 0
            && self.hangs == 0
            && self.crashes == 0
            && self.leaks == 0
    }

    fn fail(&mut self, what: impl Into<String>) {
        let what = what.into();
        say(&self.name, &format!("FAIL: {what}"));
        self.failures.push(what);
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    /// A one-paragraph summary.
    pub fn summary(&self) -> String {
        let verdict = if let Some(why) = &self.skipped {
            format!("SKIPPED ({why})")
        } else if self.passed() {
            "PASS".to_string()
        } else {
            format!("FAIL ({})", self.failures.join("; "))
        };
        format!(
            "{}: {verdict} in {:.1}s\n  inputs: {}\n  faults: {}\n  lost {}, hangs {}, crashes {}, leaks {}",
            self.name,
            self.elapsed.as_secs_f64(),
            self.inputs,
            self.faults,
            self.lost,
            self.hangs,
            self.crashes,
            self.leaks
        )
    }
}

fn say(name: &str, line: &str) {
    println!("soak {name}: {line}");
}

/// State shared by the routines of one run: the agent binary and the Linux guest are built and
/// booted once.
#[derive(Debug)]
pub struct Context {
    opts: Options,
    host_binary: Option<Result<PathBuf, String>>,
    guest: Option<Result<LinuxGuest, String>>,
}

impl Context {
    /// A fresh context.
    pub fn new(opts: Options) -> Context {
        Context {
            opts,
            host_binary: None,
            guest: None,
        }
    }

    /// The `qga` the host routines run: `$QGA_BIN`, else the shipped static release build for
    /// a full soak, else the test suite's (debug) build.
    fn host_binary(&mut self) -> Result<PathBuf, String> {
        self.host_binary
            .get_or_insert_with(|| {
                if self.opts.quick || std::env::var_os(crate::host_agent::QGA_BIN_ENV).is_some() {
                    crate::host_agent::our_binary()
                } else {
                    crate::initramfs::build_static_qga()
                }
            })
            .clone()
    }

    fn guest(&mut self) -> Result<&mut LinuxGuest, String> {
        if self.guest.is_none() {
            let r = (|| {
                let dir = target_dir().join("soak-guest");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
                let images = GuestImages::build(&dir)?;
                let g = LinuxGuest::boot(&GuestOptions::new(&images, true))?;
                say(
                    "guest",
                    &format!("Linux guest booted in {:.1}s", g.boot_time.as_secs_f64()),
                );
                Ok(g)
            })();
            self.guest = Some(r);
        }
        match self.guest.as_mut() {
            Some(Ok(g)) => Ok(g),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no guest".into()),
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::host_agent::workspace_root().join("target"))
}

/// Runs one routine by name.
pub fn run(name: &str, ctx: &mut Context) -> Row {
    let opts = ctx.opts;
    let mut row = Row::new(name, &opts);
    let started = Instant::now();
    say(
        name,
        &format!("start ({})", if opts.quick { "quick" } else { "full" }),
    );
    let r = match name {
        "garbage" => garbage(ctx, &mut row),
        "reconnect" => reconnect(ctx, &mut row),
        "restart" => restart(ctx, &mut row),
        "exec" => exec(ctx, &mut row),
        "files" => files(ctx, &mut row),
        "guest-virtio" => guest_virtio(ctx, &mut row),
        "guest-freeze" => guest_freeze(ctx, &mut row),
        "baremetal" => baremetal(ctx, &mut row),
        other => Err(format!("unknown soak routine `{other}`")),
    };
    if let Err(e) = r {
        row.skipped = Some(e.clone());
        say(name, &format!("could not run: {e}"));
    }
    row.elapsed = started.elapsed();
    println!("{}", row.summary());
    row
}

/// Runs every routine.
pub fn run_all(ctx: &mut Context) -> Vec<Row> {
    ROUTINES.iter().map(|(n, _)| run(n, ctx)).collect()
}

/// The robustness table, in markdown.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| Routine | Inputs tried | Faults injected | Requests lost | Hangs | Crashes | Leaks | Result | Command |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let result = if let Some(why) = &r.skipped {
            format!("not run: {why}")
        } else if r.passed() {
            format!("pass ({:.0} s)", r.elapsed.as_secs_f64())
        } else {
            format!("FAIL: {}", r.failures.join("; "))
        };
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
            r.name,
            cell(&r.inputs),
            cell(&r.faults),
            r.lost,
            r.hangs,
            r.crashes,
            r.leaks,
            cell(&result),
            r.command
        );
    }
    t
}

/// `cargo xtask soak [NAME|all] [--quick]`: runs routines, prints each one's figures and, for
/// more than one, the robustness table; fails if any routine failed or could not run.
pub fn cli(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let names: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--quick")
        .collect();
    if let Some(bad) = names.iter().find(|a| a.starts_with("--")) {
        return Err(format!("unknown option {bad}"));
    }
    let names: Vec<&str> = if names.is_empty() || names == ["all"] {
        ROUTINES.iter().map(|(n, _)| *n).collect()
    } else {
        names
    };
    for n in &names {
        if !ROUTINES.iter().any(|(r, _)| r == n) {
            let known: Vec<String> = ROUTINES
                .iter()
                .map(|(r, d)| format!("  {r:<13} {d}"))
                .collect();
            return Err(format!(
                "unknown soak routine `{n}`; known:\n{}",
                known.join("\n")
            ));
        }
    }
    // The client must not be the bottleneck of a full soak: run it from an optimised build.
    if cfg!(debug_assertions) && !quick && std::env::var_os("QGA_SOAK_DEBUG").is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let st = std::process::Command::new(cargo)
            .current_dir(crate::host_agent::workspace_root())
            .args(["run", "--quiet", "--release", "-p", "xtask", "--", "soak"])
            .args(args)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        return if st.success() {
            Ok(())
        } else {
            Err(format!("soak failed ({st})"))
        };
    }
    let opts = Options { quick };
    let mut ctx = Context::new(opts);
    // The bare-metal VM needs nothing the other routines use, and its UART is slow: it runs
    // beside them.
    let beside = (names.len() > 1 && names.contains(&"baremetal"))
        .then(|| std::thread::spawn(move || run("baremetal", &mut Context::new(opts))));
    let mut rows: Vec<Row> = names
        .iter()
        .filter(|n| beside.is_none() || **n != "baremetal")
        .map(|n| run(n, &mut ctx))
        .collect();
    if let Some(t) = beside {
        let row = t.join().unwrap_or_else(|_| {
            let mut r = Row::new("baremetal", &opts);
            r.skipped = Some("the routine panicked".into());
            r
        });
        let at = names
            .iter()
            .position(|n| *n == "baremetal")
            .unwrap_or(rows.len());
        rows.insert(at.min(rows.len()), row);
    }
    println!("\n==== soak summary ====");
    for r in &rows {
        println!("{}", r.summary());
    }
    println!();
    print!("{}", table(&rows));
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("failed or not run: {}", bad.join(", ")))
    }
}

// ---------------------------------------------------------------------------------------------
// /proc figures

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mem {
    /// `VmRSS`: everything resident.
    pub vm_rss: u64,
    /// `RssAnon`: heap, stack and other private memory; where a leak shows.
    pub anon: u64,
    /// `RssFile`: pages of the executable and other files, which grow as code paths run for
    /// the first time.
    pub file: u64,
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {} KiB (RssAnon {}, RssFile {})",
            self.vm_rss, self.anon, self.file
        )
    }
}

/// The resident memory of `pid`.
pub fn mem(pid: u32) -> Option<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Mem {
        vm_rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

/// Counts a leak when private memory grew beyond [`RSS_TOLERANCE_KB`] between two figures.
fn check_mem(row: &mut Row, before: Option<Mem>, after: Option<Mem>) {
    match (before, after) {
        (Some(a), Some(b)) => {
            if b.anon > a.anon + RSS_TOLERANCE_KB {
                row.leaks += 1;
                row.fail(format!("private memory grew: {a} -> {b}"));
            }
        }
        _ => row.fail("the memory figures could not be taken"),
    }
}

/// The number of open fds of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// `(all children, zombie children)` of `pid`, from every `/proc/<n>/stat`.
pub fn children_of(pid: u32) -> (usize, usize) {
    let (mut all, mut zombies) = (0, 0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        // the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid {
            all += 1;
            if state == "Z" {
                zombies += 1;
            }
        }
    }
    (all, zombies)
}

// ---------------------------------------------------------------------------------------------
// The garbage stream

/// A small deterministic generator (splitmix64): the stream is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// Log-uniform in `lo..=hi`: as many small sizes as large ones per factor of two.
    pub fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(lo.max(1)) as f64).ln());
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((l + (h - l) * u).exp() as usize).clamp(lo, hi)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Bytes that end any partial token or request (docs/protocol.md §2.3): 0xFF, 0xFE and the control
/// characters other than `\t`, `\r` and `\n`.
pub fn resync_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0u8..0x20)
        .filter(|b| !matches!(b, b'\t' | b'\r' | b'\n'))
        .collect();
    v.extend_from_slice(&[0xFE, 0xFF]);
    v
}

/// The kinds of garbage, for the figures.
pub const GARBAGE_KINDS: &[&str] = &[
    "random bytes",
    "0xFF runs",
    "control bytes",
    "deep nesting",
    "huge unterminated strings",
    "truncated escapes",
    "bad UTF-8",
    "stray quotes",
    "bad numbers and keywords",
    "wrong requests",
    "JSON-ish token soup",
    "oversized request (> 64 MiB)",
    "token count over 2 Mi",
];

/// Appends one chunk of garbage of `kind` (an index into [`GARBAGE_KINDS`]).
fn garbage_chunk(rng: &mut Rng, kind: usize, max_string: usize, out: &mut Vec<u8>) {
    match kind {
        0 => {
            let n = rng.range(1, 256);
            out.extend((0..n).map(|_| rng.next_u64() as u8));
        }
        1 => {
            let n = rng.range(1, 16);
            out.extend(std::iter::repeat_n(0xFF, n));
        }
        2 => {
            let n = rng.range(1, 16);
            out.extend((0..n).map(|_| rng.below(0x20) as u8));
        }
        3 => {
            let depth = rng.log_size(16, 4096);
            let open = *rng.pick(&[b"[".as_slice(), b"{\"a\":", b"[{\"x\":["]);
            for _ in 0..depth {
                out.extend_from_slice(open);
            }
            if open == b"[" && rng.below(4) == 0 {
                // Balanced: at most 1024 is a valid (non-object) value, beyond is the nesting
                // error followed by one error per closer.
                let close = depth.min(1100);
                out.extend(std::iter::repeat_n(b']', close));
            }
        }
        4 => {
            let len = rng.log_size(1024, max_string);
            out.extend_from_slice(b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"");
            let fill = *rng.pick(&[b'a', b' ', b'~', 0xC3]);
            if fill == 0xC3 {
                // Valid two-byte UTF-8 (é) repeated.
                for _ in 0..len / 2 {
                    out.extend_from_slice(&[0xC3, 0xA9]);
                }
            } else {
                out.extend(std::iter::repeat_n(fill, len));
            }
        }
        5 => {
            let s = *rng.pick(&[
                b"{\"execute\":\"guest-ping\\u12".as_slice(),
                b"{\"execute\":\"guest-ping\\",
                b"{\"execute\":\"guest-ping\\x41\"}",
                b"{\"execute\":\"guest-ping\\ud800\"}",
                b"{\"execute\":\"guest-ping\\udc00\\ud800\"}",
                b"\"\\u",
                b"'\\'",
                b"{\"execute\":\"guest-\\u00",
            ]);
            out.extend_from_slice(s);
        }
        6 => {
            let s = *rng.pick(&[
                b"{\"execute\":\"guest-p\xc3(ing\"}".as_slice(),
                b"{\"execute\":\"guest-ping\xed\xa0\x80\"}",
                b"{\"execute\":\"\xc0\x80\"}",
                b"{\"execute\":\"\xf5\x80\x80\x80\"}",
                b"{\"\xe2\x82\":1}",
                b"\"\xf0\x9f\x98",
                b"{\"execute\":\"\xfd\xfd\xfd\"}",
            ]);
            out.extend_from_slice(s);
        }
        7 => {
            let n = rng.range(1, 64);
            out.extend((0..n).map(|_| *rng.pick(b"\"'\"'\\ :")));
        }
        8 => {
            let s = *rng.pick(&[
                b"-".as_slice(),
                b"1e",
                b"01",
                b"--1",
                b"1e99999 ",
                b"-0.e1 ",
                b"TRUE",
                b"nul ",
                b"truefalse ",
                b"Infinity",
                b"NaN",
                b"0x10",
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1e999999}}",
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":18446744073709551616}}",
            ]);
            out.extend_from_slice(s);
            if rng.below(8) == 0 {
                let n = rng.log_size(10, 100_000);
                out.extend((0..n).map(|_| b'0' + rng.below(10) as u8));
            }
        }
        9 => {
            let s = *rng.pick(&[
                b"{\"execute\":1}".as_slice(),
                b"{\"execute\":\"guest-nosuch\",\"id\":\"g-1\"}",
                b"{\"foo\":1}",
                b"[]",
                b"1 ",
                b"\"str\"",
                b"{}",
                b"{\"execute\":\"guest-ping\",\"arguments\":[]}",
                b"{\"execute\":\"guest-ping\",\"exec-oob\":\"x\"}",
                b"{\"a\":1,\"a\":2}",
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":\"x\"},\"id\":\"g-2\"}",
                b"{\"execute\":\"guest-exec\",\"id\":\"g-3\"}",
                b"{\"execute\":\"guest-file-read\",\"arguments\":{\"handle\":-1},\"id\":\"g-4\"}",
                b"{\"execute\":\"guest-shutdown\",\"arguments\":{\"mode\":7}}",
                b"{\"execute\":\"guest-ping\",\"id\":{\"a\":[1,{\"b\":null}]}}",
                b"{\"execute\":\"GUEST-PING\"}",
                b"}}}]]]",
                b"{\"execute\"::}",
                b"{,}",
                b"[1,]",
            ]);
            out.extend_from_slice(s);
        }
        10 => {
            let n = rng.range(1, 512);
            out.extend((0..n).map(|_| *rng.pick(b"{}[]:,\"'\\ 0123456789-+.eEabcdefnrtux \t\r\n")));
        }
        11 => {
            out.extend_from_slice(b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"");
            out.extend(std::iter::repeat_n(b'b', (64 << 20) + 4096));
            out.extend_from_slice(b"\"}}");
        }
        _ => {
            out.push(b'[');
            for _ in 0..(2 << 20) + 16 {
                out.extend_from_slice(b"1,");
            }
            out.extend_from_slice(b"1]");
        }
    }
}

/// Picks the kind of the next regular chunk (the two limit kinds only come in the warm-up).
fn pick_kind(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=149 => 0,
        150..=199 => 1,
        200..=299 => 2,
        300..=339 => 3,
        340..=349 => 4,
        350..=449 => 5,
        450..=549 => 6,
        550..=649 => 7,
        650..=749 => 8,
        750..=899 => 9,
        _ => 10,
    }
}

/// The valid request with index `k` and the answer it must get.
fn valid_request(k: u64) -> (Vec<u8>, Value) {
    let id = format!("v{k}");
    if k.is_multiple_of(2) {
        let n = k.wrapping_mul(2_654_435_761) % 1_000_000_007;
        (
            format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{n}}},\"id\":\"{id}\"}}")
                .into_bytes(),
            json!({"return": n, "id": id}),
        )
    } else {
        (
            format!("{{\"execute\":\"guest-ping\",\"id\":\"{id}\"}}").into_bytes(),
            json!({"return": {}, "id": id}),
        )
    }
}

/// How a garbage run is shaped.
#[derive(Debug, Clone)]
pub struct GarbagePlan {
    /// Total bytes to send (garbage, resync bytes and valid requests).
    pub total: u64,
    /// Largest unterminated string.
    pub max_string: usize,
    /// Send one oversized request and one token-count overflow first.
    pub limits_first: bool,
    /// Take the baseline figures this many bytes after the warm-up (one chunk of every kind,
    /// each at its largest).
    pub baseline_after: u64,
    /// The seed.
    pub seed: u64,
    /// How long any single wait (a write, an answer) may take.
    pub stall: Duration,
    /// How long the whole run may take.
    pub budget: Duration,
    /// The answers trickle in (a UART moves tens of KB/s): after a short read, wait a
    /// millisecond before the next, instead of spinning on reads of one or two bytes and taking
    /// the CPU that the emulated machine needs.
    pub slow_link: bool,
}

/// What a garbage run measured.
#[derive(Debug, Clone, Default)]
pub struct GarbageFigures {
    /// Bytes sent.
    pub bytes: u64,
    /// Garbage chunks sent, per kind.
    pub chunks: Vec<u64>,
    /// Resync bytes sent.
    pub resyncs: u64,
    /// Valid requests sent.
    pub valid: u64,
    /// Valid requests answered with exactly their right answer.
    pub right: u64,
    /// Valid requests never answered (skipped ids).
    pub missing: u64,
    /// Valid requests answered wrongly (error, wrong value, duplicate, out of order).
    pub wrong: u64,
    /// Other response lines (errors for the garbage, answers to garbage requests).
    pub other_lines: u64,
    /// Response bytes received.
    pub response_bytes: u64,
    /// Lines that broke the wire rules (not JSON, stray 0xFF sentinel).
    pub bad_lines: u64,
    /// A wait ran out.
    pub stalled: Option<String>,
    /// The run hit its time budget before sending everything.
    pub out_of_time: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// First examples of wrong answers.
    pub examples: Vec<String>,
}

struct ReaderState {
    /// Index of the next valid request the reader expects an answer for.
    next: AtomicU64,
    /// Set when the final answer arrived or the reader gave up.
    done: AtomicBool,
}

/// Sends garbage with valid requests woven in over `stream` and checks every answer. `at_baseline`
/// and `at_end` are called when the agent has processed everything up to the baseline point and
/// the end (for RSS and fd figures).
pub fn garbage_session(
    stream: &UnixStream,
    plan: &GarbagePlan,
    mut at_baseline: impl FnMut(),
    mut at_end: impl FnMut(),
) -> GarbageFigures {
    let started = Instant::now();
    let mut figs = GarbageFigures {
        chunks: vec![0; GARBAGE_KINDS.len()],
        ..GarbageFigures::default()
    };
    let (Ok(rd), Ok(wr)) = (stream.try_clone(), stream.try_clone()) else {
        figs.stalled = Some("cannot clone the socket".into());
        return figs;
    };
    let _ = rd.set_read_timeout(Some(plan.stall));
    let _ = wr.set_write_timeout(Some(plan.stall));
    let state = Arc::new(ReaderState {
        next: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let reader = {
        let state = state.clone();
        let slow = plan.slow_link;
        std::thread::spawn(move || read_answers(Paced { inner: rd, slow }, &state))
    };

    let resync = resync_bytes();
    let mut rng = Rng::new(plan.seed);
    let mut w = BufWriter::with_capacity(256 * 1024, wr);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut k: u64 = 0;
    let mut baseline_taken = false;
    let mut warmup_end = None;
    let mut warmup: Vec<usize> = Vec::new();
    if plan.limits_first {
        warmup.extend([11, 12]);
    }
    // One of each regular kind first, the longest string among them, so the baseline is taken
    // after every code path has run once at its largest.
    warmup.extend(0..=10);
    let mut warm = warmup.into_iter();
    let wait_for = |k: u64, what: &str| -> Result<(), String> {
        let deadline = Instant::now() + plan.stall;
        while state.next.load(Ordering::Acquire) < k {
            if state.done.load(Ordering::Acquire) {
                return Err(format!("the reader stopped before {what}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer within {:?} at {what}", plan.stall));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    let mut send_err = None;
    let mut next_report = plan.total / 10;
    while figs.bytes < plan.total {
        if started.elapsed() > plan.budget {
            figs.out_of_time = true;
            break;
        }
        buf.clear();
        let kind = match warm.next() {
            Some(kind) => {
                if kind == 4 {
                    buf.extend_from_slice(b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"");
                    buf.extend(std::iter::repeat_n(b'a', plan.max_string));
                } else {
                    garbage_chunk(&mut rng, kind, plan.max_string, &mut buf);
                }
                kind
            }
            None => {
                let kind = pick_kind(&mut rng);
                garbage_chunk(&mut rng, kind, plan.max_string, &mut buf);
                kind
            }
        };
        figs.chunks[kind] += 1;
        buf.push(*rng.pick(&resync));
        figs.resyncs += 1;
        if rng.below(4) == 0 {
            let ws = *rng.pick(&[b" ".as_slice(), b"\n", b"\r\n", b"\t"]);
            buf.extend_from_slice(ws);
        }
        let (req, _) = valid_request(k);
        buf.extend_from_slice(&req);
        k += 1;
        if let Err(e) = w.write_all(&buf) {
            send_err = Some(format!("write: {e}"));
            break;
        }
        figs.bytes += buf.len() as u64;
        // A long run shows it is alive: a line at every tenth of the way.
        if plan.total >= 64 << 20 && figs.bytes >= next_report {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  … sent {:.0} of {:.0} MiB in {secs:.0} s ({:.2} MiB/s), {k} valid requests, {} answered",
                mib(figs.bytes),
                mib(plan.total),
                mib(figs.bytes) / secs.max(1e-9),
                state.next.load(Ordering::Acquire)
            );
            next_report = next_report.saturating_add(plan.total / 10);
        }
        if warm.len() == 0 && warmup_end.is_none() {
            warmup_end = Some(figs.bytes);
        }
        if !baseline_taken
            && warmup_end.is_some_and(|w| figs.bytes >= w.saturating_add(plan.baseline_after))
        {
            baseline_taken = true;
            if let Err(e) = w.flush() {
                send_err = Some(format!("write: {e}"));
                break;
            }
            match wait_for(k, "the baseline") {
                Ok(()) => {
                    // Idle, as at the end.
                    std::thread::sleep(Duration::from_millis(200));
                    at_baseline()
                }
                Err(e) => {
                    send_err = Some(e);
                    break;
                }
            }
        }
    }
    figs.valid = k;
    // The end marker: a last valid request, then wait for everything.
    if send_err.is_none() {
        let mut tail = vec![0x01];
        tail.extend_from_slice(b"{\"execute\":\"guest-ping\",\"id\":\"end\"}");
        let r = w.write_all(&tail).and_then(|()| w.flush());
        match r {
            Err(e) => send_err = Some(format!("write: {e}")),
            Ok(()) => {
                figs.bytes += tail.len() as u64;
                let deadline = Instant::now() + plan.stall;
                while !state.done.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if state.done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(200));
                    at_end();
                } else {
                    send_err = Some(format!("no end marker within {:?}", plan.stall));
                }
            }
        }
    }
    if send_err.is_some() {
        // Unblock the reader.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    let r = match reader.join() {
        Ok(r) => r,
        Err(_) => {
            figs.stalled = Some("the reader panicked".into());
            return figs;
        }
    };
    figs.right = r.right;
    figs.missing = r.missing + k.saturating_sub(r.seen_up_to);
    figs.wrong = r.wrong;
    figs.other_lines = r.other;
    figs.response_bytes = r.bytes;
    figs.bad_lines = r.bad;
    figs.examples = r.examples;
    figs.stalled = send_err.or(r.error);
    figs.elapsed = started.elapsed();
    figs
}

#[derive(Default)]
struct ReaderFigures {
    right: u64,
    missing: u64,
    wrong: u64,
    other: u64,
    bad: u64,
    bytes: u64,
    /// One past the highest valid index seen.
    seen_up_to: u64,
    examples: Vec<String>,
    error: Option<String>,
}

/// A reader that, on a slow link, pauses after a short read.
struct Paced {
    inner: UnixStream,
    slow: bool,
}

impl std::io::Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.slow && n < 512 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(n)
    }
}

fn read_answers(stream: Paced, state: &ReaderState) -> ReaderFigures {
    let mut f = ReaderFigures::default();
    let mut r = BufReader::with_capacity(1 << 20, stream);
    let mut line = Vec::new();
    let example = |f: &mut ReaderFigures, s: String| {
        if f.examples.len() < 5 {
            f.examples.push(s);
        }
    };
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) => {
                f.error = Some("the agent closed the connection".into());
                break;
            }
            Ok(n) => f.bytes += n as u64,
            Err(e) => {
                f.error = Some(format!("read: {e}"));
                break;
            }
        }
        if line.last() != Some(&b'\n') {
            f.error = Some("the connection ended mid-line".into());
            break;
        }
        line.pop();
        if line.first() == Some(&0xFF) {
            f.bad += 1;
            example(&mut f, "a response with a 0xFF sentinel".into());
            continue;
        }
        let ours = line.starts_with(b"{\"id\": \"v")
            || line.starts_with(b"{\"return\"")
            || line.starts_with(b"{\"id\": \"end\"");
        if !ours {
            // An error for the garbage (no id, or a garbage id such as "g-1"): the agent put it
            // first, so only its shape is checked, cheaply (some quote megabytes of input).
            if line.starts_with(b"{\"error\": {\"class\": \"")
                || line.starts_with(b"{\"id\": ")
                || line.len() < 4096 && parse_line(&line).is_ok()
            {
                f.other += 1;
            } else {
                f.bad += 1;
                example(
                    &mut f,
                    format!(
                        "unexpected line: {}",
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    ),
                );
            }
            continue;
        }
        let v = match parse_line(&line) {
            Ok(v) => v,
            Err(e) => {
                f.bad += 1;
                example(&mut f, e.to_string());
                continue;
            }
        };
        let id = v.get("id").and_then(Value::as_str).unwrap_or("");
        if id == "end" {
            if v != json!({"return": {}, "id": "end"}) {
                f.wrong += 1;
                example(&mut f, format!("end marker answered {v}"));
            }
            state.done.store(true, Ordering::Release);
            return f;
        }
        let Some(k) = id.strip_prefix('v').and_then(|n| n.parse::<u64>().ok()) else {
            // A `return` for a garbage request (they carry no "v" id).
            f.other += 1;
            continue;
        };
        let next = state.next.load(Ordering::Relaxed);
        if k < next {
            f.wrong += 1;
            example(&mut f, format!("duplicate or out-of-order answer {v}"));
            continue;
        }
        if k > next {
            f.missing += k - next;
            example(
                &mut f,
                format!("requests v{next}..v{} got no answer", k - 1),
            );
        }
        let (_, want) = valid_request(k);
        if v == want {
            f.right += 1;
        } else {
            f.wrong += 1;
            example(&mut f, format!("v{k}: wanted {want}, got {v}"));
        }
        f.seen_up_to = k + 1;
        state.next.store(k + 1, Ordering::Release);
    }
    state.done.store(true, Ordering::Release);
    f
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn describe_garbage(f: &GarbageFigures) -> String {
    let kinds: Vec<String> = GARBAGE_KINDS
        .iter()
        .zip(&f.chunks)
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "{} garbage chunks ({})",
        f.chunks.iter().sum::<u64>(),
        kinds.join(", ")
    )
}

/// The garbage of a run in a few words, for the table.
fn short_garbage(f: &GarbageFigures) -> String {
    let kinds = f.chunks.iter().filter(|n| **n > 0).count();
    let limits = f.chunks.get(11).copied().unwrap_or(0) + f.chunks.get(12).copied().unwrap_or(0);
    format!(
        "{} garbage chunks of {kinds} kinds{}, each then a resync byte",
        f.chunks.iter().sum::<u64>(),
        if limits > 0 {
            " (incl. a > 64 MiB request and > 2 Mi tokens)"
        } else {
            ""
        }
    )
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

/// Folds garbage figures into a row.
fn garbage_into_row(row: &mut Row, label: &str, f: &GarbageFigures) {
    let secs = f.elapsed.as_secs_f64().max(1e-9);
    say(
        &row.name,
        &format!(
            "{label}: sent {:.1} MiB in {secs:.1}s ({:.2} MiB/s), {} valid requests: {} right, {} missing, {} wrong; {} resync bytes; {} other response lines, {:.1} MiB of responses, {} bad lines",
            mib(f.bytes),
            mib(f.bytes) / secs,
            f.valid,
            f.right,
            f.missing,
            f.wrong,
            f.resyncs,
            f.other_lines,
            mib(f.response_bytes),
            f.bad_lines
        ),
    );
    say(&row.name, &format!("{label}: {}", describe_garbage(f)));
    for e in &f.examples {
        say(&row.name, &format!("{label}: example: {e}"));
    }
    row.lost += f.missing + f.wrong;
    if let Some(s) = &f.stalled {
        row.hangs += 1;
        row.fail(format!("{label}: {s}"));
    }
    if f.out_of_time {
        row.fail(format!(
            "{label}: time budget ran out after {:.1} MiB",
            mib(f.bytes)
        ));
    }
    row.check(f.bad_lines == 0, || {
        format!(
            "{label}: {} response lines broke the wire rules",
            f.bad_lines
        )
    });
    row.check(f.right == f.valid, || {
        format!("{label}: {} of {} valid requests right", f.right, f.valid)
    });
}

// ---------------------------------------------------------------------------------------------
// Host routines

fn start_host(ctx: &mut Context, extra: &[&str]) -> Result<HostAgent, String> {
    let bin = ctx.host_binary()?;
    HostAgent::start_with(AgentKind::Ours, &bin, extra)
}

fn garbage(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let quick = ctx.opts.quick;
    let mut agent = start_host(ctx, &[])?;
    let pid = agent.pid();
    let plan = GarbagePlan {
        total: if quick { 16 << 20 } else { 1 << 30 },
        max_string: if quick { 1 << 20 } else { 8 << 20 },
        limits_first: !quick,
        baseline_after: 10 << 20,
        seed: 0x5eed_0006,
        stall: Duration::from_secs(120),
        budget: Duration::from_secs(if quick { 120 } else { 3600 }),
        slow_link: false,
    };
    let client = agent.connect()?;
    let stream = client.stream();
    let mut base: (Option<Mem>, Option<usize>) = (None, None);
    let mut end: (Option<Mem>, Option<usize>) = (None, None);
    let f = garbage_session(
        stream,
        &plan,
        || base = (mem(pid), fd_count(pid)),
        || end = (mem(pid), fd_count(pid)),
    );
    garbage_into_row(row, "unix-listen", &f);
    let alive = agent.guard_mut().is_running();
    if !alive {
        row.crashes += 1;
        row.fail(format!("the agent died; log:\n{}", agent.log()));
    }
    say(
        &row.name,
        &format!(
            "after the warm-up{} and {} MiB more: {}; at the end: {} (tolerance for RssAnon {RSS_TOLERANCE_KB} KiB); fds {} -> {}",
            if plan.limits_first {
                " (incl. one oversized request and one token-count overflow)"
            } else {
                ""
            },
            plan.baseline_after >> 20,
            opt(base.0),
            opt(end.0),
            opt(base.1),
            opt(end.1)
        ),
    );
    if alive {
        check_mem(row, base.0, end.0);
        match (base.1, end.1) {
            (Some(f0), Some(f1)) if f1 > f0 => {
                row.leaks += 1;
                row.fail(format!("open fds grew from {f0} to {f1}"));
            }
            (Some(_), Some(_)) => {}
            _ => row.fail("the fd figures could not be taken"),
        }
    }
    // A fresh client is served normally afterwards.
    drop(client);
    match agent
        .connect()
        .and_then(|mut c| c.ping().map_err(|e| e.to_string()))
    {
        Ok(()) => {}
        Err(e) => {
            row.lost += 1;
            row.fail(format!("a fresh client after the garbage: {e}"));
        }
    }
    row.inputs = format!(
        "{:.0} MiB through unix-listen, {} valid requests woven in",
        mib(f.bytes),
        f.valid
    );
    row.faults = format!(
        "{}; RssAnon {}→{} KiB, VmRSS {}→{} KiB, fds {}→{}",
        short_garbage(&f),
        opt(base.0.map(|m| m.anon)),
        opt(end.0.map(|m| m.anon)),
        opt(base.0.map(|m| m.vm_rss)),
        opt(end.0.map(|m| m.vm_rss)),
        opt(base.1),
        opt(end.1)
    );
    if let Some(st) = agent.stop() {
        row.check(st.code() == Some(0), || {
            format!("exit status {st} after the run")
        });
    }
    Ok(())
}

/// The half requests a client leaves behind when it disconnects.
const HALF_REQUESTS: &[&[u8]] = &[
    b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":",
    b"{\"execute\":\"guest-ping",
    b"[[[[[[[[",
    b"{\"execute\":\"guest-ping\",\"id\":\"half",
    b"{\"execute\":\"guest-ping\\u00",
    b"{\"execute\":\"guest-info\"}",
    b"\xc3",
    b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":12",
];

fn reconnect(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let cycles: u64 = if ctx.opts.quick { 500 } else { 10_000 };
    let mut agent = start_host(ctx, &[])?;
    let pid = agent.pid();
    // The baseline is taken after the first tenth of the cycles (every kind of half request
    // has been seen by then), with no client connected, as at the end.
    let warmup = (cycles / 10).max(HALF_REQUESTS.len() as u64 * 4);
    let (mut rss0, mut fd0) = (None, None);
    let mut mid = None;
    let started = Instant::now();
    let mut served = 0u64;
    let mut slowest = Duration::ZERO;
    for i in 0..cycles {
        if started.elapsed() > Duration::from_secs(if ctx.opts.quick { 120 } else { 1800 }) {
            row.fail(format!("time budget ran out after {i} cycles"));
            break;
        }
        {
            let mut half = Client::connect_retry(agent.socket(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let _ = half.send_raw(HALF_REQUESTS[(i as usize) % HALF_REQUESTS.len()]);
        }
        let t = Instant::now();
        let r = (|| -> Result<Value, ClientError> {
            let mut c = Client::connect_retry(agent.socket(), Duration::from_secs(10))?;
            c.set_timeout(Duration::from_secs(10));
            c.request(
                &json!({"execute": "guest-sync", "arguments": {"id": i}, "id": format!("r{i}")}),
            )
        })();
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(v) if v == json!({"return": i, "id": format!("r{i}")}) => served += 1,
            Ok(v) => {
                row.lost += 1;
                if row.lost <= 3 {
                    row.fail(format!("cycle {i}: answered {v}"));
                }
            }
            Err(ClientError::Timeout(w)) => {
                row.hangs += 1;
                row.fail(format!("cycle {i}: timed out waiting for {w}"));
            }
            Err(e) => {
                row.lost += 1;
                if row.lost <= 3 {
                    row.fail(format!("cycle {i}: {e}"));
                }
            }
        }
        if !agent.guard_mut().is_running() {
            row.crashes += 1;
            row.fail(format!(
                "the agent died at cycle {i}; log:\n{}",
                agent.log()
            ));
            break;
        }
        if i + 1 == warmup {
            std::thread::sleep(Duration::from_millis(100));
            (rss0, fd0) = (mem(pid), fd_count(pid));
        }
        if i + 1 == (warmup + cycles) / 2 {
            std::thread::sleep(Duration::from_millis(100));
            mid = mem(pid);
        }
    }
    // Figures with no client connected, as at the baseline.
    std::thread::sleep(Duration::from_millis(100));
    let (rss1, fd1) = (mem(pid), fd_count(pid));
    let secs = started.elapsed().as_secs_f64();
    say(
        &row.name,
        &format!(
            "{cycles} cycles in {secs:.1}s: {served} next clients served exactly (plain request, no resync), slowest {:.1} ms; after {warmup} cycles {}, at the end {}; fds {fd0:?} -> {fd1:?}",
            slowest.as_secs_f64() * 1000.0,
            opt(rss0),
            opt(rss1)
        ),
    );
    // A leak grows with the cycles; the allocator settling grows for a while and then stops
    // (measured: RssAnon 228 KiB at the start, 260 KiB after 10,000 cycles and still 260 KiB
    // after 60,000). So private memory must not grow beyond the tolerance in the second half.
    say(
        &row.name,
        &format!(
            "private memory: {} KiB after {warmup} cycles, {} KiB halfway, {} KiB at the end",
            opt(rss0.map(|m| m.anon)),
            opt(mid.map(|m| m.anon)),
            opt(rss1.map(|m| m.anon))
        ),
    );
    check_mem(row, mid, rss1);
    if let (Some(a), Some(b)) = (fd0, fd1)
        && b > a
    {
        row.leaks += 1;
        row.fail(format!("open fds grew from {a} to {b}"));
    }
    row.inputs = format!("{cycles} cycles, {} connections", cycles * 2);
    row.faults = format!(
        "{cycles} disconnects mid-request ({} kinds of half request); RssAnon {}→{}→{} KiB, VmRSS {}→{} KiB, fds {}→{}",
        HALF_REQUESTS.len(),
        opt(rss0.map(|m| m.anon)),
        opt(mid.map(|m| m.anon)),
        opt(rss1.map(|m| m.anon)),
        opt(rss0.map(|m| m.vm_rss)),
        opt(rss1.map(|m| m.vm_rss)),
        opt(fd0),
        opt(fd1)
    );
    if let Some(st) = agent.stop() {
        row.check(st.code() == Some(0), || {
            format!("exit status {st} after the run")
        });
    }
    Ok(())
}

fn restart(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    use std::os::unix::process::ExitStatusExt;
    let cycles: u64 = if ctx.opts.quick { 50 } else { 1000 };
    let bin = ctx.host_binary()?;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut total_stop = Duration::ZERO;
    let mut ok = 0u64;
    let mut modes = [0u64; 3];
    for i in 0..cycles {
        let mut agent = HostAgent::start_with(AgentKind::Ours, &bin, &[])?;
        let mode = (i % 3) as usize;
        modes[mode] += 1;
        // Keep the client open across the signal.
        let _client = match mode {
            // Idle, after one answered request.
            0 => {
                let mut c = agent.connect()?;
                c.ping().map_err(|e| e.to_string())?;
                drop(c);
                None
            }
            // A client connected with half a request in the parser.
            1 => {
                let mut c = agent.connect()?;
                c.send_raw(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":")
                    .map_err(|e| e.to_string())?;
                Some(c)
            }
            // The agent blocked writing: many large answers, none read.
            _ => {
                let mut c = agent.connect()?;
                let mut burst = Vec::new();
                for _ in 0..400 {
                    burst.extend_from_slice(b"{\"execute\":\"guest-info\"}");
                }
                c.send_raw(&burst).map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_millis(30));
                Some(c)
            }
        };
        let t = Instant::now();
        let _ = agent.guard_mut().signal(crate::qemu::Signal::TERM);
        let st = agent.guard_mut().wait_timeout(Duration::from_secs(10));
        let took = t.elapsed();
        slowest = slowest.max(took);
        total_stop += took;
        match st {
            None => {
                row.hangs += 1;
                row.fail(format!(
                    "cycle {i} (mode {mode}): no exit within 10 s of SIGTERM; log:\n{}",
                    agent.log()
                ));
            }
            Some(st) if st.code() == Some(0) => ok += 1,
            Some(st) => {
                row.crashes += 1;
                row.fail(format!(
                    "cycle {i} (mode {mode}): exit status {st} (signal {:?}); log:\n{}",
                    st.signal(),
                    agent.log()
                ));
            }
        }
        drop(agent);
        if row.failures.len() > 5 {
            break;
        }
    }
    let n = cycles.max(1) as u32;
    say(
        &row.name,
        &format!(
            "{cycles} starts and SIGTERMs in {:.1}s ({} idle, {} mid-request, {} blocked writing): {ok} exited with status 0; stop time mean {:.1} ms, max {:.1} ms",
            started.elapsed().as_secs_f64(),
            modes[0],
            modes[1],
            modes[2],
            (total_stop / n).as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0
        ),
    );
    row.check(ok == cycles, || {
        format!("{ok} of {cycles} stops gave status 0")
    });
    row.inputs = format!("{cycles} agent starts");
    row.faults = format!(
        "{cycles} SIGTERMs ({} idle, {} mid-request, {} while blocked writing); slowest stop {:.0} ms",
        modes[0],
        modes[1],
        modes[2],
        slowest.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn exec(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let runs: u64 = if ctx.opts.quick { 100 } else { 1000 };
    let mut agent = start_host(ctx, &[])?;
    let pid = agent.pid();
    let mut c = agent.connect()?;
    c.set_timeout(Duration::from_secs(60));
    let fd0 = fd_count(pid);
    let started = Instant::now();
    let mut unwaited = Vec::new();
    let mut right = 0u64;
    for i in 0..runs {
        let r = (|| -> Result<bool, ClientError> {
            match i % 4 {
                0 => {
                    let p = c.exec("/bin/true", &[], None, false)?;
                    let o = c.exec_wait(p, Duration::from_secs(30))?;
                    Ok(o.exitcode == Some(0))
                }
                1 => {
                    let arg = format!("run {i}");
                    let o = c.run("/bin/echo", &[&arg], Duration::from_secs(30))?;
                    Ok(o.exitcode == Some(0) && o.stdout == format!("{arg}\n").into_bytes())
                }
                2 => {
                    let o = c.run(
                        "/bin/sh",
                        &["-c", "echo e >&2; exit 3"],
                        Duration::from_secs(30),
                    )?;
                    Ok(o.exitcode == Some(3) && o.stderr == b"e\n")
                }
                _ => {
                    // Never asked about until the end: the agent must still reap it.
                    unwaited.push(c.exec("/bin/true", &[], None, true)?);
                    Ok(true)
                }
            }
        })();
        match r {
            Ok(true) => right += 1,
            Ok(false) => {
                row.lost += 1;
                row.fail(format!("run {i}: wrong status or output"));
            }
            Err(ClientError::Timeout(w)) => {
                row.hangs += 1;
                row.fail(format!("run {i}: timed out waiting for {w}"));
            }
            Err(e) => {
                row.lost += 1;
                row.fail(format!("run {i}: {e}"));
            }
        }
        if row.failures.len() > 5 {
            break;
        }
    }
    // Let the unwaited children finish, then count zombies before asking about them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut kids = children_of(pid);
    while kids.0 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        kids = children_of(pid);
    }
    say(
        &row.name,
        &format!(
            "{runs} guest-exec runs in {:.1}s ({right} right); children of the agent afterwards: {} ({} zombies)",
            started.elapsed().as_secs_f64(),
            kids.0,
            kids.1
        ),
    );
    if kids.1 > 0 {
        row.leaks += kids.1 as u64;
        row.fail(format!("{} zombie children", kids.1));
    }
    if kids.0 > kids.1 {
        row.hangs += 1;
        row.fail(format!("{} children still running", kids.0 - kids.1));
    }
    for p in &unwaited {
        match c.exec_wait(*p, Duration::from_secs(10)) {
            Ok(o) if o.exitcode == Some(0) => {}
            Ok(o) => {
                row.lost += 1;
                row.fail(format!("unwaited pid {p}: {o:?}"));
            }
            Err(e) => {
                row.lost += 1;
                row.fail(format!("unwaited pid {p}: {e}"));
            }
        }
    }
    // The 16 MiB cap, on each stream, and exactly at the cap.
    const CAP: usize = 16 * 1024 * 1024;
    for (label, script, want_len, want_trunc, stderr) in [
        (
            "stdout over the cap",
            "head -c 17825792 /dev/zero",
            CAP,
            true,
            false,
        ),
        (
            "stderr over the cap",
            "head -c 17825792 /dev/zero >&2",
            CAP,
            true,
            true,
        ),
        (
            "stdout exactly at the cap",
            "head -c 16777216 /dev/zero",
            CAP,
            false,
            false,
        ),
    ] {
        match c.run("/bin/sh", &["-c", script], Duration::from_secs(60)) {
            Ok(o) => {
                let (data, trunc) = if stderr {
                    (&o.stderr, o.stderr_truncated)
                } else {
                    (&o.stdout, o.stdout_truncated)
                };
                say(
                    &row.name,
                    &format!(
                        "{label}: {} bytes kept, truncated={trunc}, exitcode {:?}",
                        data.len(),
                        o.exitcode
                    ),
                );
                row.check(
                    data.len() == want_len && trunc == want_trunc && o.exitcode == Some(0),
                    || {
                        format!(
                            "{label}: {} bytes, truncated={trunc}, exit {:?}",
                            data.len(),
                            o.exitcode
                        )
                    },
                );
            }
            Err(e) => row.fail(format!("{label}: {e}")),
        }
    }
    // Unknown pids: init (not ours), an already collected child, a negative one.
    let collected = c
        .exec("/bin/true", &[], None, false)
        .and_then(|p| c.exec_wait(p, Duration::from_secs(10)).map(|_| p))
        .map_err(|e| e.to_string())?;
    for p in [1, collected, -5] {
        match c.exec_status(p) {
            Err(ClientError::Agent { class, desc }) => {
                say(&row.name, &format!("exec-status pid {p}: {class}: {desc}"));
                row.check(
                    class == "GenericError" && desc.contains(&p.to_string()),
                    || format!("exec-status pid {p}: unclear error {class}: {desc}"),
                );
            }
            other => row.fail(format!("exec-status pid {p}: {other:?}")),
        }
    }
    let fd1 = fd_count(pid);
    say(&row.name, &format!("fds {fd0:?} -> {fd1:?}"));
    if let (Some(a), Some(b)) = (fd0, fd1)
        && b > a
    {
        row.leaks += 1;
        row.fail(format!("open fds grew from {a} to {b}"));
    }
    if !agent.guard_mut().is_running() {
        row.crashes += 1;
        row.fail(format!("the agent died; log:\n{}", agent.log()));
    }
    row.inputs = format!("{runs} guest-exec runs + 3 at the 16 MiB cap + 3 unknown pids");
    row.faults = format!(
        "{} children never waited for; outputs of 17 MiB; zombies after: {}",
        unwaited.len(),
        kids.1
    );
    drop(c);
    if let Some(st) = agent.stop() {
        row.check(st.code() == Some(0), || {
            format!("exit status {st} after the run")
        });
    }
    Ok(())
}

fn files(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let state = tempfile::Builder::new()
        .prefix("qga-soak-state-")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let state_arg = state.path().to_string_lossy().into_owned();
    let mut agent = start_host(ctx, &["-t", &state_arg])?;
    let pid = agent.pid();
    // An absolute path: each restarted agent has a working directory of its own.
    let file = state.path().join("soak-file");
    std::fs::write(&file, b"soak").map_err(|e| e.to_string())?;
    let f = file.to_string_lossy().into_owned();
    let f = f.as_str();
    let mut c = agent.connect()?;

    // 1. The open-handle limit, under a low RLIMIT_NOFILE.
    const LIMIT: u64 = 64;
    let rpid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or("pid out of range")?;
    prlimit(
        Some(rpid),
        Resource::Nofile,
        Rlimit {
            current: Some(LIMIT),
            maximum: Some(LIMIT),
        },
    )
    .map_err(|e| format!("prlimit: {e}"))?;
    let fd0 = fd_count(pid).unwrap_or(0);
    let mut handles = Vec::new();
    let mut first_error = None;
    let mut limit_error = String::new();
    for _ in 0..(LIMIT * 2) {
        match c.file_open(f, "r") {
            Ok(h) => handles.push(h),
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    say(
        &row.name,
        &format!(
            "RLIMIT_NOFILE {LIMIT} with {fd0} fds open: {} handles opened, then {:?}",
            handles.len(),
            first_error.as_ref().map(ToString::to_string)
        ),
    );
    // The agent keeps FD_RESERVE (32) fds below RLIMIT_NOFILE for itself and stops opens there,
    // with an error that names the limit (upstream has no limit: it runs into EMFILE and then
    // fails on the state-file commit or on guest-exec's pipes).
    let expect_handles = (LIMIT - 32) as usize;
    match &first_error {
        Some(ClientError::Agent { class, desc }) => {
            let want = format!(
                "failed to open file '{f}' (mode: 'r'): Too many open files: {expect_handles} handles are open, the agent's limit; close some with guest-file-close"
            );
            row.check(class == "GenericError" && *desc == want, || {
                format!("at the handle limit: {class}: {desc:?}, expected {want:?}")
            });
            row.check(handles.len() == expect_handles, || {
                format!(
                    "{} handles opened under RLIMIT_NOFILE {LIMIT}, expected {expect_handles}",
                    handles.len()
                )
            });
            limit_error = desc.clone();
        }
        Some(e) => row.fail(format!("at the handle limit: {e}")),
        None => row.fail(format!(
            "{} opens under a limit of {LIMIT} all succeeded",
            handles.len()
        )),
    }
    // At the limit: the agent answers, guest-exec works (its pipes come from the reserve),
    // closing one handle lets the next open through (the state file commits), and a new
    // connection is accepted.
    let at_limit = (|| -> Result<(), String> {
        c.ping().map_err(|e| format!("ping at the limit: {e}"))?;
        let p = c
            .exec("/bin/true", &[], None, true)
            .map_err(|e| format!("guest-exec at the handle limit: {e}"))?;
        let out = c
            .exec_wait(p, Duration::from_secs(10))
            .map_err(|e| format!("guest-exec at the handle limit: {e}"))?;
        if out.exitcode != Some(0) {
            return Err(format!("guest-exec at the handle limit: {out:?}"));
        }
        if let Some(h) = handles.pop() {
            c.file_close(h)
                .map_err(|e| format!("close at the limit: {e}"))?;
            let again = c
                .file_open(f, "r")
                .map_err(|e| format!("open after closing one at the limit: {e}"))?;
            handles.push(again);
        }
        Ok(())
    })();
    if let Err(e) = at_limit {
        row.lost += 1;
        row.fail(e);
    }
    drop(c);
    let mut c = agent.connect()?;
    if let Err(e) = c.ping() {
        row.lost += 1;
        row.fail(format!("reconnect at the fd limit: {e}"));
    }
    for h in &handles {
        if let Err(e) = c.file_close(*h) {
            row.fail(format!("close {h}: {e}"));
        }
    }
    match c
        .file_open(f, "r")
        .and_then(|h| c.file_close(h).map(|()| h))
    {
        Ok(_) => {}
        Err(e) => row.fail(format!("open after closing everything: {e}")),
    }
    let fd1 = fd_count(pid).unwrap_or(0);
    say(
        &row.name,
        &format!("fds with one client: before {fd0}, after closing all {fd1}"),
    );
    if fd1 > fd0 {
        row.leaks += 1;
        row.fail(format!("open fds grew from {fd0} to {fd1}"));
    }
    if !agent.guard_mut().is_running() {
        row.crashes += 1;
        row.fail(format!("the agent died; log:\n{}", agent.log()));
    }

    // 2. The handle counter across restarts (SIGTERM, then SIGKILL).
    let last = c.file_open(f, "r").map_err(|e| e.to_string())?;
    drop(c);
    let st = agent.stop();
    row.check(st.and_then(|s| s.code()) == Some(0), || {
        format!("exit status {st:?}")
    });
    let counter_file = std::fs::read_to_string(state.path().join("qga.state")).unwrap_or_default();
    let mut agent = start_host(ctx, &["-t", &state_arg])?;
    let mut c = agent.connect()?;
    let stale = c.file_read(last, 4);
    let after_term = c.file_open(f, "r").map_err(|e| e.to_string())?;
    drop(c);
    agent.guard_mut().kill();
    drop(agent);
    let agent = start_host(ctx, &["-t", &state_arg])?;
    let mut c = agent.connect()?;
    let after_kill = c.file_open(f, "r").map_err(|e| e.to_string())?;
    say(
        &row.name,
        &format!(
            "last handle {last}; state file {:?}; after SIGTERM+restart: old handle -> {:?}, next handle {after_term}; after SIGKILL+restart: next handle {after_kill}",
            counter_file.trim(),
            stale.as_ref().map(|_| ()).map_err(ToString::to_string)
        ),
    );
    row.check(after_term == last + 1, || {
        format!(
            "after a restart the next handle is {after_term}, not {}",
            last + 1
        )
    });
    row.check(after_kill == after_term + 1, || {
        format!(
            "after a SIGKILL restart the next handle is {after_kill}, not {}",
            after_term + 1
        )
    });
    row.check(
        matches!(&stale, Err(ClientError::Agent { desc, .. }) if desc == &format!("handle '{last}' has not been found")),
        || format!("a handle from before the restart: {stale:?}"),
    );
    row.inputs = format!(
        "{} opens up to RLIMIT_NOFILE {LIMIT}, 3 agent lifetimes on one state dir",
        handles.len() + 1
    );
    row.faults = format!(
        "handle limit under RLIMIT_NOFILE {LIMIT} (error: {limit_error:?}; then ping, exec, close+open, reconnect at the limit), 1 SIGTERM and 1 SIGKILL restart; handles {last}→{after_term}→{after_kill}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Linux guest routines

fn guest_virtio(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let quick = ctx.opts.quick;
    let cycles: u64 = if quick { 30 } else { 300 };
    let guest = ctx.guest()?;
    let socket = guest.virtio_socket.clone();
    let started = Instant::now();
    let mut served = 0u64;
    let mut plain_right = 0u64;
    let mut retries = 0u64;
    let mut retried_cycles = Vec::new();
    let mut slowest = Duration::ZERO;
    let half_requests: Vec<Vec<u8>> = {
        let mut v: Vec<Vec<u8>> = HALF_REQUESTS.iter().map(|h| h.to_vec()).collect();
        // A large half request, longer than one virtqueue buffer.
        let mut big = b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'z', 100_000));
        v.push(big);
        v
    };
    for i in 0..cycles {
        if started.elapsed() > Duration::from_secs(if quick { 120 } else { 3000 }) {
            row.fail(format!("time budget ran out after {i} cycles"));
            break;
        }
        {
            let mut half = Client::connect_retry(&socket, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let _ = half.send_raw(&half_requests[(i as usize) % half_requests.len()]);
            if i % 3 == 0 {
                // Let the guest see the bytes before the hang-up.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let t = Instant::now();
        let r = (|| -> Result<bool, ClientError> {
            let mut c = Client::connect_retry(&socket, Duration::from_secs(10))?;
            c.set_timeout(Duration::from_secs(5));
            // One retry on the same connection: a resync sent while the guest is still
            // processing the previous hang-up may be dropped with it.
            if c.sync_delimited().is_err() {
                retries += 1;
                retried_cycles.push(i);
                c.set_timeout(Duration::from_secs(30));
                c.sync_delimited()?;
            }
            c.set_timeout(Duration::from_secs(30));
            let v = c.request(
                &json!({"execute": "guest-sync", "arguments": {"id": i}, "id": format!("g{i}")}),
            )?;
            Ok(v == json!({"return": i, "id": format!("g{i}")}))
        })();
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(true) => {
                served += 1;
                plain_right += 1;
            }
            Ok(false) => {
                served += 1;
                row.lost += 1;
                row.fail(format!("cycle {i}: wrong answer after the resync"));
            }
            Err(ClientError::Timeout(w)) => {
                row.hangs += 1;
                row.fail(format!("cycle {i}: timed out waiting for {w}"));
            }
            Err(e) => {
                row.lost += 1;
                row.fail(format!("cycle {i}: {e}"));
            }
        }
        if row.failures.len() > 5 {
            break;
        }
    }
    if retries > 0 {
        // A resync lost on a fresh connection is a lost request: the client got no answer.
        row.lost += retries;
        row.fail(format!(
            "{retries} first guest-sync-delimited requests on a fresh connection got no answer within 5 s (cycles {retried_cycles:?}); a second one on the same connection did"
        ));
        if let Ok(mut isa) = guest.isa_agent()
            && let Ok(o) = isa.run(
                "/bin/sh",
                &["-c", "tail -n 40 /run/qga0.log"],
                Duration::from_secs(30),
            )
        {
            say(
                &row.name,
                &format!(
                    "the guest agent's log (tail):\n{}",
                    String::from_utf8_lossy(&o.stdout)
                ),
            );
        }
    }
    let console = guest.console();
    if console.contains("agent exited") {
        row.crashes += 1;
        row.fail("an agent exited in the guest (see the console)");
    }
    say(
        &row.name,
        &format!(
            "{cycles} host disconnects mid-request over virtio-serial in {:.1}s: {served} next connections served, {plain_right} exact answers, {retries} resync retries, slowest {:.0} ms",
            started.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1000.0
        ),
    );
    row.inputs =
        format!("{cycles} connections to the guest's virtio-serial port, each then served");
    row.faults = format!(
        "{cycles} host disconnects mid-request ({} kinds of half request); {retries} resync retries",
        half_requests.len()
    );
    Ok(())
}

/// The shell that prints the PIDs of the guest's virtio-serial agents.
const FIND_VIRTIO_AGENT: &str = "for p in /proc/[0-9]*; do \
     c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); \
     case \"$c\" in '/usr/bin/qga -m virtio-serial'*) echo ${p#/proc/};; esac; done";

/// The virtio-serial agent's arguments, as the guest's init starts it.
const VIRTIO_AGENT_ARGS: &[&str] = &[
    "-m",
    "virtio-serial",
    "-p",
    "/dev/virtio-ports/org.qemu.guest_agent.0",
    "-t",
    "/run/qga0",
    "-F/etc/qemu/fsfreeze-hook",
    "-l",
    "/run/qga0.log",
];

fn guest_freeze(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    let cycles: u64 = if ctx.opts.quick { 2 } else { 1000 };
    let guest = ctx.guest()?;
    let mut isa = guest.isa_agent()?;
    isa.set_timeout(Duration::from_secs(60));
    let sh = |isa: &mut Client, script: &str, within: Duration| {
        isa.run("/bin/sh", &["-c", script], within)
    };
    let started = Instant::now();
    let mut ok = 0u64;
    let mut slowest_stop = Duration::ZERO;
    // The agent started by init is not our child: the first cycle stops it and reads its
    // status from the console; later cycles start agents through the ISA agent's guest-exec,
    // which reaps them and reports their exit status.
    let mut agent_pid: Option<i64> = None;
    for i in 0..cycles {
        if i > 0 && i % 100 == 0 {
            say(&row.name, &format!("{i} of {cycles} cycles done"));
        }
        let r = (|| -> Result<(), String> {
            let mut c = guest.agent()?;
            c.set_timeout(Duration::from_secs(60));
            let pid = match agent_pid {
                Some(p) => p,
                None => {
                    let o = sh(&mut isa, FIND_VIRTIO_AGENT, Duration::from_secs(30))
                        .map_err(|e| format!("find the agent: {e}"))?;
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    let pids: Vec<i64> = text
                        .split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect();
                    match pids.as_slice() {
                        [p] => *p,
                        _ => return Err(format!("virtio agents running: {text:?}")),
                    }
                }
            };
            let n = c
                .execute("guest-fsfreeze-freeze", None)
                .map_err(|e| format!("freeze: {e}"))?;
            let st = c
                .execute("guest-fsfreeze-status", None)
                .map_err(|e| format!("status: {e}"))?;
            if st != json!("frozen") || n.as_i64().unwrap_or(0) < 1 {
                return Err(format!("freeze returned {n}, status {st}"));
            }
            // Leave a request half-written too, so the stop happens mid-request.
            c.send_raw(b"{\"execute\":\"guest-ping\"")
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            let o = sh(
                &mut isa,
                &format!("kill -TERM {pid}"),
                Duration::from_secs(30),
            )
            .map_err(|e| format!("kill: {e}"))?;
            if o.exitcode != Some(0) {
                return Err(format!("kill -TERM {pid}: {o:?}"));
            }
            // The exit status: from the console for init's agent, from guest-exec-status for
            // ours.
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if agent_pid.is_none() {
                    let con = guest.console();
                    if let Some(l) = con
                        .lines()
                        .find(|l| l.contains("virtio agent exited with status"))
                    {
                        break l
                            .rsplit(' ')
                            .next()
                            .and_then(|s| s.trim().parse::<i64>().ok());
                    }
                } else {
                    let s = isa
                        .exec_status(pid)
                        .map_err(|e| format!("exec-status {pid}: {e}"))?;
                    if s.get("exited") == Some(&Value::Bool(true)) {
                        break s.get("exitcode").and_then(Value::as_i64);
                    }
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "HANG: agent {pid} still running 20 s after SIGTERM"
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            slowest_stop = slowest_stop.max(t.elapsed());
            // QEMU serves one client at a time: this one must go before the next connects.
            drop(c);
            if status != Some(0) {
                return Err(format!("CRASH: agent {pid} exited with status {status:?}"));
            }
            // Thawed: a write to the data disk completes, and no frozen marker remains.
            let o = sh(
                &mut isa,
                &format!(
                    "echo {i} > /mnt/data/soak-freeze && sync && cat /mnt/data/soak-freeze && \
                     test ! -e /run/qga0/qga.state.isfrozen && echo thawed"
                ),
                Duration::from_secs(20),
            )
            .map_err(|e| format!("HANG: write to /mnt/data after the stop: {e}"))?;
            if o.stdout != format!("{i}\nthawed\n").into_bytes() {
                return Err(format!("not thawed: {o:?}"));
            }
            // Restart the agent through the ISA agent and check it reports thawed.
            let args: Vec<&str> = VIRTIO_AGENT_ARGS.to_vec();
            let new_pid = isa
                .exec("/usr/bin/qga", &args, None, false)
                .map_err(|e| format!("restart: {e}"))?;
            agent_pid = Some(new_pid);
            let mut c = guest.agent()?;
            let st = c
                .execute("guest-fsfreeze-status", None)
                .map_err(|e| format!("status after restart: {e}"))?;
            if st != json!("thawed") {
                return Err(format!("status after restart: {st}"));
            }
            Ok(())
        })();
        match r {
            Ok(()) => ok += 1,
            Err(e) if e.starts_with("HANG") => {
                row.hangs += 1;
                row.fail(format!("cycle {i}: {e}"));
            }
            Err(e) if e.starts_with("CRASH") => {
                row.crashes += 1;
                row.fail(format!("cycle {i}: {e}"));
            }
            Err(e) => row.fail(format!("cycle {i}: {e}")),
        }
        if !row.failures.is_empty() {
            break;
        }
    }
    let hook = sh(
        &mut isa,
        "cat /run/fsfreeze-hook.log",
        Duration::from_secs(20),
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    let freezes = hook.lines().filter(|l| l.starts_with("freeze")).count();
    let thaws = hook.lines().filter(|l| l.starts_with("thaw")).count();
    say(
        &row.name,
        &format!(
            "{cycles} freeze + SIGTERM cycles in {:.1}s: {ok} exited 0 and left the filesystems thawed; slowest stop {:.0} ms; hook log: {freezes} freezes, {thaws} thaws",
            started.elapsed().as_secs_f64(),
            slowest_stop.as_secs_f64() * 1000.0
        ),
    );
    row.check(freezes == thaws, || {
        format!("hook saw {freezes} freezes but {thaws} thaws")
    });
    row.inputs = format!("{cycles} agent lifetimes in the guest, each freezing /mnt/data");
    row.faults = format!(
        "{cycles} SIGTERMs while frozen and mid-request; slowest stop {:.0} ms; hook: {freezes} freezes, {thaws} thaws",
        slowest_stop.as_secs_f64() * 1000.0
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bare metal

fn baremetal(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    use crate::baremetal::{BareMetalVm, Machine, Transport};
    let total: u64 = if ctx.opts.quick { 1 << 20 } else { 100 << 20 };
    let mut inputs = Vec::new();
    let mut faults = Vec::new();
    for (machine, transport) in [
        (Machine::Pc, Transport::Com1),
        (Machine::Q35, Transport::Virtio),
    ] {
        let label = transport.name();
        let mut vm = BareMetalVm::boot(machine, transport, |_| {})?;
        let mut c = vm.client()?;
        let stack_of = |c: &mut Client| -> Option<(u64, u64)> {
            let o = c.run("stack", &[], Duration::from_secs(20)).ok()?;
            let t = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut w = t.split_whitespace().filter_map(|x| x.parse::<u64>().ok());
            Some((w.next()?, w.next()?))
        };
        let before = stack_of(&mut c);
        let plan = GarbagePlan {
            total,
            max_string: 256 * 1024,
            limits_first: false,
            baseline_after: 0,
            seed: 0xba5e_0006 ^ total,
            stall: Duration::from_secs(120),
            budget: Duration::from_secs(if ctx.opts.quick { 120 } else { 5400 }),
            slow_link: matches!(transport, Transport::Com1),
        };
        let f = garbage_session(c.stream(), &plan, || {}, || {});
        garbage_into_row(row, label, &f);
        drop(c);
        // Then valid requests on a fresh connection: all answered.
        let after = (|| -> Result<(u64, Option<(u64, u64)>), String> {
            let mut c = vm.client()?;
            let mut n = 0;
            for i in 0..20u64 {
                let v = c
                    .request(&json!({"execute": "guest-sync", "arguments": {"id": i}, "id": i}))
                    .map_err(|e| e.to_string())?;
                if v == json!({"return": i, "id": i}) {
                    n += 1;
                }
            }
            c.info().map_err(|e| e.to_string())?;
            Ok((n, stack_of(&mut c)))
        })();
        match after {
            Ok((n, stack)) => {
                if n != 20 {
                    row.lost += 20 - n;
                    row.fail(format!(
                        "{label}: {n} of 20 requests right after the garbage"
                    ));
                }
                say(
                    &row.name,
                    &format!(
                        "{label}: stack high-water mark before {before:?}, after {stack:?} (used, size)"
                    ),
                );
                match stack {
                    Some((used, size)) => row.check(used < size, || {
                        format!("{label}: stack high-water mark {used} of {size}")
                    }),
                    None => row.fail(format!("{label}: no stack figure")),
                }
                faults.push(format!(
                    "{label}: {}; stack high-water mark {}",
                    short_garbage(&f),
                    stack
                        .map(|(u, s)| format!("{u} of {s} B"))
                        .unwrap_or_default()
                ));
            }
            Err(e) => {
                row.lost += 20;
                row.fail(format!("{label}: after the garbage: {e}"));
            }
        }
        if let Some(st) = vm.try_status() {
            row.crashes += 1;
            row.fail(format!("{label}: QEMU exited ({st}); {}", vm.log()));
        }
        inputs.push(format!(
            "{label}: {:.0} MiB + {} valid requests",
            mib(f.bytes),
            f.valid + 20
        ));
    }
    row.inputs = inputs.join("; ");
    row.faults = faults.join("; ");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_bytes_exclude_whitespace() {
        let r = resync_bytes();
        assert!(r.contains(&0xFF) && r.contains(&0x01) && r.contains(&0x00));
        assert!(!r.contains(&b'\n') && !r.contains(&b'\t') && !r.contains(&b'\r'));
        assert_eq!(r.len(), 31);
    }

    #[test]
    fn valid_requests_are_json_with_their_id() {
        for k in 0..4 {
            let (req, want) = valid_request(k);
            let v: Value = serde_json::from_slice(&req).unwrap();
            assert_eq!(v["id"], want["id"]);
        }
    }

    #[test]
    fn children_of_sees_a_zombie() {
        // A child that exits and is not reaped is a zombie of this process.
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let me = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = (0, 0);
        while Instant::now() < deadline {
            seen = children_of(me);
            if seen.1 > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = child;
        let _ = child.wait();
        assert!(seen.1 >= 1, "{seen:?}");
    }
}
