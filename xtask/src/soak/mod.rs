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
//! - Host agents are started only through [`HostAgent`](::tests::host_agent::HostAgent), i.e. with the block list of commands
//!   that change the system; freezing filesystems happens only inside the QEMU Linux guest.
//! - `--quick` sizes are what the normal test suite runs (`xtask/tests/soak_*.rs`); the full
//!   sizes are what `cargo xtask soak` runs, and its [`table`] is the README's "Robustness" table.
//!
//! This module holds the table of routines and runs them; each routine has its file (named
//! after it). What they share lies below them: `common` (the [`Row`] and [`Context`] of a run,
//! the memory check, the figures in words), `generator` (the garbage stream and the valid
//! requests woven into it), `session` (one garbage session: the writer and the reader thread
//! that checks every answer) and [`crate::procfs`] (the process figures, shared with the
//! benchmark). Imports run one way: this module → routines → common → session → generator.

use std::fmt::Write as _;
use std::time::Instant;

mod baremetal;
mod common;
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
use common::say;
pub use common::{Context, Options, RSS_TOLERANCE_KB, Row};
use exec::exec;
use files::files;
use garbage::garbage;
pub use generator::*;
use guest_freeze::guest_freeze;
use guest_virtio::guest_virtio;
use reconnect::reconnect;
use restart::restart;
pub use session::garbage_session;

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
