//! `guest-get-users`: bare metal has no users or sessions, so the list is empty (KubeVirt polls
//! it and expects an answer). `guest-set-user-password` is unsupported.

use agent_core::commands::Emitter;
use agent_core::commands::users::{GuestUser, Users};
use agent_core::schema::Command;
use agent_core::{Error, Result};

/// No users.
pub struct NoUsers;

impl Users for NoUsers {
    fn supports(&self, cmd: Command) -> bool {
        cmd == Command::GuestGetUsers
    }

    fn users(&mut self, _out: &mut Emitter<'_, GuestUser<'static>>) -> Result<()> {
        Ok(())
    }

    fn set_password(&mut self, _username: &str, _password: &[u8], _crypted: bool) -> Result<()> {
        Err(Error::Unsupported)
    }
}
