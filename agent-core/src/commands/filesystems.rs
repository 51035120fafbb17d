//! `guest-fsfreeze-status|freeze|freeze-list|thaw` and `guest-fstrim`.
//!
//! The frozen state is the backend's (upstream keeps it in a flag and a state file that
//! survives restarts); the engine asks [`Filesystems::status`] before every command to apply
//! the frozen-state filter.

use super::args::{Elem, Member, OPTIONAL, Ty};
use super::args::{StrList, serve, take};
use crate::error::Result;
use crate::out::Emitter;
use crate::reply::Reply;
use crate::schema::Command;

crate::args! {
    /// The arguments of `guest-fsfreeze-freeze-list`.
    pub struct FreezeListArgs<'t> {
        mountpoints: Option<StrList<'t>> = ("mountpoints", Ty::List(Elem::Str), OPTIONAL),
    }
}

crate::args! {
    /// The arguments of `guest-fstrim`.
    pub struct FstrimArgs<'t> {
        minimum: Option<i64> = ("minimum", Ty::Int, OPTIONAL),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestFsfreezeFreezeList => FreezeListArgs::MEMBERS,
        Command::GuestFstrim => FstrimArgs::MEMBERS,
        _ => &[],
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Filesystems,
) {
    let tape: &[u8] = frame;
    match cmd {
        Command::GuestFsfreezeStatus => {
            if !serve(r, tape, args) {
                return;
            }
            let s = b.status();
            r.ok_value(tape, &s);
        }
        Command::GuestFsfreezeFreeze => {
            if !serve(r, tape, args) {
                return;
            }
            let res = b.freeze(None);
            r.result(tape, res, "");
        }
        Command::GuestFsfreezeFreezeList => {
            let Some(a) = take::<FreezeListArgs<'_>>(r, tape, args) else {
                return;
            };
            let res = b.freeze(a.mountpoints);
            r.result(tape, res, "");
        }
        Command::GuestFsfreezeThaw => {
            if !serve(r, tape, args) {
                return;
            }
            let res = b.thaw();
            r.result(tape, res, "");
        }
        _ => {
            let Some(a) = take::<FstrimArgs<'_>>(r, tape, args) else {
                return;
            };
            r.list(tape, Some("paths"), |e| b.fstrim(a.minimum, e));
        }
    }
}

crate::json_enum! {
    /// `GuestFsfreezeStatus`.
    pub enum FsfreezeStatus { Thawed = "thawed", Frozen = "frozen" }
}

crate::json_struct! {
    /// `GuestFilesystemTrimResult`.
    pub struct GuestFilesystemTrimResult<'a> {
        pub path: &'a str = "path",
        pub trimmed: Option<i64> = "trimmed",
        pub minimum: Option<i64> = "minimum",
        pub error: Option<&'a str> = "error",
    }
}

/// Freezing and trimming mounted filesystems.
pub trait Filesystems {
    /// Whether `cmd` (one of this family's) works here. Every method of this family is
    /// required ([the rule](super#guest-info-tells-the-truth)), so the default is all of them;
    /// override it only to refuse a command at run time.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-fsfreeze-status`: the agent's own frozen flag.
    fn status(&mut self) -> FsfreezeStatus;

    /// `guest-fsfreeze-freeze` (`None`) and `guest-fsfreeze-freeze-list` (`Some`, even if
    /// empty): the number of filesystems frozen.
    fn freeze(&mut self, mountpoints: Option<StrList<'_>>) -> Result<i64>;

    /// `guest-fsfreeze-thaw`: the number of filesystems thawed.
    fn thaw(&mut self) -> Result<i64>;

    /// `guest-fstrim`: one result per filesystem, emitted in upstream's order (reverse mount
    /// order). The engine wraps them in `{"paths": [...]}`.
    fn fstrim(
        &mut self,
        minimum: Option<i64>,
        out: &mut Emitter<'_, GuestFilesystemTrimResult<'static>>,
    ) -> Result<()>;
}
