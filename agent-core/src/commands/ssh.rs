//! `guest-ssh-get-authorized-keys`, `guest-ssh-add-authorized-keys` and
//! `guest-ssh-remove-authorized-keys`.

use super::{Emitter, Result, StrList};
use crate::schema::Command;

/// Upstream's key check for add and remove: a key must be non-empty, not start with `#` and
/// not contain a newline. Returns the offending key.
pub fn check_keys<'t>(keys: &StrList<'t>) -> core::result::Result<(), &'t str> {
    for k in keys.iter() {
        if k.is_empty() || k.starts_with('#') || k.contains('\n') {
            return Err(k);
        }
    }
    Ok(())
}

/// A user's `~/.ssh/authorized_keys`.
pub trait SshKeys {
    /// Whether `cmd` (one of this family's) works here.
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
