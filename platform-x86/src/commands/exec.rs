//! `guest-exec` and `guest-exec-status` running built-in programs.
//!
//! There are no processes on bare metal, so "programs" are Rust functions a firmware registers
//! by name ([`Programs::register`]): `fn(args, input, &mut output) -> exit code`. This lets a
//! harness call firmware routines through a standard agent command: `guest-exec` with
//! `path: "cpuid"` runs the routine to completion, capturing what it writes, and the next
//! `guest-exec-status` reports `exited: true` with the exit code and output, as upstream does
//! for a process that has finished.
//!
//! `path` is looked up by its last `/`-component, so `echo` and `/bin/echo` name the same
//! program. `env` is ignored (a program has no environment). `input-data` is the program's
//! input. Output capture follows `capture-output` (none, stdout, stderr, separated, merged);
//! each process keeps up to [`OUT_CAP`] bytes of output and [`ERR_CAP`] of errors, the rest
//! being dropped with `*-truncated: true`. At most [`MAX_PROCS`] finished processes wait for
//! their status; a new one then replaces the oldest.

use core::fmt;

use agent_core::commands::exec::{CaptureMode, Exec, ExecArgs, GuestExecStatus};
use agent_core::commands::{Base64, StrList};
use agent_core::{Error, Result};

/// Captured standard output kept per process.
pub const OUT_CAP: usize = 8192;
/// Captured standard error kept per process.
pub const ERR_CAP: usize = 2048;
/// Finished processes kept until their status is read.
pub const MAX_PROCS: usize = 4;
/// Most registered programs.
pub const MAX_PROGRAMS: usize = 16;

/// A program's arguments (after the program name).
#[derive(Clone)]
pub enum Args<'a> {
    /// From a request.
    List(StrList<'a>),
    /// From Rust code (tests, self-tests).
    Slice(&'a [&'a str]),
}

impl<'a> Args<'a> {
    /// The number of arguments.
    pub fn len(&self) -> usize {
        match self {
            Args::List(l) => l.len(),
            Args::Slice(s) => s.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Argument `i`.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Args::List(l) => l.iter().nth(i),
            Args::Slice(s) => s.get(i).copied(),
        }
    }

    /// All arguments in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// One captured stream.
pub struct Sink<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
    capture: bool,
}

impl<'a> Sink<'a> {
    /// A sink storing into `buf` (if `capture`) and dropping the rest.
    pub fn new(buf: &'a mut [u8], capture: bool) -> Self {
        Sink {
            buf,
            len: 0,
            truncated: false,
            capture,
        }
    }

    /// Append bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        if !self.capture {
            return;
        }
        let room = self.buf.len() - self.len;
        let n = room.min(bytes.len());
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len + n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.len += n;
        self.truncated |= n < bytes.len();
    }

    /// What was captured.
    pub fn captured(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Whether output was dropped for lack of room.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

/// A program's standard output and standard error.
pub struct Output<'a> {
    out: Sink<'a>,
    err: Sink<'a>,
    merged: bool,
}

impl<'a> Output<'a> {
    /// Streams over the given buffers, captured as `mode` says.
    pub fn new(out: &'a mut [u8], err: &'a mut [u8], mode: CaptureMode) -> Self {
        let (o, e) = match mode {
            CaptureMode::None => (false, false),
            CaptureMode::Stdout => (true, false),
            CaptureMode::Stderr => (false, true),
            CaptureMode::Separated | CaptureMode::Merged => (true, true),
        };
        Output {
            out: Sink::new(out, o),
            err: Sink::new(err, e && mode != CaptureMode::Merged),
            merged: mode == CaptureMode::Merged,
        }
    }

    /// Standard output.
    pub fn out(&mut self) -> &mut Sink<'a> {
        &mut self.out
    }

    /// Standard error (the output stream in merged mode).
    pub fn err(&mut self) -> &mut Sink<'a> {
        if self.merged {
            &mut self.out
        } else {
            &mut self.err
        }
    }

    /// The two streams.
    pub fn into_parts(self) -> (Sink<'a>, Sink<'a>) {
        (self.out, self.err)
    }
}

/// A built-in program: arguments, input, output → exit code.
pub type Program = fn(&Args<'_>, &[u8], &mut Output<'_>) -> i32;

