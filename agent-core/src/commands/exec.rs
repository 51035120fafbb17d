//! `guest-exec` and `guest-exec-status`.

use super::args::{Arg, Elem, Member, OPTIONAL, REQUIRED, Raw, Ty};
use super::args::{Args as _, StrList, args_value, take};
use crate::error::Result;
use crate::json::Value;
use crate::out::Base64;
use crate::reply::Reply;
use crate::schema::Command;

/// The alternate `GuestExecCaptureOutput`, resolved: `true` is `separated`, `false` is `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureOutput(pub CaptureMode);

impl<'t> Arg<'t> for CaptureOutput {
    fn from_value(v: Value<'t>) -> Option<Self> {
        match v.as_bool() {
            Some(true) => Some(CaptureOutput(CaptureMode::Separated)),
            Some(false) => Some(CaptureOutput(CaptureMode::None)),
            None => v
                .as_str()
                .and_then(CaptureMode::from_name)
                .map(CaptureOutput),
        }
    }
}

crate::args! {
    /// The arguments of `guest-exec` as received (see [`ExecArgs`] for the decoded form).
    pub struct ExecRequest<'t> {
        path: &'t str = ("path", Ty::Str, REQUIRED),
        arg: Option<StrList<'t>> = ("arg", Ty::List(Elem::Str), OPTIONAL),
        env: Option<StrList<'t>> = ("env", Ty::List(Elem::Str), OPTIONAL),
        /// Decoded in place by the engine: see [`ExecArgs::input_data`].
        input_data: Option<Raw<'t>> = ("input-data", Ty::Str, OPTIONAL),
        capture_output: Option<CaptureOutput> = ("capture-output", Ty::Capture(CaptureMode::NAMES), OPTIONAL),
    }
}

crate::args! {
    /// The arguments of `guest-exec-status`.
    pub struct ExecStatusArgs<'t> {
        pid: i64 = ("pid", Ty::Int, REQUIRED),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestExec => ExecRequest::MEMBERS,
        _ => ExecStatusArgs::MEMBERS,
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Exec,
) {
    if cmd == Command::GuestExecStatus {
        let tape: &[u8] = frame;
        let Some(a) = take::<ExecStatusArgs<'_>>(r, tape, args) else {
            return;
        };
        let res = b.status(a.pid);
        return r.result(tape, res, "");
    }
    let input = {
        let tape: &[u8] = frame;
        let Some(a) = take::<ExecRequest<'_>>(r, tape, args) else {
            return;
        };
        a.input_data.and_then(|v| v.0.str_range())
    };
    // input-data is decoded in place; the arguments borrowed the frame, so they are read once
    // more from the unchanged rest of it (the one command that reads its arguments twice).
    let input = match input {
        None => None,
        Some((start, len)) => match crate::b64::decode_in_place(frame, start, len) {
            Some(n) => Some((start, n)),
            None => return r.generic(frame, "Base64 data contains invalid characters"),
        },
    };
    let tape: &[u8] = frame;
    let a = match ExecRequest::decode(args_value(tape, args)) {
        Ok(a) => a,
        Err(e) => {
            return r.error(tape, "GenericError", |o| {
                e.write_text(&mut |b| o.string_body(b))
            });
        }
    };
    let exec = ExecArgs {
        path: a.path,
        arg: a.arg,
        env: a.env,
        input_data: input.map(|(s, n)| tape.get(s..s + n).unwrap_or(&[])),
        capture: a.capture_output.map(|c| c.0).unwrap_or(CaptureMode::None),
    };
    match b.exec(exec) {
        Ok(pid) => r.ok(tape, |o| {
            o.object(|w| {
                w.member("pid", &pid);
            })
        }),
        Err(e) => r.fail(tape, &e, ""),
    }
}

/// `GUEST_EXEC_MAX_OUTPUT`: captured bytes kept per stream (16 MiB); the rest is read and
/// dropped, and `*-truncated` is set.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

crate::json_enum! {
    /// `GuestExecCaptureOutputMode`. The alternate `GuestExecCaptureOutput` maps `true` to
    /// `Separated` and `false` (or absence) to `None`.
    pub enum CaptureMode {
        None = "none", Stdout = "stdout", Stderr = "stderr", Separated = "separated", Merged = "merged",
    }
}

/// The arguments of `guest-exec`, decoded.
pub struct ExecArgs<'t> {
    /// `path`: the program, searched in `PATH` if it has no slash.
    pub path: &'t str,
    /// `arg`: the arguments after `path`.
    pub arg: Option<StrList<'t>>,
    /// `env`: `NAME=value` strings that replace the environment.
    pub env: Option<StrList<'t>>,
    /// `input-data`, already base64-decoded: the child's stdin.
    pub input_data: Option<&'t [u8]>,
    /// `capture-output`.
    pub capture: CaptureMode,
}

crate::json_struct! {
    /// `GuestExecStatus`.
    pub struct GuestExecStatus<'a> {
        pub exited: bool = "exited",
        pub exitcode: Option<i64> = "exitcode",
        pub signal: Option<i64> = "signal",
        pub out_data: Option<Base64<'a>> = "out-data",
        pub err_data: Option<Base64<'a>> = "err-data",
        pub out_truncated: Option<bool> = "out-truncated",
        pub err_truncated: Option<bool> = "err-truncated",
    }
}

/// Running programs.
pub trait Exec {
    /// Whether `cmd` (one of this family's) works here. Every method of this family is
    /// required ([the rule](super#guest-info-tells-the-truth)), so the default is all of them;
    /// override it only to refuse a command at run time.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-exec`: start the program and return its pid.
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64>;

    /// `guest-exec-status`. The first status with `exited: true` forgets the process; an
    /// unknown pid is an error (this project's text: "PID `<n>` does not exist").
    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>>;
}
