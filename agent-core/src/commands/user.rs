//! `guest-get-users` and `guest-set-user-password`.

use super::{Emitter, Result};
use crate::schema::Command;

crate::json_struct! {
    /// `GuestUser`.
    pub struct GuestUser<'a> {
        pub user: &'a str = "user",
        pub login_time: f64 = "login-time",
        pub domain: Option<&'a str> = "domain",
    }
}

/// Users: sessions and passwords.
pub trait Users {
    /// Whether `cmd` (one of this family's) works here.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-get-users`: one entry per user, first-seen order, earliest login.
    fn users(&mut self, out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()>;

    /// `guest-set-user-password`. The engine has base64-decoded `password` and applied
    /// upstream's checks ("forbidden characters in raw password" for `\n` when not crypted,
    /// "forbidden characters in username" for `\n` or `:`).
    fn set_password(&mut self, username: &str, password: &[u8], crypted: bool) -> Result<()>;
}
