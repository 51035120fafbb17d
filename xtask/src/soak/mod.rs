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
//! - `--quick` sizes are what the normal test suite runs (`xtask/tests/soak_*.rs`); the full
//!   sizes are what `cargo xtask soak` runs, and its [`table`] is the README's "Robustness" table.
//!
//! Each routine has its file (named after it); what several share is here (the [`Row`] and
//! [`Context`] of a run), in `generator` (the garbage stream and the valid requests woven into
//! it), in `session` (one garbage session: the writer and the reader thread that checks every
//! answer) and in [`crate::procfs`] (the process figures, shared with the benchmark).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use ::tests::host_agent::{AgentKind, HostAgent};
use ::tests::linux_guest::{GuestImages, GuestOptions, LinuxGuest};
use qga_client::{Client, ClientError, parse_line};

mod baremetal;
mod exec;
mod files;
mod garbage;
mod generator;
mod guest_freeze;
mod guest_virtio;
mod reconnect;
mod restart;
mod session;

use baremetal::baremetal;
use exec::exec;
use files::files;
use garbage::garbage;
pub use generator::*;
use guest_freeze::guest_freeze;
use guest_virtio::guest_virtio;
use reconnect::{HALF_REQUESTS, reconnect};
use restart::restart;
pub use session::garbage_session;

use ::tests::paths::target_dir;

use crate::procfs::{Mem, children_of, fd_count, mem};

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
                if self.opts.quick || std::env::var_os(::tests::host_agent::QGA_BIN_ENV).is_some() {
                    ::tests::host_agent::our_binary()
                } else {
                    ::tests::initramfs::build_static_qga()
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

/// `cargo xtask soak [NAME|all]... [--quick]`: runs routines, prints each one's figures and,
/// for more than one, the robustness table; fails if any routine failed or could not run.
pub fn cli(names: &[String], quick: bool) -> Result<(), String> {
    let names: Vec<&str> = if names.is_empty() || names == ["all"] {
        ROUTINES.iter().map(|(n, _)| *n).collect()
    } else {
        names.iter().map(String::as_str).collect()
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
            .current_dir(::tests::paths::workspace_root())
            .args(["run", "--quiet", "--release", "-p", "xtask", "--", "soak"])
            .args(&names)
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

fn start_host(ctx: &mut Context, extra: &[&str]) -> Result<HostAgent, String> {
    let bin = ctx.host_binary()?;
    HostAgent::start_with(AgentKind::Ours, &bin, extra)
}