/// The registry of built-in programs.
#[derive(Clone, Copy)]
pub struct Programs {
    entries: [Option<(&'static str, Program)>; MAX_PROGRAMS],
}

impl Default for Programs {
    fn default() -> Self {
        Self::new()
    }
}

/// The registry is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl Programs {
    /// No programs.
    pub const fn new() -> Self {
        Programs {
            entries: [None; MAX_PROGRAMS],
        }
    }

    /// A registry holding `programs` (at most [`MAX_PROGRAMS`]; the rest are left out), for
    /// a `const` table of built-ins.
    // `get` is not usable in a `const fn`; the loop condition bounds both indices.
    #[allow(clippy::indexing_slicing)]
    pub const fn from_table(programs: &[(&'static str, Program)]) -> Self {
        let mut p = Programs::new();
        let mut i = 0;
        while i < programs.len() && i < MAX_PROGRAMS {
            p.entries[i] = Some(programs[i]);
            i += 1;
        }
        p
    }

    /// Register `program` as `name` (replacing an earlier one of that name).
    pub fn register(
        &mut self,
        name: &'static str,
        program: Program,
    ) -> core::result::Result<(), Full> {
        if let Some(e) = self.entries.iter_mut().flatten().find(|e| e.0 == name) {
            e.1 = program;
            return Ok(());
        }
        let slot = self.entries.iter_mut().find(|e| e.is_none()).ok_or(Full)?;
        *slot = Some((name, program));
        Ok(())
    }

    /// The program registered as the last `/`-component of `path`.
    pub fn find(&self, path: &str) -> Option<Program> {
        let mut start = 0;
        for (i, &b) in path.as_bytes().iter().enumerate() {
            if b == b'/' {
                start = i + 1;
            }
        }
        let name = path.get(start..).unwrap_or(path);
        self.entries
            .iter()
            .flatten()
            .find(|e| e.0 == name)
            .map(|e| e.1)
    }

    /// Registered names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().flatten().map(|e| e.0)
    }
}

/// A finished process; `pid` 0 marks a free slot (keeps a fresh table in `.bss`).
#[derive(Clone, Copy)]
struct Proc {
    pid: i64,
    seq: u64,
    exitcode: i32,
    out_len: usize,
    err_len: usize,
    out_truncated: bool,
    err_truncated: bool,
}

impl Proc {
    const FREE: Proc = Proc {
        pid: 0,
        seq: 0,
        exitcode: 0,
        out_len: 0,
        err_len: 0,
        out_truncated: false,
        err_truncated: false,
    };
}

/// The process table with its output buffers.
pub struct Processes {
    programs: Programs,
    procs: [Proc; MAX_PROCS],
    out: [[u8; OUT_CAP]; MAX_PROCS],
    err: [[u8; ERR_CAP]; MAX_PROCS],
    /// Processes started so far; pids count from 1.
    seq: u64,
}

impl Processes {
    /// An empty table running `programs` (usable in a `static`).
    pub const fn new(programs: Programs) -> Self {
        Processes {
            programs,
            procs: [Proc::FREE; MAX_PROCS],
            out: [[0; OUT_CAP]; MAX_PROCS],
            err: [[0; ERR_CAP]; MAX_PROCS],
            seq: 0,
        }
    }

    /// The registry, to add programs.
    pub fn programs_mut(&mut self) -> &mut Programs {
        &mut self.programs
    }

    /// The registry.
    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// Run `program` now, keeping its result under a new pid.
    pub fn run(
        &mut self,
        program: Program,
        args: &Args<'_>,
        input: &[u8],
        mode: CaptureMode,
    ) -> i64 {
        let slot = match self.procs.iter().position(|p| p.pid == 0) {
            Some(s) => s,
            None => self
                .procs
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.seq)
                .map_or(0, |(i, _)| i),
        };
        self.seq += 1;
        let pid = (self.seq % i64::MAX as u64) as i64;
        let (Some(out), Some(err)) = (self.out.get_mut(slot), self.err.get_mut(slot)) else {
            return pid;
        };
        let mut output = Output::new(out, err, mode);
        let exitcode = program(args, input, &mut output);
        let (o, e) = output.into_parts();
        let p = Proc {
            pid,
            seq: self.seq,
            exitcode,
            out_len: o.captured().len(),
            err_len: e.captured().len(),
            out_truncated: o.truncated(),
            err_truncated: e.truncated(),
        };
        if let Some(s) = self.procs.get_mut(slot) {
            *s = p;
        }
        pid
    }
}

impl Exec for Processes {
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64> {
        let Some(program) = self.programs.find(args.path) else {
            return Err(Error::msg(format_args!(
                "Failed to execute child process \u{201C}{}\u{201D} (No such file or directory)",
                args.path
            )));
        };
        let list = match args.arg {
            Some(l) => Args::List(l),
            None => Args::Slice(&[]),
        };
        Ok(self.run(program, &list, args.input_data.unwrap_or(&[]), args.capture))
    }

    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>> {
        let slot = self.procs.iter().position(|p| p.pid != 0 && p.pid == pid);
        let Some(p) = slot.and_then(|s| self.procs.get_mut(s)) else {
            return Err(Error::msg(format_args!("PID {pid} does not exist")));
        };
        let p = core::mem::replace(p, Proc::FREE);
        let slot = slot.unwrap_or(0);
        let out = self
            .out
            .get(slot)
            .and_then(|b| b.get(..p.out_len))
            .unwrap_or(&[]);
        let err = self
            .err
            .get(slot)
            .and_then(|b| b.get(..p.err_len))
            .unwrap_or(&[]);
        Ok(GuestExecStatus {
            exited: true,
            exitcode: Some(p.exitcode as i64),
            signal: None,
            out_data: (!out.is_empty()).then_some(Base64(out)),
            err_data: (!err.is_empty()).then_some(Base64(err)),
            out_truncated: (!out.is_empty()).then_some(p.out_truncated),
            err_truncated: (!err.is_empty()).then_some(p.err_truncated),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shout(args: &Args<'_>, input: &[u8], out: &mut Output<'_>) -> i32 {
        for a in args.iter() {
            out.out().write(a.as_bytes());
        }
        out.out().write(input);
        out.err().write(b"!");
        args.len() as i32
    }

    fn table() -> Box<Processes> {
        let mut p = Programs::new();
        p.register("shout", shout).expect("room");
        Box::new(Processes::new(p))
    }

    #[test]
    fn runs_and_reaps() {
        let mut t = table();
        let pid = t.run(
            shout,
            &Args::Slice(&["a", "b"]),
            b"in",
            CaptureMode::Separated,
        );
        let st = t.status(pid).expect("status");
        assert!(st.exited);
        assert_eq!(st.exitcode, Some(2));
        assert_eq!(st.out_data, Some(Base64(b"abin")));
        assert_eq!(st.err_data, Some(Base64(b"!")));
        assert_eq!(st.out_truncated, Some(false));
        assert_eq!(
            t.status(pid).map(|_| ()).map_err(|e| e.to_string()),
            Err(format!("PID {pid} does not exist"))
        );
    }

    #[test]
    fn capture_modes() {
        let mut t = table();
        let pid = t.run(shout, &Args::Slice(&[]), b"x", CaptureMode::None);
        let st = t.status(pid).expect("status");
        assert_eq!(
            (st.out_data, st.err_data, st.out_truncated),
            (None, None, None)
        );
        let pid = t.run(shout, &Args::Slice(&[]), b"x", CaptureMode::Merged);
        assert_eq!(t.status(pid).expect("status").out_data, Some(Base64(b"x!")));
        let pid = t.run(shout, &Args::Slice(&[]), b"x", CaptureMode::Stderr);
        let st = t.status(pid).expect("status");
        assert_eq!((st.out_data, st.err_data), (None, Some(Base64(b"!"))));
    }

    #[test]
    fn truncation_and_eviction() {
        let mut t = table();
        let big = vec![b'z'; OUT_CAP + 10];
        let pid = t.run(shout, &Args::Slice(&[]), &big, CaptureMode::Stdout);
        let st = t.status(pid).expect("status");
        assert_eq!(st.out_truncated, Some(true));
        assert_eq!(st.out_data.map(|b| b.0.len()), Some(OUT_CAP));
        let pids: Vec<_> = (0..MAX_PROCS + 1)
            .map(|_| t.run(shout, &Args::Slice(&[]), b"", CaptureMode::None))
            .collect();
        assert!(t.status(pids[0]).is_err(), "the oldest was replaced");
        assert!(t.status(pids[MAX_PROCS]).is_ok());
    }

    #[test]
    fn registry() {
        let mut p = Programs::new();
        p.register("a", shout).expect("room");
        assert!(p.find("/usr/bin/a").is_some());
        assert!(p.find("b").is_none());
        for i in 1..MAX_PROGRAMS {
            let name: &'static str = Box::leak(format!("p{i}").into_boxed_str());
            p.register(name, shout).expect("room");
        }
        assert_eq!(p.register("extra", shout), Err(Full));
        assert!(p.register("a", shout).is_ok(), "re-registering replaces");
    }
}
