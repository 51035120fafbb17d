//! `guest-shutdown` and `guest-suspend-disk|ram|hybrid`.
//!
//! All four send no response on success (`success-response: false`), so a backend may power
//! the machine off before returning; it returns only to report an error.

use super::Result;
use crate::schema::Command;

crate::json_enum! {
    /// `guest-shutdown`'s `mode` (a plain `str` in the schema; the engine checks it and answers
    /// upstream's "mode is invalid (valid values are: halt|powerdown|reboot").
    pub enum ShutdownMode { Halt = "halt", Powerdown = "powerdown", Reboot = "reboot" }
}

crate::json_enum! {
    /// Which `guest-suspend-*` command.
    pub enum SuspendMode { Disk = "disk", Ram = "ram", Hybrid = "hybrid" }
}

/// Power control.
pub trait Power {
    /// Whether `cmd` (one of this family's) works here.
    fn supports(&self, _cmd: Command) -> bool {
        true
    }

    /// `guest-shutdown` (mode defaults to powerdown).
    fn shutdown(&mut self, mode: ShutdownMode) -> Result<()>;

    /// `guest-suspend-*`. Upstream's text when nothing works: "the requested suspend mode is
    /// not supported by the guest".
    fn suspend(&mut self, mode: SuspendMode) -> Result<()>;
}
