//! `guest-sync`, `guest-sync-delimited`, `guest-ping` and `guest-info`: answered by the engine
//! itself, on every platform.

use super::args::{Member, REQUIRED, Ty};
use super::args::{serve, take};
use super::platform::{Platform, supported};
use crate::policy::Policy;
use crate::reply::Reply;
use crate::schema::Command;

crate::args! {
    /// The arguments of `guest-sync` and `guest-sync-delimited`.
    pub struct SyncArgs<'t> {
        id: i64 = ("id", Ty::Int, REQUIRED),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestSync | Command::GuestSyncDelimited => SyncArgs::MEMBERS,
        _ => &[],
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    platform: &mut dyn Platform,
    policy: &Policy,
    frozen: bool,
) {
    let tape: &[u8] = frame;
    match cmd {
        Command::GuestSync | Command::GuestSyncDelimited => {
            let Some(a) = take::<SyncArgs<'_>>(r, tape, args) else {
                return;
            };
            // upstream sets the delimiter flag in the handler: an argument error sends no 0xFF.
            r.delimit = cmd == Command::GuestSyncDelimited;
            r.ok_value(tape, &a.id);
        }
        _ if !serve(r, tape, args) => {}
        Command::GuestPing => r.ok_empty(tape),
        _ => info(r, tape, platform, policy, frozen),
    }
}

/// `guest-info`: every command in reverse schema order (upstream builds the list with
/// `QAPI_LIST_PREPEND`), members in upstream's QDict order.
fn info(
    r: &mut Reply<'_, '_>,
    tape: &[u8],
    platform: &mut dyn Platform,
    policy: &Policy,
    frozen: bool,
) {
    let mut enabled = [false; Command::ALL.len()];
    for (slot, &c) in enabled.iter_mut().zip(Command::ALL) {
        *slot = policy.enabled(c, frozen) && supported(platform, c);
    }
    let version = platform.version();
    r.ok(tape, |o| {
        o.object(|w| {
            w.member("version", version);
            w.key("supported_commands").list(|l| {
                for (&c, &on) in Command::ALL.iter().zip(enabled.iter()).rev() {
                    l.next().object(|w| {
                        w.member("enabled", &on)
                            .member("name", c.name())
                            .member("success-response", &c.success_response());
                    });
                }
            });
        });
    });
}
