//! `guest-shutdown` and `guest-suspend-disk|ram|hybrid`.
//!
//! All four send no response on success (`success-response: false`), so a backend may power
//! the machine off before returning; it returns only to report an error.

use super::args::{Member, OPTIONAL, Ty, serve, take};
use crate::error::Result;
use crate::reply::Reply;
use crate::schema::Command;

crate::args! {
    /// The arguments of `guest-shutdown`.
    pub struct ShutdownArgs<'t> {
        mode: Option<&'t str> = ("mode", Ty::Str, OPTIONAL),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestShutdown => ShutdownArgs::MEMBERS,
        _ => &[],
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Power,
) {
    let tape: &[u8] = frame;
    let res = match cmd {
        Command::GuestShutdown => {
            let Some(a) = take::<ShutdownArgs<'_>>(r, tape, args) else {
                return;
            };
            let mode = match a.mode {
                None | Some("powerdown") => ShutdownMode::Powerdown,
                Some("halt") => ShutdownMode::Halt,
                Some("reboot") => ShutdownMode::Reboot,
                Some(_) => {
                    // The missing ")" is upstream's.
                    return r.generic(
                        tape,
                        "mode is invalid (valid values are: halt|powerdown|reboot",
                    );
                }
            };
            b.shutdown(mode)
        }
        _ => {
            if !serve(r, tape, args) {
                return;
            }
            b.suspend(match cmd {
                Command::GuestSuspendDisk => SuspendMode::Disk,
                Command::GuestSuspendRam => SuspendMode::Ram,
                _ => SuspendMode::Hybrid,
            })
        }
    };
    r.unit(tape, res, "");
}

crate::json_enum! {
    /// `guest-shutdown`'s `mode` (a plain `str` in the schema; the engine checks it and answers
    /// upstream's "mode is invalid (valid values are: halt|powerdown|reboot").
    pub enum ShutdownMode { Halt = "halt", Powerdown = "powerdown", Reboot = "reboot" }
}

crate::json_enum! {
    /// Which `guest-suspend-*` command.
    pub enum SuspendMode { Disk = "disk", Ram = "ram", Hybrid = "hybrid" }
}

/// Power control. `shutdown` is required; `suspend` is optional
/// ([the `guest-info` rule](super#guest-info-tells-the-truth)).
pub trait Power {
    /// Whether `cmd` (one of this family's) works here: by default exactly the commands of
    /// the required methods ([the rule](super#guest-info-tells-the-truth)). Override it to
    /// claim an optional method you implement, or to refuse a command at run time.
    fn supports(&self, cmd: Command) -> bool {
        cmd == Command::GuestShutdown
    }

    /// `guest-shutdown` (mode defaults to powerdown).
    fn shutdown(&mut self, mode: ShutdownMode) -> Result<()>;

    /// `guest-suspend-*`. Upstream's text when nothing works: "the requested suspend mode is
    /// not supported by the guest".
    /// Optional.
    fn suspend(&mut self, mode: SuspendMode) -> Result<()> {
        let _ = mode;
        Err(crate::error::Error::Unsupported)
    }
}
