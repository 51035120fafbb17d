//! `guest-exec` and `guest-exec-status`.

use super::{Base64, Result, StrList};
use crate::schema::Command;

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
    /// Whether `cmd` (one of this family's) works here.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-exec`: start the program and return its pid.
    fn exec(&mut self, args: ExecArgs<'_>) -> Result<i64>;

    /// `guest-exec-status`. The first status with `exited: true` forgets the process; an
    /// unknown pid is an error (this project's text: "PID <n> does not exist").
    fn status(&mut self, pid: i64) -> Result<GuestExecStatus<'_>>;
}
