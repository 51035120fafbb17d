//! `guest-ssh-get-authorized-keys`, `guest-ssh-add-authorized-keys` and
//! `guest-ssh-remove-authorized-keys`.

use super::args::{Elem, Member, OPTIONAL, REQUIRED, Ty};
use super::args::{StrList, take};
use crate::error::Result;
use crate::out::Emitter;
use crate::reply::Reply;
use crate::schema::Command;

/// Upstream's key check for add and remove (`check_openssh_pub_key`): a key must not start
/// with `#` nor contain a newline. (An empty key passes, as upstream's code has it.) Returns
/// the offending key.
pub fn check_keys<'t>(keys: &StrList<'t>) -> core::result::Result<(), &'t str> {
    for k in keys.iter() {
        if k.starts_with('#') || k.contains('\n') {
            return Err(k);
        }
    }
    Ok(())
}

crate::args! {
    /// The arguments of `guest-ssh-get-authorized-keys`.
    pub struct SshGetArgs<'t> {
        username: &'t str = ("username", Ty::Str, REQUIRED),
    }
}

crate::args! {
    /// The arguments of `guest-ssh-add-authorized-keys`.
    pub struct SshAddArgs<'t> {
        username: &'t str = ("username", Ty::Str, REQUIRED),
        keys: StrList<'t> = ("keys", Ty::List(Elem::Str), REQUIRED),
        reset: Option<bool> = ("reset", Ty::Bool, OPTIONAL),
    }
}

crate::args! {
    /// The arguments of `guest-ssh-remove-authorized-keys`.
    pub struct SshRemoveArgs<'t> {
        username: &'t str = ("username", Ty::Str, REQUIRED),
        keys: StrList<'t> = ("keys", Ty::List(Elem::Str), REQUIRED),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestSshGetAuthorizedKeys => SshGetArgs::MEMBERS,
        Command::GuestSshAddAuthorizedKeys => SshAddArgs::MEMBERS,
        _ => SshRemoveArgs::MEMBERS,
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn SshKeys,
) {
    let tape: &[u8] = frame;
    let bad_key = |r: &mut Reply<'_, '_>, k: &str| {
        r.generic_fmt(tape, format_args!("invalid OpenSSH public key: '{k}'"))
    };
    match cmd {
        Command::GuestSshGetAuthorizedKeys => {
            let Some(a) = take::<SshGetArgs<'_>>(r, tape, args) else {
                return;
            };
            r.list(tape, Some("keys"), |e| b.get(a.username, e));
        }
        Command::GuestSshAddAuthorizedKeys => {
            let Some(a) = take::<SshAddArgs<'_>>(r, tape, args) else {
                return;
            };
            if let Err(k) = check_keys(&a.keys) {
                return bad_key(r, k);
            }
            let res = b.add(a.username, a.keys, a.reset.unwrap_or(false));
            r.unit(tape, res, "");
        }
        _ => {
            let Some(a) = take::<SshRemoveArgs<'_>>(r, tape, args) else {
                return;
            };
            if let Err(k) = check_keys(&a.keys) {
                return bad_key(r, k);
            }
            let res = b.remove(a.username, a.keys);
            r.unit(tape, res, "");
        }
    }
}

/// A user's `~/.ssh/authorized_keys`.
pub trait SshKeys {
    /// Whether `cmd` (one of this family's) works here. Every method of this family is
    /// required ([the rule](super#guest-info-tells-the-truth)), so the default is all of them;
    /// override it only to refuse a command at run time.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-ssh-get-authorized-keys`: the keys, in upstream's order (reversed file order).
    /// The engine wraps them in `{"keys": [...]}`.
    fn get(&mut self, username: &str, out: &mut Emitter<'_, &'static str>) -> Result<()>;

    /// `guest-ssh-add-authorized-keys` (keys already checked with [`check_keys`]).
    fn add(&mut self, username: &str, keys: StrList<'_>, reset: bool) -> Result<()>;

    /// `guest-ssh-remove-authorized-keys` (keys already checked with [`check_keys`]).
    fn remove(&mut self, username: &str, keys: StrList<'_>) -> Result<()>;
}
