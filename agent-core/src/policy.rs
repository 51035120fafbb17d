//! The command filter, below both the engine (which refuses what it disables) and the
//! `guest-info` command (which reports it), so neither has to reach into the other.

use crate::schema::Command;

/// Which commands may run: upstream master's rules (docs/protocol.md §3.3).
///
/// 1. Everything is allowed by default. 2. Once an allow list is given, only what is on it.
/// 3. The block list overrides the allow list. 4. While frozen, exactly the freeze allow list
///    (ping, info, sync, sync-delimited, fsfreeze-status, fsfreeze-thaw), even if blocked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    blocked: u64,
    allowed: Option<u64>,
}

impl Policy {
    /// Block `cmd`.
    pub fn block(&mut self, cmd: Command) {
        self.blocked |= 1 << cmd.index();
    }

    /// Put `cmd` on the allow list (creating the list: everything else becomes denied).
    pub fn allow(&mut self, cmd: Command) {
        *self.allowed.get_or_insert(0) |= 1 << cmd.index();
    }

    /// Whether `cmd` is enabled, given the frozen state.
    pub fn enabled(&self, cmd: Command, frozen: bool) -> bool {
        if frozen {
            return cmd.allowed_while_frozen();
        }
        let bit = 1u64 << cmd.index();
        let allowed = self.allowed.is_none_or(|a| a & bit != 0);
        allowed && self.blocked & bit == 0
    }
}
