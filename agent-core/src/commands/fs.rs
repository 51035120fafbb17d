//! `guest-fsfreeze-status|freeze|freeze-list|thaw` and `guest-fstrim`.
//!
//! The frozen state is the backend's (upstream keeps it in a flag and a state file that
//! survives restarts); the engine asks [`Filesystems::status`] before every command to apply
//! the frozen-state filter.

use super::{Emitter, Result, StrList};
use crate::schema::Command;

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
    /// Whether `cmd` (one of this family's) works here.
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
