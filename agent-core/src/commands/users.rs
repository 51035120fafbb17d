//! `guest-get-users` and `guest-set-user-password`.

use super::args::{Member, REQUIRED, Ty};
use super::args::{args_value, serve, take};
use crate::error::Result;
use crate::out::Emitter;
use crate::reply::Reply;
use crate::schema::Command;

crate::args! {
    /// The arguments of `guest-set-user-password`.
    pub struct SetUserPasswordArgs<'t> {
        username: &'t str = ("username", Ty::Str, REQUIRED),
        password: &'t str = ("password", Ty::Str, REQUIRED),
        crypted: bool = ("crypted", Ty::Bool, REQUIRED),
    }
}

pub(crate) fn members(cmd: Command) -> &'static [Member] {
    use super::args::Args as _;
    match cmd {
        Command::GuestSetUserPassword => SetUserPasswordArgs::MEMBERS,
        _ => &[],
    }
}

pub(crate) fn run(
    cmd: Command,
    r: &mut Reply<'_, '_>,
    frame: &mut [u8],
    args: Option<usize>,
    b: &mut dyn Users,
) {
    if cmd == Command::GuestGetUsers {
        let tape: &[u8] = frame;
        if !serve(r, tape, args) {
            return;
        }
        return r.list(tape, None, |e| b.users(e));
    }
    let (crypted, user, pass) = {
        let tape: &[u8] = frame;
        let Some(a) = take::<SetUserPasswordArgs<'_>>(r, tape, args) else {
            return;
        };
        let v = args_value(tape, args);
        let user = v.member("username").and_then(|u| u.str_range());
        let pass = v.member("password").and_then(|p| p.str_range());
        (a.crypted, user.unwrap_or((0, 0)), pass.unwrap_or((0, 0)))
    };
    let Some(n) = crate::b64::decode_in_place(frame, pass.0, pass.1) else {
        return r.generic(frame, "Base64 data contains invalid characters");
    };
    let password = frame.get(pass.0..pass.0 + n).unwrap_or(&[]);
    // upstream checks the decoded password as a C string: it ends at a NUL.
    let password = password.split(|&c| c == 0).next().unwrap_or(&[]);
    if password.contains(&b'\n') {
        return r.generic(frame, "forbidden characters in raw password");
    }
    let username = frame
        .get(user.0..user.0 + user.1)
        .and_then(|u| core::str::from_utf8(u).ok())
        .unwrap_or("");
    if username.contains(['\n', ':']) {
        return r.generic(frame, "forbidden characters in username");
    }
    let res = b.set_password(username, password, crypted);
    r.unit(frame, res, "");
}

crate::json_struct! {
    /// `GuestUser`.
    pub struct GuestUser<'a> {
        pub user: &'a str = "user",
        pub login_time: f64 = "login-time",
        pub domain: Option<&'a str> = "domain",
    }
}

/// Users: sessions and passwords. `users` is required; `set_password` is optional
/// ([the `guest-info` rule](super#guest-info-tells-the-truth)).
pub trait Users {
    /// Whether `cmd` (one of this family's) works here: by default exactly the commands of
    /// the required methods ([the rule](super#guest-info-tells-the-truth)). Override it to
    /// claim an optional method you implement, or to refuse a command at run time.
    fn supports(&self, cmd: Command) -> bool {
        cmd == Command::GuestGetUsers
    }

    /// `guest-get-users`: one entry per user, first-seen order, earliest login.
    fn users(&mut self, out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()>;

    /// `guest-set-user-password`. The engine has base64-decoded `password` and applied
    /// upstream's checks ("forbidden characters in raw password" for `\n` when not crypted,
    /// "forbidden characters in username" for `\n` or `:`).
    /// Optional.
    fn set_password(&mut self, username: &str, password: &[u8], crypted: bool) -> Result<()> {
        let _ = (username, password, crypted);
        Err(crate::error::Error::Unsupported)
    }
}
