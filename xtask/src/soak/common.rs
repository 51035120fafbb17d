//! What the routines share: a run's [`Options`] and [`Context`] (the agent binary and the
//! Linux guest, built and booted once), the [`Row`] each routine fills, the memory check, the
//! figures of a garbage session put into words, and the imports every routine uses (this
//! module is their prelude, so a routine file starts with `use super::common::*`).

pub(super) use std::path::PathBuf;
pub(super) use std::time::{Duration, Instant};

pub(super) use ::tests::host_agent::{AgentKind, HostAgent};
pub(super) use ::tests::linux_guest::{GuestImages, GuestOptions, LinuxGuest};
pub(super) use ::tests::paths::target_dir;
pub(super) use qga_client::{Client, ClientError};
pub(super) use serde_json::{Value, json};

pub(super) use super::generator::*;
pub(super) use super::session::garbage_session;
pub(super) use crate::procfs::{Mem, children_of, fd_count, mem};

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
    pub(super) fn new(name: &str, opts: &Options) -> Row {
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

    pub(super) fn fail(&mut self, what: impl Into<String>) {
        let what = what.into();
        say(&self.name, &format!("FAIL: {what}"));
        self.failures.push(what);
    }

    pub(super) fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
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

pub(super) fn say(name: &str, line: &str) {
    println!("soak {name}: {line}");
}

/// State shared by the routines of one run: the agent binary and the Linux guest are built and
/// booted once.
#[derive(Debug)]
pub struct Context {
    pub(super) opts: Options,
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
    pub(super) fn host_binary(&mut self) -> Result<PathBuf, String> {
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

    pub(super) fn guest(&mut self) -> Result<&mut LinuxGuest, String> {
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

/// Counts a leak when private memory grew beyond [`RSS_TOLERANCE_KB`] between two figures.
pub(super) fn check_mem(row: &mut Row, before: Option<Mem>, after: Option<Mem>) {
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

pub(super) fn describe_garbage(f: &GarbageFigures) -> String {
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
pub(super) fn short_garbage(f: &GarbageFigures) -> String {
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

pub(super) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

/// Folds garbage figures into a row.
pub(super) fn garbage_into_row(row: &mut Row, label: &str, f: &GarbageFigures) {
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

pub(super) fn start_host(ctx: &mut Context, extra: &[&str]) -> Result<HostAgent, String> {
    let bin = ctx.host_binary()?;
    HostAgent::start_with(AgentKind::Ours, &bin, extra)
}
